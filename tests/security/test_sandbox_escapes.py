"""Escape attempts against PythonSandbox; after each one the host must be unharmed.

"Unharmed" is checked the same way every time: the secret file outside the sandbox still
holds its text (and never shows up in a result), the loopback server the test runs
recorded no connection, this process is alive, and the sandbox still answers ``1+1``.
"""

from __future__ import annotations

import ast
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.tools.policy import CodePolicy
from aillm_lab.tools.python import PythonSandbox, SandboxResult

pytestmark = pytest.mark.skipif(sys.platform.startswith("win"), reason="POSIX sandbox")

SECRET_TEXT = "TOPSECRET-7f3a9c"
FAKE_KEY = "sk-fake-sentinel-0123456789"


class Loopback:
    """A TCP server on 127.0.0.1 (or a Unix socket at ``path``) counting its connections."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX if path else socket.AF_INET)
        self.sock.bind(str(path) if path else ("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = 0 if path else self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[Loopback]:
    srv = Loopback()
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def unix_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopback]:
    """Like a Docker or X11 socket: on the file system, so no network namespace hides it."""
    srv = Loopback(tmp_path_factory.mktemp("sock") / "host.sock")
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("outside") / "secret.txt"
    path.write_text(SECRET_TEXT)
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def sb(secret: Path) -> Iterator[PythonSandbox]:
    os.environ["AILLM_FAKE_API_KEY"] = FAKE_KEY  # set before the worker starts
    box = PythonSandbox(CodePolicy(memory_mb=512, cpu_s=3, wall_s=10, max_file_mb=2,
                                   max_processes=32))
    yield box
    box.close()
    os.environ.pop("AILLM_FAKE_API_KEY", None)


@pytest.fixture
def check(sb: PythonSandbox, secret: Path, server: Loopback):
    """Run an attack, then assert the host is unharmed; returns the attack's result."""

    def attack(code: str, timeout_s: float | None = None) -> SandboxResult:
        result = sb.run(code, timeout_s=timeout_s)
        text = result.to_text()
        assert SECRET_TEXT not in text
        assert FAKE_KEY not in text
        assert secret.read_text() == SECRET_TEXT
        assert server.connections == 0
        assert sb.run("1+1").value == "2"
        return result

    return attack


def refused(result: SandboxResult) -> bool:
    return not result.ok and result.error is not None and (
        "PermissionError" in result.error or "SandboxRefused" in result.error
        or "Operation not permitted" in result.error)


# -- reading what is not ours -----------------------------------------------------------------
def test_reading_a_secret_file_outside_the_sandbox_is_refused(check, secret: Path) -> None:
    assert refused(check(f"open({str(secret)!r}).read()"))


def test_reading_a_secret_with_pathlib_is_refused(check, secret: Path) -> None:
    assert refused(check(f"import pathlib; pathlib.Path({str(secret)!r}).read_text()"))


def test_reading_a_secret_with_os_open_is_refused(check, secret: Path) -> None:
    assert refused(check(f"import os; os.read(os.open({str(secret)!r}, os.O_RDONLY), 100)"))


def test_reading_a_secret_through_a_directory_descriptor_is_refused(check, secret: Path) -> None:
    code = (f"import os\nfd = os.open({str(secret.parent)!r}, os.O_RDONLY)\n"
            f"os.read(os.open({secret.name!r}, os.O_RDONLY, dir_fd=fd), 100)")
    assert refused(check(code))


def test_reading_a_secret_through_dot_dot_paths_is_refused(check, sb, secret: Path) -> None:
    rel = os.path.relpath(secret, sb.workdir)
    assert rel.startswith("..")
    assert refused(check(f"open({rel!r}).read()"))


def test_reading_a_secret_through_a_symlink_is_refused(check, secret: Path) -> None:
    result = check(f"import os\nos.symlink({str(secret)!r}, 'link')\nopen('link').read()")
    assert refused(result)
    assert "code.not_allowed (os.symlink)" in result.refused


