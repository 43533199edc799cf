"""Plumbing shared by the hosted providers: per-loop SDK clients, timeouts and typed errors.
``hosted.py`` builds the models' common body on it.

An httpx connection pool belongs to the event loop it first ran on, so each SDK client is
built lazily inside an async method (on the runner loop) and cached per loop; a client made
on a loop that has since closed is dropped, never reused. Clients are shared by every model
with the same (provider, base_url, key) and reference-counted, so one model's ``aclose()``
does not pull the client from under another.

Usage follows one convention for every vendor: ``input_tokens`` counts the whole prompt,
cached or not, with ``cache_read_tokens``/``cache_write_tokens`` as the parts of it served
from or written to a prompt cache; ``output_tokens`` includes ``reasoning_tokens``.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import json_repair
from pydantic import BaseModel, SecretStr

from aillm_lab.errors import (
    AuthenticationError,
    BadRequest,
    ProviderConnectionError,
    ProviderError,
    ProviderUnavailable,
    RateLimited,
    StreamInterrupted,
)
from aillm_lab.llm.base import OutputSpec
from aillm_lab.llm.limits import outer_deadline
from aillm_lab.llm.types import StreamEvent

if TYPE_CHECKING:
    from aillm_lab.config import LabSettings

DEFAULT_CONNECT_TIMEOUT_S = 10.0
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_MAX_KEEPALIVE = 16

Closer = Callable[[], Awaitable[None]]
Translate = Callable[[BaseException, bool], "ProviderError | None"]


@dataclass(frozen=True)
class HttpOptions:
    """Timeouts and connection-pool size for one provider client."""

    timeout_s: float = 300.0
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_keepalive_connections: int = DEFAULT_MAX_KEEPALIVE

    @classmethod
    def from_settings(cls, settings: LabSettings, spec: str, *,
                      connect_timeout_s: float | None = None,
                      max_connections: int | None = None) -> HttpOptions:
        """Timeouts from ``settings.limits[spec]`` (``total_timeout_s``, ``connect_timeout_s``)
        else ``request_timeout_s``; the pool never throttles below the model's concurrency,
        since the gateway's semaphore is the real limit."""
        limits = settings.limits_for(spec)
        timeout = getattr(limits, "total_timeout_s", None) or settings.request_timeout_s
        connect = (connect_timeout_s or getattr(limits, "connect_timeout_s", None)
                   or DEFAULT_CONNECT_TIMEOUT_S)
        concurrency = limits.concurrency
        pool = max_connections or max(DEFAULT_MAX_CONNECTIONS, concurrency)
        return cls(timeout_s=timeout, connect_timeout_s=min(connect, timeout),
                   max_connections=pool,
                   max_keepalive_connections=min(pool, max(DEFAULT_MAX_KEEPALIVE, concurrency)))


@dataclass
class _Entry:
    loop: asyncio.AbstractEventLoop
    client: Any
    close: Closer
    users: set[object] = field(default_factory=set)


_shared: dict[tuple[str, str, str, int], _Entry] = {}
_shared_lock = threading.Lock()


class ClientSlot:
    """A model's handle on its shared SDK client for the running loop."""

    def __init__(self, provider: str, base_url: str, secret: SecretStr | None,
                 build: Callable[[], tuple[Any, Closer]]) -> None:
        digest = ""
        if secret is not None:  # the key itself never sits in a dict key or a repr
            digest = hashlib.sha256(secret.get_secret_value().encode()).hexdigest()[:16]
        self._key = (provider, base_url, digest)
        self._build = build
        self._token = object()

    async def get(self) -> Any:
        loop = asyncio.get_running_loop()
        key = (*self._key, id(loop))
        with _shared_lock:
            for stale in [k for k, e in _shared.items() if e.loop.is_closed()]:
                del _shared[stale]
            entry = _shared.get(key)
            if entry is None or entry.loop is not loop:
                client, close = self._build()
                entry = _shared[key] = _Entry(loop, client, close)
            entry.users.add(self._token)
        return entry.client

    async def aclose(self) -> None:
        """Leave every client this model used; close those nobody else uses."""
        current = asyncio.get_running_loop()
        closing: list[_Entry] = []
        with _shared_lock:
            for key, entry in list(_shared.items()):
                if key[:3] != self._key:
                    continue
                entry.users.discard(self._token)
                if not entry.users or entry.loop.is_closed():
                    del _shared[key]
                    closing.append(entry)
        for entry in closing:
            if entry.loop is current:
                await entry.close()
            elif entry.loop.is_running():  # another runner's loop closes its own client
                asyncio.run_coroutine_threadsafe(entry.close(), entry.loop)


