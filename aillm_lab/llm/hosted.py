"""``HostedModel``: what every SDK-backed model shares, so a vendor module is its wire format.

As in pydantic-ai, the provider (client, key, errors) is kept apart from the model (wire
format). ``complete``, ``stream``, the client slot, the timeouts and the error translation
are written once here; a vendor class supplies only:

- ``_build``: its SDK client, with ``max_retries=0`` and our pool limits;
- ``_request``: our arguments in its request shape;
- ``_send`` and ``_completion``: one call, and its reply as a ``Completion``;
- ``_events``: its stream as our ``StreamEvent``s (``StreamTally`` keeps the common part);
- ``_vendor_error``: its exceptions as typed provider errors.
"""

from __future__ import annotations

import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import SecretStr

from aillm_lab.errors import ProviderError
from aillm_lab.llm._clients import (
    ClientSlot,
    Closer,
    ErrorContext,
    HttpOptions,
    deadline_after,
    guard_call,
    guard_stream,
    safe_url,
    split_base_url,
)
from aillm_lab.llm.base import Model, OutputSpec, completion_events
from aillm_lab.llm.types import Completion, GenerationParams, Message, StreamEvent, ToolSpec

if TYPE_CHECKING:
    from aillm_lab.config import LabSettings

Request = TypeVar("Request")
T = TypeVar("T")


class HostedModel(Model, Generic[Request]):
    """A model behind a vendor SDK: a base URL, a masked key, HTTP options, one shared
    client per runner loop, and a repr that never shows credentials. ``Request`` is what
    the vendor's ``_request`` builds and its ``_send``/``_events`` take."""

    key_hint: ClassVar[str] = ""  # where the key comes from, for error messages

    def __init__(self, name: str, *, base_url: str, api_key: str | SecretStr | None = None,
                 http: HttpOptions | None = None) -> None:
        super().__init__(name)
        self.base_url = base_url.rstrip("/")
        self._api_key = SecretStr(api_key) if isinstance(api_key, str) else api_key
        self._http = http or HttpOptions()
        self._errors = ErrorContext(self.provider, self.id, self.base_url, self.key_hint,
                                    self._api_key)
        self._clients = ClientSlot(self.provider, self.base_url, self._api_key, self._build)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} at {safe_url(self.base_url)}>"

    async def complete(self, messages: Sequence[Message], *,
                       tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                       params: GenerationParams | None = None) -> Completion:
        request = self._request(messages, tools, output, params or GenerationParams())
        started = time.perf_counter()
        response = await self._call(lambda client: self._send(client, request))
        return self._completion(response, request, time.perf_counter() - started)

    async def stream(self, messages: Sequence[Message], *,
                     tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                     params: GenerationParams | None = None) -> AsyncIterator[StreamEvent]:
        request = self._request(messages, tools, output, params or GenerationParams())
        deadline = deadline_after(self._http.timeout_s)
        async for event in guard_stream(self._events(request), self._translate, deadline):
            yield event

    async def aclose(self) -> None:
        await self._clients.aclose()

    # -- for the vendor classes --------------------------------------------------------------
    async def _client(self) -> Any:
        """The SDK client for the running loop (built on first use)."""
        return await self._clients.get()

    async def _call(self, send: Callable[[Any], Awaitable[T]]) -> T:
        """``send(client)`` under the total timeout, with SDK errors translated."""
        async def call() -> T:
            return await send(await self._client())

        result: T = await guard_call(call(), self._translate, self._http.timeout_s)
        return result

    def _translate(self, exc: BaseException, started: bool) -> ProviderError | None:
        """A typed provider error for ``exc``, or None to let it through unchanged."""
        if isinstance(exc, ProviderError):  # ours already, e.g. a missing key from _build
            return exc
        if isinstance(exc, TimeoutError):  # our own total timeout
            return self._timed_out(started)
        return self._vendor_error(exc, started)

    def _timed_out(self, started: bool, exc: BaseException | None = None) -> ProviderError:
        """Our total timeout, or an SDK's timeout error. An SDK may report a refused
        connection as a timeout (openai's aiohttp client raises ``APITimeoutError`` over
        ``ConnectionRefusedError``): then it says the server could not be reached, with
        the cause, instead of blaming a timeout the call never reached."""
        refused = _refused(exc)
        if refused is not None:
            return self._errors.connection_error(refused, started=started)
        return self._errors.connection_error("", started=started, timeout=self._http.timeout_s)

    # -- the wire format, per vendor ---------------------------------------------------------
    @abstractmethod
    def _build(self) -> tuple[Any, Closer]:
        """A new SDK client and the coroutine function that closes it."""

    @abstractmethod
    def _request(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None,
                 output: OutputSpec, params: GenerationParams) -> Request:
        """Our arguments in the vendor's request shape."""

    @abstractmethod
    async def _send(self, client: Any, request: Request) -> Any:
        """One non-streaming call; returns the vendor's response."""

    @abstractmethod
    def _completion(self, response: Any, request: Request, latency_s: float) -> Completion:
        """The vendor's response as a ``Completion``."""

    @abstractmethod
    def _events(self, request: Request) -> AsyncIterator[StreamEvent]:
        """Start a stream and yield it as events, ending with ``usage`` and ``done``."""

    @abstractmethod
    def _vendor_error(self, exc: BaseException, started: bool) -> ProviderError | None:
        """The vendor's exception as a typed provider error (via ``self._errors``), or None."""


def parse_spec(provider: str, spec: str, settings: LabSettings, *,
               connect_timeout_s: float | None = None, max_connections: int | None = None,
               ) -> tuple[str, str | None, HttpOptions]:
    """A factory's common part: ``NAME`` or ``NAME@BASE_URL`` split into the name and the URL,
    and the HTTP options that ``settings`` give ``provider:NAME``."""
    name, base_url = split_base_url(spec)
    http = HttpOptions.from_settings(settings, f"{provider}:{name}",
                                     connect_timeout_s=connect_timeout_s,
                                     max_connections=max_connections)
    return name, base_url, http


def _refused(exc: BaseException | None) -> str | None:
    """The innermost non-timeout OS error under ``exc`` (a refused or unreachable
    connection), as text; None when a real timeout is in the chain, or no OS error."""
    found: BaseException | None = None
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TimeoutError):
            return None
        if isinstance(exc, OSError):
            found = exc
        exc = exc.__cause__ or exc.__context__
    return None if found is None else str(found) or type(found).__name__


class StreamTally:
    """What every vendor stream keeps: the text so far and when its first piece came."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.text = ""
        self.ttft: float | None = None

    def text_event(self, piece: str) -> StreamEvent:
        """Count ``piece`` (the first one sets the time to first token) and wrap it."""
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started
        self.text += piece
        return StreamEvent(type="text", text=piece)

    def closing_events(self, *, calls_sent: bool, **fields: Any) -> list[StreamEvent]:
        """The completion's closing events (tool calls unless ``calls_sent``, usage, done);
        ``fields`` are the ``Completion``'s, and ``text`` there replaces the streamed text."""
        completion = Completion(**{"text": self.text, **fields},
                                latency_s=time.perf_counter() - self.started,
                                ttft_s=self.ttft)
        return completion_events(completion, text=False, tool_calls=not calls_sent)