def test_the_parents_environment_in_proc_is_unreadable(check) -> None:
    result = check("import os\nopen(f'/proc/{os.getppid()}/environ', 'rb').read()")
    assert refused(result)


def test_proc_self_root_does_not_lead_out(check, secret: Path) -> None:
    assert refused(check(f"open('/proc/self/root' + {str(secret)!r}).read()"))


def test_the_environment_holds_no_host_variables(check) -> None:
    result = check("import os\nsorted(os.environ)")
    assert result.ok and result.value is not None
    names = set(ast.literal_eval(result.value))  # never eval what a sandbox printed
    assert names <= {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TMPDIR",
                     "MPLBACKEND", "MPLCONFIGDIR", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
                     "MKL_NUM_THREADS"}
    assert "AILLM_FAKE_API_KEY" not in names and "AILLM_HOME" not in names


def test_importing_aillm_lab_to_read_settings_fails(check) -> None:
    home = os.environ["AILLM_HOME"]
    result = check("from aillm_lab.config import LabSettings\nLabSettings.load().home")
    assert not result.ok
    assert home not in result.to_text()


# -- writing where we must not ----------------------------------------------------------------
def test_overwriting_a_file_outside_the_sandbox_is_refused(check, secret: Path) -> None:
    assert refused(check(f"open({str(secret)!r}, 'w').write('pwned')"))


def test_creating_a_file_outside_with_os_open_is_refused(check, secret: Path) -> None:
    target = secret.parent / "created.txt"
    code = f"import os\nos.write(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT), b'x')"
    assert refused(check(code))
    assert not target.exists()


def test_deleting_and_renaming_files_outside_are_refused(check, secret: Path) -> None:
    assert refused(check(f"import os\nos.remove({str(secret)!r})"))
    assert refused(check(f"import os\nos.rename({str(secret)!r}, 'stolen.txt')"))
    assert secret.exists()


def test_copying_a_secret_into_the_sandbox_is_refused(check, secret: Path) -> None:
    assert refused(check(f"import shutil\nshutil.copy({str(secret)!r}, 'copy.txt')"))


# -- processes ---------------------------------------------------------------------------------
def test_subprocess_run_is_refused(check, secret: Path) -> None:
    assert refused(check(f"import subprocess\nsubprocess.run(['cat', {str(secret)!r}])"))


def test_os_system_and_popen_are_refused(check, sb: PythonSandbox) -> None:
    assert refused(check("import os\nos.system('touch marker')"))
    assert refused(check("import os\nos.popen('id').read()"))
    assert not (sb.workdir / "marker").exists()


def test_os_fork_and_execv_are_refused(check) -> None:
    assert refused(check("import os\nos.fork()"))
    assert refused(check("import os\nos.execv('/bin/sh', ['sh', '-c', 'true'])"))


def test_a_fork_bomb_is_contained(check) -> None:
    result = check("import os\nwhile True:\n    os.fork()", timeout_s=5)
    assert refused(result) or result.killed_by is not None


def test_forking_below_the_audit_hook_is_stopped_by_the_os(check, sb: PythonSandbox) -> None:
    """multiprocessing's spawnv_passfds calls _posixsubprocess directly: no audit event."""
    if not str(sb.protections.get("seccomp", "")).startswith("exec"):
        pytest.skip("seccomp is not available here")
    code = ("from multiprocessing import util\n"
            "util.spawnv_passfds(b'/bin/sh', ['/bin/sh', '-c', 'touch marker'], ())")
    assert refused(check(code))
    assert not (sb.workdir / "marker").exists()


# -- network -----------------------------------------------------------------------------------
def test_socket_connect_to_a_loopback_server_is_refused(check, server: Loopback) -> None:
    code = f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {server.port}))"
    assert refused(check(code))


def test_socket_create_connection_is_refused(check, server: Loopback) -> None:
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {server.port}), timeout=2)"
    assert refused(check(code))


def test_urllib_is_refused(check, server: Loopback) -> None:
    code = f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{server.port}/')"
    assert refused(check(code))


