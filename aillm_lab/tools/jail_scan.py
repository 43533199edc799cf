"""What the jail protects in a workspace before a call, and what it undoes after one.

Kept apart from ``jail.py`` (the launcher connection) because it is the file-system side:
``ProtectedScan`` lists the deny-listed entries, ``.git`` folders, folders laid out like
a git directory (``git_layout``), Python environments and installations, files that run
by themselves and modules that would shadow one the Lab imports (``write_rules``) before
each call, and ``sweep`` compares that with a scan after a
writable call, removing the traps the program left for later.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from aillm_lab.tools.git_layout import ADVICE, MARKERS, is_gitdir, markers
from aillm_lab.tools.module_shadow import importable, module_name, path_folders, shadowed_by
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.write_rules import (
    ENV_MARKERS,
    STDLIB_FOLDER,
    STDLIB_LANDMARKS,
    runs_by_itself,
)

_GIT_PARTS = ("config", "hooks", "info", "config.worktree", "modules")
CONFIGS = ("config", "config.worktree")


@dataclass
class Protected:
    """What a call must not read (``hide``) or change (``readonly``), workspace-relative."""

    hide: list[str] = field(default_factory=list)
    readonly: list[str] = field(default_factory=list)


@dataclass
class Snapshot:
    """What a scan found: deny-listed entries (and their inodes: a renamed folder moves
    them, it does not make them), ``.git`` entries, and per folder the entries that count
    as git markers (``git_layout.markers``) and its config files, where it has any; Python
    environments (``envs``) and entries that run by themselves (``autorun``, with their
    inodes, as for deny-listed ones), module files that would shadow one the Lab imports
    among them."""

    hidden: set[str] = field(default_factory=set)
    gits: set[str] = field(default_factory=set)
    marked: dict[str, frozenset[str]] = field(default_factory=dict)
    hidden_inodes: set[int] = field(default_factory=set)
    envs: set[str] = field(default_factory=set)
    autorun: set[str] = field(default_factory=set)
    autorun_inodes: set[int] = field(default_factory=set)

    @property
    def gitlike(self) -> set[str]:
        """Folders outside ``.git`` that git takes for a git directory."""
        return {rel for rel, names in self.marked.items() if is_gitdir(names)}


@dataclass
class _Listing:
    key: tuple[int, int, int]
    subdirs: list[str]
    hidden: list[str]
    inodes: list[int]
    gits: list[str]
    marker_names: list[str]
    envs: list[str] = field(default_factory=list)
    autorun: list[tuple[str, int]] = field(default_factory=list)


class ProtectedScan:
    """Deny-listed entries and ``.git`` folders of a workspace, re-read only where changed.

    A folder is listed again when its mtime, ctime or inode changes: mtime alone is not
    enough, since a program that owns the folder can set it back (``os.utime``) after a
    rename, while ctime is always set by the kernel. A repeated scan costs one ``stat`` per
    folder instead of a listing, plus one per entry named like a git marker (a ``chmod``
    of one changes no folder's times).
    """

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self._dirs: dict[str, _Listing] = {}
        self.last = Snapshot()

    @property
    def warm(self) -> bool:
        return bool(self._dirs) and len(self._dirs) < 2_000

    def scan(self, protect_git: str = "all", *, git: bool = False) -> Protected:
        """Scan now; ``protect_git`` and ``git`` as in ``Jail.spawn``.

        A folder laid out like a git directory before the call is guarded like ``.git``:
        its config, hooks and info read-only, its config hidden from programs but git.
        A Python environment is read-only as a whole, and so is each file outside one
        that runs by itself (``write_rules``): its content is the user's, not the call's.
        """
        hidden: list[str] = []
        inodes: list[int] = []
        gits: list[str] = []
        envs: list[str] = []
        autorun: list[tuple[str, int]] = []
        marked: dict[str, frozenset[str]] = {}
        fresh: dict[str, _Listing] = {}
        stack = ["."]
        root = str(self.ws.root)
        while stack:
            rel = stack.pop()
            path = root if rel == "." else f"{root}/{rel}"
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
            listing = self._dirs.get(rel)
            if listing is None or listing.key != key:
                listing = self._list(rel, path, key)
            fresh[rel] = listing
            stack.extend(listing.subdirs)
            hidden.extend(listing.hidden)
            inodes.extend(listing.inodes)
            gits.extend(listing.gits)
            autorun.extend(listing.autorun)
            envs.extend(listing.envs)
            if listing.marker_names:
                configs = {n for n in listing.marker_names if n.lower() in CONFIGS}
                if found := markers(path, listing.marker_names) | configs:
                    marked[rel] = found
        self._dirs = fresh
        autorun += _shadows(root)
        self.last = Snapshot(set(hidden), set(gits), marked, set(inodes), set(envs),
                             {rel for rel, _ in autorun}, {ino for _, ino in autorun})
        gitlike = sorted(self.last.gitlike)
        if not git:  # remote URLs with tokens live in these; only git needs to read them
            hidden += [c for g in gits for c in _git_configs(root, g)]
            hidden += [_join(g, "config") for g in gitlike
                       if os.path.lexists(f"{root}/{_join(g, 'config')}")]
        inner = [_join(g, part) for g in gitlike for part in _GIT_PARTS]
        inner += _python_readonly(envs, [rel for rel, _ in autorun])
        if protect_git == "all":
            return Protected(hide=hidden, readonly=[*gits, *inner])
        inner += [f"{g}/{part}" for g in gits for part in _GIT_PARTS]
        return Protected(hide=hidden, readonly=inner)

    def _list(self, rel: str, path: str, key: tuple[int, int, int]) -> _Listing:
        subdirs, hidden, inodes, gits, marker_names = [], [], [], [], []
        autorun: list[tuple[str, int]] = []
        try:
            entries = list(os.scandir(path))
        except OSError:
            entries = []
        for entry in entries:
            child = _join(rel, entry.name)
            if self.ws.is_denied(child):
                hidden.append(child)
                inodes.append(entry.inode())
            else:
                is_dir = entry.is_dir(follow_symlinks=False)
                if runs_by_itself(child, folder=is_dir):
                    autorun.append((child, entry.inode()))
                if entry.name.lower() == ".git":
                    gits.append(child)
                elif is_dir:
                    subdirs.append(child)
            if entry.name.lower() in (*MARKERS, *CONFIGS):
                marker_names.append(entry.name)
        envs = _envs(rel, entries)
        return _Listing(key, subdirs, hidden, inodes, gits, marker_names, envs, autorun)


def _envs(rel: str, entries: list[os.DirEntry[str]]) -> list[str]:
    """The Python environments a folder's listing reveals (``write_rules.env_kind``, read
    from below so that the cached listings stay exact): the folder itself, if it holds an
    environment's marker or is a standard library (``os.py`` beside ``encodings/``); the
    prefix above ``Lib`` or two above ``lib/pythonX.Y`` holding ``os.py``."""
    names = {e.name.lower() for e in entries}
    found = [rel] if names & {*ENV_MARKERS} else []
    if not names & {*STDLIB_LANDMARKS}:
        return found
    if any(e.name == "encodings" and e.is_dir(follow_symlinks=False) for e in entries):
        found.append(rel)
    parent, _, name = rel.rpartition("/")
    above, _, parent_name = parent.rpartition("/")
    if name == "Lib":
        found.append(parent or ".")
    elif rel != "." and STDLIB_FOLDER.match(name) and parent_name == "lib":
        found.append(above or ".")
    return found


def _shadows(root: str) -> list[tuple[str, int]]:
    """Module files in the workspace's folders on ``sys.path`` that would shadow a module the
    Lab imports (``module_shadow``), with their inodes: a package's by its files."""
    found: list[tuple[str, int]] = []
    on_path = path_folders()
    for folder in sorted(on_path):
        if folder != root and not folder.startswith(f"{root}/"):
            continue
        rel = os.path.relpath(folder, root)
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            package = entry.name.isidentifier() and importable(entry.name)
            if package and entry.is_symlink():  # a link to a package's folder
                found.append((_join(rel, entry.name), entry.inode()))
                continue
            if not entry.is_dir(follow_symlinks=False):
                files = [entry.path]
            elif package:
                files = _module_files(entry.path)
            else:
                continue
            for path in files:
                try:
                    if shadowed_by(path, on_path):
                        found.append((_join(rel, os.path.relpath(path, folder)),
                                      os.lstat(path).st_ino))
                except OSError:  # gone since it was listed
                    continue
    return found


