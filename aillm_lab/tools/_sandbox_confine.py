"""OS confinement the sandbox worker applies to itself before any user code runs.

Loaded by ``_sandbox_worker.py`` from its file (the worker never imports ``aillm_lab``).
Each function returns a short description of what it achieved, or why it could not, so
``PythonSandbox.protections`` can tell the user exactly what a session got. Linux only
except ``set_limits``; elsewhere each says "unsupported on this platform".
"""

from __future__ import annotations

import ctypes
import os
import resource
import struct
import sys
from typing import Any

_MiB = 1024 * 1024


def set_limits(limits: dict[str, int]) -> dict[str, Any]:
    """Soft and hard limits on this process; lowered hard limits cannot be raised again.

    RLIMIT_NPROC counts every task (process or thread) of the real uid, not ours alone, so
    it is set to the tasks the uid has now plus ``max_processes``: a plain number would
    starve a user who already runs more (a desktop often does) and mean nothing to others.
    """
    applied: dict[str, Any] = {}
    base = _user_tasks()
    table = {"RLIMIT_AS": limits["memory_mb"] * _MiB, "RLIMIT_CPU": limits["cpu_s"],
             "RLIMIT_NOFILE": limits["max_open_files"],
             "RLIMIT_NPROC": base + limits["max_processes"],
             "RLIMIT_FSIZE": limits["max_file_mb"] * _MiB, "RLIMIT_CORE": 0}
    for name, soft in table.items():
        res = getattr(resource, name, None)
        if res is None:
            applied[name] = "unsupported"
            continue
        _, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        # CPU: the soft limit is re-armed before each call, the hard one stays the backstop
        new = (soft, hard) if name == "RLIMIT_CPU" else (soft, soft)
        try:
            resource.setrlimit(res, new)
            applied[name] = soft
        except (ValueError, OSError) as exc:
            applied[name] = f"failed: {exc}"
    applied["nproc_user_tasks"] = base
    applied["nproc_exempt"] = os.getuid() == 0  # the kernel does not count root's tasks
    return applied


def _user_tasks() -> int:
    """Tasks (threads included) the real uid runs now, from /proc; 0 where there is none."""
    uid, total = str(os.getuid()), 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


_libc: Any = None


def _c() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def enter_netns() -> str:
    """A private network namespace has only a down loopback: no route anywhere.

    A new user namespace comes first even for root: capabilities then hold only inside it,
    so a root worker can no longer raise its hard limits or override file permissions.
    """
    if not sys.platform.startswith("linux"):
        return "unsupported on this platform"
    clone_newnet, clone_newuser = 0x40000000, 0x10000000
    if _c().unshare(clone_newuser | clone_newnet) == 0:
        return "userns+netns"
    if _c().unshare(clone_newnet) == 0:
        return "netns"
    return f"unavailable (errno {ctypes.get_errno()})"


# -- Landlock -----------------------------------------------------------------------------
_LL_READ = (1 << 2) | (1 << 3)  # READ_FILE | READ_DIR
_LL_FILE = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 14) | (1 << 15)  # rights a file rule may hold


def landlock(cfg: dict[str, Any], ll: Any) -> str:
    """Reads only under ``read_roots``, writes only under ``write_roots``, no TCP (unless
    ``network``), signals and abstract sockets kept inside; ``ll`` is ``_landlock.py``."""
    if not sys.platform.startswith("linux"):
        return "unsupported on this platform"
    abi = ll.abi()
    if abi < 1:
        return "unavailable (no Landlock in this kernel)"
    fs_all = (1 << 13) - 1 | (1 << 13 if abi >= 2 else 0) | (1 << 14 if abi >= 3 else 0) \
        | (1 << 15 if abi >= 5 else 0)
    net = 0 if cfg["network"] or abi < 4 else 0b11  # BIND_TCP | CONNECT_TCP: none allowed
    scoped = 0b11 if abi >= 6 else 0  # abstract unix sockets and signals stay inside
    try:
        fd = ll.create_ruleset(fs_all, net, scoped)
    except OSError as exc:
        return f"unavailable (errno {exc.errno})"
    try:
        # everything but exec, devices, sockets, fifos, symlinks and device ioctls
        write = fs_all & ~sum(1 << b for b in (0, 6, 9, 10, 11, 12, 15))
        rules = [(p, _LL_READ) for p in cfg["read_roots"]] + \
                [(p, write) for p in cfg["write_roots"]]
        for path, access in rules:
            if not os.path.isdir(path):
                access &= _LL_FILE
            try:
                ll.add_path(fd, path, access & fs_all)
            except OSError:
                pass  # a rule the kernel refuses allows nothing: less access, never more
        try:
            ll.restrict(fd)
        except OSError as exc:
            return f"failed: {exc}"
    finally:
        os.close(fd)
    return f"abi {abi}" + (", tcp denied" if net else "") + (", signals scoped" if scoped else "")


