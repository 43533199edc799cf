"""``ollama:`` models through the official async SDK, on ``settings.ollama_host`` (OLLAMA_HOST).

Structured output is Ollama's ``format=<JSON schema>``. Tool calls arrive whole, with object
arguments and no id, so ids are made from the call's index, name and arguments: equal calls
get equal ids, which keeps record/replay stable. Ollama has no ``tool_choice``: ``"none"``
sends no tools and a tool name sends only that tool.

Unlike the other SDKs, ollama's client builds its own ``httpx`` (not ``httpx2``) client from
keyword arguments, so pool limits go in as ``limits=httpx.Limits(...)``. Its errors keep only
status and text, so a response hook remembers the headers of a failed response in a context
variable, which is how ``Retry-After`` reaches ``RateLimited.retry_after_s``.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import ollama

from aillm_lab.errors import ProviderError, UnsupportedInput
from aillm_lab.llm._clients import (
    Closer,
    HttpOptions,
    parse_arguments,
    stable_call_id,
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

DEFAULT_HOST = "http://localhost:11434"
_error_headers: contextvars.ContextVar[httpx.Headers | None] = contextvars.ContextVar(
    "aillm_ollama_error_headers", default=None)


class OllamaModel(HostedModel[dict[str, Any]]):
    """A model served by Ollama; chat, tools, JSON-schema output, images and embeddings."""

    provider = "ollama"
    supports_images = True

    key_hint = "OLLAMA_API_KEY (only for a hosted Ollama)"

    def __init__(self, name: str, *, host: str | None = None,
                 http: HttpOptions | None = None) -> None:
        super().__init__(name, base_url=normalise_host(host or DEFAULT_HOST), http=http)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        response = await self._call(lambda client: client.embed(model=self.name,
                                                                input=list(texts)))
        return [list(vector) for vector in response.embeddings]

    # -- the wire format ---------------------------------------------------------------------
    async def _client(self) -> Any:
        client = await super()._client()
        _error_headers.set(None)  # only a failure of the call about to be made may set them
        return client

    def _build(self) -> tuple[Any, Closer]:
        client = ollama.AsyncClient(
            host=self.base_url,
            timeout=httpx.Timeout(self._http.timeout_s, connect=self._http.connect_timeout_s),
            limits=httpx.Limits(max_connections=self._http.max_connections,
                                max_keepalive_connections=self._http.max_keepalive_connections),
            event_hooks={"response": [_remember_error_headers]})
        return client, client.close

    def _request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None,
                 output: OutputSpec, params: GenerationParams) -> dict[str, Any]:
        options: dict[str, Any] = {"num_predict": params.max_tokens,
                                   "temperature": params.temperature, "top_p": params.top_p}
        if params.stop:
            options["stop"] = params.stop
        if params.seed is not None:
            options["seed"] = params.seed
        request: dict[str, Any] = {"model": self.name, "messages": to_ollama_messages(messages),
                                   "options": options}
        choice = params.tool_choice
        chosen = [t for t in tools or [] if choice in ("auto", "required") or t.name == choice]
        if chosen:
            request["tools"] = [{"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}}
                for t in chosen]
        if output is not None:
            request["format"] = json_schema(output)
        return request

    async def _send(self, client: Any, request: dict[str, Any]) -> Any:
        return await client.chat(**request)

    def _completion(self, response: Any, request: dict[str, Any],
                    latency_s: float) -> Completion:
        calls = _tool_calls(response.message.tool_calls)
        return Completion(text=response.message.content or "", tool_calls=calls,
                          usage=_usage(response), model=self.id, response_id=None,
                          finish_reason=_finish(response.done_reason, calls),
                          latency_s=latency_s)

    async def _events(self, request: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        tally = StreamTally()
        client = await self._client()
        parts = await client.chat(**request, stream=True)
        last = None
        calls: list[ToolCall] = []
        try:
            async for part in parts:
                last = part
                if part.message.content:
                    yield tally.text_event(part.message.content)
                for call in _tool_calls(part.message.tool_calls, start=len(calls)):
                    calls.append(call)
                    yield StreamEvent(type="tool_call", tool_call=call)
        finally:
            await parts.aclose()
        usage = _usage(last) if last is not None else Usage()
        finish = _finish(getattr(last, "done_reason", None), calls)
        for event in tally.closing_events(calls_sent=True, tool_calls=calls, usage=usage,
                                          model=self.id, response_id=None,
                                          finish_reason=finish):
            yield event

    def _vendor_error(self, exc: BaseException, started: bool) -> ProviderError | None:
        errors = self._errors
        if isinstance(exc, ollama.ResponseError):
            status = exc.status_code if exc.status_code > 0 else None  # -1: error in a stream
            message = str(exc.error)
            if status == 404 and "not found" in message:
                message += f" (run `ollama pull {self.name}` on the Ollama host)"
            return errors.http_error(status, message, _error_headers.get(), started=started)
        if isinstance(exc, httpx.TimeoutException):  # before TransportError, its base
            return self._timed_out(started, exc)
        if isinstance(exc, ConnectionError | httpx.TransportError):  # ollama re-raises
            return errors.connection_error(  # httpx.ConnectError as ConnectionError
                f"{exc or type(exc).__name__}; is `ollama serve` running there?",
                started=started)
        if isinstance(exc, json.JSONDecodeError):  # a body cut mid-line
            return errors.http_error(None, f"malformed reply from Ollama ({exc})",
                                     started=started)
        if isinstance(exc, ollama.RequestError):
            return errors.http_error(400, str(exc.error), started=started)
        return None


def create(name: str, settings: LabSettings, *, base_url: str | None = None,
           connect_timeout_s: float | None = None,
           max_connections: int | None = None) -> OllamaModel:
    """Factory for ``ollama:NAME`` or ``ollama:NAME@http://host:11434``."""
    name, spec_url, http = parse_spec("ollama", name, settings,
                                      connect_timeout_s=connect_timeout_s,
                                      max_connections=max_connections)
    return OllamaModel(name, host=base_url or spec_url or settings.ollama_host, http=http)


