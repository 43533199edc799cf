"""``Workspace``: the one folder tools may touch, and the path rules that keep them in it.

Every path a model sends is checked in two places. ``resolve`` canonicalises it first
(``..``, absolute forms, symlinks) and only then applies the rules, so no spelling of a path
can get past a check that looked at another spelling. ``open`` / ``write_atomic`` /
``entries`` then walk the *resolved* path again from the root, one directory file
descriptor at a time with ``O_NOFOLLOW``: a symlink swapped in after ``resolve`` (TOCTOU)
makes the open fail instead of being followed, and the file is created in a directory
pinned by its descriptor, never in one reached through a path that has since changed.

A write is also refused where its file would run code later (``write_rules``): inside
``.git`` or a Python environment or installation, a ``.pth`` in a site folder, a
``sitecustomize`` / ``.envrc`` / shell, git, IPython or Jupyter startup file anywhere, a
module that would shadow one the Lab imports, or when it would leave a folder that git
takes for a repository.
"""

from __future__ import annotations

import errno
import io
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import BaseModel

from aillm_lab.errors import SafetyViolation, ToolError
from aillm_lab.tools.path_rules import MAX_NAME_BYTES, MAX_PATH_BYTES, check_spelling, glob_to_regex
from aillm_lab.tools.path_rules import show as _show
from aillm_lab.tools.policy import PathPolicy
from aillm_lab.tools.write_rules import check_name, check_place

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_OPEN_FLAGS = {"r": os.O_RDONLY, "w": os.O_WRONLY | os.O_CREAT,
               "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
               "x": os.O_WRONLY | os.O_CREAT | os.O_EXCL}


class Entry(BaseModel):
    """One directory entry as ``entries`` reports it (symlinks are not followed)."""

    name: str
    kind: Literal["file", "dir", "symlink", "other"]
    size: int | None = None


