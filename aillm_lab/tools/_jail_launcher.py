"""The process that starts confined programs for the Shell and Git tools; never imported.

Run as ``python -I -S -B _jail_launcher.py '<config json>' <socket fd>`` by ``tools/jail.py``.
Standard library only, and single-threaded, because ``unshare(CLONE_NEWUSER)`` refuses a
process with threads and ``fork`` is only safe without them.

Why a long-lived launcher: building a root file system costs tens of milliseconds, a
Python start alone ~30 ms. The launcher does it once, then each call is two forks and a
few mounts (a few ms):

* at start: new user, mount, network, IPC and UTS namespaces; a tmpfs root holding
  read-only binds of the system folders (``/usr``, ``/bin``, ``/lib*``, ...), a made-up
  ``/etc`` (no real ``passwd``, no secrets), a ``/dev`` of five harmless devices; then
  ``pivot_root``, so no other path of the machine exists any more;
* per call (child A): a new mount and PID namespace; A forks B, PID 1 of the new namespace,
  which mounts a fresh ``/proc`` (it shows the call's own processes, never the Lab's
  environment), a size-capped ``/tmp``, binds the workspace (read-only unless the call
  writes), binds read-only the paths it is told to protect (``.git``), hides the denied
  files behind empty read-only ones, drops every capability, and ``exec``s the program
  with the environment it was given. A kill of A kills B (parent-death signal), and B's
  death empties the whole PID namespace: no process outlives its call. With ``exec_allow``
  (git's own files) B may then execute nothing else (``_landlock.py``), set here rather
  than by a guard program, so a git call costs no interpreter start.

Messages are JSON datagrams on a SOCK_SEQPACKET socket; a ``run`` request carries the
stdout and stderr pipe ends as SCM_RIGHTS descriptors.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import resource
import selectors
import signal
import socket
import stat
import struct
import sys
from typing import Any

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47
_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_CAPSET = {"x86_64": 126, "aarch64": 91}
_MAX_MSG = 1 << 20
_DEVICES = ("null", "zero", "full", "random", "urandom")
_PASSWD = ("root:x:0:0:workspace user:/nonexistent:/usr/sbin/nologin\n"
           "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
_GROUP = "root:x:0:\nnogroup:x:65534:\n"

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def _sibling(name: str) -> Any:
    """A module beside this file, loaded at start: ``-I`` puts none of our folders on the
    path, and after ``pivot_root`` the file is out of reach."""
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(name, os.path.join(here, name + ".py"))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


landlock = _sibling("_landlock")


class Refused(Exception):
    """A confinement step failed; the message says which and why."""


def main() -> None:
    cfg = json.loads(sys.argv[1])
    sock = socket.socket(fileno=int(sys.argv[2]))
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        build_root(cfg)
    except (Refused, OSError) as exc:
        _send(sock, {"op": "unavailable", "why": str(exc)})
        return
    _check(libc.unshare(CLONE_NEWPID), "unshare(pid namespace)")
    server = os.fork()
    if server == 0:  # PID 1 of the namespace every call's namespace nests in
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _send(sock, {"op": "ready", "pid": os.getpid()})
        serve(sock, cfg)
        os._exit(0)
    sock.close()
    os.waitpid(server, 0)  # when the server ends, the kernel ends every call with it


# -- the root file system, once -------------------------------------------------------------
def build_root(cfg: dict[str, Any]) -> None:
    """Enter the namespaces and pivot into a root holding only what programs need."""
    if not sys.platform.startswith("linux"):
        raise Refused("OS confinement needs Linux namespaces; this is " + sys.platform)
    machine = os.uname().machine
    if machine not in _PIVOT_ROOT:
        raise Refused(f"no pivot_root number known for {machine}")
    workspace = cfg["workspace"]
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC
                        | CLONE_NEWUTS), "unshare(user, mount, net, ipc, uts namespaces)")
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
    _mount(None, "/", None, MS_REC | MS_PRIVATE, "make / private")
    # opened in the new namespace (a bind's source must be a mount of the caller's own)
    ws_fd = os.open(workspace, os.O_PATH | os.O_DIRECTORY)
    proc_fd = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
    sources = {p: os.open(p, os.O_PATH | os.O_NOFOLLOW) for p in cfg["binds"]
               if os.path.lexists(p)}
    devices = {d: os.open(f"/dev/{d}", os.O_PATH) for d in _DEVICES
               if os.path.exists(f"/dev/{d}")}
    root = "/tmp"  # shadowed by a tmpfs in this namespace only; every source is an fd
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "tmpfs root", "mode=0755,size=1m")
    for path, fd in sources.items():  # under /tmp: staged, bound per call (see _program)
        staged = f"/.jail/tmp/{cfg['tmp_binds'].index(path)}" if path in cfg["tmp_binds"] \
            else None
        _place(root, path, fd, staged)
    etc = root + "/etc"
    os.makedirs(etc, exist_ok=True)
    for name, text in (("passwd", _PASSWD), ("group", _GROUP), ("hostname", "jail\n"),
                       ("nsswitch.conf", "passwd: files\ngroup: files\nhosts: files\n")):
        if not os.path.lexists(f"{etc}/{name}"):
            _write(f"{etc}/{name}", text)
    os.makedirs(root + "/dev", exist_ok=True)
    for name, fd in devices.items():
        _write(f"{root}/dev/{name}", "")
        _mount(f"/proc/self/fd/{fd}", f"{root}/dev/{name}", None, MS_BIND, f"/dev/{name}")
        _remount_ro(f"{root}/dev/{name}", f"/dev/{name}")  # reads and writes still work;
        # chmod, chown and utimes on the host's node do not (it belongs to the Lab's user)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{root}/dev/{name}")
    for folder in ("/proc", "/tmp", "/.jail/emptydir", "/.jail/ws", "/.jail/proc", workspace):
        os.makedirs(root + folder, exist_ok=True)
    _write(root + "/.jail/empty", "")
    # per-call mount namespaces copy this one, so each call binds the workspace from here
    # (and detaches this staging bind before its program starts)
    _mount(f"/proc/self/fd/{ws_fd}", root + "/.jail/ws", None, MS_BIND | MS_REC, "workspace")
    # the kernel mounts a new /proc only where one is already fully visible; each call
    # mounts its own over /proc, then detaches this one before its program starts
    _mount(f"/proc/self/fd/{proc_fd}", root + "/.jail/proc", None, MS_BIND | MS_REC, "proc")
    os.chdir(root)
    os.makedirs(".old", exist_ok=True)
    _check(libc.syscall(_PIVOT_ROOT[machine], b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(libc.umount2(b"/.old", MNT_DETACH), "detach the old root")
    os.rmdir("/.old")
    _mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV,
           "read-only root")
    for fd in (ws_fd, proc_fd, *sources.values(), *devices.values()):
        os.close(fd)


def _place(root: str, path: str, fd: int, at: str | None = None) -> None:
    """Recreate ``path`` under ``root`` (or at ``at``): a symlink as a symlink, else a
    read-only bind."""
    target = root + (at or path)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    st = os.fstat(fd)
    if os.path.islink(path):
        os.symlink(os.readlink(path), target)
        return
    if stat.S_ISDIR(st.st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        _write(target, "")
    _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC, f"bind {path}")
    _remount_ro(target, path)


def _remount_ro(target: str, what: str) -> None:
    """Read-only, keeping the flags the kernel locks on binds made in a user namespace."""
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | _locked_flags(target)
    _mount(None, target, None, flags, f"read-only {what}")


def _locked_flags(path: str) -> int:
    got = os.statvfs(path).f_flag
    flags = 0
    for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV),
                             (os.ST_NOEXEC, MS_NOEXEC), (os.ST_NOATIME, MS_NOATIME),
                             (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)):
        if got & st_flag:
            flags |= ms_flag
    return flags


# -- serving calls ----------------------------------------------------------------------------
def serve(sock: socket.socket, cfg: dict[str, Any]) -> None:
    """Start programs on request; report each exit; stop when the Lab closes the socket.

    Runs as PID 1 of the launcher's PID namespace: if it dies, so does every call.
    """
    home = tuple(os.open(f"/.jail/proc/self/ns/{ns}", os.O_RDONLY)
                 for ns in ("mnt", "pid", "ipc"))
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ, None)
    running: dict[int, tuple[int, int]] = {}  # pidfd -> (call id, pid)
    by_id: dict[int, int] = {}
    while True:
        for key, _ in sel.select():
            if key.data is None:
                try:
                    msg, fds, _, _ = socket.recv_fds(sock, _MAX_MSG, 2)
                except ConnectionResetError:
                    msg, fds = b"", []
                if not msg:
                    for _, pid in running.values():
                        _kill(pid)
                    return
                request = json.loads(msg)
                if request["op"] == "kill":
                    pid = by_id.get(request["id"])
                    if pid is not None:
                        _kill(pid)
                    continue
                pid = _start(request, cfg, fds, home)
                for fd in fds:
                    os.close(fd)
                if pid is None:
                    _send(sock, {"op": "exit", "id": request["id"], "status": 127,
                                 "error": "fork failed"})
                    continue
                pidfd = os.pidfd_open(pid)
                running[pidfd] = (request["id"], pid)
                by_id[request["id"]] = pid
                sel.register(pidfd, selectors.EVENT_READ, pidfd)
            else:
                pidfd = key.data
                call_id, pid = running.pop(pidfd)
                by_id.pop(call_id, None)
                sel.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                _send(sock, {"op": "exit", "id": call_id,
                             "status": os.waitstatus_to_exitcode(status)})


def _start(request: dict[str, Any], cfg: dict[str, Any], fds: list[int],
           home: tuple[int, ...]) -> int | None:
    """Fork the call's program as PID 1 of a new PID and mount namespace; return its pid.

    The server enters the new namespaces only for the fork and then returns to its own
    (``home``: descriptors of its mount, PID and IPC namespaces), so each call gets fresh
    ones with one fork (its own IPC namespace: shared memory dies with the call). Killing
    that PID 1 ends every process of the call: a program cannot opt out, unlike a
    parent-death signal, which it can clear.
    """
    try:
        _check(libc.unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC),
               "unshare(mount, pid, ipc namespaces)")
        pid = os.fork()
    except (OSError, Refused):
        pid = -1
    if pid == 0:
        _program(request, cfg, fds)  # never returns
    _check(libc.setns(home[0], CLONE_NEWNS), "return to the server's mount namespace")
    _check(libc.setns(home[1], CLONE_NEWPID), "return to the server's pid namespace")
    _check(libc.setns(home[2], CLONE_NEWIPC), "return to the server's ipc namespace")
    return pid if pid > 0 else None


def _program(request: dict[str, Any], cfg: dict[str, Any], fds: list[int]) -> None:
    """The call's PID 1: file system for this call, limits, no capabilities, exec."""
    try:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # read-only: no sysctl, sysrq-trigger or other global knob, even for a root Lab
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, "/proc",
               "subset=pid")  # the call's processes only: no kernel command line, keys, ...
        _check(libc.umount2(b"/.jail/proc", MNT_DETACH), "detach the machine's /proc")
        _mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "/tmp",
               f"mode=1777,size={int(request.get('tmp_mb', 64))}m")
        for i, path in enumerate(cfg["tmp_binds"]):  # shadowed by this call's /tmp
            _rebind(f"/.jail/tmp/{i}", path)
        workspace = cfg["workspace"]
        os.makedirs(workspace, exist_ok=True)
        _mount("/.jail/ws", workspace, None, MS_BIND | MS_REC, "bind the workspace")
        _check(libc.umount2(b"/.jail/ws", MNT_DETACH), "detach the staging workspace")
        _mount(None, workspace, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV
               | (0 if request.get("writable", False) else MS_RDONLY)
               | _locked_flags(workspace), "workspace flags")
        for path in request.get("readonly", []):
            _protect(workspace, path, None)
        for path in request.get("hide", []):
            _protect(workspace, path, "/.jail/empty")
        os.chdir(request["cwd"])
        _set_limits(request.get("limits", {}))
        _drop_capabilities()
        if request.get("exec_allow") is not None:  # None: no allowlist (run_shell's programs)
            landlock.confine_exec(request["exec_allow"])
        _seccomp()
        out, err = fds
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.closerange(3, 65536)
        os.execve(request["exe"], request["argv"], request["env"])
    except BaseException as exc:  # noqa: BLE001
        _report(fds, f"the confined program could not start: {exc}")
    os._exit(127)


