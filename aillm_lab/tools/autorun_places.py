"""Well-known files that some program runs, or obeys as a list of programs to run, without
anyone asking: the shell at login, git at every command, IPython and Jupyter at start, pip
and conda at the next install, the desktop at login, an editor when the folder opens.

Kept apart from ``write_rules`` because it is data: a list of places, each with why it
runs. A workspace may be a home folder (or hold one), so each place is matched by the end
of the path, anywhere in the workspace: ``.config/git/config`` also as
``home/me/.config/git/config``. Names compare without case (wider than Linux, never
narrower). Ordinary project files are out of scope on purpose: a ``Makefile``,
``pyproject.toml``, ``conftest.py`` or ``noxfile.py`` runs only when the user chooses to run
make, pip or pytest in that project, which is what they are for. Secrets-bearing configs
(``.ssh/**``, ``.npmrc``, ``.netrc``) are refused already by the deny list.
"""

from __future__ import annotations

import re

_SHELL = "the shell runs it at every login or interactive start"
_GIT = ("git runs the programs its config names (core.fsmonitor, core.pager, "
        "core.sshCommand, aliases) in every repository")
_IPYTHON = "IPython runs it at every start of IPython or a Jupyter kernel"
_JUPYTER = "Jupyter runs it at every start of a Jupyter server or notebook page"
_INDEX = ("pip or conda installs from the index it names, and an installed package's code "
          "runs")

# (end of a path, lower-cased; '*' matches within one name) -> why it runs by itself
PLACES: tuple[tuple[str, str], ...] = (
    *((name, _SHELL) for name in (
        ".profile", ".bashrc", ".bash_profile", ".bash_login", ".bash_logout",
        ".bash_aliases", ".zshrc", ".zprofile", ".zshenv", ".zlogin", ".zlogout",
        ".kshrc", ".cshrc", ".tcshrc", ".config/fish/config.fish",
        ".config/fish/conf.d/*")),
    (".gitconfig", _GIT),
    (".config/git/config", _GIT),
    (".ipython/profile_*/startup/*", _IPYTHON),
    (".ipython/profile_*/*_config.py", _IPYTHON),
    (".ipython/profile_*/*_config.json", _IPYTHON),
    (".jupyter/*_config.py", _JUPYTER),
    (".jupyter/*_config.json", _JUPYTER),
    (".jupyter/custom/custom.js", _JUPYTER),
    (".local/share/jupyter/kernels/*/kernel.json",
     "Jupyter starts the program its argv names whenever that kernel is chosen"),
    (".config/pip/pip.conf", _INDEX),
    (".pip/pip.conf", _INDEX),
    (".condarc", _INDEX),
    (".config/autostart/*", "the desktop session starts each entry at every login"),
    (".vscode/tasks.json",
     "VS Code runs a task marked runOn: folderOpen whenever the folder is opened"),
)


def _regex(pattern: str) -> str:
    return "[^/]*".join(re.escape(piece) for piece in pattern.split("*"))


# One search rejects nearly every path; only a hit walks the list for its reason.
_ANY = re.compile("(?:^|/)(?:" + "|".join(_regex(p) for p, _ in PLACES) + r")\Z")
_EACH = tuple((re.compile(r"(?:^|/)" + _regex(p) + r"\Z"), why) for p, why in PLACES)


def autorun_place(rel: str) -> str | None:
    """Why the file at workspace-relative ``rel`` runs by itself as a well-known place
    (``PLACES``), or None. Only files count: such a place is never a folder."""
    low = rel.lower()
    if not _ANY.search(low):
        return None
    return next(why for rx, why in _EACH if rx.search(low))


__all__ = ["PLACES", "autorun_place"]