def test_asyncio_open_connection_is_refused(check, server: Loopback) -> None:
    code = ("import asyncio\n"
            f"asyncio.run(asyncio.open_connection('127.0.0.1', {server.port}))")
    assert refused(check(code))


def test_connecting_to_a_host_unix_socket_is_refused(check, unix_server: Loopback) -> None:
    path = unix_server.sock.getsockname()
    code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})"
    assert refused(check(code))
    assert unix_server.connections == 0


# -- native code and memory --------------------------------------------------------------------
def test_ctypes_system_is_refused(check, sb: PythonSandbox) -> None:
    assert refused(check("import ctypes\nctypes.CDLL(None).system(b'touch marker')"))
    assert not (sb.workdir / "marker").exists()


def test_ctypes_pythonapi_is_refused(check) -> None:
    assert refused(check("import ctypes\nctypes.pythonapi.PyRun_SimpleString(b'1')"))


def test_ctypes_reading_raw_memory_is_refused(check) -> None:
    assert refused(check("import ctypes\nctypes.string_at(id(object()), 16)"))


def test_a_memory_bomb_gives_a_memory_error(check) -> None:
    result = check("x = 'x' * 10**10")
    assert result.memory_error or result.killed_by is not None


def test_a_growing_list_is_stopped(check) -> None:
    code = "def grow():\n    items = []\n    while True:\n        items.append(' ' * 10**6)\ngrow()"
    result = check(code, timeout_s=8)
    assert result.memory_error or result.killed_by is not None or result.timed_out


def test_writing_a_huge_file_stops_at_the_file_size_limit(check, sb: PythonSandbox) -> None:
    result = check("f = open('big.bin', 'wb')\nfor _ in range(10):\n"
                   "    f.write(b'0' * 1024 * 1024)")
    assert not result.ok and "File too large" in (result.error or "")
    assert (sb.workdir / "big.bin").stat().st_size <= 2 * 1024 * 1024


# -- time --------------------------------------------------------------------------------------
def test_an_infinite_loop_is_killed_at_the_wall_timeout(check) -> None:
    result = check("while True:\n    pass", timeout_s=1)
    assert result.timed_out and result.killed_by == "SIGKILL"
    assert any("fresh" in note for note in result.notes)


def test_cpu_spinning_is_stopped_by_the_cpu_limit() -> None:
    with PythonSandbox(CodePolicy(cpu_s=1, wall_s=30, memory_mb=256)) as box:
        result = box.run("while True:\n    pass")
        assert not result.timed_out
        assert result.killed_by == "SIGXCPU"
        assert "CPU limit of 1 s exceeded" in (result.error or "")
        assert box.run("1+1").value == "2"


def test_raising_the_cpu_limit_is_refused(check) -> None:
    code = ("import resource\nhard = resource.getrlimit(resource.RLIMIT_CPU)[1]\n"
            "resource.setrlimit(resource.RLIMIT_CPU, (10**6, hard))")
    result = check(code)
    assert refused(result) and "code.not_allowed (resource.setrlimit)" in result.refused


# -- signals and the parent ---------------------------------------------------------------------
def test_killing_the_parent_is_refused(check) -> None:
    assert refused(check("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"))


def test_killing_the_parents_process_group_is_refused(check) -> None:
    code = "import os, signal\nos.killpg(os.getpgid(os.getppid()), signal.SIGKILL)"
    assert refused(check(code))


def test_killing_everything_with_pid_minus_one_is_refused(check) -> None:
    assert refused(check("import os, signal\nos.kill(-1, signal.SIGKILL)"))


def test_a_worker_that_kills_its_own_group_only_loses_itself(check) -> None:
    result = check("import os, signal\nos.killpg(0, signal.SIGKILL)")
    assert result.killed_by == "SIGKILL" and not result.timed_out


def test_an_alarm_signal_ends_only_the_worker(check) -> None:
    result = check("import signal, time\nsignal.alarm(1)\ntime.sleep(5)")
    assert result.killed_by == "SIGALRM"


