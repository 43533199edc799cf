"""Start git so that it can execute nothing but git's own files; never imported.

Its text runs as ``python -I -S -B -c <this file> <n> <allowed paths x n> <exe> <argv...>``
inside the jail (``git_exec.py`` builds the command). It creates a Landlock rule set that
handles only ``EXECUTE``, allows it on the given paths (git, its exec-path folder, the
dynamic loader), and then ``exec``s git: the rule set is inherited by everything git starts,
so a filter, pager, textconv, alias or hook that a planted config names fails with
"Permission denied" whatever it is, and git's own helpers still run. Reads and writes are
left to the jail. Where the kernel has no Landlock the program starts without this layer.
Standard library only: the jail holds the interpreter's prefix, not ``aillm_lab``.
"""

import ctypes
import os
import struct
import sys

_SYS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_EXECUTE = 1  # LANDLOCK_ACCESS_FS_EXECUTE
_PATH_BENEATH = 1  # LANDLOCK_RULE_PATH_BENEATH
_NO_NEW_PRIVS = 38


def confine(allowed: list[str]) -> bool:
    """Allow ``exec`` of ``allowed`` (files, or folders and all below) only; False where the
    kernel cannot."""
    nums = _SYS.get(os.uname().machine)
    if nums is None:
        return False
    create, add, restrict = nums
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    attr = ctypes.create_string_buffer(struct.pack("=Q", _EXECUTE), 8)
    ruleset = libc.syscall(create, attr, ctypes.c_size_t(8), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        for path in allowed:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                rule = ctypes.create_string_buffer(struct.pack("=Qi", _EXECUTE, fd), 12)
                libc.syscall(add, ruleset, ctypes.c_int(_PATH_BENEATH), rule,
                             ctypes.c_uint32(0))
            finally:
                os.close(fd)
        libc.prctl(_NO_NEW_PRIVS, 1, 0, 0, 0)
        return libc.syscall(restrict, ruleset, ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def main() -> None:
    count = int(sys.argv[1])
    allowed = sys.argv[2:2 + count]
    exe, argv = sys.argv[2 + count], sys.argv[3 + count:]
    confine(allowed)
    os.execv(exe, argv)


if __name__ == "__main__":
    main()
