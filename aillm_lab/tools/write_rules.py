"""What no tool may write, whatever the deny list says: places whose files run code later.

One rule set for the file tools (``Workspace.resolve(write=True)`` calls ``check_name``
and ``check_place``) and for the jail (``jail_scan`` makes the same places read-only and
sweeps new ones):

- ``.git`` folders, and any write that would lay a folder out like a git directory
  (``git_layout``): git runs the programs a repository's config names.
- A Python environment: a folder holding ``pyvenv.cfg`` (PEP 405, what ``python -m venv``
  and virtualenv write) or ``conda-meta`` (a conda prefix). Everything in it runs whenever
  the user's ``.venv/bin/python``, pytest or pip starts, or their shell sources
  ``bin/activate``; so the whole folder is read-only to tools, whatever file is aimed at,
  instead of a list of payload spellings.
- Files that run by themselves (``runs_by_itself``): a ``*.pth`` in a ``site-packages`` or
  ``dist-packages`` folder (site.py executes its ``import`` lines at every start; elsewhere
  a ``.pth`` is inert, and usually a PyTorch checkpoint an agent may well save),
  ``sitecustomize`` / ``usercustomize`` (imported at every start, as a module or a package,
  from any folder on the user's path) and ``.envrc`` (direnv runs it on ``cd``). They are
  refused anywhere in the workspace, not only inside an environment: a workspace may itself
  be a home folder with a user site-packages, or sit on a path the user's Python searches.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.git_layout import ADVICE, counts, is_gitdir, present
from aillm_lab.tools.path_rules import show

# lower-cased names whose presence makes a folder a Python environment
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")
_STEMS = ("sitecustomize", "usercustomize")
_SITE_FOLDERS = ("site-packages", "dist-packages")  # where site.py reads .pth files
_ENV_FIX = ("ask the user to install or change packages (e.g. `{where}/bin/pip install "
            "NAME`), or write the file outside that folder")


def runs_by_itself(name: str, *, folder: bool = False, parent: str = "") -> str | None:
    """Why an entry called ``name`` in the folder called ``parent`` runs code without anyone
    asking, or None.

    A folder counts only as a ``sitecustomize`` / ``usercustomize`` package. Names compare
    without case and by their first dot (``sitecustomize.cpython-311.so`` imports too):
    wider than Python, never narrower.
    """
    low = name.lower()
    if low.split(".", 1)[0] in _STEMS:
        return "Python imports sitecustomize and usercustomize at every start"
    if folder:
        return None
    if low.endswith(".pth") and parent.lower() in _SITE_FOLDERS:
        return "Python runs the 'import' lines of a .pth file in its site folders at every start"
    if low == ".envrc":
        return "direnv runs .envrc whenever a shell enters its folder"
    return None


def is_env(folder: str | Path) -> bool:
    """Whether ``folder`` is a Python environment (holds ``pyvenv.cfg`` or ``conda-meta``)."""
    return any(os.path.lexists(os.path.join(folder, m)) for m in ENV_MARKERS)


def check_name(rel: str, raw: str) -> None:
    """Refuse writing ``rel`` (workspace-relative) for its spelling alone: the root, inside
    ``.git``, or a name that runs by itself; ``raw`` is the path as sent, for the message."""
    if rel == ".":
        raise SafetyViolation("path.root", "cannot write to the workspace folder itself; "
                              "name a file inside it")
    parts = rel.split("/")
    if ".git" in (p.lower() for p in parts):
        raise SafetyViolation("path.git_internal", f"{show(raw)} is inside a .git folder, "
                              "whose hooks and config run code; use the git tools instead")
    for i, part in enumerate(parts):
        if why := runs_by_itself(part, folder=i < len(parts) - 1,
                                 parent=parts[i - 1] if i else ""):
            raise SafetyViolation("path.autorun", f"{show(raw)} would run by itself later "
                                  f"({why}), so no tool may write it; if you need one, say "
                                  "what it should contain and let the user create it")


def check_place(root: Path, rel: str, raw: str) -> None:
    """Refuse writing the resolved ``rel`` for what is on disk around it: a Python
    environment in the root or any folder above it, or a folder it would make a git
    directory."""
    _check_env(root, rel, raw)
    _check_git_layout(root, rel, raw)


def _check_env(root: Path, rel: str, raw: str) -> None:
    parts = rel.split("/")
    for depth in range(len(parts)):
        if is_env(root.joinpath(*parts[:depth])):
            where = "/".join(parts[:depth]) or "."
            raise SafetyViolation("path.python_env", f"{show(raw)} is inside the Python "
                                  f"environment {where!r} (it holds pyvenv.cfg or conda-meta), "
                                  "whose files run whenever that environment is used, so it "
                                  "is read-only to tools; " + _ENV_FIX.format(where=where))


def _check_git_layout(root: Path, rel: str, raw: str) -> None:
    """Refuse a write after which a folder on the path is a git directory (``git_layout``:
    ``HEAD`` plus ``objects`` and ``refs``, or plus ``commondir``), config or not.

    Why: git finds such a folder as a bare repository from any folder below it and runs the
    programs its config names (``core.fsmonitor``) for whoever runs git there; the lab's
    own git refuses bare repositories, a developer's git does not. The folders above the
    written file are checked as they will be once it exists (the file itself is a regular
    file, each folder on the way a folder).
    """
    parts = rel.split("/")
    for depth in range(len(parts)):
        folder, child = root.joinpath(*parts[:depth]), parts[depth]
        last = depth == len(parts) - 1
        found = set(present(folder))
        if counts(child, stat.S_IFREG | 0o644 if last else stat.S_IFDIR | 0o755):
            found.add(child)
        if is_gitdir(found):
            where = "/".join(parts[:depth]) or "."
            raise SafetyViolation("path.git_internal", f"writing {show(raw)} would make "
                                  f"{where!r} a git directory ({ADVICE}); keep such files "
                                  "out of the workspace or rename the folder")


__all__ = ["ENV_MARKERS", "check_name", "check_place", "is_env", "runs_by_itself"]
