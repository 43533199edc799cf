"""What no tool may write, whatever the deny list says: places whose files run code later.

One rule set for the file tools (``Workspace.resolve(write=True)`` calls ``check_name``
and ``check_place``) and for the jail (``jail_scan`` makes the same places read-only and
sweeps new ones):

- ``.git`` folders, and any write that would lay a folder out like a git directory
  (``git_layout``): git runs the programs a repository's config names.
- A Python environment: a folder holding ``pyvenv.cfg`` (PEP 405, what ``python -m venv``
  and virtualenv write) or ``conda-meta`` (a conda prefix), or laid out like a Python
  installation without either (pyenv's ``~/.pyenv/versions/3.11.2``, a copied ``/usr``):
  ``lib/pythonX.Y/os.py`` or ``lib/pypyX.Y/os.py`` (CPython's own landmark for its prefix,
  ``.pyc`` too), ``Lib/os.py`` (Windows), or a standard library folder itself (``os.py``
  beside ``encodings/``). Everything in it runs whenever the user's ``.venv/bin/python``,
  pytest or pip starts, or their shell sources ``bin/activate``; so the whole folder is
  read-only to tools, whatever file is aimed at, instead of a list of payload spellings.
- Files that run by themselves (``runs_by_itself``): a ``*.pth`` in a ``site-packages`` or
  ``dist-packages`` folder (site.py executes its ``import`` lines at every start; elsewhere
  a ``.pth`` is inert, and usually a PyTorch checkpoint an agent may well save),
  ``sitecustomize`` / ``usercustomize`` (imported at every start, as a module or a package,
  from any folder on the user's path) and ``.envrc`` (direnv runs it on ``cd``). They are
  refused anywhere in the workspace, not only inside an environment: a workspace may itself
  be a home folder with a user site-packages, or sit on a path the user's Python searches.
  So are the well-known places other programs run or obey (``autorun_places``: shell
  startup files, ``.gitconfig``, IPython startup, Jupyter configs, pip and conda configs,
  desktop autostart, ``.vscode/tasks.json``); ordinary project files (``Makefile``,
  ``pyproject.toml``, ``conftest.py``) are not among them: they run when the user chooses to
  run make, pip or pytest.
- A module that would shadow one the Lab's own Python imports (``module_shadow``):
  ``duckdb.py`` in a folder on ``sys.path`` (a notebook's working folder) runs inside the
  Lab's process at the next ``import duckdb``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.autorun_places import autorun_place
from aillm_lab.tools.git_layout import ADVICE, counts, is_gitdir, present
from aillm_lab.tools.module_shadow import shadowed_by
from aillm_lab.tools.path_rules import show

# lower-cased names whose presence makes a folder a Python environment
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")
# a folder ``lib/pythonX.Y`` (``python3.13t``, ``pypy3.10``) holding a landmark is a Python
# installation's standard library
STDLIB_FOLDER = re.compile(r"(?:python|pypy)\d")
STDLIB_LANDMARKS = ("os.py", "os.pyc")
_STEMS = ("sitecustomize", "usercustomize")
_SITE_FOLDERS = ("site-packages", "dist-packages")  # where site.py reads .pth files
_ENV_FIX = ("ask the user to install or change packages (e.g. `{where}/bin/pip install "
            "NAME`), or write the file outside that folder")


def runs_by_itself(rel: str, *, folder: bool = False) -> str | None:
    """Why the entry at workspace-relative ``rel`` runs code without anyone asking, or None.

    A folder counts only as a ``sitecustomize`` / ``usercustomize`` package. Names compare
    without case and by their first dot (``sitecustomize.cpython-311.so`` imports too):
    wider than Python, never narrower. Files are also matched against the well-known
    places of ``autorun_places``, by the end of their path.
    """
    parent, _, name = rel.rpartition("/")
    low = name.lower()
    if low.split(".", 1)[0] in _STEMS:
        return "Python imports sitecustomize and usercustomize at every start"
    if folder:
        return None
    if low.endswith(".pth") and parent.rpartition("/")[2].lower() in _SITE_FOLDERS:
        return "Python runs the 'import' lines of a .pth file in its site folders at every start"
    if low == ".envrc":
        return "direnv runs .envrc whenever a shell enters its folder"
    return autorun_place(rel)


def env_kind(folder: str | Path) -> str | None:
    """What makes ``folder`` a Python environment (``pyvenv.cfg``, ``conda-meta``, a Python
    installation's layout), or None. A few ``stat`` calls, one listing of ``lib`` where
    there is one: it runs for every folder on a written path."""
    for marker in ENV_MARKERS:
        if os.path.lexists(os.path.join(folder, marker)):
            return f"it holds {marker}"
    if _landmark(os.path.join(folder, "Lib")):
        return "it is laid out like a Python installation (Lib/os.py)"
    if _landmark(folder) and os.path.isdir(os.path.join(folder, "encodings")):
        return "it is a Python standard library (os.py beside encodings/)"
    try:
        with os.scandir(os.path.join(folder, "lib")) as entries:
            for entry in entries:
                if STDLIB_FOLDER.match(entry.name) and _landmark(entry.path):
                    return ("it is laid out like a Python installation "
                            f"(lib/{entry.name}/os.py)")
    except OSError:
        pass
    return None


def is_env(folder: str | Path) -> bool:
    """Whether ``folder`` is a Python environment or installation (``env_kind``)."""
    return env_kind(folder) is not None


def _landmark(folder: str) -> bool:
    """Whether ``folder`` holds ``os.py`` or ``os.pyc``, the standard library's landmark."""
    return any(os.path.lexists(os.path.join(folder, n)) for n in STDLIB_LANDMARKS)


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
    for i in range(len(parts)):
        if why := runs_by_itself("/".join(parts[:i + 1]), folder=i < len(parts) - 1):
            raise SafetyViolation("path.autorun", f"{show(raw)} would run by itself later "
                                  f"({why}), so no tool may write it; if you need one, say "
                                  "what it should contain and let the user create it")


def check_place(root: Path, rel: str, raw: str) -> None:
    """Refuse writing the resolved ``rel`` for what is on disk around it: a Python
    environment in the root or any folder above it, a folder it would make a git
    directory, or a folder on ``sys.path`` where it would shadow an importable module."""
    _check_env(root, rel, raw)
    _check_git_layout(root, rel, raw)
    if module := shadowed_by(str(root.joinpath(*rel.split("/")))):
        raise SafetyViolation("path.shadows_module", f"{show(raw)} would shadow the module "
                              f"{module!r}: its folder is on the Lab's import path "
                              "(sys.path), so the Lab's own Python would run it at the next "
                              f"'import {module}', outside the jail; pick another file name "
                              f"(e.g. 'my_{module}.py') or another folder")


def _check_env(root: Path, rel: str, raw: str) -> None:
    parts = rel.split("/")
    for depth in range(len(parts)):
        if kind := env_kind(root.joinpath(*parts[:depth])):
            where = "/".join(parts[:depth]) or "."
            raise SafetyViolation("path.python_env", f"{show(raw)} is inside the Python "
                                  f"environment {where!r} ({kind}), "
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


__all__ = ["ENV_MARKERS", "STDLIB_FOLDER", "STDLIB_LANDMARKS", "check_name", "check_place",
           "env_kind", "is_env", "runs_by_itself"]
