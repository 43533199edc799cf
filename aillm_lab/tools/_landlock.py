"""Landlock's exec allowlist: after ``confine_exec`` a process may execute only listed files.

Why here and in this form: the jail launcher applies it in the forked child right before it
``exec``s git (the rule set is inherited by everything git starts, so a filter, pager, hook
or alias that a planted config names fails with "Permission denied", even ``sh``), and
``git_exec`` asks ``abi`` for ``aillm-lab doctor``. The launcher runs as ``python -I -S``
outside any package and loads this file by its path, so it imports the standard library only.
Only ``EXECUTE`` is handled: reads and writes are left to the jail's mounts.
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
    the program from starting, not let it run unconfined. A path that does not exist is
    skipped (it allows nothing).
    """
    nums = _SYSCALLS.get(os.uname().machine)
    if nums is None:
        return False
    create, add, restrict = nums
    libc = _libc()
    attr = ctypes.create_string_buffer(struct.pack("=Q", _EXECUTE), 8)
    ruleset = libc.syscall(create, attr, ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        if ctypes.get_errno() in _ABSENT:
            return False
        _raise("landlock_create_ruleset")
    try:
        for path in allowed:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", _EXECUTE, fd), 12)
                if libc.syscall(add, ruleset, ctypes.c_int(_PATH_BENEATH), rule,
                                ctypes.c_uint32(0)) != 0:
                    _raise(f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        if libc.prctl(_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _raise("prctl(no_new_privs)")
        if libc.syscall(restrict, ruleset, ctypes.c_uint32(0)) != 0:
            _raise("landlock_restrict_self")
    finally:
        os.close(ruleset)
    return True


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what} failed: {os.strerror(err)}")


__all__ = ["abi", "confine_exec"]
