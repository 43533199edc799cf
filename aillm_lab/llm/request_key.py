"""The request key: a sha256 over everything that shapes an answer, and never a secret.

The record/replay store, the response cache and the call log all name a request by it, so
it lives apart from the gateway that computes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel

from aillm_lab.errors import ConfigError
from aillm_lab.llm.base import OutputSpec
from aillm_lab.llm.types import GenerationParams, Message, ToolSpec

# json.dumps with these options builds this encoder on every call; one is enough
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)


def request_hash(provider: str, model: str, messages: Sequence[Message], *,
                 base_url: str | None = None, tools: Sequence[ToolSpec] | None = None,
                 output: OutputSpec = None, params: GenerationParams | None = None,
                 sample: int = 0) -> str:
    """sha256 of a canonical JSON of everything that shapes an answer; never any key.

    ``base_url`` loses its user:password and query string, the places keys hide in URLs.
    ``sample`` tells apart repeated samples of one request (see ``Gateway.sample``).
    """
    if isinstance(output, type) and issubclass(output, BaseModel):
        schema: Any = output.model_json_schema()
    else:
        schema = output
    body = {
        "provider": provider, "model": model, "base_url": public_url(base_url),
        "messages": [m.model_dump(mode="json") for m in messages],
        "tools": [_spec(t).model_dump(mode="json") for t in tools or ()],
        "output": schema,
        "params": (params or GenerationParams()).model_dump(mode="json"),
        "sample": sample,
    }
    return hashlib.sha256(_CANONICAL.encode(body).encode()).hexdigest()


def _spec(item: object) -> ToolSpec:
    """A ``ToolSpec``, or a ``ConfigError`` naming the fix (models take specs only; turning
    a ``Tool`` or a function into one is the tools layer's job, above this one)."""
    if isinstance(item, ToolSpec):
        return item
    spec = getattr(item, "spec", None)
    hint = (f"pass {getattr(item, 'name', 'the_tool')}.spec" if isinstance(spec, ToolSpec)
            else "describe it with @al.tool first")
    raise ConfigError(f"a model takes tools as ToolSpec objects; got a {type(item).__name__}: "
                      f"{hint}, or go through Lab.chat(tools=...), which takes @al.tool "
                      f"tools, ToolSpecs and plain typed functions", fields=("tools",))


@functools.lru_cache(maxsize=256)
def public_url(url: str | None) -> str | None:
    """``url`` without user:password, query or fragment: what may be hashed and logged."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