def _set_limits(limits: dict[str, int]) -> None:
    """Per-process caps (RLIMIT_NPROC binds every user but root; the PID namespace still
    ends whatever a root Lab's call started when the call ends)."""
    table = {"memory_mb": (resource.RLIMIT_AS, 1 << 20),
             "max_processes": (resource.RLIMIT_NPROC, 1),
             "max_file_mb": (resource.RLIMIT_FSIZE, 1 << 20),
             "max_open_files": (resource.RLIMIT_NOFILE, 1)}
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, value in limits.items():
        res, unit = table[key]
        _, hard = resource.getrlimit(res)
        soft = value * unit if hard == resource.RLIM_INFINITY else min(value * unit, hard)
        resource.setrlimit(res, (soft, soft))


def _rebind(staged: str, path: str) -> None:
    """Put a read-only bind staged at launch back at its own path under this call's /tmp."""
    if os.path.islink(staged):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.symlink(os.readlink(staged), path)
        return
    if not os.path.exists(staged):
        return
    if os.path.isdir(staged):
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        _write(path, "")
    _mount(staged, path, None, MS_BIND | MS_REC, f"bind {path}")
    _remount_ro(path, path)


def _protect(workspace: str, rel: str, empty: str | None) -> None:
    """Bind ``rel`` read-only onto itself, or hide it behind an empty read-only twin."""
    target = os.path.join(workspace, rel)
    if not target.startswith(workspace.rstrip("/") + "/") or not os.path.lexists(target):
        return
    if os.path.islink(target):
        return  # a link that is a deny-listed name leads nowhere outside the workspace
    source = target
    if empty is not None:
        source = "/.jail/emptydir" if os.path.isdir(target) else empty
    _mount(source, target, None, MS_BIND, f"protect {rel}")
    _remount_ro(target, rel)


