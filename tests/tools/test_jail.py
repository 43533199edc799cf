"""The jail the Shell and Git tools run programs in, probed from inside through run_shell.

A Lab that allows ``python3`` (as a developer might) runs probe scripts from the workspace;
each test states one property of the confinement and fails if it breaks. The last tests
cover the fallback where the OS refuses namespaces: every call then asks for approval.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aillm_lab as al
from aillm_lab.tools import jail as jail_module
from aillm_lab.tools.safety import ApprovalRequest

PROBE = """\
import json, os, sys
out = {"env": dict(os.environ), "pids": sorted(p for p in os.listdir("/proc") if p.isdigit()),
       "root": sorted(os.listdir("/")), "cwd": os.getcwd()}
with open("/proc/self/status") as f:
    out["cap_eff"] = [l.split()[1] for l in f if l.startswith("CapEff")][0]
paths = open("paths.txt").read().split()  # argv would be refused by the readable checks
out["exists"] = {p: os.path.exists(p) for p in paths}
with open("/etc/passwd") as f:
    out["passwd"] = f.read()
print(json.dumps(out))
"""


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Any]:
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "probe.py").write_text(PROBE)
    allow = [*al.SafetyPolicy().commands.allow, "python3"]
    with al.Lab(home=tmp_path / "home", workspace=ws,
                safety={"commands": {"allow": allow}}) as the_lab:
        yield the_lab


def _shell(lab: Any, command: str | list[str], **extra: Any) -> al.ToolResult:
    return lab.tools.invoke("run_shell", {"command": command, **extra})


def _stdout(result: Any) -> str:
    assert result.ok and "exit code 0" in result.content, result.content
    return result.content.split("--- stdout ---\n", 1)[1].split("\n--- stderr ---", 1)[0]


def test_a_program_sees_its_own_processes_a_fixed_environment_and_no_capabilities(
        lab: Any, tmp_path: Path) -> None:
    os.environ["AILLM_JAIL_TEST_SECRET"] = "jail-secret-value-1234"
    try:
        (tmp_path / "outside").mkdir()
        (tmp_path / "outside" / "f.txt").write_text("x")
        (lab.tools.workspace.root / "paths.txt").write_text(  # not the folders leading to binds
            f"{tmp_path / 'home'} /home {tmp_path / 'outside'} /root/.ssh /var /opt /srv")
        probe = json.loads(_stdout(_shell(lab, ["python3", "probe.py"])))
    finally:
        os.environ.pop("AILLM_JAIL_TEST_SECRET")
    assert set(probe["env"]) <= {"PATH", "HOME", "LANG", "LC_ALL", "TERM", "PWD",
                                 "LC_CTYPE"}, probe["env"]
    assert probe["pids"] and str(os.getpid()) not in probe["pids"] and len(probe["pids"]) <= 3
    assert int(probe["cap_eff"], 16) == 0
    assert not any(probe["exists"].values()), probe["exists"]  # the machine's folders are gone
    assert "daemon" not in probe["passwd"] and probe["cwd"] == str(lab.tools.workspace.root)
    assert "home" not in probe["root"] and "var" not in probe["root"]


def test_there_is_no_network_inside_not_even_loopback(lab: Any) -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    accepted: list[object] = []

    def accept() -> None:
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    (lab.tools.workspace.root / "net.py").write_text(
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)\n")
    try:
        out = _stdout(_shell(lab, "python3 net.py"))
    finally:
        server.close()
        thread.join(6)
    assert "refused" in out and "CONNECTED" not in out and not accepted


def test_a_background_process_dies_with_its_call(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "bg.py").write_text(
        "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', "
        "'import time, pathlib; time.sleep(1.5); pathlib.Path(\"late.txt\").write_text(\"x\")'])"
        "\nprint('started')\n")
    assert "started" in _stdout(_shell(lab, "python3 bg.py"))
    time.sleep(2.5)
    assert not (ws / "late.txt").exists()


def test_a_timeout_kills_the_program_and_its_children(lab: Any) -> None:
    (lab.tools.workspace.root / "slow.py").write_text(
        "import subprocess, sys, time\nsubprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)'])\ntime.sleep(60)\n")
    start = time.monotonic()
    result = _shell(lab, "python3 slow.py", timeout_s=1)
    assert "timed out" in result.content and time.monotonic() - start < 15


def test_tmp_is_private_to_each_call_and_the_system_is_read_only(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "w.py").write_text(
        "import os, sys\nprint('existed', os.path.exists('/tmp/mine'))\n"
        "open('/tmp/mine', 'w').write('x')\n"
        "for p in ('/usr/x', '/etc/x', '/x', '.git/x'):\n    try:\n        open(p, 'w')\n"
        "        print('WROTE', p)\n    except OSError as e:\n        print('no', p, e.errno)\n")
    (ws / ".git").mkdir()
    first, second = _stdout(_shell(lab, "python3 w.py")), _stdout(_shell(lab, "python3 w.py"))
    assert "existed False" in first and "existed False" in second  # each call's own /tmp
    assert "WROTE" not in first and not (ws / ".git" / "x").exists()
    assert not Path("/tmp/mine").exists() or Path("/tmp/mine").read_text() != "x"


def test_denied_files_are_empty_inside_the_jail(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "sub").mkdir()
    (ws / "sub" / ".env").write_text("KEY=hidden-value\n")
    (ws / "id_rsa").write_text("PRIVATE\n")
    (ws / "r.py").write_text("for p in ('sub/.env', 'id_rsa'):\n"  # argv would be refused
                             "    print(p, repr(open(p).read()))\n")
    out = _stdout(_shell(lab, ["python3", "r.py"]))
    assert "hidden-value" not in out and "PRIVATE" not in out and out.count("''") == 2


# -- where the OS cannot confine ---------------------------------------------------------------
@pytest.fixture
def no_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(cls: object, *args: object) -> None:
        raise jail_module._Unavailable("unshare(user namespaces) failed: Operation not "
                                       "permitted (errno 1)")

    monkeypatch.setattr(jail_module._Connection, "start", classmethod(refuse))


def test_without_confinement_every_call_asks_and_the_refusal_says_why(
        no_namespaces: None, tmp_path: Path) -> None:
    with al.Lab(home=tmp_path / "home", workspace=tmp_path / "ws") as lab:
        refused = lab.tools.invoke("run_shell", {"command": "pwd"})
        assert not refused.ok and refused.rule == "approval.no_approver"
        assert "OS confinement is unavailable" in refused.content
        assert "Operation not permitted" in refused.content
        asked: list[ApprovalRequest] = []

        def approve(request: ApprovalRequest) -> bool:
            asked.append(request)
            return True

        lab.tools.approver = approve
        ran = lab.tools.invoke("run_shell", {"command": "pwd"})
        assert ran.ok and str(tmp_path / "ws") in ran.content
        assert len(asked) == 1 and "OS confinement is unavailable" in asked[0].reason
        lab.tools.approver = lambda request: False
        assert lab.tools.invoke("run_shell", {"command": "pwd"}).rule == "approval.denied"


def test_without_confinement_the_argv_checks_still_refuse_first(
        no_namespaces: None, tmp_path: Path) -> None:
    with al.Lab(home=tmp_path / "home", workspace=tmp_path / "ws") as lab:
        lab.tools.approver = lambda request: True
        for command in (["cat", "--", "--x/" + "../" * 12 + "etc/passwd"],
                        "date -uf/etc/passwd", "sort -uo/tmp/x in.txt",
                        ["grep", "-hf/etc/passwd", "x"]):
            result = lab.tools.invoke("run_shell", {"command": command})
            assert not result.ok and result.rule == "path.outside", (command, result.content)


# -- findings of the red-team run against the first jail ----------------------------------------
def _run_script(lab: Any, name: str, code: str, **extra: Any) -> Any:
    (lab.tools.workspace.root / name).write_text(code)
    return _shell(lab, ["python3", name], **extra)


def test_kernel_settings_cannot_be_written_even_by_a_root_lab(lab: Any) -> None:
    """A root Lab's jail runs as host uid 0, which global sysctls trust: the jail's /proc
    is read-only and shows only the call's processes (no /proc/sys at all)."""
    current = Path("/proc/sys/kernel/core_pattern").read_text()
    out = _stdout(_run_script(lab, "sysctl.py", (
        f"import sys\nvalue = {current!r}  # the host's own value: a no-op if it got through\n"
        "for path, data in (('/proc/sys/kernel/core_pattern', value), "
        "('/proc/sys/kernel/printk_ratelimit_burst', None), ('/proc/sysrq-trigger', None)):\n"
        "    try:\n        f = open(path, 'w')\n"
        "        if data is not None:\n            f.write(data)\n        f.close()\n"
        "        print('WROTE', path)\n"
        "    except OSError as e:\n        print('refused', path, e.errno)\n")))
    assert "WROTE" not in out and out.count("refused") == 3, out
    assert Path("/proc/sys/kernel/core_pattern").read_text() == current


