"""``openai:`` models through the official async SDK, also for OpenAI-compatible servers.

Point a model at vLLM, llama-server or LM Studio with ``openai:MODEL@http://host:8000/v1``,
``OpenAIModel(name, base_url=...)`` or ``OPENAI_BASE_URL``; such servers need no key.

Structured output is ``response_format={"type": "json_schema", ...}``. It is ``strict`` only
when the schema already obeys OpenAI's strict rules (every property required, no extra
properties), so ordinary pydantic models with defaults are accepted; the caller validates
the JSON either way. The SDK speaks ``httpx2``; we hand it the SDK's own aiohttp-backed
``DefaultAioHttpClient`` (plain ``httpx2.AsyncClient`` where aiohttp is missing) with explicit
pool limits, and ``max_retries=0``, since the gateway owns retries.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from pydantic import SecretStr

from aillm_lab.errors import MissingKey, ProviderError
from aillm_lab.llm._clients import (
    Closer,
    HttpOptions,
    parse_arguments,
    schema_name,
    sdk_http_client,
    stable_call_id,
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

OPENAI_URL = "https://api.openai.com/v1"
# reasoning models take max_completion_tokens and reject temperature/top_p
_REASONING = re.compile(r"^(o\d|gpt-5)")
_FINISH: dict[str, FinishReason] = {"stop": "stop", "length": "length",
                                    "tool_calls": "tool_calls", "function_call": "tool_calls",
                                    "content_filter": "error"}


class OpenAIModel(HostedModel[dict[str, Any]]):
    """A chat (and embedding) model on OpenAI or any server speaking its Chat Completions API."""

    provider = "openai"
    supports_images = True

    key_hint = "OPENAI_API_KEY (or AILLM_OPENAI_API_KEY)"

    def __init__(self, name: str, *, api_key: str | SecretStr | None = None,
                 base_url: str | None = None, http: HttpOptions | None = None) -> None:
        super().__init__(name, api_key=api_key, http=http,
                         base_url=base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        response = await self._call(lambda client: client.embeddings.create(
            model=self.name, input=list(texts), encoding_format="float"))
        return [list(d.embedding) for d in sorted(response.data, key=lambda d: d.index)]

    # -- the wire format ---------------------------------------------------------------------
    def _build(self) -> tuple[Any, Closer]:
        key = self._api_key.get_secret_value() if self._api_key is not None else ""
        if not key:
            if self.base_url == OPENAI_URL:
                raise MissingKey(
                    f"no OpenAI API key for {self.id}: set {self.key_hint}, or point the model at "
                    "an OpenAI-compatible server with OPENAI_BASE_URL or 'openai:NAME@URL'.",
                    provider=self.provider, model=self.id)
            key = "not-needed"  # local OpenAI-compatible servers ignore the key
        http = sdk_http_client(openai, self._http)
        client = openai.AsyncOpenAI(api_key=key, base_url=self.base_url, max_retries=0,
                                    timeout=http.timeout, http_client=http)
        return client, client.close

    def _request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None,
                 output: OutputSpec, params: GenerationParams) -> dict[str, Any]:
        request: dict[str, Any] = {"model": self.name, "messages": to_openai_messages(messages)}
        reasoning = bool(_REASONING.match(self.name))
        tokens = "max_completion_tokens" if reasoning or self.base_url == OPENAI_URL \
            else "max_tokens"  # compatible servers know the older name best
        request[tokens] = params.max_tokens
        if not reasoning:
            request["temperature"] = params.temperature
            if params.top_p != 1.0:
                request["top_p"] = params.top_p
        if params.stop:
            request["stop"] = params.stop
        if params.seed is not None:
            request["seed"] = params.seed
        if tools:
            request["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in tools]
            choice = params.tool_choice
            request["tool_choice"] = choice if choice in ("auto", "required", "none") else {
                "type": "function", "function": {"name": choice}}
        if output is not None:
            request["response_format"] = response_format(output)
        return request

    async def _send(self, client: Any, request: dict[str, Any]) -> Any:
        return await client.chat.completions.create(**request)

    def _completion(self, response: Any, request: dict[str, Any],
                    latency_s: float) -> Completion:
        return _completion(response, self.id, latency_s)

    async def _events(self, request: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        tally = StreamTally()
        client = await self._client()
        stream = await client.chat.completions.create(
            **request, stream=True, stream_options={"include_usage": True})
        finish, response_id = None, None
        usage = Usage()
        calls: dict[int, dict[str, str]] = {}
        async with stream:
            async for chunk in stream:
                response_id = response_id or chunk.id
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    finish = choice.finish_reason or finish
                    delta = choice.delta
                    if delta.content:
                        yield tally.text_event(delta.content)
                    for part in delta.tool_calls or []:
                        _add_tool_delta(calls, part)
        tool_calls = [_tool_call(i, calls[i]) for i in sorted(calls)]
        for event in tally.closing_events(  # tool calls come whole, at the end
                calls_sent=False, tool_calls=tool_calls, usage=usage, model=self.id,
                response_id=response_id, finish_reason=_finish(finish, tool_calls)):
            yield event

    def _vendor_error(self, exc: BaseException, started: bool) -> ProviderError | None:
        errors = self._errors
        if isinstance(exc, openai.APIStatusError):
            return errors.http_error(exc.status_code, vendor_message(exc.body, exc.message),
                                     exc.response.headers, started=started)
        if isinstance(exc, openai.APITimeoutError):
            return self._timed_out(started, exc)
        if isinstance(exc, openai.APIConnectionError):
            return errors.connection_error(str(exc.__cause__ or exc), started=started)
        if isinstance(exc, openai.APIError):  # an error event inside a stream
            return errors.http_error(None, vendor_message(exc.body, exc.message),
                                     started=started)
        if isinstance(exc, httpx2.TransportError):
            return errors.connection_error(str(exc), started=started)
        return None


def create(name: str, settings: LabSettings, *, base_url: str | None = None,
           api_key: str | SecretStr | None = None, connect_timeout_s: float | None = None,
           max_connections: int | None = None) -> OpenAIModel:
    """Factory for ``openai:NAME`` or ``openai:NAME@BASE_URL``."""
    name, spec_url, http = parse_spec("openai", name, settings,
                                      connect_timeout_s=connect_timeout_s,
                                      max_connections=max_connections)
    return OpenAIModel(name, api_key=api_key or settings.openai_api_key,
                       base_url=base_url or spec_url, http=http)


# -- conversion -------------------------------------------------------------------------------
def to_openai_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages in Chat Completions shape."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id or "", "content": m.text})
        elif m.role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": m.text or None}
            if m.tool_calls:
                item["tool_calls"] = [{"id": c.id, "type": "function", "function": {
                    "name": c.name, "arguments": json.dumps(c.arguments)}} for c in m.tool_calls]
            out.append(item)
        elif m.role == "user" and m.images:
            out.append({"role": "user", "content": [_part(p) for p in m.content]})
        else:
            out.append({"role": m.role, "content": m.text})
    return out


def response_format(output: OutputSpec) -> dict[str, Any]:
    schema = json_schema(output)
    return {"type": "json_schema", "json_schema": {
        "name": schema_name(output), "schema": schema, "strict": is_strict(schema)}}


def is_strict(schema: Any) -> bool:
    """Whether OpenAI's strict mode accepts ``schema`` as it is."""
    if isinstance(schema, list):
        return all(is_strict(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is not False:
            return False
        if set(schema.get("required", [])) != set(props):
            return False
    return all(is_strict(v) for k, v in schema.items() if k not in ("enum", "const", "default"))


def _part(part: Any) -> dict[str, Any]:
    if isinstance(part, ImagePart):
        return {"type": "image_url", "image_url": {"url": part.data_url}}
    return {"type": "text", "text": part.text}


def _usage(usage: Any) -> Usage:
    prompt = getattr(usage, "prompt_tokens_details", None)
    completion = getattr(usage, "completion_tokens_details", None)
    return Usage(input_tokens=usage.prompt_tokens or 0,
                 output_tokens=usage.completion_tokens or 0,
                 cache_read_tokens=getattr(prompt, "cached_tokens", None) or 0,
                 reasoning_tokens=getattr(completion, "reasoning_tokens", None) or 0)


def _add_tool_delta(calls: dict[int, dict[str, str]], part: Any) -> None:
    """Assemble streamed tool-call pieces by index; some servers repeat the id or name."""
    slot = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
    if part.id and not slot["id"]:
        slot["id"] = part.id
    function = part.function
    if function is None:
        return
    if function.name and function.name != slot["name"]:
        slot["name"] += function.name
    if function.arguments:
        slot["arguments"] += function.arguments


def _tool_call(index: int, slot: dict[str, str]) -> ToolCall:
    arguments = parse_arguments(slot["arguments"])
    return ToolCall(id=slot["id"] or stable_call_id(index, slot["name"], arguments),
                    name=slot["name"], arguments=arguments)


def _finish(reason: str | None, calls: list[ToolCall]) -> FinishReason:
    if calls:
        return "tool_calls"
    return _FINISH.get(reason or "stop", "stop")


def _completion(response: Any, model_id: str, latency: float) -> Completion:
    choice = response.choices[0]
    message = choice.message
    calls = []
    for i, call in enumerate(message.tool_calls or []):
        function = getattr(call, "function", None)
        if function is None:  # custom (non-function) tools are not ours
            continue
        arguments = parse_arguments(function.arguments)
        calls.append(ToolCall(id=call.id or stable_call_id(i, function.name, arguments),
                              name=function.name, arguments=arguments))
    text = message.content or getattr(message, "refusal", None) or ""
    usage = _usage(response.usage) if response.usage is not None else Usage()
    return Completion(text=text, tool_calls=calls, usage=usage, model=model_id,
                      response_id=response.id, finish_reason=_finish(choice.finish_reason, calls),
                      latency_s=latency)
