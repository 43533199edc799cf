"""The process that runs sandboxed code; started by ``PythonSandbox``, never imported by it.

Run as ``python -I -B _sandbox_worker.py '<config json>'`` (by path, so the child never
imports ``aillm_lab``). Standard library only. Before the first line of user code it:

1. moves the request/response pipes to private descriptors and points fds 0/1 elsewhere,
2. sets the resource limits (address space, CPU, open files, processes, file size, core 0),
3. enters a new network namespace, inside a new user namespace when it can (even as root:
   capabilities then only hold inside it), else a plain one,
4. applies Landlock (Linux >= 5.13): read-only on the interpreter and system libraries,
   read-write on the sandbox folders, nothing else; no TCP; no signals to outside processes,
5. applies a seccomp filter: no exec, no fork (threads are fine), no ptrace, no signals to
   other pids, no namespace or mount changes,
6. installs an audit hook that refuses the same things with readable messages.

After each call it waits briefly for the Python threads the code started and reports those
still running (``threads_left``), so the parent can stop the worker: nothing the model
wrote keeps running between calls.

Steps 2-5 live in ``_sandbox_confine.py``. Each step the platform cannot do is reported in
the ``ready`` message, so the parent can say exactly which protections a session got.
Frames are a 4-byte big-endian length followed by UTF-8 JSON.
"""

from __future__ import annotations

import _thread
import ast
import base64
import importlib.util
import io
import json
import linecache
import os
import pathlib
import resource
import signal
import stat as statmod
import struct
import sys
import time
import traceback
import types
from typing import Any

_VALUE_CHARS = 10_000
_MAX_FIGURES = 20
_THREAD_GRACE_S = 1.0  # how long a call's own threads get to finish after its code did


class SandboxRefused(PermissionError):
    """Raised inside the sandbox when the audit hook refuses an operation."""


# -- startup ------------------------------------------------------------------------------
def main() -> None:
    cfg = json.loads(sys.argv[1])
    cfg["read_roots"] = cfg["read_roots"] + _python_roots()
    rx, tx = _private_pipes()
    confine = _load_confine()
    protections: dict[str, Any] = {"rlimits": confine.set_limits(cfg["limits"])}
    if not cfg["network"]:
        protections["netns"] = confine.enter_netns()
    protections["landlock"] = confine.landlock(cfg)
    protections["seccomp"] = confine.seccomp(cfg["network"])
    os.chdir(cfg["workdir"])
    refused: list[str] = []
    if cfg.get("audit_hook", True):
        sys.addaudithook(_make_hook(cfg, refused))
    protections["audit_hook"] = bool(cfg.get("audit_hook", True))
    _send(tx, {"op": "ready", "pid": os.getpid(), "protections": protections})
    _serve(rx, tx, cfg, refused, _thread_counter())


def _load_confine() -> Any:
    """The sibling module, by path: ``-I`` keeps this folder off ``sys.path``."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_sandbox_confine.py")
    spec = importlib.util.spec_from_file_location("_sandbox_confine", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_roots() -> list[str]:
    """This interpreter's own folders (stdlib, lib-dynload, site-packages), read-only."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(p for p in sys.path if os.path.isabs(p) and os.path.isdir(p))
    return sorted(os.path.realpath(p) for p in roots)


def _private_pipes() -> tuple[int, int]:
    """Keep the protocol off fds 0/1, so stray C-level writes cannot corrupt a frame."""
    rx, tx = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # C-level prints land in the parent's diagnostics pipe
    os.close(null)
    return rx, tx


# -- the audit hook -----------------------------------------------------------------------
_DENY = {
    "os.system": "starting programs", "os.exec": "starting programs",
    "os.posix_spawn": "starting programs", "os.spawn": "starting programs",
    "os.fork": "creating processes", "os.forkpty": "creating processes",
    "subprocess.Popen": "starting programs", "pty.spawn": "starting programs",
    "os.startfile": "starting programs", "webbrowser.open": "opening a browser",
    "sys.addaudithook": "changing the audit hooks", "resource.prlimit": "changing limits",
    "gc.get_objects": "walking the heap",
    "gc.get_referrers": "walking the heap", "gc.get_referents": "walking the heap",
    "os.symlink": "creating links", "os.link": "creating links",
    "sqlite3.enable_load_extension": "loading native code",
    "sqlite3.load_extension": "loading native code",
}
_NET_EVENTS = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
               "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
               "socket.getnameinfo", "urllib.Request", "http.client.connect", "ftplib.connect",
               "smtplib.connect", "imaplib.open", "poplib.connect", "nntplib.connect",
               "telnetlib.Telnet.open")