def test_a_planted_link_into_the_jails_proc_cannot_reach_kernel_settings(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "kdir").symlink_to("/.jail/../proc/sys/kernel")  # dangles on the host
    (ws / "pat.txt").write_text(Path("/proc/sys/kernel/core_pattern").read_text())
    result = _shell(lab, ["sort", "-o", "kdir/core_pattern", "pat.txt"])
    assert "exit code 0" not in result.content, result.content


def test_set_id_bits_cannot_be_set_on_files_the_jail_writes(lab: Any) -> None:
    out = _stdout(_run_script(lab, "setid.py", (
        "import os\nopen('tool', 'w').write('#!/bin/sh\\nid\\n')\n"
        "for mode in (0o4755, 0o2755, 0o6755):\n"
        "    try:\n        os.chmod('tool', mode)\n        print('CHMOD', oct(mode))\n"
        "    except OSError as e:\n        print('refused', e.errno)\n"
        "try:\n    os.close(os.open('made', os.O_CREAT | os.O_WRONLY, 0o4755))\n"
        "    print('CREATED', oct(os.stat('made').st_mode))\n"
        "except OSError as e:\n    print('refused', e.errno)\n")))
    assert "CHMOD" not in out and "CREATED" not in out and out.count("refused 1") == 4, out
    for path in lab.tools.workspace.root.iterdir():
        assert not path.stat().st_mode & 0o6000, path