@dataclass(frozen=True)
class ErrorContext:
    """What a provider error message needs: who failed, where, and how to fix a key."""

    provider: str
    model: str
    base_url: str
    key_hint: str
    secret: SecretStr | None = None

    def http_error(self, status: int | None, vendor_message: str,
                   headers: Mapping[str, str] | None = None, *,
                   started: bool = False) -> ProviderError:
        vendor = self.scrub(vendor_message).strip()
        retry_after = parse_retry_after(headers)
        code = f"HTTP {status}" if status else "an error"
        said = f": {vendor}" if vendor else ""
        said += "" if said.endswith((".", "!", "?")) else "."
        kind: type[ProviderError]
        if status == 429:
            kind = RateLimited
            wait = f" Retry after {retry_after:g} s." if retry_after is not None else ""
            advice = (f"{wait} Lower rpm/tpm/concurrency in settings.limits['{self.model}'] "
                      "or wait; the gateway retries it.")
        elif status in (408, 409) or (status is not None and status >= 500) or status is None:
            kind = ProviderUnavailable
            advice = (" The gateway retries this; if it persists try later or configure "
                      "settings.fallbacks.")
        elif status in (401, 403):
            kind = AuthenticationError
            advice = (f" Check {self.key_hint} and that the key may use this model.")
        else:
            kind = BadRequest
            advice = (" Fix the request: check the model name, the tools or output schema and "
                      "the parameters.")
        where = f"{self.provider} ({safe_url(self.base_url)})"
        if started:
            return StreamInterrupted(
                f"the {self.model} stream from {where} broke after it started with {code}{said}"
                " It is not retried because text was already shown; call again to restart.",
                provider=self.provider, model=self.model, status=status,
                vendor_message=vendor, retry_after_s=retry_after, retryable=False)
        return kind(f"{where} failed {self.model} with {code}{said}{advice}",
                    provider=self.provider, model=self.model, status=status,
                    vendor_message=vendor, retry_after_s=retry_after)

    def connection_error(self, detail: str, *, started: bool = False,
                         timeout: float | None = None) -> ProviderError:
        detail = self.scrub(detail) or "connection error"
        what = (f"timed out after {timeout:g} s" if timeout is not None
                else f"could not be reached ({detail})")
        where = safe_url(self.base_url)
        if started:
            broke = f"timed out after {timeout:g} s" if timeout is not None else detail
            return StreamInterrupted(
                f"the {self.model} stream from {where} broke after it started ({broke}). It "
                "is not retried because text was already shown; call again to restart.",
                provider=self.provider, model=self.model, retryable=False)
        advice = ("Check the network, the base URL and that the server is running; raise "
                  "request_timeout_s for slow models." if timeout is not None else
                  "Check the network, the base URL and that the server is running.")
        return ProviderConnectionError(f"{self.provider} at {where} {what} for {self.model}. "
                                       f"{advice}", provider=self.provider, model=self.model)

    def scrub(self, text: str) -> str:
        """Remove the key (and anything that looks like a key or bearer token)."""
        value = self.secret.get_secret_value() if self.secret is not None else ""
        if len(value) >= 8:  # a shorter "key" is a test token; masking it mangles words
            text = text.replace(value, "***")
        text = re.sub(r"(?i)(bearer\s+)\S+", r"\1***", text)
        return re.sub(r"\b(sk|key)-[A-Za-z0-9_*\-]{6,}", r"\1-***", text)


def vendor_message(body: object, fallback: str = "") -> str:
    """The vendor's own error text from a decoded error body."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return body["message"]
    if isinstance(body, str) and body:
        return body
    return fallback


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    if not headers:
        return None
    lower = {k.lower(): v for k, v in headers.items()}
    if (ms := lower.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = lower.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


def deadline_after(timeout_s: float) -> float:
    """The running loop's clock ``timeout_s`` from now, for ``asyncio.timeout_at``."""
    return asyncio.get_running_loop().time() + timeout_s


