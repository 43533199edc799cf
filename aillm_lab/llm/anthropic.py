"""``anthropic:`` models through the official async SDK.

Structured output uses a forced tool: the output schema becomes the input schema of a tool
named ``structured_output`` and ``tool_choice`` forces it, so the reply is JSON arguments
that match the schema. We chose this over ``output_config.format`` because it works on
every Claude model and through Anthropic-compatible gateways; a schema whose root is not an
object is wrapped in ``{"value": ...}`` and unwrapped again. The JSON is returned in
``Completion.text`` and, when streaming, as text events. The SDK speaks ``httpx2``; we hand
it the SDK's aiohttp-backed ``DefaultAioHttpClient`` (plain ``httpx2.AsyncClient`` where
aiohttp is missing) with explicit pool limits, and ``max_retries=0``.

The current Messages API takes no temperature, top_p or seed, so those parameters are not
sent; ``max_tokens`` and ``stop`` are.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import anthropic
import httpx2
from pydantic import SecretStr

from aillm_lab.errors import MissingKey, ProviderError, UnsupportedInput
from aillm_lab.llm._clients import (
    Closer,
    HttpOptions,
    parse_arguments,
    sdk_http_client,
    vendor_message,
)
from aillm_lab.llm.base import OutputSpec
from aillm_lab.llm.hosted import HostedModel, StreamTally, parse_spec
from aillm_lab.llm.structured import json_schema
from aillm_lab.llm.types import (
    Completion,
    FinishReason,
    GenerationParams,
    ImagePart,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from aillm_lab.config import LabSettings

ANTHROPIC_URL = "https://api.anthropic.com"
OUTPUT_TOOL = "structured_output"
_FINISH: dict[str, FinishReason] = {"end_turn": "stop", "stop_sequence": "stop",
                                    "pause_turn": "stop", "max_tokens": "length",
                                    "model_context_window_exceeded": "length",
                                    "tool_use": "tool_calls", "refusal": "error"}
# error events inside a 200 stream carry a type instead of a status
_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401,
                 "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                 "rate_limit_error": 429, "api_error": 500, "timeout_error": 504,
                 "overloaded_error": 529}


class _Request(NamedTuple):
    """The Messages API body, and whether the output schema was wrapped in ``{"value": …}``
    (the reply is unwrapped again)."""

    body: dict[str, Any]
    wrapped: bool


class AnthropicModel(HostedModel[_Request]):
    """A Claude chat model; ``system`` messages go to the ``system=`` parameter."""

    provider = "anthropic"
    supports_images = True

    key_hint = "ANTHROPIC_API_KEY (or AILLM_ANTHROPIC_API_KEY)"

    def __init__(self, name: str, *, api_key: str | SecretStr | None = None,
                 base_url: str | None = None, http: HttpOptions | None = None) -> None:
        super().__init__(name, api_key=api_key, http=http, base_url=base_url
                         or os.environ.get("ANTHROPIC_BASE_URL") or ANTHROPIC_URL)

    # -- the wire format ---------------------------------------------------------------------
    def _build(self) -> tuple[Any, Closer]:
        http = sdk_http_client(anthropic, self._http)
        key = self._api_key.get_secret_value() if self._api_key is not None else None
        if not key and self.base_url != ANTHROPIC_URL:
            key = "not-needed"  # compatible gateways and test servers ignore it
        # without a key the SDK finds one itself: ANTHROPIC_AUTH_TOKEN, a profile, ...
        client = anthropic.AsyncAnthropic(api_key=key or None, base_url=self.base_url,
                                          max_retries=0, timeout=http.timeout, http_client=http)
        if not any(getattr(client, a, None) for a in ("api_key", "auth_token", "credentials")):
            raise MissingKey(
                f"no Anthropic API key for {self.id}: set {self.key_hint}, or point the model "
                "at a compatible server with ANTHROPIC_BASE_URL or 'anthropic:NAME@URL'.",
                provider=self.provider, model=self.id)
        return client, client.close

    def _request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None,
                 output: OutputSpec, params: GenerationParams) -> _Request:
        system, chat = to_anthropic_messages(messages)
        request: dict[str, Any] = {"model": self.name, "messages": chat,
                                   "max_tokens": params.max_tokens}
        if system:
            request["system"] = system
        if params.stop:
            request["stop_sequences"] = params.stop
        specs = [{"name": t.name, "description": t.description, "input_schema": t.parameters}
                 for t in tools or []]
        wrapped = False
        if output is not None:
            schema, wrapped = _object_schema(json_schema(output))
            specs.append({"name": OUTPUT_TOOL, "input_schema": schema,
                          "description": "Give your final answer by calling this tool; its "
                                         "input must match the schema."})
            choice: dict[str, Any] = {"type": "any"} if tools else {
                "type": "tool", "name": OUTPUT_TOOL}
        else:
            choice = _tool_choice(params.tool_choice)
        if specs:
            request["tools"] = specs
            request["tool_choice"] = choice
        return _Request(request, wrapped)

    async def _send(self, client: Any, request: _Request) -> Any:
        return await client.messages.create(**request.body)

    def _completion(self, response: Any, request: _Request, latency_s: float) -> Completion:
        return _completion(response, self.id, request.wrapped, latency_s)

    async def _events(self, request: _Request) -> AsyncIterator[StreamEvent]:
        tally = StreamTally()
        wrapped = request.wrapped
        client = await self._client()
        stream = await client.messages.create(**request.body, stream=True)
        stop_reason, response_id = None, None
        answer: str | None = None  # the output tool's JSON, which is the final text
        raw_usage: dict[str, Any] = {}
        blocks: dict[int, dict[str, Any]] = {}
        calls: list[ToolCall] = []
        async with stream:
            async for event in stream:
                kind = event.type
                if kind == "message_start":
                    response_id = event.message.id
                    raw_usage.update(_usage_fields(event.message.usage))
                elif kind == "content_block_start":
                    block = event.content_block
                    blocks[event.index] = {"type": block.type, "id": getattr(block, "id", ""),
                                           "name": getattr(block, "name", ""), "json": ""}
                elif kind == "content_block_delta":
                    delta, slot = event.delta, blocks.get(event.index, {})
                    piece = ""
                    if delta.type == "text_delta":
                        piece = delta.text
                    elif delta.type == "input_json_delta":
                        slot["json"] = slot.get("json", "") + delta.partial_json
                        if slot.get("name") == OUTPUT_TOOL and not wrapped:
                            piece = delta.partial_json  # the structured answer is the text
                    if piece:
                        yield tally.text_event(piece)
                elif kind == "content_block_stop":
                    slot = blocks.get(event.index, {})
                    if slot.get("type") != "tool_use":
                        continue
                    arguments = parse_arguments(slot["json"])
                    if slot["name"] == OUTPUT_TOOL:
                        answer = json.dumps(arguments.get("value")) if wrapped else slot["json"]
                        if wrapped:
                            yield StreamEvent(type="text", text=answer)
                        continue
                    call = ToolCall(id=slot["id"], name=slot["name"], arguments=arguments)
                    calls.append(call)
                    yield StreamEvent(type="tool_call", tool_call=call)
                elif kind == "message_delta":
                    stop_reason = event.delta.stop_reason or stop_reason
                    raw_usage.update(_usage_fields(event.usage))
        for event in tally.closing_events(
                calls_sent=True, text=tally.text if answer is None else answer,
                tool_calls=calls, usage=_usage(raw_usage), model=self.id,
                response_id=response_id, finish_reason=_finish(stop_reason, calls)):
            yield event

    def _vendor_error(self, exc: BaseException, started: bool) -> ProviderError | None:
        errors = self._errors
        if isinstance(exc, anthropic.APIStatusError):
            status: int | None = exc.status_code
            body = exc.body
            if status is not None and status < 400 and isinstance(body, dict):
                error = body.get("error")
                kind = error.get("type") if isinstance(error, dict) else None
                status = _ERROR_STATUS.get(str(kind))
            return errors.http_error(status, vendor_message(body, exc.message),
                                     exc.response.headers, started=started)
        if isinstance(exc, anthropic.APITimeoutError):
            return self._timed_out(started, exc)
        if isinstance(exc, anthropic.APIConnectionError):
            return errors.connection_error(str(exc.__cause__ or exc), started=started)
        if isinstance(exc, httpx2.TransportError):  # a stream cut mid-body is not wrapped
            return errors.connection_error(str(exc) or type(exc).__name__, started=started)
        return None


def create(name: str, settings: LabSettings, *, base_url: str | None = None,
           api_key: str | SecretStr | None = None, connect_timeout_s: float | None = None,
           max_connections: int | None = None) -> AnthropicModel:
    """Factory for ``anthropic:NAME`` or ``anthropic:NAME@BASE_URL``."""
    name, spec_url, http = parse_spec("anthropic", name, settings,
                                      connect_timeout_s=connect_timeout_s,
                                      max_connections=max_connections)
    return AnthropicModel(name, api_key=api_key or settings.anthropic_api_key,
                          base_url=base_url or spec_url, http=http)


# -- conversion -------------------------------------------------------------------------------
def to_anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """``(system, messages)``: tool results become ``tool_result`` blocks in a user turn,
    and consecutive turns of one role are merged, as the API expects."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "system":
            system.append(m.text)
            continue
        if m.role == "tool":
            if not m.tool_call_id:
                raise UnsupportedInput("a tool message needs tool_call_id, the id of the "
                                       "assistant's tool call it answers: Message.tool(r, id)")
            role, content = "user", [{"type": "tool_result", "tool_use_id": m.tool_call_id,
                                      "content": m.text}]
        elif m.role == "assistant":
            role = "assistant"
            content = [{"type": "text", "text": m.text}] if m.text else []
            content += [{"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                        for c in m.tool_calls]
            if not content:
                continue  # the API rejects empty turns
        else:
            role = "user"
            content = [_block(p) for p in m.content] if m.images else m.text
        if out and out[-1]["role"] == role:
            out[-1]["content"] = _blocks(out[-1]["content"]) + _blocks(content)
        else:
            out.append({"role": role, "content": content})
    return "\n\n".join(system), out


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return content


def _block(part: Any) -> dict[str, Any]:
    if not isinstance(part, ImagePart):
        return {"type": "text", "text": part.text}
    if part.data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": part.media_type,
                                            "data": part.data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


def _tool_choice(choice: str) -> dict[str, Any]:
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _object_schema(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Tool inputs must be objects; other roots travel as ``{"value": ...}``."""
    if schema.get("type") == "object" or "properties" in schema:
        return schema, False
    defs = {k: schema[k] for k in ("$defs", "definitions") if k in schema}
    inner = {k: v for k, v in schema.items() if k not in defs}
    return {"type": "object", "properties": {"value": inner}, "required": ["value"],
            **defs}, True


def _usage_fields(usage: Any) -> dict[str, Any]:
    if usage is None:
        return {}
    fields = ("input_tokens", "output_tokens", "cache_read_input_tokens",
              "cache_creation_input_tokens")
    found = {f: getattr(usage, f, None) for f in fields}
    details = getattr(usage, "output_tokens_details", None)
    found["thinking_tokens"] = getattr(details, "thinking_tokens", None)
    return {k: v for k, v in found.items() if v is not None}


def _usage(raw: dict[str, Any]) -> Usage:
    """Anthropic counts cached prompt tokens apart from ``input_tokens``; we include them."""
    read = raw.get("cache_read_input_tokens", 0)
    write = raw.get("cache_creation_input_tokens", 0)
    return Usage(input_tokens=raw.get("input_tokens", 0) + read + write,
                 output_tokens=raw.get("output_tokens", 0), cache_read_tokens=read,
                 cache_write_tokens=write, reasoning_tokens=raw.get("thinking_tokens", 0))


def _finish(reason: str | None, calls: list[ToolCall]) -> FinishReason:
    if calls:
        return "tool_calls"
    finish = _FINISH.get(reason or "end_turn", "stop")
    return "stop" if finish == "tool_calls" else finish  # only the output tool was called


def _completion(response: Any, model_id: str, wrapped: bool, latency: float) -> Completion:
    text, calls = "", []
    for block in response.content:
        if block.type == "text":
            text += block.text
        elif block.type == "tool_use" and block.name == OUTPUT_TOOL:
            answer = block.input.get("value") if wrapped else block.input
            text = json.dumps(answer)
        elif block.type == "tool_use":
            calls.append(ToolCall(id=block.id, name=block.name,
                                  arguments=parse_arguments(block.input)))
    return Completion(text=text, tool_calls=calls, usage=_usage(_usage_fields(response.usage)),
                      model=model_id, response_id=response.id,
                      finish_reason=_finish(response.stop_reason, calls), latency_s=latency)
