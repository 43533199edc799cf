"""A fake OpenAI API: Chat Completions (JSON and SSE) and embeddings, as the SDK reads them."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Sequence
from typing import Any

from aillm_lab.llm.types import Completion, Usage

from ._base import (
    Answer,
    FakeServer,
    Fault,
    Render,
    RequestRejected,
    count_tokens,
    fragments,
    text_pieces,
    tool_arguments,
)

_ERRORS: dict[str, tuple[str, str, str]] = {  # kind: (type, code, message)
    "rate_limit": ("requests", "rate_limit_exceeded",
                   "Rate limit reached for requests (fake server). Please try again later."),
    "server_error": ("server_error", "server_error",
                     "The server had an error while processing your request (fake server)."),
    "unavailable": ("server_error", "service_unavailable",
                    "The server is overloaded or not ready yet (fake server)."),
    "overloaded": ("server_error", "overloaded",
                   "The engine is currently overloaded, please try again later (fake server)."),
    "bad_request": ("invalid_request_error", "invalid_request", "Invalid request."),
    "unauthorized": ("invalid_request_error", "invalid_api_key",
                     "Incorrect API key provided (fake server)."),
    "not_found": ("invalid_request_error", "unknown_url", "Unknown request URL."),
}


class FakeOpenAI(FakeServer):
    """``POST /v1/chat/completions`` and ``POST /v1/embeddings``; ``url`` ends in ``/v1``.

    Streams follow the real wire: a role chunk, content deltas, tool calls by ``index`` (id
    and name first, then argument fragments), a finish chunk, an optional usage chunk with
    empty ``choices`` when ``stream_options.include_usage`` is set, then ``data: [DONE]``.
    A malformed tool call carries truncated JSON in ``arguments``. Like the real API it
    rejects ``tool`` messages that answer no preceding call, and calls left unanswered.
    """

    vendor = "openai"
    url_path = "/v1"
    request_id_header = "x-request-id"

    def routes(self) -> list[tuple[str, str, Render]]:
        return [("POST", "/v1/chat/completions", self._chat),
                ("POST", "/v1/embeddings", self._embeddings)]

    def error_body(self, status: int, kind: str, message: str | None) -> Any:
        kind_type, code, default = _ERRORS.get(kind, _ERRORS["server_error"])
        return {"error": {"message": message or default, "type": kind_type, "param": None,
                          "code": code}}

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return _text(message.get("content"))
        return ""

    # -- chat --------------------------------------------------------------------------------
    def _chat(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        if not body.get("model"):
            raise RequestRejected(400, "bad_request", "you must provide a model parameter")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestRejected(400, "bad_request",
                                  "Invalid 'messages': empty array. Expected at least 1 item.")
        _check_tool_messages(messages)
        reply = self.next_reply(body)
        tools = [t.get("function", {}).get("name", "") for t in body.get("tools") or []
                 if isinstance(t, dict)]
        malformed = fault is not None and fault.kind == "malformed_tool_call"
        calls = [(call.id or self.new_id("call_"), call.name, arguments)
                 for call, arguments in tool_arguments(reply, malformed, tools)]
        finish = "tool_calls" if calls else ("length" if reply.finish_reason == "length"
                                             else "stop")
        head = {"id": self.new_id("chatcmpl-"), "created": int(time.time()),
                "model": body["model"], "system_fingerprint": "fp_fake"}
        if body.get("stream"):
            usage = (body.get("stream_options") or {}).get("include_usage") is True
            return Answer(frames=_stream(head, reply, calls, finish, usage),
                          content_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None,
                                   "refusal": None, "annotations": []}
        if calls:
            message["tool_calls"] = [_call(*c) for c in calls]
        return Answer({**head, "object": "chat.completion", "service_tier": "default",
                       "choices": [{"index": 0, "message": message, "logprobs": None,
                                    "finish_reason": finish}],
                       "usage": _usage(reply.usage)})

    # -- embeddings --------------------------------------------------------------------------
    def _embeddings(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        if not body.get("model"):
            raise RequestRejected(400, "bad_request", "you must provide a model parameter")
        texts = _inputs(body.get("input"))
        dimensions = body.get("dimensions")
        if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
            raise RequestRejected(400, "bad_request", "'dimensions' must be a positive integer")
        vectors = self.embed_all(texts, dimensions)
        as_base64 = body.get("encoding_format") == "base64"
        tokens = sum(count_tokens(t) for t in texts)
        return Answer({"object": "list", "model": body["model"],
                       "data": [{"object": "embedding", "index": i,
                                 "embedding": float32_base64(v) if as_base64 else v}
                                for i, v in enumerate(vectors)],
                       "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _stream(head: dict[str, Any], reply: Completion, calls: list[tuple[str, str, str]],
            finish: str, with_usage: bool) -> list[bytes]:
    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta, "logprobs": None,
                             "finish_reason": finish_reason}]}

    chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
    chunks += [chunk({"content": piece}) for piece in text_pieces(reply.text)]
    for index, (call_id, name, arguments) in enumerate(calls):
        chunks.append(chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function",
                                             "function": {"name": name, "arguments": ""}}]}))
        chunks += [chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
                   for part in fragments(arguments)]
    chunks.append(chunk({}, finish))
    if with_usage:
        chunks.append({"choices": [], "usage": _usage(reply.usage)})
    frames = []
    for body in chunks:
        data = {**head, "object": "chat.completion.chunk", "service_tier": "default", **body}
        if with_usage:
            data.setdefault("usage", None)
        frames.append(f"data: {json.dumps(data)}\n\n".encode())
    frames.append(b"data: [DONE]\n\n")
    return frames


def float32_base64(vector: Sequence[float]) -> str:
    """Little-endian float32 bytes in base64, what ``encoding_format="base64"`` returns."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _usage(usage: Usage) -> dict[str, Any]:
    prompt = {"cached_tokens": usage.cache_read_tokens, "audio_tokens": 0}
    if usage.cache_write_tokens:  # optional in the API; only some models report it
        prompt["cache_write_tokens"] = usage.cache_write_tokens
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.input_tokens + usage.output_tokens,
            "prompt_tokens_details": prompt,
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens,
                                          "audio_tokens": 0, "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _inputs(value: Any) -> list[str]:
    """Embedding input: a string, strings, a token array or token arrays."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        return [" ".join(map(str, value))]
    if isinstance(value, list) and value:
        return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise RequestRejected(400, "bad_request", "'input' must be a non-empty string or array")


def _check_tool_messages(messages: list[Any]) -> None:
    """Reject tool results that answer nothing and tool calls left unanswered, as OpenAI does."""
    answerable: set[str] = set()
    pending: set[str] = set()
    for message in messages:
        if not isinstance(message, dict):
            raise RequestRejected(400, "bad_request", "each message must be an object")
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in answerable:
                raise RequestRejected(400, "bad_request", "Invalid parameter: messages with "
                                      "role 'tool' must be a response to a preceeding message "
                                      f"with 'tool_calls' (tool_call_id {call_id!r}).")
            pending.discard(call_id)
            continue
        if pending:
            break
        calls = (message.get("tool_calls") or []) if role == "assistant" else []
        answerable = {c.get("id") for c in calls if isinstance(c, dict)}
        pending = set(answerable)
    if pending:
        raise RequestRejected(400, "bad_request", "An assistant message with 'tool_calls' must "
                              "be followed by tool messages responding to each 'tool_call_id'. "
                              f"The following tool_call_ids did not have response messages: "
                              f"{', '.join(sorted(pending))}")