class Workspace:
    """Resolve user/model-supplied paths to real paths inside ``root``, or refuse."""

    def __init__(self, root: str | Path, policy: PathPolicy | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.policy = policy or PathPolicy()
        self._root_str = str(self.root)
        self._deny_cache: tuple[tuple[str, ...] | None, list[re.Pattern[str]]] = (None, [])

    def __repr__(self) -> str:
        return f"Workspace({self._root_str!r})"

    # -- checking ----------------------------------------------------------------------------
    def resolve(self, path: str | os.PathLike[str], *, write: bool = False) -> Path:
        """The canonical absolute path, or ``SafetyViolation`` naming the rule it broke.

        ``write=True`` adds the rules for writing (``write_rules``: not the root, nothing
        inside ``.git`` or a Python environment, no file that runs by itself).
        """
        raw = _as_text(path)
        check_spelling(raw)
        joined = os.path.join(self._root_str, raw)
        lexical = os.path.normpath(joined)
        real = self._realpath(joined, raw)
        if not self._inside(real):
            rule = "path.symlink_escape" if self._inside(lexical) else "path.outside"
            why = "through a symbolic link " if rule == "path.symlink_escape" else ""
            raise SafetyViolation(rule, f"{_show(raw)} leads {why}outside the workspace; "
                                  "use a path relative to the workspace root, e.g. 'notes/a.md'")
        rels = [self.relative(real)]
        if self._inside(lexical):
            rels.append(self.relative(lexical))
        for rel in rels:
            if globs := self.denied_by(rel):
                raise SafetyViolation("path.denied", f"{_show(raw)} matches the deny list "
                                      f"(PathPolicy.deny_globs: {', '.join(globs)}); "
                                      "secrets and keys are off limits, pick another file")
            if write:
                check_name(rel, raw)
        if write:
            check_place(self.root, self.relative(real), raw)
        _check_file_type(real, raw)
        return Path(real)

    def is_denied(self, rel: str) -> bool:
        """Whether a workspace-relative path, or any folder above it, matches ``deny_globs``."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return any(rx.match(p) for rx in self._deny_regexes for p in prefixes)

    def denied_by(self, rel: str) -> list[str]:
        """The ``deny_globs`` that ``rel`` (or a folder above it) matches: the refusal names
        those, not the whole list."""
        if not self.is_denied(rel):
            return []
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        return [glob for glob, rx in zip(self.policy.deny_globs, self._deny_regexes, strict=True)
                if any(rx.match(p) for p in prefixes)]

    def contains(self, path: str | os.PathLike[str]) -> bool:
        """Whether an absolute, normalised path is the root or below it (no I/O)."""
        return self._inside(os.fspath(path))

    def check_pattern(self, pattern: str) -> str:
        """A glob pattern that cannot leave the root (no ``..``, absolute, ``~`` or encodings)."""
        raw = _as_text(pattern)
        check_spelling(raw)
        if raw.startswith("/"):
            raise SafetyViolation("path.outside", f"glob {_show(raw)} is absolute; globs are "
                                  "relative to the workspace root, e.g. 'src/**/*.py'")
        if ".." in raw.split("/"):
            raise SafetyViolation("path.outside", f"glob {_show(raw)} contains '..'; globs "
                                  "match inside the workspace only, e.g. '**/*.md'")
        return raw

    def relative(self, path: str | os.PathLike[str]) -> str:
        """How a resolved path is shown to the model: relative to the root, POSIX style."""
        return Path(path).relative_to(self.root).as_posix() or "."

    def display(self, path: str | os.PathLike[str]) -> str:
        """A path as messages should name it (normalised, relative if inside); no I/O."""
        raw = str(path)
        norm = os.path.normpath(os.path.join(self._root_str, raw))
        if "\x00" not in raw and self._inside(norm):
            return self.relative(norm)
        return raw if len(raw) <= 120 else raw[:117] + "..."

    # -- safe I/O ----------------------------------------------------------------------------
    def open(self, path: str | os.PathLike[str], mode: str = "r", *, encoding: str = "utf-8",
             errors: str = "strict", newline: str | None = None,
             parents: bool = False) -> IO[Any]:
        """Open a regular file inside the workspace, refusing anything swapped in meanwhile.

        Modes ``r w a x`` (+ ``b``). Reads stop with ``path.read_limit`` past
        ``max_read_bytes``; writes past ``max_write_bytes`` with ``path.write_limit``.
        ``parents=True`` creates missing folders for writes.
        """
        kind, binary = _parse_mode(mode)
        writing = kind != "r"
        target = self.resolve(path, write=writing)
        rel = self.relative(target)
        fd = self._open_at(target, _OPEN_FLAGS[kind], create_parents=parents and writing)
        try:
            _check_opened(os.fstat(fd), rel)
            if kind == "w":
                os.ftruncate(fd, 0)  # only now: a hard-linked or special file is never cut
            os.set_blocking(fd, True)
            raw = _CappedFileIO(fd, "w" if writing else "r", rel, self.policy)
        except BaseException:
            os.close(fd)
            raise
        buffered: io.BufferedIOBase = io.BufferedWriter(raw) if writing else io.BufferedReader(raw)
        if binary:
            return buffered  # type: ignore[return-value]
        return io.TextIOWrapper(buffered, encoding=encoding, errors=errors, newline=newline)

    def write_atomic(self, path: str | os.PathLike[str], data: str | bytes, *,
                     parents: bool = True) -> Path:
        """Write a whole file via a temp file and ``os.replace`` in the same pinned folder."""
        blob = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        target = self.resolve(path, write=True)
        rel = self.relative(target)
        self.check_write_size(len(blob), rel)
        parts = _parts(self.relative(target))
        if not parts:
            raise IsADirectoryError("'.' is the workspace folder itself; name a file in it")
        dir_fd = self._open_dir(parts[:-1], create=parents, rel=rel)
        try:
            mode = self._existing_mode(parts[-1], dir_fd, rel)
            _replace_in(dir_fd, parts[-1], blob, mode)
        finally:
            os.close(dir_fd)
        return target

    def entries(self, path: str | os.PathLike[str] = ".") -> list[Entry]:
        """A folder's entries (denied names left out), dirs first, without following links."""
        target = self.resolve(path)
        rel = self.relative(target)
        dir_fd = self._open_dir(_parts(rel), create=False, rel=rel)
        try:
            with os.scandir(dir_fd) as it:
                found = [_entry(e) for e in it]
        finally:
            os.close(dir_fd)
        visible = [e for e in found if not self.is_denied(_join(rel, e.name))]
        return sorted(visible, key=lambda e: (e.kind != "dir", e.name))

    def walk(self, path: str | os.PathLike[str] = ".", *, include_git: bool = False,
             max_files: int = 100_000) -> Iterator[str]:
        """Relative paths of files under ``path`` (links to folders and ``.git`` skipped).

        Names are candidates only: read each one through ``open``, which checks it again.
        """
        target = self.resolve(path)
        if not target.is_dir():
            yield self.relative(target)
            return
        count = 0
        for dirpath, dirnames, filenames, _ in os.fwalk(target, follow_symlinks=False):
            rel_dir = self.relative(dirpath)  # fwalk pins each folder by fd, never via a link
            dirnames[:] = sorted(d for d in dirnames if (include_git or d != ".git")
                                 and not self.is_denied(_join(rel_dir, d)))
            for rel in (_join(rel_dir, n) for n in sorted(filenames)):
                if not self.is_denied(rel):
                    count += 1
                    if count > max_files:
                        return
                    yield rel

    def check_write_size(self, size: int, rel: str) -> None:
        """Refuse a write bigger than ``PathPolicy.max_write_bytes`` before touching disk."""
        if size > self.policy.max_write_bytes:
            raise SafetyViolation("path.write_limit", f"writing {size} bytes to {rel!r} is over "
                                  f"the {self.policy.max_write_bytes}-byte limit "
                                  "(PathPolicy.max_write_bytes); write a smaller file")

    # -- helpers -----------------------------------------------------------------------------
    @property
    def _deny_regexes(self) -> list[re.Pattern[str]]:
        globs = tuple(self.policy.deny_globs)  # the policy may be edited after creation
        if self._deny_cache[0] != globs:
            self._deny_cache = (globs, [re.compile(glob_to_regex(g), re.IGNORECASE)
                                        for g in globs])
        return self._deny_cache[1]

    def _inside(self, path: str) -> bool:
        return path == self._root_str or path.startswith(self._root_str.rstrip("/") + "/")

    def _realpath(self, joined: str, raw: str) -> str:
        try:
            return os.path.realpath(joined, strict=True)
        except (FileNotFoundError, NotADirectoryError):
            return os.path.realpath(joined)  # a file to be created: resolve what exists
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SafetyViolation("path.symlink_loop", f"{_show(raw)} goes through a loop "
                                      "of symbolic links; use the real file's path") from None
            raise

    def _open_dir(self, parts: list[str], *, create: bool, rel: str) -> int:
        """A descriptor for root/parts, reached without following any symlink."""
        fd = os.open(self._root_str, os.O_RDONLY | _O_DIRECTORY | _O_CLOEXEC)
        try:
            for part in parts:
                nxt = _open_child_dir(fd, part, create=create, rel=rel)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _open_at(self, target: Path, flags: int, *, create_parents: bool) -> int:
        rel = self.relative(target)
        parts = _parts(rel)
        if not parts:
            raise IsADirectoryError("'.' is the workspace folder itself; use list_dir to see it")
        dir_fd = self._open_dir(parts[:-1], create=create_parents, rel=rel)
        try:
            return os.open(parts[-1], flags | _O_NOFOLLOW | _O_CLOEXEC | _O_NONBLOCK, 0o666,
                           dir_fd=dir_fd)
        except OSError as exc:
            raise _open_error(exc, rel) from None
        finally:
            os.close(dir_fd)

    def _existing_mode(self, name: str, dir_fd: int, rel: str) -> int | None:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            raise _changed(rel)
        _check_opened(st, rel)
        return stat.S_IMODE(st.st_mode)


def _check_file_type(real: str, raw: str) -> None:
    try:
        _check_kind(os.stat(real), _show(raw))
    except (FileNotFoundError, NotADirectoryError):
        return


def _check_opened(st: os.stat_result, rel: str) -> None:
    """The same file-type rules, on what was actually opened."""
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{rel!r} is a folder; use list_dir to see what is in it")
    _check_kind(st, repr(rel))


def _check_kind(st: os.stat_result, shown: str) -> None:
    """Folders and regular files with one link pass; devices, FIFOs, sockets do not."""
    if stat.S_ISDIR(st.st_mode):
        return
    if not stat.S_ISREG(st.st_mode):
        raise SafetyViolation("path.special", f"{shown} is a device, FIFO or socket, not a "
                              "regular file; tools only read and write regular files")
    if st.st_nlink > 1:
        raise SafetyViolation("path.hardlink", f"{shown} has {st.st_nlink} hard links, and a "
                              "hard link can be a file outside the workspace; copy it")


def _open_child_dir(fd: int, part: str, *, create: bool, rel: str) -> int:
    flags = os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC
    try:
        return os.open(part, flags, dir_fd=fd)
    except FileNotFoundError:
        if not create:
            raise FileNotFoundError(f"{rel!r} does not exist in the workspace (no folder "
                                    f"{part!r}); use list_dir to see what is there") from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        if stat.S_ISLNK(os.stat(part, dir_fd=fd, follow_symlinks=False).st_mode):
            raise _changed(rel) from None
        raise NotADirectoryError(f"{rel!r}: {part!r} is a file, not a folder") from None
    with suppress(FileExistsError):
        os.mkdir(part, 0o777, dir_fd=fd)
    return _open_child_dir(fd, part, create=False, rel=rel)


def _replace_in(dir_fd: int, name: str, blob: bytes, mode: int | None) -> None:
    tmp = f".aillm-{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC
    fd = os.open(tmp, flags, 0o666, dir_fd=dir_fd)
    try:
        with io.FileIO(fd, "w", closefd=True) as fh:
            if mode is not None:
                os.fchmod(fd, mode)
            view = memoryview(blob)
            while view:
                view = view[fh.write(view) or 0:]
            os.fsync(fd)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    with suppress(OSError):
        os.fsync(dir_fd)  # make the rename itself durable


class _CappedFileIO(io.FileIO):
    """A raw file that refuses to move more bytes than the policy allows."""

    def __init__(self, fd: int, mode: str, rel: str, policy: PathPolicy) -> None:
        super().__init__(fd, mode, closefd=True)
        self.rel = rel
        self._cap = policy.max_write_bytes if "w" in mode else policy.max_read_bytes
        self._moved = 0

    def readinto(self, buffer: Any) -> int | None:  # type: ignore[override]
        left = self._cap - self._moved
        if left <= 0:  # at the cap: fine at end of file, a refusal if there is more
            if super().read(1):
                raise self._over("read")
            return 0
        n = super().readinto(memoryview(buffer).cast("B")[:left])
        self._moved += n or 0
        return n

    def read(self, size: int | None = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0:
            return self.readall()
        buf = bytearray(size)
        n = self.readinto(buf) or 0
        return bytes(buf[:n])

    def readall(self) -> bytes:
        chunks = []
        while chunk := self.read(65536):
            chunks.append(chunk)
        return b"".join(chunks)

    def write(self, data: Any) -> int | None:  # type: ignore[override]
        self._moved += memoryview(data).nbytes
        if self._moved > self._cap:
            raise self._over("write")
        return super().write(data)

    def _over(self, what: str) -> SafetyViolation:
        field = "max_write_bytes" if what == "write" else "max_read_bytes"
        hint = "write less" if what == "write" else "read part of it (start_line/end_line)"
        return SafetyViolation(f"path.{what}_limit", f"{self.rel!r} is over the {self._cap}-"
                               f"byte {what} limit (PathPolicy.{field}); {hint}")


def _parse_mode(mode: str) -> tuple[str, bool]:
    kind = mode.replace("b", "").replace("t", "")
    if kind not in _OPEN_FLAGS or len(mode) > 2 or ("b" in mode and "t" in mode):
        raise ToolError(f"Workspace.open mode {mode!r} is not supported; use one of "
                        "'r', 'w', 'a', 'x', optionally with 'b'")
    return kind, "b" in mode


def _open_error(exc: OSError, rel: str) -> Exception:
    if exc.errno == errno.ELOOP:
        return _changed(rel)
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(f"{rel!r} does not exist in the workspace; "
                                 "use list_dir or glob_files to see what is there")
    if exc.errno == errno.EISDIR:
        return IsADirectoryError(f"{rel!r} is a folder; use list_dir to see what is in it")
    if exc.errno == errno.ENXIO:
        return SafetyViolation("path.special", f"{rel!r} is a FIFO or socket, not a file")
    return exc


def _changed(rel: str) -> SafetyViolation:
    return SafetyViolation("path.changed", f"{rel!r} became a symbolic link after it was "
                           "checked; it is not followed. Retry with the real file's path")


def _entry(e: os.DirEntry[str]) -> Entry:
    st = e.stat(follow_symlinks=False)
    name = e.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if stat.S_ISREG(st.st_mode):
        return Entry(name=name, kind="file", size=st.st_size)
    kind = "symlink" if stat.S_ISLNK(st.st_mode) else "dir" if stat.S_ISDIR(st.st_mode) else "other"
    return Entry(name=name, kind=kind)


def _as_text(path: Any) -> str:
    raw = os.fspath(path) if isinstance(path, str | os.PathLike) else path
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SafetyViolation("path.encoding", f"{raw[:80]!r} is not UTF-8") from None
    if not isinstance(raw, str):
        raise ToolError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return raw


def _parts(rel: str) -> list[str]:
    return [] if rel == "." else rel.split("/")


def _join(rel_dir: str, name: str) -> str:
    return name if rel_dir == "." else f"{rel_dir}/{name}"


__all__ = ["Entry", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "Workspace", "check_spelling",
           "glob_to_regex"]
