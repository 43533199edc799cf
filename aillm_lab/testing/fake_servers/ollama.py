"""A fake Ollama server: chat as NDJSON (streaming unless ``"stream": false``), embed, tags."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from aillm_lab.llm.types import Completion

from ._base import (
    Answer,
    FakeServer,
    Fault,
    Render,
    Reply,
    ReplyFunction,
    RequestRejected,
    count_tokens,
    text_pieces,
    tool_arguments,
)

_MESSAGES = {
    "rate_limit": "rate limit exceeded (fake server)",
    "server_error": "internal server error (fake server)",
    "unavailable": "server busy, please try again.  maximum pending requests exceeded",
    "overloaded": "server overloaded (fake server)",
    "bad_request": "invalid request",
    "unauthorized": "unauthorized",
    "not_found": "404 page not found",
}


class FakeOllama(FakeServer):
    """``POST /api/chat``, ``POST /api/embed``, ``POST /api/embeddings``, ``GET /api/tags``
    and ``GET /api/version``; ``url`` is the host, as ``ollama.Client(host=...)`` takes it.

    Tool-call arguments are objects and carry no id, as Ollama sends them. A malformed tool
    call is reported the way Ollama reports one: an ``error parsing tool call`` error (a 500,
    or an ``{"error": ...}`` line mid-stream). Give ``models`` to list them in ``/api/tags``
    and to answer other model names with Ollama's 404 "not found".
    """

    vendor = "ollama"
    request_id_header = "x-fake-request-id"

    def __init__(self, replies: Iterable[Reply] = (), *, handler: ReplyFunction | None = None,
                 models: Sequence[str] | None = None, **options: Any) -> None:
        super().__init__(replies, handler=handler, **options)
        self.models = list(models) if models is not None else None

    def routes(self) -> list[tuple[str, str, Render]]:
        return [("POST", "/api/chat", self._chat), ("POST", "/api/embed", self._embed),
                ("POST", "/api/embeddings", self._embeddings),
                ("GET", "/api/tags", self._tags), ("GET", "/api/version", self._version)]

    def error_body(self, status: int, kind: str, message: str | None) -> Any:
        return {"error": message or _MESSAGES.get(kind, _MESSAGES["server_error"])}

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return str(message.get("content") or "")
        return ""

    # -- endpoints ---------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        model = self._model(body)
        messages = body.get("messages") or []
        if not isinstance(messages, list):
            raise RequestRejected(400, "bad_request", "messages must be an array")
        reply = self.next_reply(body)
        tools = [t.get("function", {}).get("name", "")
                 for t in body.get("tools") or [] if isinstance(t, dict)]
        malformed = fault is not None and fault.kind == "malformed_tool_call"
        calls = tool_arguments(reply, malformed, tools)
        head = {"model": model, "created_at": _now()}
        done = {**head, "message": {"role": "assistant", "content": ""}, "done": True,
                "done_reason": "length" if reply.finish_reason == "length" else "stop",
                **_stats(reply)}
        if malformed:
            raw = "".join(text for _, text in calls)
            error = f"error parsing tool call: raw='{raw}', err=unexpected end of JSON input"
            if body.get("stream", True) is False:
                raise RequestRejected(500, "server_error", error)
            return _ndjson([{**head, "message": {"role": "assistant", "content": piece},
                             "done": False} for piece in text_pieces(reply.text)]
                           + [{"error": error}])
        wire_calls = [{"function": {"name": call.name, "arguments": call.arguments}}
                      for call, _ in calls]
        if body.get("stream", True) is False:
            done["message"] = {"role": "assistant", "content": reply.text}
            if wire_calls:
                done["message"]["tool_calls"] = wire_calls
            return Answer(done)
        parts = [{**head, "message": {"role": "assistant", "content": piece}, "done": False}
                 for piece in text_pieces(reply.text)]
        if wire_calls:
            parts.append({**head, "message": {"role": "assistant", "content": "",
                                              "tool_calls": wire_calls}, "done": False})
        return _ndjson([*parts, done])

    def _embed(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        model = self._model(body)
        value = body.get("input", [])
        texts = [value] if isinstance(value, str) else [str(v) for v in value or []]
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise RequestRejected(400, "bad_request", "dimensions must be a positive integer")
        tokens = sum(count_tokens(t) for t in texts)
        return Answer({"model": model, "embeddings": self.embed_all(texts, dimensions),
                       "total_duration": 1000 * tokens, "load_duration": 1000,
                       "prompt_eval_count": tokens})

    def _embeddings(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        """The legacy single-prompt endpoint, still used by older clients."""
        self._model(body)
        return Answer({"embedding": self.embed_all([str(body.get("prompt", ""))], None)[0]})

    def _tags(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        return Answer({"models": [_tag(name) for name in self.models or ["llama3.2:latest"]]})

    def _version(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        return Answer({"version": "0.12.6"})

    def _model(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not model or not isinstance(model, str):
            raise RequestRejected(400, "bad_request", "model is required")
        known = {m for name in self.models or [] for m in (name, name.removesuffix(":latest"))}
        if self.models is not None and model not in known:
            raise RequestRejected(404, "not_found",
                                  f'model "{model}" not found, try pulling it first')
        return model


def _ndjson(parts: list[dict[str, Any]]) -> Answer:
    return Answer(frames=[(json.dumps(p) + "\n").encode() for p in parts],
                  content_type="application/x-ndjson")


def _stats(reply: Completion) -> dict[str, int]:
    """Ollama's counters; durations are fake but plausible nanoseconds."""
    prompt, output = reply.usage.input_tokens, reply.usage.output_tokens
    return {"total_duration": 2_000_000 * (prompt + output) + 1_000_000,
            "load_duration": 1_000_000, "prompt_eval_count": prompt,
            "prompt_eval_duration": 1_000_000 * prompt, "eval_count": output,
            "eval_duration": 2_000_000 * output}


def _tag(name: str) -> dict[str, Any]:
    full = name if ":" in name else f"{name}:latest"
    digest = hashlib.sha256(full.encode()).hexdigest()
    return {"name": full, "model": full, "modified_at": "2025-01-01T00:00:00Z",
            "size": 1_000_000_000, "digest": digest,
            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                        "families": ["llama"], "parameter_size": "1B",
                        "quantization_level": "Q4_K_M"}}


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")