def test_a_program_that_clears_its_parent_death_signal_still_dies_with_its_call(
        lab: Any) -> None:
    ws = lab.tools.workspace.root
    result = _run_script(lab, "stay.py", (
        "import ctypes, time\nctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # PR_SET_PDEATHSIG: none\n"
        "print('detached', flush=True)\ntime.sleep(2.5)\n"
        "open('survived.txt', 'w').write('x')\n"), timeout_s=1)
    assert "timed out" in result.content
    time.sleep(3.5)
    assert not (ws / "survived.txt").exists()


def test_concurrent_calls_cannot_move_a_secret_out_from_under_its_mount(lab: Any) -> None:
    ws = lab.tools.workspace.root
    (ws / "sub").mkdir()
    (ws / "sub" / ".env").write_text("RACE_SECRET_value_12345\n")
    (ws / "swap.py").write_text(
        "import os, time\nend = time.time() + 3\nwhile time.time() < end:\n"
        "    for a, b in (('sub', 'sub2'), ('sub2', 'sub')):\n        try:\n"
        "            os.rename(a, b)\n        except OSError:\n            pass\n"
        "if os.path.exists('sub2'):\n    os.rename('sub2', 'sub')\n")
    (ws / "peek.py").write_text(
        "seen = set()\nfor _ in range(200):\n    for p in ('sub/.env', 'sub2/.env'):\n"
        "        try:\n            seen.add(open(p).read())\n        except OSError:\n"
        "            pass\nprint(sorted(seen))\n")
    outputs: list[str] = []

    def swap() -> None:
        outputs.append(_shell(lab, ["python3", "swap.py"]).content)

    def peek() -> None:
        for _ in range(12):
            outputs.append(_shell(lab, ["python3", "peek.py"]).content)

    threads = [threading.Thread(target=swap), threading.Thread(target=peek)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)  # the swapping call is running when the peeking calls start
    for thread in threads:
        thread.join(120)
    assert len(outputs) == 13
    assert not any("RACE_SECRET" in out for out in outputs), outputs


