"""Landlock's exec allowlist: after ``confine_exec`` a process may execute only listed files.

Why here and in this form: the jail launcher applies it in the forked child right before it
``exec``s git (the rule set is inherited by everything git starts, so a filter, pager, hook
or alias that a planted config names fails with "Permission denied", even ``sh``), and
``git_exec`` asks ``abi`` for ``aillm-lab doctor``. The launcher runs as ``python -I -S``
outside any package and loads this file by its path, so it imports the standard library only.
``confine_exec`` handles only ``EXECUTE``: reads and writes are left to the jail's mounts.
The three system calls below it are also the Python sandbox's (``_sandbox_confine``), one
implementation of Landlock for both.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable

# landlock_create_ruleset, landlock_add_rule, landlock_restrict_self (one table for all arches)
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_EXECUTE = 1  # LANDLOCK_ACCESS_FS_EXECUTE
_PATH_BENEATH = 1  # LANDLOCK_RULE_PATH_BENEATH
_GET_VERSION = 1  # LANDLOCK_CREATE_RULESET_VERSION
_NO_NEW_PRIVS = 38  # PR_SET_NO_NEW_PRIVS
_ABSENT = (errno.ENOSYS, errno.EOPNOTSUPP)  # not built in / switched off at boot


def abi() -> int:
    """The kernel's Landlock ABI version, 0 where it has none."""
    nums = _SYSCALLS.get(os.uname().machine)
    if nums is None:
        return 0
    try:
        libc = _libc()
        version = libc.syscall(nums[0], None, ctypes.c_size_t(0), ctypes.c_uint32(_GET_VERSION))
    except (OSError, AttributeError):
        return 0
    return max(int(version), 0)


def confine_exec(allowed: Iterable[str]) -> bool:
    """From now on this process and its children may execute only ``allowed`` (files, or
    folders and everything below them); sets no_new_privs, which Landlock requires.

    False where the kernel has no Landlock (the caller runs without this layer). Raises
    ``OSError`` when a kernel that has it refuses a step: a half-built allowlist must stop
    the program from starting, not let it run unconfined. A path that cannot be opened is
    skipped (it allows nothing).
    """
    try:
        ruleset = create_ruleset(_EXECUTE)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return False
        raise
    try:
        for path in allowed:
            add_path(ruleset, path, _EXECUTE)
        restrict(ruleset)
    finally:
        os.close(ruleset)
    return True


# -- the three system calls, shared with the Python sandbox's confinement -------------------
def create_ruleset(fs: int, net: int = 0, scoped: int = 0) -> int:
    """A new rule set handling the ``fs`` rights (and ``net`` ports, ``scoped`` IPC, which
    need ABI 4 and 6): its descriptor, or ``OSError`` (``ENOSYS``/``EOPNOTSUPP``: no
    Landlock here). The struct is as long as the fields used, so an older kernel that
    knows only ``fs`` still accepts it."""
    nums = _SYSCALLS.get(os.uname().machine)
    if nums is None:
        raise OSError(errno.ENOSYS, f"Landlock is not wired for {os.uname().machine}")
    size = 24 if scoped else 16 if net else 8
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", fs, net, scoped)[:size], size)
    fd = _libc().syscall(nums[0], attr, ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        _raise("landlock_create_ruleset")
    return int(fd)


def add_path(ruleset: int, path: str, access: int) -> bool:
    """Allow ``access`` on ``path`` (a file, or a folder and all below it). False when the
    path cannot be opened (it allows nothing); ``OSError`` when the kernel refuses the
    rule."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
        if _libc().syscall(_SYSCALLS[os.uname().machine][1], ruleset,
                           ctypes.c_int(_PATH_BENEATH), rule, ctypes.c_uint32(0)) != 0:
            _raise(f"landlock_add_rule({path})")
    finally:
        os.close(fd)
    return True


def restrict(ruleset: int) -> None:
    """Set no_new_privs and enforce ``ruleset`` on this thread and all it starts from now."""
    libc = _libc()
    if libc.prctl(_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        _raise("prctl(no_new_privs)")
    if libc.syscall(_SYSCALLS[os.uname().machine][2], ruleset, ctypes.c_uint32(0)) != 0:
        _raise("landlock_restrict_self")


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
        _LIBC.syscall.restype = ctypes.c_long
    return _LIBC


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what} failed: {os.strerror(err)}")


__all__ = ["abi", "add_path", "confine_exec", "create_ruleset", "restrict"]