def normalise_host(host: str) -> str:
    """``OLLAMA_HOST`` forms (``host``, ``host:port``, ``:port``, URLs) as a base URL;
    a bare host gets port 11434, as the ollama CLI does."""
    host = host.strip().rstrip("/")
    if "://" not in host:
        parts = urlsplit(f"http://{host}")
        return f"http://{parts.hostname or '127.0.0.1'}:{parts.port or 11434}{parts.path}"
    return host


async def _remember_error_headers(response: httpx.Response) -> None:
    if response.status_code >= 400:
        _error_headers.set(response.headers)


# -- conversion -------------------------------------------------------------------------------
def to_ollama_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages in Ollama's shape; images become raw bytes the SDK base64-encodes."""
    names = {c.id: c.name for m in messages for c in m.tool_calls}
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.text}
        if m.images:
            item["images"] = [_image_bytes(p) for p in m.images]
        if m.tool_calls:
            item["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}}
                                  for c in m.tool_calls]
        if m.role == "tool":
            name = m.name or names.get(m.tool_call_id or "")
            if name:
                item["tool_name"] = name
        out.append(item)
    return out


def _image_bytes(part: ImagePart) -> bytes:
    data = part.data
    if data is None and part.url and part.url.startswith("data:") and "," in part.url:
        data = part.url.split(",", 1)[1]
    if data is None:
        raise UnsupportedInput("Ollama takes inline images only, not URLs; load the image "
                               "with ImagePart.from_path('cat.png') or pass data= (base64)")
    try:
        return base64.b64decode(data, validate=True)
    except binascii.Error as exc:
        raise UnsupportedInput(f"ImagePart.data is not valid base64 ({exc})") from None


def _tool_calls(raw: Sequence[Any] | None, start: int = 0) -> list[ToolCall]:
    calls = []
    for i, call in enumerate(raw or [], start=start):
        function = call.function
        arguments = parse_arguments(function.arguments if isinstance(function.arguments, Mapping)
                                    else str(function.arguments or ""))
        given = getattr(call, "id", None)
        calls.append(ToolCall(id=given or stable_call_id(i, function.name, arguments),
                              name=function.name, arguments=arguments))
    return calls


def _usage(response: Any) -> Usage:
    return Usage(input_tokens=getattr(response, "prompt_eval_count", None) or 0,
                 output_tokens=getattr(response, "eval_count", None) or 0)


def _finish(reason: str | None, calls: list[ToolCall]) -> FinishReason:
    if calls:
        return "tool_calls"
    return "length" if reason == "length" else "stop"