# -- seccomp ------------------------------------------------------------------------------
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": dict(
        arch=0xC000003E, execve=59, execveat=322, fork=57, vfork=58, clone=56, clone3=435,
        kill=62, tkill=200, tgkill=234, rt_sigqueueinfo=129, rt_tgsigqueueinfo=297,
        pidfd_send_signal=424, pidfd_open=434, ptrace=101, process_vm_readv=310,
        process_vm_writev=311, unshare=272, setns=308, mount=165, io_uring_setup=425, bpf=321,
        perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248, request_key=249,
        chown=92, fchown=93, lchown=94, fchownat=260, setxattr=188, lsetxattr=189,
        fsetxattr=190, removexattr=197, lremovexattr=198, fremovexattr=199, socket=41,
        connect=42),
    "aarch64": dict(
        arch=0xC00000B7, execve=221, execveat=281, clone=220, clone3=435, kill=129,
        tkill=130, tgkill=131, rt_sigqueueinfo=138, rt_tgsigqueueinfo=240,
        pidfd_send_signal=424, pidfd_open=434, ptrace=117, process_vm_readv=270,
        process_vm_writev=271, unshare=97, setns=268, mount=40, io_uring_setup=425, bpf=280,
        perf_event_open=241, userfaultfd=282, keyctl=219, add_key=217, request_key=218,
        fchown=55, fchownat=54, setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14,
        lremovexattr=15, fremovexattr=16, socket=198, connect=203),
}
# refused outright (EPERM): new programs and processes, other processes' memory, kernel
# attack surface no analysis needs, and ownership/xattr changes Landlock does not cover
_DENIED = ("execve", "execveat", "fork", "vfork", "tkill", "pidfd_send_signal", "pidfd_open",
           "ptrace", "process_vm_readv", "process_vm_writev", "unshare", "setns", "mount",
           "io_uring_setup", "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key",
           "request_key", "chown", "fchown", "lchown", "fchownat", "setxattr", "lsetxattr",
           "fsetxattr", "removexattr", "lremovexattr", "fremovexattr")
_CLONE_THREAD = 0x00010000
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL, _EPERM, _ENOSYS = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38


def seccomp(network: bool) -> str:
    """No programs, no processes (threads are fine), no signals or ptrace aimed outside.

    Without network, ``socket`` and ``connect`` are refused too: a network namespace does
    not cover Unix sockets on the file system (a Docker or X11 socket, say); ``socketpair``,
    which asyncio uses, still works.
    """
    nr = _SYSCALLS.get(os.uname().machine)
    if not sys.platform.startswith("linux") or nr is None:
        return "unsupported on this platform"
    pid = os.getpid()
    prog = [(_LD_ABS, 0, 0, 4), (_JEQ, 1, 0, nr["arch"]), (_RET, 0, 0, _KILL),
            (_LD_ABS, 0, 0, 0), (_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _KILL)]  # no x32 calls
    for name in _DENIED + (() if network else ("socket", "connect")):
        if name in nr:
            prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, _EPERM)]
    prog += [(_JEQ, 0, 1, nr["clone3"]), (_RET, 0, 0, _ENOSYS)]  # glibc falls back to clone
    # clone: threads only (the flags are in the low word of args[0], at offset 16)
    prog += [(_JEQ, 0, 4, nr["clone"]), (_LD_ABS, 0, 0, 16), (_JSET, 1, 0, _CLONE_THREAD),
             (_RET, 0, 0, _EPERM), (_RET, 0, 0, _ALLOW)]
    # kill & co: only this process, or its own group (this session holds nothing else)
    for name in ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo"):
        prog += [(_JEQ, 0, 6, nr[name]), (_LD_ABS, 0, 0, 16), (_JEQ, 3, 0, pid),
                 (_JEQ, 2, 0, 0), (_JEQ, 1, 0, (-pid) & 0xFFFFFFFF), (_RET, 0, 0, _EPERM),
                 (_RET, 0, 0, _ALLOW)]
    prog.append((_RET, 0, 0, _ALLOW))
    code = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    filt = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(filt))
    libc = _c()
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        return f"failed: no_new_privs errno {ctypes.get_errno()}"
    if libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
        return f"unavailable (errno {ctypes.get_errno()})"
    return "exec, fork, ptrace and outside signals denied" + ("" if network else
                                                              ", no sockets")
