"""The sandbox worker's audit hook: the OS layers' rules again, as readable refusals.

Loaded by ``_sandbox_worker.py`` from its file (the worker never imports ``aillm_lab``).
Standard library only. It is defence in depth, not the boundary (Landlock and seccomp are).

Model code can reach the hook's frames: a refusal's ``__traceback__`` ends in the hook's
frame, and a path object's ``__fspath__`` runs inside the hook, where ``sys._getframe``
walks up through it. From a frame it sees every local, so the hook's rules must be values
nobody can change, not just values nobody is meant to change:

* no closures: a closure cell can be rebound through ``cell_contents``; every helper takes
  what it needs as a positional default, fixed when the function is made;
* no globals and no builtins: this module's dict and ``builtins`` can be edited through
  any frame's ``f_globals``; builtins it needs are defaults too;
* the defaults are tuples, strings, ints, C functions and the helpers themselves, and
  replacing a helper's ``__defaults__``, ``__kwdefaults__`` or ``__code__`` raises the
  ``object.__setattr__`` audit event, which the hook refuses for functions of this file;
* tracing cannot change the hook's locals: CPython runs audit hooks with tracing off, and
  the hook function itself is referenced by no frame (so no one sets its ``__cantrace__``).

``tests/tools/test_sandbox_hook_state.py`` checks the bytecode for closures and globals.
"""

from __future__ import annotations

import os
import pathlib
import resource
import stat as statmod
import sys
import types
from typing import Any

DENY = {
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
NET_EVENTS = ("socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
              "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
              "socket.getnameinfo", "urllib.Request", "http.client.connect", "ftplib.connect",
              "smtplib.connect", "imaplib.open", "poplib.connect", "nntplib.connect",
              "telnetlib.Telnet.open")
# event -> (path index, dir_fd index or -1) for each path it writes
WRITES: dict[str, tuple[tuple[int, int], ...]] = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.chmod": ((0, 2),), "os.chown": ((0, 3),), "os.utime": ((0, 3),),
    "os.truncate": ((0, -1),), "os.rename": ((0, 2), (1, 3)), "shutil.rmtree": ((0, 1),),
    "os.chflags": ((0, -1),), "os.setxattr": ((0, -1),), "os.removexattr": ((0, -1),)}
_DENY_ITEMS, _WRITES_ITEMS = tuple(DENY.items()), tuple(WRITES.items())
WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_RDWR | os.O_TRUNC | os.O_APPEND
# a function's attributes whose change would change what it does
_FUNCTION_STATE = ("__code__", "__defaults__", "__kwdefaults__")


