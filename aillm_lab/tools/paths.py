"""``Workspace``: the one folder tools may touch, and the path rules that keep them in it."""

from __future__ import annotations

from pathlib import Path

from aillm_lab.errors import SafetyViolation
from aillm_lab.tools.policy import PathPolicy


class Workspace:
    """Resolve user/model-supplied paths to real paths inside ``root``, or refuse."""

    def __init__(self, root: str | Path, policy: PathPolicy | None = None) -> None:
        self.root = Path(root).expanduser().resolve()
        self.policy = policy or PathPolicy()

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    def resolve(self, path: str | Path, *, write: bool = False) -> Path:
        """The canonical absolute path, or ``SafetyViolation`` if it leaves the workspace."""
        raw = str(path)
        if "\x00" in raw:
            raise SafetyViolation("path.nul", f"{raw!r} contains a NUL byte")
        target = (self.root / raw).resolve()
        if not target.is_relative_to(self.root):
            raise SafetyViolation("path.outside", f"{raw!r} resolves outside the workspace "
                                  f"{self.root}; use a path relative to it")
        return target

    def relative(self, path: Path) -> str:
        """How a resolved path is shown to the model: relative to the root, POSIX style."""
        return path.relative_to(self.root).as_posix() or "."
