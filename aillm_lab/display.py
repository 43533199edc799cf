"""How results show in Jupyter: one ``_repr_mimebundle_`` (text/plain and text/html) for every
result class of every layer, so a notebook, nbconvert and a plain terminal each get a view.

It sits beside the layer chain (like ``config`` and ``errors``): a completion, a tool result,
an agent run, search hits and memories all use it, and none of them may import ``ui``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any


class Displayable:
    """A mixin: subclasses write ``_repr_html_``; the bundle pairs it with ``repr``."""

    def _repr_html_(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, include: Iterable[str] | None = None,
                          exclude: Iterable[str] | None = None) -> dict[str, str]:
        bundle = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if include is not None:
            bundle = {k: v for k, v in bundle.items() if k in set(include)}
        if exclude is not None:
            bundle = {k: v for k, v in bundle.items() if k not in set(exclude)}
        return bundle


def fields_table(title: str, fields: Sequence[tuple[str, Any]], body: str = "") -> str:
    """A titled two-column table (escaped), then ``body`` (already HTML)."""
    rows = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th>"
                   f"<td>{html.escape(str(v))}</td></tr>" for k, v in fields if v is not None)
    return f"<div><b>{html.escape(title)}</b><table>{rows}</table>{body}</div>"


def pre(text: str, limit: int = 4000) -> str:
    """``text`` as escaped preformatted HTML, cut at ``limit`` characters (said so)."""
    cut = text if len(text) <= limit else text[:limit] + f"\n… ({len(text) - limit} more)"
    return f"<pre style='white-space:pre-wrap'>{html.escape(cut)}</pre>"


__all__ = ["Displayable", "fields_table", "pre"]