def _drop_capabilities() -> None:
    """Empty bounding, ambient and inheritable sets: ``exec`` then grants nothing, even as root
    of the namespace; no_new_privs stops setuid files from granting anything back."""
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # EINVAL: past the last capability this kernel knows
    libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    _check(libc.syscall(_CAPSET[os.uname().machine], header, data), "capset")
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


# -- seccomp ----------------------------------------------------------------------------------
# Programs may fork and exec (they are shells' children: git runs helpers), but nothing
# that changes the kernel's view of the machine, another process, or the jail itself.
_NR: dict[str, dict[str, int]] = {
    "x86_64": dict(
        arch=0xC000003E, keyctl=250, add_key=248, request_key=249, bpf=321,
        perf_event_open=298, userfaultfd=323, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, ptrace=101, process_vm_readv=310, process_vm_writev=311,
        unshare=272, setns=308, mount=165, umount2=166, pivot_root=155, chroot=161,
        mount_setattr=442, open_tree=428, move_mount=429, fsopen=430, fsconfig=431,
        fsmount=432, fspick=433, setxattr=188, lsetxattr=189, fsetxattr=190, removexattr=197,
        lremovexattr=198, fremovexattr=199, init_module=175, finit_module=313,
        delete_module=176, kexec_load=246, kexec_file_load=320, reboot=169, swapon=167,
        swapoff=168, acct=163, settimeofday=164, clock_settime=227, adjtimex=159,
        clock_adjtime=305, syslog=103, quotactl=179, open_by_handle_at=304,
        name_to_handle_at=303, kcmp=312, vhangup=153, ioperm=173, iopl=172, mknod=133,
        mknodat=259, clone=56, clone3=435, openat2=437, chmod=90, fchmod=91, fchmodat=268,
        fchmodat2=452, creat=85, open=2, openat=257, socket=41, socketpair=53),
    "aarch64": dict(
        arch=0xC00000B7, keyctl=219, add_key=217, request_key=218, bpf=280,
        perf_event_open=241, userfaultfd=282, io_uring_setup=425, io_uring_enter=426,
        io_uring_register=427, ptrace=117, process_vm_readv=270, process_vm_writev=271,
        unshare=97, setns=268, mount=40, umount2=39, pivot_root=41, chroot=51,
        mount_setattr=442, open_tree=428, move_mount=429, fsopen=430, fsconfig=431,
        fsmount=432, fspick=433, setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14,
        lremovexattr=15, fremovexattr=16, init_module=105, finit_module=273,
        delete_module=106, kexec_load=104, kexec_file_load=294, reboot=142, swapon=224,
        swapoff=225, acct=89, settimeofday=170, clock_settime=112, adjtimex=171,
        clock_adjtime=266, syslog=116, quotactl=60, open_by_handle_at=265,
        name_to_handle_at=264, kcmp=272, vhangup=58, mknodat=33, clone=220, clone3=435,
        openat2=437, fchmod=52, fchmodat=53, fchmodat2=452, openat=56, socket=198,
        socketpair=199),
}
_DENIED = ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
           "io_uring_setup", "io_uring_enter", "io_uring_register", "ptrace",
           "process_vm_readv", "process_vm_writev", "unshare", "setns", "mount", "umount2",
           "pivot_root", "chroot", "mount_setattr", "open_tree", "move_mount", "fsopen",
           "fsconfig", "fsmount", "fspick", "setxattr", "lsetxattr", "fsetxattr",
           "removexattr", "lremovexattr", "fremovexattr", "init_module", "finit_module",
           "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
           "acct", "settimeofday", "clock_settime", "adjtimex", "clock_adjtime", "syslog",
           "quotactl", "open_by_handle_at", "name_to_handle_at", "kcmp", "vhangup", "ioperm",
           "iopl", "mknod", "mknodat")
