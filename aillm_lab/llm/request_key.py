"""The request key: a sha256 over everything that shapes an answer, and never a secret.

The record/replay store, the response cache and the call log all name a request by it, so
it lives apart from the gateway that computes it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
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

    The bytes are those of ``json.dumps(body, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False, default=str)`` for ``body = {"base_url", "messages", "model",
    "output", "params", "provider", "sample", "tools"}`` (cassettes replay by this value,
    so it never changes). They are joined from each part's own canonical text, in that
    sorted key order, so a message or tool seen in an earlier call (an agent's history
    grows by a few messages a step) is not encoded again: see ``_encoded``.
    """
    if isinstance(output, type) and issubclass(output, BaseModel):
        schema: Any = output.model_json_schema()
    else:
        schema = output
    encode = _CANONICAL.encode
    text = "".join((
        '{"base_url":', _scalar(public_url(base_url)),
        ',"messages":[', ",".join([_encoded(m) for m in messages]),
        '],"model":', encode(model), ',"output":', _scalar(schema),
        ',"params":', _encoded(params or _DEFAULT_PARAMS),
        ',"provider":', encode(provider), ',"sample":', _scalar(sample),
        ',"tools":[', ",".join([_encoded(_spec(t)) for t in tools or ()]), "]}"))
    return hashlib.sha256(text.encode()).hexdigest()


_DEFAULT_PARAMS = GenerationParams()
_SEEN_MAX = 1024
_SEEN_CHARS = 16_384  # longer texts (an image, a long document) are encoded each time
# id(obj) -> (obj, its JSON-mode dump, the dump's canonical text): the object is held, so
# its id is not reused while the entry lives, and the dump is compared on every use, so an
# object changed in place since (a message edited between two calls) is encoded afresh
_seen: dict[int, tuple[BaseModel, Any, str]] = {}
_seen_lock = threading.Lock()


def _scalar(value: Any) -> str:
    """``_CANONICAL.encode(value)``, without the encoder's machinery for the usual None
    and plain int (what json writes for them: ``null`` and ``int.__repr__``)."""
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    return _CANONICAL.encode(value)


def _encoded(obj: BaseModel) -> str:
    """The canonical JSON text of ``obj.model_dump(mode="json")``, reused while the object
    dumps to the same data. The dump (a C call) is always made; the text (the costly
    part, with sorted keys) is reused."""
    dump = obj.model_dump(mode="json")
    hit = _seen.get(id(obj))
    if hit is not None and hit[0] is obj and hit[1] == dump:
        return hit[2]
    text = _CANONICAL.encode(dump)
    if len(text) > _SEEN_CHARS:
        return text
    with _seen_lock:
        if len(_seen) >= _SEEN_MAX:
            _seen.clear()  # an agent's history is re-seen within a few calls; start over
        _seen[id(obj)] = (obj, dump, text)
    return text


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