# event -> (path index, dir_fd index or -1) for each path it writes
_WRITES: dict[str, tuple[tuple[int, int], ...]] = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),),
    "os.truncate": ((0, -1),), "os.rename": ((0, 2), (1, 3)), "shutil.rmtree": ((0, 1),),
    "os.chflags": ((0, -1),), "os.setxattr": ((0, -1),), "os.removexattr": ((0, -1),)}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _make_hook(cfg: dict[str, Any], refused: list[str]) -> Any:
    """Build the hook; every rule and helper it uses is bound now, not looked up later.

    User code can reach this module's globals and ``builtins`` through frames, so the hook
    reads neither: its helpers are closures and its data are tuples.
    """
    read = tuple(os.path.realpath(p) for p in cfg["read_roots"] + cfg["write_roots"])
    write = tuple(os.path.realpath(p) for p in cfg["write_roots"])
    path_types = (pathlib.PurePath, pathlib.PurePosixPath, pathlib.Path, pathlib.PosixPath)
    deny, writes = tuple(_DENY.items()), tuple(_WRITES.items())
    net_events = None if cfg["network"] else _NET_EVENTS
    me, wflags = os.getpid(), _WRITE_FLAGS
    # C functions only: pure-Python helpers (posixpath, os.fsdecode) read module globals
    # that user code could replace between two calls of the hook
    fspath, lstat, stat, getcwd, readlink = os.fspath, os.lstat, os.stat, os.getcwd, os.readlink
    islnk, isdir_mode = statmod.S_ISLNK, statmod.S_ISDIR
    fs_encoding = sys.getfilesystemencoding()
    isinstance_, any_, str_, int_, bool_, bytes_ = isinstance, any, str, int, bool, bytes
    refuse_ = SandboxRefused
    getrusage, getrlimit = resource.getrusage, resource.getrlimit
    rusage_self, rlimit_cpu = resource.RUSAGE_SELF, resource.RLIMIT_CPU
    cpu_s = cfg["limits"]["cpu_s"]

    def text(path: Any) -> str:
        p = fspath(path)
        return p.decode(fs_encoding, "surrogateescape") if isinstance_(p, bytes_) else p

    def realpath(p: str) -> str:
        """Absolute, with '..' and every symlink resolved, like os.path.realpath."""
        pending = (p if p.startswith("/") else getcwd() + "/" + p).split("/")[::-1]
        out: list[str] = []
        hops = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if out:
                    out.pop()
                continue
            candidate = "/" + "/".join(out + [part])
            try:
                mode = lstat(candidate).st_mode
            except OSError:
                out.append(part)
                continue
            if not islnk(mode):
                out.append(part)
                continue
            hops += 1
            if hops > 40:
                raise ValueError("too many symbolic links")
            link = readlink(candidate)
            if link.startswith("/"):
                out = []
            pending.extend(link.split("/")[::-1])
        return "/" + "/".join(out)

    def isdir(p: str) -> bool:
        try:
            return isdir_mode(stat(p).st_mode)
        except OSError:
            return False

    def target(path: Any, dir_fd: Any = None) -> str | None:
        """The real path an operation touches, following fds through /proc/self/fd."""
        try:
            if isinstance_(path, int_) and not isinstance_(path, bool_):
                return readlink(f"/proc/self/fd/{path}")
            p = text(path)
            if isinstance_(dir_fd, int_) and dir_fd >= 0 and not p.startswith("/"):
                p = readlink(f"/proc/self/fd/{dir_fd}") + "/" + p
            return realpath(p)
        except (OSError, TypeError, ValueError):
            return None

    def inside(full: str | None, roots: tuple[str, ...]) -> bool:
        return full is not None and any_(full == r or full.startswith(r.rstrip("/") + "/")
                                         for r in roots)

    def where(full: str | None, writing: bool) -> tuple[str, str]:
        what = "write" if writing else "read"
        allowed = "the sandbox folder" if writing else "the sandbox folder or Python's libs"
        return "code.path", f"{what} access to {full!r} is outside {allowed}; use relative paths"

    def check_open(args: tuple[Any, ...]) -> tuple[str, str]:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        if path is None or (isinstance_(path, int_) and mode is not None):
            return "", ""  # io.open of an fd that is already open
        writing = isinstance_(flags, int_) and bool_(flags & wflags)
        if isinstance_(mode, str_):
            writing = writing or any_(c in mode for c in "wax+")
        full = target(path)
        if mode is None:  # os.open: its dir_fd is not in the event, so no '..' and no dir fds
            raw = text(path) if not isinstance_(path, int_) else ""
            if ".." in raw.split("/"):
                return "code.path", "os.open paths may not contain '..'"
            if full is not None and not inside(full, write) and isdir(full):
                return "code.path", "directory descriptors are only allowed inside the sandbox"
        return ("", "") if inside(full, write if writing else read) else where(full, writing)

    def check_writes(spec: tuple[tuple[int, int], ...], args: tuple[Any, ...]) -> tuple[str, str]:
        for i, fd_i in spec:
            if i >= len(args):
                continue
            full = target(args[i], args[fd_i] if 0 <= fd_i < len(args) else None)
            if not inside(full, write):
                return where(full, True)
        return "", ""

    def cpu_rearm(args: tuple[Any, ...]) -> bool:
        """The worker re-arms RLIMIT_CPU per call; nobody may set it further than that."""
        try:
            res, (soft, hard) = args
            usage = getrusage(rusage_self)
            return bool_(res == rlimit_cpu and hard == getrlimit(rlimit_cpu)[1]
                         and 0 <= soft <= usage.ru_utime + usage.ru_stime + cpu_s + 2)
        except (TypeError, ValueError):
            return False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        rule = detail = ""
        if event == "open":
            rule, detail = check_open(args)
        elif event.startswith("ctypes."):
            rule, detail = "code.native", "ctypes (native code and raw memory) is not allowed"
        elif net_events is not None and (event in net_events or (
                event == "socket.__new__" and len(args) > 1 and args[1] != 1)):
            rule, detail = "code.network", "the sandbox has no network; work with local data"
        elif event in ("os.kill", "os.killpg") and args and args[0] not in (me, 0, -me):
            rule, detail = "code.signal", "signals may only go to the sandbox's own process"
        elif event in ("os.listdir", "os.scandir", "os.chdir") and args and args[0] is not None:
            full = target(args[0])
            if not inside(full, read):
                rule, detail = where(full, False)
        elif event == "sqlite3.connect" and args and args[0] not in (":memory:", b":memory:", ""):
            full = target(args[0])
            if not inside(full, write):
                rule, detail = where(full, True)
        elif event == "resource.setrlimit" and not cpu_rearm(args):
            rule, detail = "code.not_allowed", "changing limits is not allowed in the sandbox"
        elif event == "object.__setattr__" and args and args[0] in path_types:
            rule, detail = "code.tamper", "patching pathlib's classes is not allowed"
        else:
            for name, spec in writes:
                if event == name:
                    rule, detail = check_writes(spec, args)
                    break
            for name, what in deny:
                if event == name:
                    rule, detail = "code.not_allowed", f"{what} is not allowed in the sandbox"
                    break
        if rule:
            refused.append(f"{rule} ({event})")
            raise refuse_(f"sandbox refused {event}: {detail} ({rule})")

    return hook