# (syscall, argument holding a mode): no set-user-ID or set-group-ID bits, since a file the
# jail writes belongs to the Lab's user on the host (root, for a root Lab)
_MODE_ARG = (("chmod", 1), ("fchmod", 1), ("fchmodat", 2), ("fchmodat2", 2), ("creat", 1),
             ("open", 2), ("openat", 3))
_SETID = 0o6000
_FAMILIES = (1, 2, 10)  # AF_UNIX, AF_INET, AF_INET6: not vsock, netlink, packet, bluetooth...
_EAFNOSUPPORT = 0x00050000 | 97
_NS_FLAGS = 0x7E020080  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _KILL, _EPERM, _ENOSYS = 0x7FFF0000, 0x80000000, 0x00050000 | 1, 0x00050000 | 38


def _seccomp() -> None:
    """Install the filter (inherited across fork and exec; no_new_privs is already set)."""
    nr = _NR.get(os.uname().machine)
    if nr is None:
        return  # an architecture without a table: namespaces and dropped capabilities only
    prog = [(_LD, 0, 0, 4), (_JEQ, 1, 0, nr["arch"]), (_RET, 0, 0, _KILL), (_LD, 0, 0, 0)]
    if nr["arch"] == 0xC000003E:
        prog += [(_JGE, 0, 1, 0x40000000), (_RET, 0, 0, _KILL)]  # no x32 calls
    for name in _DENIED:
        if name in nr:
            prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, _EPERM)]
    for name in ("clone3", "openat2"):  # arguments in a struct: glibc falls back
        prog += [(_JEQ, 0, 1, nr[name]), (_RET, 0, 0, _ENOSYS)]
    checks = [("clone", 0, _NS_FLAGS)] + [(n, a, _SETID) for n, a in _MODE_ARG if n in nr]
    for name, arg, mask in checks:
        prog += [(_JEQ, 0, 4, nr[name]), (_LD, 0, 0, 16 + 8 * arg), (_JSET, 0, 1, mask),
                 (_RET, 0, 0, _EPERM), (_RET, 0, 0, _ALLOW)]
    for name in ("socket", "socketpair"):  # vsock and friends ignore network namespaces
        n = len(_FAMILIES)
        prog += [(_JEQ, 0, n + 3, nr[name]), (_LD, 0, 0, 16)]
        prog += [(_JEQ, n - i, 0, family) for i, family in enumerate(_FAMILIES)]
        prog += [(_RET, 0, 0, _EAFNOSUPPORT), (_RET, 0, 0, _ALLOW)]
    prog.append((_RET, 0, 0, _ALLOW))
    code = b"".join(struct.pack("=HBBI", *ins) for ins in prog)
    buf = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(buf))
    _check(libc.prctl(22, 2, ctypes.byref(fprog), 0, 0), "seccomp filter")  # SECCOMP_MODE_FILTER


# -- small helpers ----------------------------------------------------------------------------
def _mount(source: str | None, target: str, fstype: str | None, flags: int, what: str,
           data: str | None = None) -> None:
    enc = (lambda s: None if s is None else s.encode())  # noqa: E731
    _check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), what)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise Refused(f"{what} failed: {os.strerror(err)} (errno {err})")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _send(sock: socket.socket, message: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps(message).encode())
    except OSError:
        pass


def _report(fds: list[int], message: str) -> None:
    """The reason a program did not start, on the call's stderr (fd 2 once it is set up)."""
    for fd in (fds[1] if len(fds) == 2 else 2, 2):
        try:
            os.write(fd, (message + "\n").encode())
            return
        except OSError:
            continue


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main()