def _real(paths: list[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(p) for p in paths)


def make_hook(cfg: dict[str, Any], refused: list[str], refuse: type[BaseException]) -> Any:
    """The audit hook for ``cfg``; it appends each refusal to ``refused`` and raises
    ``refuse`` (a ``PermissionError``) with a message the model can act on."""
    read, write = _real(cfg["read_roots"] + cfg["write_roots"]), _real(cfg["write_roots"])
    frozen_types = (pathlib.PurePath, pathlib.PurePosixPath, pathlib.Path, pathlib.PosixPath,
                    refuse)
    net_events = None if cfg["network"] else NET_EVENTS
    # C functions only: pure-Python helpers (posixpath, os.fsdecode) read module globals
    # that user code could replace between two calls of the hook
    fspath, lstat, stat, getcwd, readlink = os.fspath, os.lstat, os.stat, os.getcwd, os.readlink
    isinstance_, str_, int_, bool_, bytes_ = isinstance, str, int, bool, bytes
    len_, type_, errors = len, type, (OSError, TypeError, ValueError, AttributeError)

    def text(path: Any, fspath: Any = fspath, enc: str = sys.getfilesystemencoding(),
             isinstance_: Any = isinstance_, bytes_: Any = bytes_) -> str:
        p = fspath(path)
        return p.decode(enc, "surrogateescape") if isinstance_(p, bytes_) else p

    def realpath(p: str, getcwd: Any = getcwd, lstat: Any = lstat, readlink: Any = readlink,
                 islnk: Any = statmod.S_ISLNK, oserror: Any = OSError,
                 valueerror: Any = ValueError) -> str:
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
            except oserror:
                out.append(part)
                continue
            if not islnk(mode):
                out.append(part)
                continue
            hops += 1
            if hops > 40:
                raise valueerror("too many symbolic links")
            link = readlink(candidate)
            if link.startswith("/"):
                out = []
            pending.extend(link.split("/")[::-1])
        return "/" + "/".join(out)

    def isdir(p: str, stat: Any = stat, isdir_mode: Any = statmod.S_ISDIR,
              oserror: Any = OSError) -> bool:
        try:
            return isdir_mode(stat(p).st_mode)
        except oserror:
            return False

    def target(path: Any, dir_fd: Any = None, text: Any = text, realpath: Any = realpath,
               readlink: Any = readlink, isinstance_: Any = isinstance_, int_: Any = int_,
               bool_: Any = bool_, errors: Any = errors) -> str | None:
        """The real path an operation touches, following fds through /proc/self/fd."""
        try:
            if isinstance_(path, int_) and not isinstance_(path, bool_):
                return readlink(f"/proc/self/fd/{path}")
            p = text(path)
            if isinstance_(dir_fd, int_) and dir_fd >= 0 and not p.startswith("/"):
                p = readlink(f"/proc/self/fd/{dir_fd}") + "/" + p
            return realpath(p)
        except errors:
            return None

    def inside(full: str | None, roots: tuple[str, ...]) -> bool:
        if full is None:
            return False
        for r in roots:
            if full == r or full.startswith(r.rstrip("/") + "/"):
                return True
        return False

    def where(full: str | None, writing: bool) -> tuple[str, str]:
        what = "write" if writing else "read"
        allowed = "the sandbox folder" if writing else "the sandbox folder or Python's libs"
        return "code.path", f"{what} access to {full!r} is outside {allowed}; use relative paths"

    def check_open(args: tuple[Any, ...], read: tuple[str, ...] = read,
                   write: tuple[str, ...] = write, wflags: int = WRITE_FLAGS,
                   target: Any = target, inside: Any = inside, where: Any = where,
                   isdir: Any = isdir, text: Any = text, isinstance_: Any = isinstance_,
                   int_: Any = int_, str_: Any = str_, bool_: Any = bool_,
                   tuple_: Any = tuple) -> tuple[str, str]:
        path, mode, flags = (tuple_(args) + (None, None, None))[:3]
        if path is None or (isinstance_(path, int_) and mode is not None):
            return "", ""  # io.open of an fd that is already open
        writing = isinstance_(flags, int_) and bool_(flags & wflags)
        if isinstance_(mode, str_):
            for c in "wax+":
                writing = writing or c in mode
        full = target(path)
        if mode is None:  # os.open: its dir_fd is not in the event, so no '..' and no dir fds
            raw = text(path) if not isinstance_(path, int_) else ""
            if ".." in raw.split("/"):
                return "code.path", "os.open paths may not contain '..'"
            if full is not None and not inside(full, write) and isdir(full):
                return "code.path", "directory descriptors are only allowed inside the sandbox"
        return ("", "") if inside(full, write if writing else read) else where(full, writing)

    def check_writes(spec: tuple[tuple[int, int], ...], args: tuple[Any, ...],
                     write: tuple[str, ...] = write, target: Any = target,
                     inside: Any = inside, where: Any = where,
                     len_: Any = len_) -> tuple[str, str]:
        for i, fd_i in spec:
            if i >= len_(args):
                continue
            full = target(args[i], args[fd_i] if 0 <= fd_i < len_(args) else None)
            if not inside(full, write):
                return where(full, True)
        return "", ""

    def cpu_rearm(args: tuple[Any, ...], getrusage: Any = resource.getrusage,
                  getrlimit: Any = resource.getrlimit, rusage_self: int = resource.RUSAGE_SELF,
                  rlimit_cpu: int = resource.RLIMIT_CPU, cpu_s: int = cfg["limits"]["cpu_s"],
                  bool_: Any = bool_, errors: Any = errors) -> bool:
        """The worker re-arms RLIMIT_CPU per call; nobody may set it further than that."""
        try:
            res, (soft, hard) = args
            usage = getrusage(rusage_self)
            return bool_(res == rlimit_cpu and hard == getrlimit(rlimit_cpu)[1]
                         and 0 <= soft <= usage.ru_utime + usage.ru_stime + cpu_s + 2)
        except errors:
            return False

    def tamper(args: tuple[Any, ...], frozen_types: tuple[type, ...] = frozen_types,
               own_file: str = __file__, function_state: tuple[str, ...] = _FUNCTION_STATE,
               function: type = types.FunctionType, type_: Any = type_,
               len_: Any = len_) -> bool:
        """``object.__setattr__``: patching pathlib, the refusal, or this file's functions."""
        if len_(args) < 2:
            return False
        obj, name = args[0], args[1]
        for t in frozen_types:
            if obj is t:
                return True
        return type_(obj) is function and name in function_state and \
            obj.__code__.co_filename == own_file

    def hook(event: str, args: tuple[Any, ...], read: tuple[str, ...] = read,
             write: tuple[str, ...] = write, deny: Any = _DENY_ITEMS,
             writes: Any = _WRITES_ITEMS, net_events: Any = net_events,
             me: int = os.getpid(), refused: list[str] = refused, refuse_: Any = refuse,
             check_open: Any = check_open, check_writes: Any = check_writes,
             cpu_rearm: Any = cpu_rearm, tamper: Any = tamper, target: Any = target,
             inside: Any = inside, where: Any = where, len_: Any = len_) -> None:
        rule = detail = ""
        if event == "open":
            rule, detail = check_open(args)
        elif event.startswith("ctypes."):
            rule, detail = "code.native", "ctypes (native code and raw memory) is not allowed"
        elif net_events is not None and (event in net_events or (
                event == "socket.__new__" and len_(args) > 1 and args[1] != 1)):
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
        elif event == "object.__setattr__" and tamper(args):
            rule, detail = "code.tamper", "patching pathlib or the sandbox's own code " \
                                          "is not allowed"
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