def _thread_counter() -> tuple[Any, Any]:
    """``(tasks, settle)``: ``settle(grace, before)`` waits up to ``grace`` s for the threads
    a call started to end and returns how many Python threads besides this one still run;
    ``before`` is ``tasks()`` taken when the call began.

    Python threads are counted by their frames, so DuckDB's or BLAS's idle native pools do
    not count. A thread from ``_thread.start_new_thread`` has no frame until it first runs,
    so while OS threads the call created are alive (``/proc/self/task``) the wait goes on
    for the whole grace, long enough for such a thread to show up. Built before user code,
    from C functions bound now (like the hook), so replacing ``threading`` or this module's
    globals does not change the count.
    """
    frames, me, monotonic, sleep = sys._current_frames, _thread.get_ident(), time.monotonic, \
        time.sleep
    listdir, len_, frozenset_, oserror = os.listdir, len, frozenset, OSError

    def tasks() -> frozenset[str]:
        try:
            return frozenset_(listdir("/proc/self/task"))
        except oserror:  # no /proc (macOS): frames alone
            return frozenset_()

    def settle(grace: float, before: frozenset[str]) -> int:
        deadline = monotonic() + grace
        while True:
            others = len_(frames().keys() - {me})
            if (others == 0 and not tasks() - before) or monotonic() >= deadline:
                return others
            sleep(0.01)  # lets them run (and finish) without the GIL held here

    return tasks, settle


# -- the request loop ---------------------------------------------------------------------
def _serve(rx: int, tx: int, cfg: dict[str, Any], refused: list[str],
           threads: tuple[Any, Any]) -> None:
    main_module = types.ModuleType("__main__")  # REPL semantics: pickle, dataclasses work
    sys.modules["__main__"] = main_module
    user_globals = main_module.__dict__
    counter = 0
    while True:
        req = _recv(rx)
        if req is None or req.get("op") == "exit":
            return
        counter += 1
        del refused[:]
        _arm_cpu(cfg["limits"]["cpu_s"])
        reply = _run(req["code"], user_globals, counter, int(req["max_output"]), threads)
        reply["refused"] = list(refused)
        _send(tx, reply)


