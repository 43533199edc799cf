"""Disk use of the sandbox folders, for ``PythonSandbox``'s quota (``max_disk_mb``).

Private. The parent measures rather than the worker, so code in the sandbox cannot fake the
number: regular files under the folders (links not followed) and the files the worker
deleted but still holds open, which fill the disk just the same.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Usage:
    """What the sandbox folders hold: bytes, files, and (for a full scan) the paths."""

    size: int
    files: int
    paths: set[str] = field(default_factory=set)


def usage(roots: tuple[Path, ...], pid: int | None, stop_after: int | None) -> Usage:
    """Sizes of the regular files under ``roots`` (links not followed), plus files ``pid``
    deleted but still holds open (they fill the disk as much); paths only for a full scan.

    ``stop_after`` ends the scan early, the count then being over it.
    """
    total, files, paths = 0, 0, set[str]()
    for root in roots:
        for dirpath, _, filenames in os.walk(root, followlinks=False):
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
                files += 1
                if stop_after is None:
                    paths.add(path)
                elif files > stop_after:
                    return Usage(total, files, paths)
    return Usage(total + _deleted_open_bytes(pid), files, paths)


def _deleted_open_bytes(pid: int | None) -> int:
    """Bytes in files the worker unlinked but keeps open (Linux /proc; else 0)."""
    if pid is None:
        return 0
    total, seen = 0, set[tuple[int, int]]()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return 0
    for fd in fds:
        try:
            st = os.stat(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 0 and (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


def remove_new_files(roots: tuple[Path, ...], before: set[str]) -> list[str]:
    """Delete the files under ``roots`` that were not there before; their relative names."""
    removed = []
    for root in roots:
        for dirpath, _, filenames in os.walk(root, followlinks=False):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if path not in before:
                    try:
                        os.unlink(path)
                    except OSError:
                        continue
                    removed.append(os.path.relpath(path, roots[0]))
    return sorted(removed)


__all__ = ["Usage", "remove_new_files", "usage"]