def test_git_config_is_empty_for_programs_but_git_still_reads_it(lab: Any) -> None:
    ws = lab.tools.workspace.root
    assert _shell(lab, "git init -q").rule is not None  # init is not allowed from run_shell
    import subprocess

    subprocess.run(["git", "init", "-q", str(ws)], check=True)
    with open(ws / ".git" / "config", "a") as f:
        f.write('[remote "origin"]\n\turl = https://user:TOKEN_in_url_987654@example.com/r\n')
    out = _stdout(_run_script(lab, "cfg.py", "print(repr(open('.git/config').read()))\n"))
    assert "TOKEN_in_url" not in out and "''" in out
    assert "exit code 0" in _shell(lab, "git status").content


def test_limits_bind_each_program(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    ws.mkdir()
    allow = [*al.SafetyPolicy().commands.allow, "python3"]
    commands = {"allow": allow, "memory_mb": 256, "max_file_mb": 1}
    with al.Lab(home=tmp_path / "home", workspace=ws,
                safety={"commands": commands}) as small:
        out = _stdout(_run_script(small, "big.py", (
            "try:\n    b = bytearray(512 * 1024 * 1024)\n    print('ALLOCATED')\n"
            "except MemoryError:\n    print('no memory')\n"
            "try:\n    open('big.bin', 'wb').write(b'x' * 2 * 1024 * 1024)\n    print('WROTE')\n"
            "except OSError as e:\n    print('too big', e.errno)\n")))
    assert "no memory" in out and "too big 27" in out, out


def _launchers(workspace: Path) -> int:
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        count += b"_jail_launcher.py" in cmdline and str(workspace).encode() in cmdline
    return count


def test_an_idle_launcher_stops_and_the_next_call_starts_it_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jail_module, "IDLE_S", 0.5)
    ws = tmp_path / "ws"
    with al.Lab(home=tmp_path / "home", workspace=ws) as lab:
        assert "exit code 0" in _shell(lab, "pwd").content
        assert _launchers(ws) == 2  # the launcher and its PID-1 server
        deadline = time.monotonic() + 10
        while _launchers(ws) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _launchers(ws) == 0
        assert "exit code 0" in _shell(lab, "pwd").content
    assert _launchers(ws) == 0  # closing the Lab stops it too


def test_many_quick_calls_from_many_threads_all_return(tmp_path: Path) -> None:
    """A program that exits at once must not have its exit message arrive before its call
    is registered (it was dropped, and the call waited for ever)."""
    from aillm_lab.tools.paths import Workspace
    from aillm_lab.tools.policy import CommandPolicy
    from aillm_lab.tools.shell import shell_tools

    done: list[int] = []

    def worker(n: int) -> None:
        for i in range(25):
            ws = tmp_path / f"w{n}-{i}"
            ws.mkdir()
            tool = shell_tools(Workspace(ws), CommandPolicy())[0]
            for command in (["true"], ["pwd"], ["echo", "x"], ["false"]):
                asyncio.run(tool.acall({"command": command, "timeout_s": 20}))
                done.append(n)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(done) == 4 * 25 * 4


def test_read_only_folders_under_tmp_stay_visible_under_each_calls_private_tmp(
        tmp_path: Path) -> None:
    """A virtualenv (or any bind) under /tmp, as in a CI clone: each call mounts its own /tmp,
    which must not hide it."""
    from aillm_lab.runtime import get_runner
    from aillm_lab.tools.jail import Jail
    from aillm_lab.tools.paths import Workspace
    from aillm_lab.tools.policy import CommandPolicy
    from aillm_lab.tools.process import run_command

    tools = tmp_path / "venv" / "bin"
    tools.mkdir(parents=True)
    (tools / "marker.txt").write_text("visible\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    jail = Jail(Workspace(ws), extra_binds=(str(tmp_path / "venv"),))
    try:
        result = get_runner().run(run_command(["cat", str(tools / "marker.txt")], cwd=ws,
                                              policy=CommandPolicy(), jail=jail))
        assert result.exit_code == 0 and result.stdout == "visible\n", result.render()
        denied = get_runner().run(run_command(["touch", str(tools / "new")], cwd=ws,
                                              policy=CommandPolicy(allow=["touch"]), jail=jail))
        assert denied.exit_code != 0 and not (tools / "new").exists()
    finally:
        jail.close()