def _arm_cpu(cpu_s: int) -> None:
    """RLIMIT_CPU counts the worker's whole life; give each call its own budget."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = int(usage.ru_utime + usage.ru_stime) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    soft = used + cpu_s
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


class _Capped(io.TextIOBase):
    """A text stream that keeps the first ``limit`` bytes and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit, self.parts, self.kept, self.dropped = limit, [], 0, 0

    def write(self, s: str) -> int:
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        data = s.encode("utf-8", "replace")
        room = self.limit - self.kept
        if room > 0:
            self.parts.append(data[:room])
            self.kept += min(room, len(data))
        self.dropped += max(0, len(data) - max(room, 0))
        return len(s)

    def writable(self) -> bool:
        return True

    def text(self) -> str:
        return b"".join(self.parts).decode("utf-8", "replace")


def _run(code: str, g: dict[str, Any], n: int, max_output: int,
         threads: tuple[Any, Any]) -> dict[str, Any]:
    out, err = _Capped(max_output), _Capped(max_output)
    reply: dict[str, Any] = {"op": "result", "value": None, "error": None,
                             "memory_error": False}
    filename = f"<cell {n}>"
    tasks, settle = threads
    tasks_before = tasks()
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    old = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    start = time.perf_counter()
    try:
        body, last = _compile(code, filename)
        exec(body, g)
        if last is not None:
            value = eval(last, g)
            if value is not None:
                g["_"] = value
                reply["value"] = _repr(value)
    except BaseException as exc:  # the user's error is the result, whatever it is
        reply["memory_error"] = isinstance(exc, MemoryError)
        reply["error"] = _format_error(exc)
    finally:
        reply["threads_left"] = settle(_THREAD_GRACE_S, tasks_before)  # prints still caught
        sys.stdout, sys.stderr = old
    reply["duration_s"] = time.perf_counter() - start
    reply["figures"] = _figures()
    reply.update(stdout=out.text(), stdout_dropped=out.dropped, stderr=err.text(),
                 stderr_dropped=err.dropped)
    return reply


def _compile(code: str, filename: str) -> tuple[Any, Any]:
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = ast.Expression(tree.body.pop().value)
        last = compile(expr, filename, "eval")
    return compile(tree, filename, "exec"), last


def _repr(value: Any) -> str:
    try:
        text = repr(value)
    except BaseException as exc:  # a broken __repr__ must not kill the call
        text = f"<repr failed: {type(exc).__name__}: {exc}>"
    if len(text) > _VALUE_CHARS:
        text = text[:_VALUE_CHARS] + f"... [{len(text) - _VALUE_CHARS} more characters]"
    return text


def _format_error(exc: BaseException) -> str:
    """The user's traceback without the worker's frames (whose source is out of reach)."""
    try:
        te = traceback.TracebackException(type(exc), exc, exc.__traceback__,
                                          lookup_lines=False, capture_locals=False)
        seen: set[int] = set()
        chain: list[traceback.TracebackException] = [te]
        while chain:
            item = chain.pop()
            if id(item) in seen:
                continue
            seen.add(id(item))
            item.stack = traceback.StackSummary.from_list(
                [f for f in item.stack if f.filename != __file__])
            chain += [c for c in (item.__cause__, item.__context__) if c is not None]
        return "".join(te.format())
    except BaseException:
        return f"{type(exc).__name__}: <the error could not be formatted>"


def _figures() -> list[str]:
    """Open matplotlib figures as base64 PNGs, then close them (only if pyplot was used)."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    pngs: list[str] = []
    try:
        for num in plt.get_fignums()[:_MAX_FIGURES]:
            buf = io.BytesIO()
            plt.figure(num).savefig(buf, format="png")
            pngs.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        plt.close("all")
    except Exception as exc:
        sys.stderr.write(f"[sandbox] saving figures failed: {exc!r}\n")
    return pngs


# -- framing ------------------------------------------------------------------------------
def _send(fd: int, msg: dict[str, Any]) -> None:
    data = json.dumps(msg, ensure_ascii=False, default=str).encode("utf-8", "replace")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd: int) -> dict[str, Any] | None:
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, struct.unpack(">I", head)[0])
    return None if body is None else json.loads(body)


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us with SIGKILL
    main()
