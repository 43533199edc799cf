"""A fake Anthropic Messages API: JSON and SSE events, tool use, prompt-cache usage."""

from __future__ import annotations

import json
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

_ERRORS: dict[str, tuple[str, str]] = {  # kind: (error type, default message)
    "rate_limit": ("rate_limit_error", "Number of requests has exceeded your per-minute rate "
                   "limit (fake server)."),
    "server_error": ("api_error", "Internal server error (fake server)."),
    "unavailable": ("api_error", "Service unavailable (fake server)."),
    "overloaded": ("overloaded_error", "Overloaded"),
    "bad_request": ("invalid_request_error", "Invalid request."),
    "unauthorized": ("authentication_error", "invalid x-api-key"),
    "not_found": ("not_found_error", "Not found."),
}


class FakeAnthropic(FakeServer):
    """``POST /v1/messages`` (and ``/v1/messages/count_tokens``); ``url`` has no ``/v1``.

    Usage is scripted in the library's terms, where ``input_tokens`` includes cached tokens;
    on the wire ``input_tokens`` excludes them, as Anthropic reports it, so a provider that
    adds ``cache_read_input_tokens`` and ``cache_creation_input_tokens`` back gets the script.
    ``reasoning_tokens`` go out as ``output_tokens_details.thinking_tokens``. A malformed tool
    call streams truncated ``partial_json`` (or, in JSON, a string ``input``). Like the real
    API it rejects ``tool_result`` blocks without a matching ``tool_use`` just before, and
    ``tool_use`` blocks left unanswered.
    """

    vendor = "anthropic"
    request_id_header = "request-id"

    def routes(self) -> list[tuple[str, str, Render]]:
        return [("POST", "/v1/messages", self._messages),
                ("POST", "/v1/messages/count_tokens", self._count_tokens)]

    def error_body(self, status: int, kind: str, message: str | None) -> Any:
        error_type, default = _ERRORS.get(kind, _ERRORS["server_error"])
        return {"type": "error", "error": {"type": error_type, "message": message or default}}

    def last_user_text(self, body: dict[str, Any]) -> str:
        for message in reversed(body.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content
                blocks = [b for b in content or [] if isinstance(b, dict)]
                text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
                return text or "".join(_text(b.get("content")) for b in blocks
                                       if b.get("type") == "tool_result")
        return ""

    # -- endpoints ---------------------------------------------------------------------------
    def _messages(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        _validate(body)
        reply = self.next_reply(body)
        tools = [t.get("name", "") for t in body.get("tools") or [] if isinstance(t, dict)]
        malformed = fault is not None and fault.kind == "malformed_tool_call"
        calls = [(call.id or self.new_id("toolu_"), call.name, call.arguments, arguments)
                 for call, arguments in tool_arguments(reply, malformed, tools)]
        stop = "tool_use" if calls else ("max_tokens" if reply.finish_reason == "length"
                                         else "end_turn")
        message = {"id": self.new_id("msg_"), "type": "message", "role": "assistant",
                   "model": body["model"]}
        if body.get("stream"):
            return Answer(frames=_stream(message, reply, calls, stop),
                          content_type="text/event-stream")
        content: list[dict[str, Any]] = []
        if reply.text or not calls:
            content.append({"type": "text", "text": reply.text})
        content += [{"type": "tool_use", "id": call_id, "name": name,
                     "input": text if malformed else arguments}
                    for call_id, name, arguments, text in calls]
        return Answer({**message, "content": content, "stop_reason": stop,
                       "stop_sequence": None, "usage": _usage(reply.usage)})

    def _count_tokens(self, body: dict[str, Any], fault: Fault | None) -> Answer:
        return Answer({"input_tokens": count_tokens(json.dumps(body.get("messages", [])))})


def _stream(message: dict[str, Any], reply: Completion,
            calls: list[tuple[str, str, dict[str, Any], str]], stop: str) -> list[bytes]:
    usage = _usage(reply.usage)
    start_usage = {**usage, "output_tokens": min(1, usage["output_tokens"])}
    start_usage.pop("output_tokens_details", None)
    events: list[dict[str, Any]] = [{"type": "message_start", "message": {
        **message, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}}]
    index = 0
    if reply.text or not calls:
        events.append({"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}})
        events.append({"type": "ping"})
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": piece}}
                   for piece in text_pieces(reply.text)]
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    for call_id, name, _, text in calls:
        events.append({"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": call_id, "name": name, "input": {}}})
        events += [{"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": part}}
                   for part in ["", *fragments(text)]]
        events.append({"type": "content_block_stop", "index": index})
        index += 1
    delta_usage: dict[str, Any] = {"output_tokens": usage["output_tokens"]}
    if "output_tokens_details" in usage:
        delta_usage["output_tokens_details"] = usage["output_tokens_details"]
    events.append({"type": "message_delta", "delta": {"stop_reason": stop,
                                                      "stop_sequence": None},
                   "usage": delta_usage})
    events.append({"type": "message_stop"})
    return [f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events]


def _usage(usage: Usage) -> dict[str, Any]:
    cached = usage.cache_read_tokens + usage.cache_write_tokens
    wire: dict[str, Any] = {"input_tokens": max(0, usage.input_tokens - cached),
                            "output_tokens": usage.output_tokens,
                            "cache_creation_input_tokens": usage.cache_write_tokens,
                            "cache_read_input_tokens": usage.cache_read_tokens,
                            "service_tier": "standard"}
    if usage.reasoning_tokens:
        wire["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return wire


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content or []
                   if isinstance(b, dict) and b.get("type") == "text")


def _validate(body: dict[str, Any]) -> None:
    """The checks Anthropic makes that a provider's conversion could get wrong."""
    if not body.get("model"):
        raise RequestRejected(400, "bad_request", "model: Field required")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise RequestRejected(400, "bad_request", "max_tokens: Field required (an integer >= 1)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(400, "bad_request", "messages: at least one message is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise RequestRejected(400, "bad_request", f"messages.{i}.role: Input should be "
                                  "'user' or 'assistant' (system goes in the top-level field)")
        previous = messages[i - 1] if i else {}
        asked = _ids(previous, "tool_use") if previous.get("role") == "assistant" else set()
        if message["role"] == "user" and (extra := _ids(message, "tool_result") - asked):
            raise RequestRejected(400, "bad_request", f"messages.{i}: unexpected `tool_use_id` "
                                  f"found in `tool_result` blocks: {', '.join(sorted(extra))}. "
                                  "Each `tool_result` block must have a corresponding "
                                  "`tool_use` block in the previous message.")
        following = messages[i + 1] if i + 1 < len(messages) else {}
        answered = _ids(following, "tool_result") if following.get("role") == "user" else set()
        if message["role"] == "assistant" and (missing := _ids(message, "tool_use") - answered):
            raise RequestRejected(400, "bad_request", f"messages.{i}: `tool_use` ids were found "
                                  "without `tool_result` blocks immediately after: "
                                  f"{', '.join(sorted(missing))}. Each `tool_use` block must "
                                  "have a corresponding `tool_result` block in the next message.")


def _ids(message: dict[str, Any], block_type: str) -> set[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return set()
    key = "id" if block_type == "tool_use" else "tool_use_id"
    return {str(b.get(key)) for b in content if isinstance(b, dict) and b.get("type") == block_type}