async def guard_stream(events: AsyncIterator[StreamEvent], translate: Translate,
                       deadline: float) -> AsyncIterator[StreamEvent]:
    """Yield ``events`` under a total deadline; SDK errors become typed provider errors,
    and any error after the first yielded event becomes ``StreamInterrupted``."""
    started = False
    async with aclosing(events):
        while True:
            error: ProviderError | None = None
            try:
                async with asyncio.timeout_at(deadline):
                    event = await anext(events)
            except StopAsyncIteration:
                return
            except Exception as exc:
                error = translate(exc, started)
                if error is None:
                    raise
            if error is not None:
                raise error  # outside `except`, so the SDK error (with its request) is dropped
            started = True
            yield event


def sdk_http_client(sdk: Any, http: HttpOptions) -> Any:
    """The HTTP client for an httpx2-based vendor SDK: its aiohttp-backed
    ``DefaultAioHttpClient`` where aiohttp is installed, else a plain ``httpx2.AsyncClient``,
    with our timeouts and explicit pool limit either way.

    Why aiohttp: at 100 calls in flight httpcore's pool walks every request and polls every
    idle connection on each assignment; the SDKs' own aiohttp transport carried 1.8x the
    calls/s on 2 cores (bench_gateway.py). aiohttp caps connections at ``max_connections``
    and has no separate keep-alive cap: idle ones stay open until they expire.
    """
    import httpx2

    timeout = httpx2.Timeout(http.timeout_s, connect=http.connect_timeout_s)
    limits = httpx2.Limits(max_connections=http.max_connections,
                           max_keepalive_connections=http.max_keepalive_connections)
    aio = getattr(sdk, "DefaultAioHttpClient", None)
    if aio is not None:
        try:
            return aio(timeout=timeout, follow_redirects=True, limits=limits)
        except RuntimeError:  # the SDK's stand-in when aiohttp is not installed
            pass
    return httpx2.AsyncClient(timeout=timeout, follow_redirects=True, limits=limits)


async def guard_call(call: Awaitable[Any], translate: Translate, timeout_s: float) -> Any:
    """Await ``call`` under a total timeout, translating SDK errors. The timeout is left to
    an enclosing ``within`` (the gateway's) whose deadline comes first."""
    error: ProviderError | None = None
    try:
        outer = outer_deadline.get()
        if outer is not None and outer <= asyncio.get_running_loop().time() + timeout_s:
            return await call
        async with asyncio.timeout(timeout_s):
            return await call
    except Exception as exc:
        error = translate(exc, False)
        if error is None:
            raise
    raise error


def split_base_url(name: str) -> tuple[str, str | None]:
    """``"llama3@http://box:8000/v1"`` → ``("llama3", "http://box:8000/v1")``."""
    head, sep, tail = name.rpartition("@")
    if sep and head and tail.startswith(("http://", "https://")):
        return head, tail.rstrip("/")
    return name, None


def safe_url(url: str) -> str:
    """The URL without any ``user:password@`` part, for messages and reprs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def parse_arguments(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Tool-call arguments as a dict; slightly broken JSON is repaired, other text kept."""
    if isinstance(text, Mapping):
        return dict(text)
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError:
        data = json_repair.loads(text)
    return data if isinstance(data, dict) else {"_raw": text}


def stable_call_id(index: int, name: str, arguments: Mapping[str, Any]) -> str:
    """An id for vendors that send none, equal for equal calls so replays match."""
    blob = json.dumps([index, name, arguments], sort_keys=True, default=str)
    return f"call_{index}_{hashlib.sha256(blob.encode()).hexdigest()[:10]}"


def schema_name(output: OutputSpec) -> str:
    """A vendor-safe name for an output schema (``^[a-zA-Z0-9_-]{1,64}$``)."""
    raw = ""
    if isinstance(output, type) and issubclass(output, BaseModel):
        raw = output.__name__
    elif isinstance(output, dict):
        raw = str(output.get("title", ""))
    name = re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:64]
    return name or "output"
