"""The second red-team round against the jail, as tests through ``lab.tools.invoke``.

Each test is one finding of that round (N1-N11): a scan cache fooled by ``os.utime``, git
as a file differ, submodule configs, the host's device nodes, shared memory that outlived
its call, vsock sockets, links planted under secret names, planted git directories,
``/proc`` through a link, and terminal escapes in output. The probes run as python in the
jail, which a developer's policy may allow.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

SECRET = "JAILTRAP_secret_value_4321"


def _git(repo: Path, *args: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture
def lab(python_shell_lab: Any) -> Any:
    return python_shell_lab


def _py(lab: Any, code: str) -> str:
    (lab.tools.workspace.root / "probe.py").write_text(code)
    return lab.tools.invoke("run_shell", {"command": ["python3", "probe.py"]}).content


def _shell(lab: Any, command: str | list[str]) -> Any:
    return lab.tools.invoke("run_shell", {"command": command})


def test_n1_a_rename_hidden_by_resetting_the_folder_time_is_still_seen(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "sub").mkdir()
    (ws / "sub" / ".env").write_text(SECRET + "\n")
    assert SECRET not in _shell(lab, "grep -r JAILTRAP .").content  # warms the scan cache
    _py(lab, "import os\nst = os.stat('.')\nos.rename('sub', 'sub2')\n"
             "os.utime('.', ns=(st.st_atime_ns, st.st_mtime_ns))\n")
    assert (ws / "sub2" / ".env").exists()
    assert SECRET not in _shell(lab, "grep -r JAILTRAP .").content
    assert SECRET not in _py(lab, "print(open('sub2/.env').read())")


def test_n2_git_cannot_be_used_as_a_file_differ_on_its_own_config(lab: Any) -> None:
    ws = lab.tools.workspace.root
    _git(ws, "init", "-q")
    with open(ws / ".git" / "config", "a") as f:
        f.write(f'[remote "origin"]\n\turl = https://u:{SECRET}@example.com/r\n')
    (ws / "emptyd").mkdir()
    for command in (["git", "diff", "--no-index", ".git", "emptyd"],
                    ["git", "diff", "--no-index", "--", ".git/config", "emptyd"],
                    ["git", "blame", "--contents", ".git/config", "x"],
                    ["cat", ".git/config"], ["grep", "-r", "url", ".git"]):
        result = _shell(lab, command)
        assert SECRET not in result.content and not result.ok, (command, result.content)


def test_n3_submodule_and_worktree_configs_are_deny_listed(lab: Any) -> None:
    ws = lab.tools.workspace.root
    _git(ws, "init", "-q")
    for rel in (".git/modules/lib/config", ".git/modules/lib/modules/deep/config",
                ".git/worktrees/w/config.worktree"):
        (ws / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws / rel).write_text(f"[remote]\n\turl = https://u:{SECRET}@example.com\n")
        assert lab.tools.invoke("read_file", {"path": rel}).rule == "path.denied"
        assert SECRET not in _py(lab, f"print(open({rel!r}).read())")
    assert SECRET not in _shell(lab, "grep -r JAILTRAP .").content


def test_n4_the_hosts_device_nodes_cannot_be_changed(lab: Any) -> None:
    before = os.stat("/dev/null")
    out = _py(lab, "import os\nfor dev in ('/dev/null', '/dev/urandom', '/dev/zero'):\n"
                   "    st = os.stat(dev)\n    for name, fn in (('chmod', lambda: os.chmod(dev, "
                   "st.st_mode & 0o7777)), ('utime', lambda: os.utime(dev))):\n"
                   "        try:\n            fn()\n            print('CHANGED', dev, name)\n"
                   "        except OSError as e:\n            print('refused', dev, name)\n"
                   "open('/dev/null', 'w').write('still works')\nprint('write ok')\n")
    assert "CHANGED" not in out and out.count("refused") == 6 and "write ok" in out, out
    after = os.stat("/dev/null")
    assert (after.st_mode, after.st_ctime_ns) == (before.st_mode, before.st_ctime_ns)


def test_n5_shared_memory_ends_with_its_call(lab: Any) -> None:
    """Each call has its own IPC namespace: a segment cannot pin memory past its call, nor
    carry data from one call to the next."""
    probe = ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
             "print('found', libc.shmget(0x4A41494C, 0, 0) >= 0)\n"
             "print('made', libc.shmget(0x4A41494C, 1 << 20, 0o1000 | 0o600) >= 0)\n")
    first, second = _py(lab, probe), _py(lab, probe)
    assert "found False" in first and "made True" in first, first
    assert "found False" in second and "made True" in second, second


def test_n6_only_unix_and_ip_sockets_exist_in_the_jail(lab: Any) -> None:
    out = _py(lab, "import socket\nfor fam in ('AF_VSOCK', 'AF_NETLINK', 'AF_PACKET', "
                   "'AF_UNIX', 'AF_INET', 'AF_INET6'):\n    try:\n"
                   "        socket.socket(getattr(socket, fam), socket.SOCK_DGRAM).close()\n"
                   "        print('open', fam)\n    except OSError as e:\n"
                   "        print('refused', fam, e.errno)\n")
    for family in ("AF_VSOCK", "AF_NETLINK", "AF_PACKET"):
        assert f"refused {family}" in out, out
    for family in ("AF_UNIX", "AF_INET", "AF_INET6"):
        assert f"open {family}" in out, out


def test_n7_links_planted_under_secret_names_are_removed_after_the_call(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "docs").mkdir()
    (ws / "docs" / "notes.txt").write_text("notes\n")
    (ws / "cfg").mkdir()
    (ws / "cfg" / "settings.txt").write_text("settings\n")
    out = _py(lab, "import os\nos.symlink('docs/notes.txt', '.env')\n"
                   "os.link('cfg/settings.txt', 'cfg/prod.key')\n"
                   "os.makedirs('.ssh')\nos.symlink('../docs/notes.txt', '.ssh/authorized_keys')\n"
                   "open('fresh.pem', 'w').write('a new file of its own\\n')\n")
    assert not os.path.lexists(ws / ".env") and not os.path.lexists(ws / "cfg" / "prod.key")
    assert not os.path.lexists(ws / ".ssh")
    assert "removed .env" in out and "removed cfg/prod.key" in out, out
    # a new file under a secret name is the program's too: moved aside, not lost
    assert not (ws / "fresh.pem").exists()
    aside = re.search(r"removed fresh\.pem \(moved to (\S+)\)", out)
    assert aside is not None, out
    assert Path(aside.group(1)).read_text() == "a new file of its own\n"
    assert (ws / "docs" / "notes.txt").read_text() == "notes\n"


def test_n9_proc_through_a_planted_link_shows_no_machine_state(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "p").symlink_to("/.jail/../proc")
    for command in ("cat p/cmdline", "cat p/keys", "ls p/"):
        result = _shell(lab, command)
        assert not result.ok and result.rule == "path.symlink_escape", (command, result.content)
    out = _py(lab, "import os\nprint(sorted(os.listdir('/proc')))\n"
                   "print([os.path.exists(f'/proc/{n}') for n in ('cmdline', 'keys', "
                   "'kallsyms', 'sys', 'sysrq-trigger')])\n")
    assert "[False, False, False, False, False]" in out, out


def test_n10_a_git_directory_made_by_a_program_is_removed(lab: Any) -> None:
    ws = lab.tools.workspace.root
    hook = "[core]\\n\\tfsmonitor = touch /tmp/x\\n"
    out = _py(lab, "import os\nos.makedirs('newrepo/.git/objects')\n"
                   "os.makedirs('newrepo/.git/refs')\n"
                   "open('newrepo/.git/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
                   f"open('newrepo/.git/config', 'w').write('{hook}')\n"
                   "os.makedirs('bare/objects')\nos.makedirs('bare/refs')\n"
                   "open('bare/HEAD', 'w').write('ref: refs/heads/main\\n')\n"
                   f"open('bare/config', 'w').write('{hook}')\n")
    assert not (ws / "newrepo" / ".git").exists() and not (ws / "bare" / "config").exists()
    assert "removed newrepo/.git" in out and "removed bare/config" in out, out


def test_n11_terminal_escapes_in_output_are_shown_not_acted_on(lab: Any) -> None:
    out = _py(lab, "import sys\n"
                   "sys.stdout.write('a\\x1b]52;c;aGk=\\x07b\\x1b[2Jc\\x00d\\x9be\\n')\n")
    assert "\x1b" not in out and "\x07" not in out and "\x00" not in out and "\x9b" not in out
    assert "a\\x1b]52;c;aGk=\\x07b\\x1b[2Jc\\x00d\\x9be" in out