# -- tampering with the guard --------------------------------------------------------------------
def test_adding_an_audit_hook_is_refused(check) -> None:
    """CPython drops the new hook silently when ours refuses; it must never run."""
    result = check("import sys\nsys.addaudithook(lambda e, a: print('HOOKED', e))\n"
                   "open('hooked.txt', 'w').close()")
    assert "code.not_allowed (sys.addaudithook)" in result.refused
    assert "HOOKED" not in result.stdout


def test_walking_the_heap_with_gc_is_refused(check) -> None:
    assert refused(check("import gc\nlen(gc.get_objects())"))
    assert refused(check("import gc, sys\ngc.get_referrers(sys)"))


def test_tampering_with_builtins_does_not_open_the_files(check, secret: Path) -> None:
    code = f"import builtins, io\nbuiltins.open = io.open\nio.open({str(secret)!r}).read()"
    assert refused(check(code))


def test_breaking_builtins_only_breaks_the_worker(check, sb: PythonSandbox) -> None:
    result = check("import builtins\nbuiltins.isinstance = lambda *a: True\n"
                   "builtins.len = None")
    assert not result.ok  # the worker's own code failed; check() saw a fresh worker answer
    assert sb.run("len([1, 2])").value == "2"


def test_patching_path_helpers_does_not_fool_the_guard(check, secret: Path) -> None:
    code = ("import os, posixpath, sys\n"
            "posixpath.realpath = os.path.realpath = lambda p, **k: '/tmp/ok'\n"
            "posixpath._joinrealpath = lambda *a: ('/tmp/ok', True)\n"
            "g = sys._getframe(0).f_back\n"
            f"open({str(secret)!r}).read()")
    assert refused(check(code))


def test_patching_pathlib_to_swap_paths_is_refused(check, secret: Path) -> None:
    code = ("import pathlib\n"
            f"pathlib.PurePath.__fspath__ = lambda self: {str(secret)!r}\n"
            "open(pathlib.Path('harmless.txt')).read()")
    assert refused(check(code))


# -- the operating-system layers alone (no audit hook) --------------------------------------------
@pytest.fixture(scope="module")
def bare(secret: Path) -> Iterator[PythonSandbox]:
    box = PythonSandbox(CodePolicy(memory_mb=512, wall_s=10), audit_hook=False)
    box.run("1")
    yield box
    box.close()


def test_without_the_hook_landlock_still_hides_the_secret(bare: PythonSandbox,
                                                          secret: Path) -> None:
    if not str(bare.protections.get("landlock", "")).startswith("abi"):
        pytest.skip("Landlock is not available here")
    for path in (str(secret), "/proc/self/root" + str(secret)):
        result = bare.run(f"open({path!r}).read()")
        assert "PermissionError" in (result.error or "") and SECRET_TEXT not in result.to_text()
    result = bare.run("import os\nopen(f'/proc/{os.getppid()}/environ', 'rb').read()")
    assert "PermissionError" in (result.error or "") and FAKE_KEY not in result.to_text()
    result = bare.run(f"open({str(secret.parent / 'x.txt')!r}, 'w')")
    assert "PermissionError" in (result.error or "")
    assert not (secret.parent / "x.txt").exists()


def test_without_the_hook_seccomp_still_stops_programs(bare: PythonSandbox) -> None:
    if not str(bare.protections.get("seccomp", "")).startswith("exec"):
        pytest.skip("seccomp is not available here")
    result = bare.run("import subprocess\nsubprocess.run(['touch', 'marker'])")
    assert "PermissionError" in (result.error or "")
    assert not (bare.workdir / "marker").exists()
    result = bare.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert "PermissionError" in (result.error or "")


