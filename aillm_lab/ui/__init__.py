"""The faces: notebook widgets (``al.ui.chat()``, ``al.ui.trace(run)``,
``al.ui.approvals(lab)``), the IPython magics and the Panel dashboard. Loaded on use, so
``import aillm_lab`` never imports ipywidgets or panel."""

from __future__ import annotations

import importlib
from typing import Any

_WIDGETS = ("chat", "trace", "approvals", "dashboard", "ChatWidget", "TraceWidget",
            "ApprovalsWidget")


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        return getattr(importlib.import_module("aillm_lab.ui.widgets"), name)
    raise AttributeError(f"module 'aillm_lab.ui' has no attribute {name!r}")


__all__ = list(_WIDGETS)
