"""The process that runs sandboxed code; started by ``PythonSandbox``, never imported by it.

Run as ``python -I -B _sandbox_worker.py '<config json>'`` (by path, so the child never
imports ``aillm_lab``). Standard library only. Before the first line of user code it:

1. moves the request/response pipes to private descriptors and points fds 0/1 elsewhere,
2. sets the resource limits (address space, CPU, open files, processes, file size, core 0),
3. enters a new network namespace, inside a new user namespace when it can (even as root:
   capabilities then only hold inside it), else a plain one,
4. applies Landlock (Linux >= 5.13): read-only on the interpreter's standard library and
   site-packages (``_python_roots``: not every ``sys.path`` entry) and system libraries,
   read-write on the sandbox folders, nothing else; no TCP; no signals to outside processes,
5. applies a seccomp filter: no exec, no fork (threads are fine), no ptrace, no signals to
   other pids, no namespace or mount changes,
6. installs an audit hook that refuses the same things with readable messages.

After each call it waits briefly for the Python threads the code started and reports those
still running (``threads_left``), so the parent can stop the worker: nothing the model
wrote keeps running between calls.

Steps 2-5 live in ``_sandbox_confine.py``, step 6 in ``_sandbox_hook.py``. Each step the
platform cannot do is reported in the ``ready`` message, so the parent can say exactly
which protections a session got.
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
import resource
import signal
import struct
import sys
import time
import traceback
import types
from typing import Any

_VALUE_CHARS = 10_000
_MAX_FIGURES = 20
_THREAD_GRACE_S = 1.0  # how long a call's own threads get to finish after its code did
_HERE = os.path.dirname(os.path.abspath(__file__))
_HIDDEN = (__file__, os.path.join(_HERE, "_sandbox_worker.py"),
           os.path.join(_HERE, "_sandbox_hook.py"))  # frames kept out of tracebacks


class SandboxRefused(PermissionError):
    """Raised inside the sandbox when the audit hook refuses an operation."""


# -- startup ------------------------------------------------------------------------------
def main() -> None:
    cfg = json.loads(sys.argv[1])
    cfg["read_roots"] = cfg["read_roots"] + _python_roots()
    _prune_sys_path(cfg["read_roots"])
    rx, tx = _private_pipes()
    confine, hooks = _load_sibling("_sandbox_confine"), _load_sibling("_sandbox_hook")
    protections: dict[str, Any] = {"rlimits": confine.set_limits(cfg["limits"])}
    if not cfg["network"]:
        protections["netns"] = confine.enter_netns()
    protections["landlock"] = confine.landlock(cfg, _load_sibling("_landlock"))
    protections["seccomp"] = confine.seccomp(cfg["network"])
    os.chdir(cfg["workdir"])
    refused: list[str] = []
    if cfg.get("audit_hook", True):
        sys.addaudithook(hooks.make_hook(cfg, refused, SandboxRefused))
    protections["audit_hook"] = bool(cfg.get("audit_hook", True))
    _send(tx, {"op": "ready", "pid": os.getpid(), "protections": protections})
    _serve(rx, tx, cfg, refused, _thread_counter())


def _load_sibling(name: str) -> Any:
    """A sibling module, by path: ``-I`` keeps this folder off ``sys.path``."""
    path = os.path.join(_HERE, name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _python_roots() -> list[str]:
    """The folders the sandbox may read Python from: this interpreter's standard library
    (with lib-dynload) and the environment's site-packages, never other ``sys.path`` entries.

    A path-style ``.pth`` (hatchling, poetry, pdm, uv, setuptools' src layout) puts an
    editable project's source folder on ``sys.path``, with its ``.env`` beside it; the
    cwd or a PYTHONPATH entry would be as bad. So roots come from ``sysconfig`` and
    ``site``, not from ``sys.path``: a package installed editable this way does not import
    in the sandbox. That is intended: the sandbox runs model code, and the user's project
    is outside the sandbox's folder. Packages in site-packages (numpy, pandas, ...) import.
    """
    import site
    import sysconfig

    paths = sysconfig.get_paths()
    roots = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots.append(sysconfig.get_config_var("DESTSHARED"))  # lib-dynload
    roots += site.getsitepackages()
    return sorted({os.path.realpath(p) for p in roots if p and os.path.isdir(p)})


def _prune_sys_path(roots: list[str]) -> None:
    """Drop ``sys.path`` entries outside ``roots``: imports then skip them instead of each
    miss being a refused directory listing."""
    real = [os.path.realpath(r) for r in roots]

    def readable(entry: str) -> bool:
        full = os.path.realpath(entry)
        return any(full == r or full.startswith(r.rstrip("/") + "/") for r in real)

    sys.path[:] = [p for p in sys.path if os.path.isabs(p) and readable(p)]
    for key in [k for k in sys.path_importer_cache if not readable(k)]:
        del sys.path_importer_cache[key]


def _private_pipes() -> tuple[int, int]:
    """Keep the protocol off fds 0/1, so stray C-level writes cannot corrupt a frame."""
    rx, tx = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(2, 1)  # C-level prints land in the parent's diagnostics pipe
    os.close(null)
    return rx, tx


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
                [f for f in item.stack if f.filename not in _HIDDEN])
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
