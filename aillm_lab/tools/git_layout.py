"""What git takes for a git directory: one rule for the file tools and for the jail's sweep.

Why: git runs programs its repository config names (``core.fsmonitor``, ``core.pager``,
filters) for whoever runs git there. Its own test, ``is_git_directory()`` in ``setup.c``,
accepts a folder holding ``HEAD`` and, in the folder its ``commondir`` file names (itself
when there is none), ``objects`` and ``refs`` that it may enter (``access(X_OK)``); the
config is then read from that common folder. Git looks for one as a bare repository in the
folder it runs in and every folder above, and follows a ``.git`` file's ``gitdir:`` line to
one. So a tool that could leave ``HEAD`` next to ``commondir`` (or ``objects`` + ``refs``)
anywhere would plant a repository whose config the user's git obeys later.

The rule is a little wider than git's, never narrower: names compare without case (a
workspace on a case-insensitive disk), ``HEAD``'s content is not checked, and ``commondir``
counts wherever it points. Inside ``.git`` folders none of this applies: git owns them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

# lower-cased marker names, in the order the sweep removes new ones (HEAD alone suffices)
MARKERS = ("head", "commondir", "objects", "refs")
ADVICE = ("HEAD with objects/ and refs/, or with commondir: git would obey a config it finds "
          "there when run in or below that folder")


def is_gitdir(names: Iterable[str]) -> bool:
    """Whether a folder whose marker entries are ``names`` is a git directory to git."""
    found = {n.lower() for n in names}
    return "head" in found and ({"objects", "refs"} <= found or "commondir" in found)


def counts(name: str, mode: int | None) -> bool:
    """Whether an entry called ``name`` (``mode``: what ``stat`` says with links followed,
    None for a dangling link) is a marker as git would test it.

    ``HEAD`` is a file or a link (git reads either), never a folder; ``objects`` and
    ``refs`` must be enterable: a folder, or a file with an execute bit (``access(X_OK)``);
    ``commondir`` is any entry: it is only ever read.
    """
    low = name.lower()
    if low not in MARKERS:
        return False
    if low == "head":
        return mode is None or not stat.S_ISDIR(mode)
    if low in ("objects", "refs"):
        return mode is not None and (stat.S_ISDIR(mode) or bool(mode & 0o111))
    return True


def entry_mode(path: str | Path) -> int | None:
    """``stat`` with links followed; None for a dangling link (an entry that is there)."""
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def present(folder: str | Path) -> frozenset[str]:
    """The markers in ``folder`` under git's own spelling, one ``lstat`` each (no listing:
    the file tools check every folder on a written path)."""
    found = set()
    for name in ("HEAD", "commondir", "objects", "refs"):
        path = os.path.join(folder, name)
        if os.path.lexists(path) and counts(name, entry_mode(path)):
            found.add(name)
    return frozenset(found)


def markers(folder: str | Path, names: Iterable[str]) -> frozenset[str]:
    """The entries of ``folder`` (its listing: ``names``) that count as git markers."""
    return frozenset(n for n in names if n.lower() in MARKERS
                     and counts(n, entry_mode(os.path.join(folder, n))))


__all__ = ["ADVICE", "MARKERS", "counts", "entry_mode", "is_gitdir", "markers", "present"]