def test_without_the_hook_host_unix_sockets_are_unreachable(bare: PythonSandbox,
                                                             unix_server: Loopback) -> None:
    if "no sockets" not in str(bare.protections.get("seccomp", "")):
        pytest.skip("seccomp is not available here")
    path = unix_server.sock.getsockname()
    result = bare.run(f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({path!r})")
    assert "PermissionError" in (result.error or "")
    assert unix_server.connections == 0


def test_without_the_hook_hard_limits_cannot_be_raised(bare: PythonSandbox) -> None:
    if os.getuid() == 0 and bare.protections.get("netns") != "userns+netns":
        pytest.skip("a root worker outside a user namespace keeps CAP_SYS_RESOURCE")
    result = bare.run("import resource\nresource.setrlimit(resource.RLIMIT_AS, "
                      "(resource.RLIM_INFINITY, resource.RLIM_INFINITY))")
    assert "not allowed to raise maximum limit" in (result.error or "")


def test_without_the_hook_the_network_is_unreachable(bare: PythonSandbox,
                                                     server: Loopback) -> None:
    if "netns" not in str(bare.protections.get("netns", "")):
        pytest.skip("network namespaces are not available here")
    result = bare.run(f"import socket\nsocket.create_connection(('127.0.0.1', {server.port}), 2)")
    assert not result.ok and "Error" in (result.error or "")
    assert server.connections == 0


# -- what outlives a call, and how much disk it takes (issue 10, finding 11) ----------------------
@pytest.fixture
def lab(tmp_path: Path) -> Iterator[al.Lab]:
    with al.Lab(home=tmp_path / "home") as the_lab:
        yield the_lab


def _grows(path: Path, wait_s: float = 1.0) -> bool:
    before = path.stat().st_size if path.exists() else 0
    time.sleep(wait_s)
    return (path.stat().st_size if path.exists() else 0) > before


@pytest.mark.parametrize("start", [
    "threading.Thread(target=beat, daemon=True).start()",
    "_thread.start_new_thread(beat, ())",  # below the threading module: not in enumerate()
])
def test_a_thread_left_running_does_not_outlive_its_call(lab: al.Lab, start: str) -> None:
    code = ("import threading, _thread, time\n"
            "def beat():\n"
            "    while True:\n"
            "        with open('beat.txt', 'a') as f:\n"
            "            f.write('.')\n"
            "        time.sleep(0.02)\n"
            f"{start}\n"
            "secret_state = 1\n")
    result = lab.tools.invoke("run_python", {"code": code})
    beat = lab.tools.sandbox.workdir / "beat.txt"
    assert not _grows(beat), "the thread kept running after the call returned"
    assert result.ok, result.content
    assert "thread(s) the code started were still running" in result.content
    assert "join" in result.content.lower()
    after = lab.tools.invoke("run_python", {"code": "'secret_state' in globals()"})
    assert "[value]\nFalse" in after.content and "fresh worker" in after.content


def test_six_95_mb_files_stop_at_the_sandbox_disk_quota(lab: al.Lab) -> None:
    """The finding: a 100 MB cap per file, but nothing on their sum (six were written)."""
    code = ("data = b'0' * 95 * 1024 * 1024\n"
            "for i in range(6):\n"
            "    with open(f'f{i}.bin', 'wb') as f:\n"
            "        f.write(data)\n")
    result = lab.tools.invoke("run_python", {"code": code})
    assert not result.ok and result.rule == "code.disk_quota", result.content[-500:]
    assert "CodePolicy.max_disk_mb" in result.content and "os.remove" in result.content
    workdir = lab.tools.sandbox.workdir
    held = sum(p.stat().st_size for p in workdir.rglob("*") if p.is_file())
    assert held == 0, f"{held} bytes of the refused call's files are left"
    assert "[value]\n2" in lab.tools.invoke("run_python", {"code": "1 + 1"}).content


def test_deleted_files_held_open_count_towards_the_quota(lab: al.Lab) -> None:
    """Unlinked files take disk until closed; a folder walk alone would never see them."""
    code = ("import os, time\nheld = []\n"
            "for i in range(4):\n"
            "    f = open(f'g{i}.bin', 'wb')\n"
            "    f.write(b'1' * 90 * 1024 * 1024)\n"
            "    f.flush()\n"
            "    os.remove(f'g{i}.bin')\n"
            "    held.append(f)\n"
            "time.sleep(1)\n")
    result = lab.tools.invoke("run_python", {"code": code})
    assert not result.ok and result.rule == "code.disk_quota", result.content[-500:]