def _module_files(folder: str) -> list[str]:
    """The module files below a package-named folder, through importable folder names."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if d.isidentifier()]
        found += [os.path.join(dirpath, n) for n in filenames if module_name(n)]
    return found


def _python_readonly(envs: list[str], autorun: list[str]) -> list[str]:
    """Python environments (an installation's own standard library counts once, inside
    it), and the files that run by themselves outside them (inside one they are read-only
    already; a bind per ``.pth`` there would only cost mounts)."""
    if "." in envs:
        return ["."]
    outer: list[str] = []
    for env in sorted(set(envs)):
        if not any(env.startswith(f"{o}/") for o in outer):
            outer.append(env)
    inside = tuple(f"{e}/" for e in outer)
    return [*outer, *(a for a in autorun if not a.startswith(inside))]


def _git_configs(root: str, gitdir: str) -> list[str]:
    """Every config file in a ``.git`` folder: its own, submodules' and worktrees'."""
    base = f"{root}/{gitdir}"
    found = [f"{gitdir}/{n}" for n in ("config", "config.worktree")
             if os.path.lexists(f"{base}/{n}")]
    for sub in ("modules", "worktrees"):
        for dirpath, dirnames, filenames in os.walk(f"{base}/{sub}"):
            dirnames[:] = [d for d in dirnames if d not in ("objects", "lfs")]
            rel = os.path.relpath(dirpath, root)
            found += [f"{rel}/{n}" for n in filenames if n in ("config", "config.worktree")]
    return found


def sweep(ws: Workspace, before: Snapshot, after: Snapshot, *, git_made: bool = False
          ) -> list[str]:
    """Undo what a writable call planted for later; returns a note per removal.

    A program may create any file, so it can lay traps that only spring after the call:
    a deny-listed file (``.env`` naming another API endpoint, a key) that no tool may
    write; a new ``.git``, or a folder laid out like a git directory (``git_layout``: HEAD
    with objects/ and refs/ or with commondir, wherever its config lives), whose config
    the user's own git would run. Judged by what is on disk, not by the command line.
    Only entries that did not exist before the call are removed (a deny-listed file moved
    with its folder keeps its inode and stays; a git directory loses its newest markers,
    HEAD first, until it is none), and git directories only when the program was not git
    itself (``git_made``: a ``git init`` the policy allows makes a clean one). A file that
    runs by itself (``write_rules.runs_by_itself``: a ``.pth`` in a site folder,
    ``sitecustomize``, ``.envrc``, a shell's or git's startup file, IPython startup...)
    is undone like a deny-listed one, wherever it is: the user's next ``python``, ``cd`` or
    login would run it; so is a module file that would shadow one the Lab's own Python
    imports (``module_shadow``: ``duckdb.py`` in the notebook's working folder).
    (Python environments need no sweep: the call sees them read-only.)

    A deny-listed file the user saves while a call runs looks new too, so a plain regular
    file under a deny-listed name is moved aside (``_Aside``), not deleted, and the note
    says where. Everything else is deleted, never moved: links, folders, anything named
    ``.git`` (in any case), git markers, the configs of planted git directories, and any
    file that reads as a gitfile (``gitdir:``). Moved intact, a ``.git`` file pointing at a
    git directory the program built elsewhere (the Python sandbox's folder) would make
    the aside folder a repository whose planted config the user's git runs there.
    """
    notes: list[str] = []
    root = ws.root
    aside = _Aside(root)
    for rel in sorted(after.hidden - before.hidden):
        if _made(root / rel, before.hidden_inodes) and (where := aside.take(rel)) is not None:
            notes.append(f"removed {rel}{where}: a deny-listed name (PathPolicy.deny_globs) "
                         f"the program made; no tool may write secrets or keys")
    for rel in sorted(set() if git_made else after.gits - before.gits):
        if (where := aside.take(rel, keep=False)) is not None:
            notes.append(f"removed {rel}{where}: the program created a git directory, whose "
                         f"config and hooks git would run; use the git tools")
    for rel in sorted(set() if git_made else after.gitlike - before.gitlike):
        notes += _ungit(aside, rel, after.marked[rel], before.marked.get(rel, frozenset()))
    for rel in sorted(after.autorun - before.autorun):
        path = root / rel
        why = runs_by_itself(rel, folder=path.is_dir() and not path.is_symlink())
        if not why:
            module = shadowed_by(str(path)) or path.name
            why = f"the Lab's own Python would import it as {module!r} (its folder is on sys.path)"
        if _made(path, before.autorun_inodes) and (where := aside.take(rel)) is not None:
            notes.append(f"removed {rel}{where}: {why}; no tool may leave a file that runs "
                         "by itself")
    return notes


def _made(path: Path, old_inodes: set[int]) -> bool:
    """Whether a deny-listed entry is the program's: a link (it may lead to an ordinary
    file) or anything that was not a deny-listed entry before (a moved one was)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    links = stat.S_ISLNK(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1)
    return links or st.st_ino not in old_inodes or (stat.S_ISDIR(st.st_mode)
                                                     and _has_links(path))


def _ungit(aside: _Aside, rel: str, names: frozenset[str], old: frozenset[str]) -> list[str]:
    """Remove the program's own git markers of a folder (HEAD first) until it is no git
    directory, an old HEAD only if needed; then the config files it put there."""
    notes: list[str] = []
    left = {n for n in names if n.lower() in MARKERS}
    for name in sorted(left, key=lambda n: (n in old, MARKERS.index(n.lower()))):
        if not is_gitdir(left):
            break
        left.discard(name)
        if (where := aside.take(_join(rel, name), keep=False)) is not None:
            notes.append(f"removed {_join(rel, name)}{where}: the folder was laid out like a "
                         f"git directory ({ADVICE})")
    for name in sorted(n for n in names - old if n.lower() in CONFIGS):
        if (where := aside.take(_join(rel, name), keep=False)) is not None:
            notes.append(f"removed {_join(rel, name)}{where}: a config the program put in a "
                         f"folder it laid out like a git directory")
    return notes


def _has_links(folder: Path) -> bool:
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISLNK(st.st_mode) or st.st_nlink > 1:
                return True
    return False


class _Aside:
    """Takes entries out of the workspace without following links.

    Only a plain regular file (one link, not git's) is kept: moved under one folder of the
    system's temporary directory, made on first use, keeping its relative path, so a
    secret file the user saved while the call ran is not lost. All else is deleted: a link
    holds nothing of its own, a folder may hold a ``.git`` or git markers, and anything
    git reads (``.git``, markers, a gitfile) would turn the aside folder into a repository
    whose config runs when the user looks there with git.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder: Path | None = None

    def take(self, rel: str, *, keep: bool = True) -> str | None:
        """Remove ``rel``; returns " (moved to PATH)" or " (deleted)", or None when it is
        already gone. ``keep=False``: delete it whatever it is (git's own files)."""
        path = self.root / rel
        try:
            st = os.lstat(path)
        except OSError:
            return None
        if not (keep and _keepable(path, st)):
            _delete(path, st)
            return " (deleted)"
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="aillm-removed-"))
        dest = self.folder / rel
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.rename(path, dest) if _same_disk(path, self.folder) else _copy_out(path, dest)
        except OSError:  # it cannot be moved: it must still leave the workspace
            _delete(path, st)
            return " (deleted: it could not be moved aside)"
        return f" (moved to {dest})"


def _keepable(path: Path, st: os.stat_result) -> bool:
    """A regular file with one link, named like nothing git reads, that is no gitfile."""
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        return False
    if path.name.lower() in (".git", *MARKERS):
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        head = os.read(fd, 64)
    finally:
        os.close(fd)
    return not head.lstrip().lower().startswith(b"gitdir")


def _delete(path: Path, st: os.stat_result) -> None:
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _same_disk(path: Path, folder: Path) -> bool:
    try:
        return os.lstat(path.parent).st_dev == os.stat(folder).st_dev
    except OSError:
        return False


def _copy_out(path: Path, dest: Path) -> None:
    """Copy a file to another disk without following a link, then remove the original."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src, open(dest, "xb") as out:
        shutil.copyfileobj(src, out)
    os.chmod(dest, 0o600)
    path.unlink()


def _join(rel: str, name: str) -> str:
    return name if rel == "." else f"{rel}/{name}"


__all__ = ["Protected", "ProtectedScan", "Snapshot", "sweep"]
