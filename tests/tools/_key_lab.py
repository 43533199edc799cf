"""A Lab whose secret is in the environment and in workspace files: the redaction tests'
shared setting (a unique module name, so it never shadows another folder's helpers)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import aillm_lab as al


@contextmanager
def key_lab(tmp_path: Path, env_name: str, key: str,
            files: Mapping[str, str]) -> Iterator[al.Lab]:
    """``al.Lab`` with ``env_name=key`` set while it lives (so the guard's redactor knows
    the key) and ``files`` written into its workspace."""
    os.environ[env_name] = key
    try:
        with al.Lab(home=tmp_path / "home") as lab:
            for name, text in files.items():
                (lab.tools.workspace.root / name).write_text(text)
            yield lab
    finally:
        os.environ.pop(env_name, None)
