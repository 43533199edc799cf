"""Git in the jail may execute only git: the paths of its exec allowlist, and the doctor line.

Why an allowlist of programs and not more config overrides: git starts programs named by
settings of every repository it touches (filters, textconv, pagers, aliases, hooks,
fsmonitor, ...), and a submodule, an include or a setting nobody listed yet is one more
place. ``HARDENING`` and the driver overrides in ``git.py`` switch off the ones known; this
layer does not need to know them: the kernel (Landlock) refuses every ``exec`` but git's
own files, so whatever a planted config names cannot start, not even ``sh``.

``Jail.spawn`` sends ``allowed_exec(git)`` with a git call; the jail launcher applies it in
the call's process right before it ``exec``s git (``_landlock.confine_exec``), so no guard
program starts per call. Where the kernel has no Landlock git runs without this layer and
the others still hold.
"""

from __future__ import annotations

import functools
import os
import struct
import subprocess

from aillm_lab.tools import _landlock

_PT_INTERP = 3


@functools.cache
def allowed_exec(exe: str) -> tuple[str, ...]:
    """What git may execute: its own file, its exec-path folder (``git-*`` helpers and the
    ``git`` it starts for sub-commands), and the dynamic loader the kernel opens for it."""
    real = os.path.realpath(exe)
    paths = [real]
    try:
        found = subprocess.run([exe, "--exec-path"], capture_output=True, text=True,
                               env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=10)
        if found.returncode == 0 and found.stdout.strip().startswith("/"):
            paths.append(os.path.realpath(found.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        pass
    paths += [os.path.realpath(p) for p in _elf_interpreters(real)]
    return tuple(dict.fromkeys(paths))


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where it has none (``aillm-lab doctor`` says
    whether git's exec allowlist holds here)."""
    return _landlock.abi()


def exec_guard_status() -> tuple[bool, str]:
    """Whether git in the jail runs behind the exec allowlist here, in words."""
    abi = landlock_abi()
    if abi:
        return True, (f"on (Landlock ABI {abi}): git may execute only its own files, so a "
                      f"planted filter, pager or hook cannot start a program")
    return False, ("off (this kernel has no Landlock): git's filters, pagers and hooks are "
                   "switched off by configuration only")


def _elf_interpreters(path: str) -> list[str]:
    """The ``PT_INTERP`` path of an ELF executable (none for a static one or a script)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if head[:4] != b"\x7fELF":
                return []
            wide, order = head[4] == 2, "<" if head[5] == 1 else ">"
            if wide:
                phoff, = struct.unpack_from(order + "Q", head, 32)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 54)
            else:
                phoff, = struct.unpack_from(order + "I", head, 28)
                phentsize, phnum = struct.unpack_from(order + "HH", head, 42)
            for i in range(min(phnum, 256)):
                f.seek(phoff + i * phentsize)
                entry = f.read(phentsize)
                kind, = struct.unpack_from(order + "I", entry, 0)
                if kind != _PT_INTERP:
                    continue
                word = order + ("Q" if wide else "I")  # p_offset, then p_filesz
                offset, = struct.unpack_from(word, entry, 8 if wide else 4)
                size, = struct.unpack_from(word, entry, 32 if wide else 16)
                f.seek(offset)
                return [f.read(min(size, 4096)).rstrip(b"\0").decode()]
    except (OSError, struct.error, UnicodeDecodeError):
        pass
    return []


__all__ = ["allowed_exec", "exec_guard_status", "landlock_abi"]
