"""The machinery every fake vendor server shares: a thread with its own loop, scripted
replies, fault injection and a record of what arrived.

Each server runs aiohttp on its own event loop in its own daemon thread, never on the
library's runner loop, so it behaves like an external process: blocking test code cannot
stall it, and the SDK under test talks to it over a real TCP socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, ClassVar, Self

try:
    from aiohttp import web
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("the fake vendor servers need aiohttp: "
                      "pip install 'aillm-lab[testing]'") from exc

from aillm_lab.llm.types import Completion, ToolCall, Usage

Reply = str | Completion
"""What a script returns: plain text, or a Completion with tool calls and usage."""
ReplyFunction = Callable[[dict[str, Any]], Reply]
"""Computes a reply from the parsed JSON request body."""
Render = Callable[[dict[str, Any], "Fault | None"], "Answer"]

KINDS = ("rate_limit", "server_error", "unavailable", "overloaded", "reset", "cut_stream",
         "delay", "malformed_tool_call", "bad_request", "unauthorized")
"""Fault kinds; ``fault_rate(kinds=[...])`` accepts these names or ``Fault`` instances."""
RETRYABLE = ("rate_limit", "server_error", "unavailable", "reset")
_SECRET_HEADERS = frozenset({"authorization", "x-api-key", "api-key", "proxy-authorization",
                             "cookie", "x-goog-api-key"})


@dataclass(frozen=True)
class Fault:
    """One misbehaviour to serve instead of (or before) a normal answer.

    Build them with the constructors (``Fault.rate_limit(retry_after=1)``); each server
    shapes the error body the way its vendor does.
    """

    kind: str
    status: int | None = None
    message: str | None = None
    retry_after: float | None = None
    retry_after_ms: int | None = None
    wait: float = 0.0
    after: int | None = None

    @classmethod
    def rate_limit(cls, retry_after: float | None = 1.0, *, retry_after_ms: int | None = None,
                   message: str | None = None) -> Fault:
        """429 with ``Retry-After`` seconds and/or ``retry-after-ms``."""
        if (retry_after or 0) < 0 or (retry_after_ms or 0) < 0:
            raise ValueError("retry_after and retry_after_ms must be >= 0")
        return cls("rate_limit", 429, message, retry_after, retry_after_ms)

    @classmethod
    def server_error(cls, status: int = 500, message: str | None = None) -> Fault:
        if not 500 <= status <= 599:
            raise ValueError(f"server_error needs a 5xx status, got {status}")
        return cls("server_error", status, message)

    @classmethod
    def unavailable(cls, message: str | None = None) -> Fault:
        """503 Service Unavailable."""
        return cls("unavailable", 503, message)

    @classmethod
    def overloaded(cls, message: str | None = None) -> Fault:
        """529, Anthropic's ``overloaded_error``; other vendors send it with their shape."""
        return cls("overloaded", 529, message)

    @classmethod
    def bad_request(cls, message: str = "Invalid request (injected by the fake server).") -> Fault:
        """A non-retryable 400 in the vendor's error shape."""
        return cls("bad_request", 400, message)

    @classmethod
    def unauthorized(cls, message: str | None = None) -> Fault:
        """A non-retryable 401, as for a wrong API key."""
        return cls("unauthorized", 401, message)

    @classmethod
    def reset(cls) -> Fault:
        """Abort the TCP connection (RST) before any response byte."""
        return cls("reset")

    @classmethod
    def cut_stream(cls, after: int | None = None) -> Fault:
        """Send ``after`` stream frames (default: half) and abort; JSON answers are cut too."""
        if after is not None and after < 0:
            raise ValueError("after must be >= 0")
        return cls("cut_stream", after=after)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Wait ``seconds`` before answering normally: for timeouts and slow-server tests."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        return cls("delay", wait=seconds)

    @classmethod
    def malformed_tool_call(cls) -> Fault:
        """Answer with a tool call whose arguments are not valid JSON."""
        return cls("malformed_tool_call")

    @classmethod
    def of(cls, kind: str) -> Fault:
        """The default fault of a kind name, e.g. ``Fault.of("reset")``."""
        makers: dict[str, Callable[[], Fault]] = {
            "rate_limit": cls.rate_limit, "server_error": cls.server_error,
            "unavailable": cls.unavailable, "overloaded": cls.overloaded,
            "reset": cls.reset, "cut_stream": cls.cut_stream, "delay": lambda: cls.delay(0.05),
            "malformed_tool_call": cls.malformed_tool_call, "bad_request": cls.bad_request,
            "unauthorized": cls.unauthorized}
        if kind not in makers:
            raise ValueError(f"unknown fault kind {kind!r}; choose from {', '.join(KINDS)}")
        return makers[kind]()


@dataclass(frozen=True)
class RecordedRequest:
    """What the server received; secret header values are replaced by ``<redacted>``."""

    method: str
    path: str
    headers: MappingProxyType[str, str]
    body: Any
    fault: str | None = None
    received_at: float = 0.0  # time.monotonic() on arrival, to measure client backoff


@dataclass
class Answer:
    """A rendered reply: a JSON body, or stream frames written one by one."""

    body: Any = None
    frames: list[bytes] | None = None
    content_type: str = "application/json"
    status: int = 200


class RequestRejected(Exception):
    """A vendor would answer this request with an error status (validation, unknown model)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class FakeServer:
    """Base of the fake vendor servers; use a subclass as ``with FakeOpenAI() as server:``."""

    vendor: ClassVar[str] = "fake"
    url_path: ClassVar[str] = ""
    request_id_header: ClassVar[str] = "x-request-id"

    def __init__(self, replies: Iterable[Reply] = (), *, handler: ReplyFunction | None = None,
                 embedding_dim: int = 64, chunk_delay: float = 0.0, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if embedding_dim < 1:
            raise ValueError("embedding_dim must be >= 1")
        self.handler = handler
        self.embedding_dim = embedding_dim
        self.chunk_delay = chunk_delay
        self.host = host
        self._want_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._replies: deque[Reply] = deque(replies)
        self._faults: deque[Fault] = deque()
        self._rate = 0.0
        self._rate_kinds: list[Fault] = []
        self._rng = random.Random(0)
        self._requests: list[RecordedRequest] = []
        self._served: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind a free port and serve from a daemon thread; returns once it accepts."""
        if self._loop is not None:
            return self
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True,
                                  name=f"aillm-fake-{self.vendor}")
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self._serve_forever(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close connections, stop the loop and join the thread; safe to call twice."""
        loop, thread, runner = self._loop, self._thread, self._runner
        self._loop = self._thread = self._runner = None
        if loop is None or thread is None:
            return
        if loop.is_running():
            asyncio.run_coroutine_threadsafe(_shutdown(runner), loop).result(timeout=30)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "not started"
        return f"<{type(self).__name__} {where}>"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} is not started; use `with` or .start()")
        return self._port

    @property
    def url(self) -> str:
        """The base URL in the form the vendor's SDK expects for ``base_url``/``host``."""
        return f"http://{self.host}:{self.port}{self.url_path}"

    # -- scripting ---------------------------------------------------------------------------
    def enqueue(self, *replies: Reply) -> None:
        """Answer the next chat requests with these, in order, before ``handler``/echo."""
        with self._lock:
            self._replies.extend(replies)

    def inject(self, *faults: Fault, times: int = 1) -> None:
        """Serve these faults to the next requests, one per request, ``times`` over."""
        with self._lock:
            self._faults.extend(list(faults) * times)

    def fault_rate(self, rate: float, kinds: Sequence[str | Fault] = RETRYABLE, *,
                   seed: int = 0) -> None:
        """Fail a ``rate`` share of requests with a seeded random choice of ``kinds``."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"rate must be within [0, 1], got {rate}")
        chosen = [k if isinstance(k, Fault) else Fault.of(k) for k in kinds]
        if rate and not chosen:
            raise ValueError("give at least one fault kind")
        with self._lock:
            self._rate, self._rate_kinds, self._rng = rate, chosen, random.Random(seed)

    def reset(self) -> None:
        """Forget replies, faults, the fault rate, recorded requests and counts."""
        with self._lock:
            self._replies.clear()
            self._faults.clear()
            self._rate, self._rate_kinds = 0.0, []
            self._requests.clear()
            self._served.clear()

    # -- observations ------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def last_request(self) -> RecordedRequest:
        with self._lock:
            if not self._requests:
                raise LookupError(f"{type(self).__name__} has received no request yet")
            return self._requests[-1]

    @property
    def faults_served(self) -> dict[str, int]:
        """How many faults of each kind were served."""
        with self._lock:
            return dict(self._served)

    # -- for subclasses ----------------------------------------------------------------------
    def routes(self) -> list[tuple[str, str, Render]]:
        """``(method, path, render)`` triples; render raises RequestRejected to refuse."""
        raise NotImplementedError

    def error_body(self, status: int, kind: str, message: str | None) -> Any:
        raise NotImplementedError

    def last_user_text(self, body: dict[str, Any]) -> str:
        raise NotImplementedError

    def next_reply(self, body: dict[str, Any]) -> Completion:
        """The scripted reply for this request, with usage filled in when left at zero."""
        with self._lock:
            reply = self._replies.popleft() if self._replies else None
        if reply is None:
            reply = self.handler(body) if self.handler else self.last_user_text(body)
        completion = Completion(text=reply) if isinstance(reply, str) else reply
        if not isinstance(completion, Completion):
            raise TypeError(f"a reply must be str or Completion, got {type(reply).__name__}")
        if completion.usage == Usage():
            produced = completion.text + "".join(
                c.name + json.dumps(c.arguments) for c in completion.tool_calls)
            usage = Usage(input_tokens=count_tokens(json.dumps(body.get("messages", body))),
                          output_tokens=count_tokens(produced))
            completion = completion.model_copy(update={"usage": usage})
        return completion

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):06d}fake"

    def embed_all(self, texts: Sequence[str], dimensions: int | None) -> list[list[float]]:
        return [hashed_embedding(t, dimensions or self.embedding_dim) for t in texts]

    # -- serving -----------------------------------------------------------------------------
    async def _serve_forever(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        for method, path, render in self.routes():
            app.router.add_route(method, path, self._endpoint(render))
        app.router.add_route("*", "/{tail:.*}", self._endpoint(None))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind((self.host, self._want_port))
            site = web.SockSite(runner, sock, backlog=1024)
            await site.start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner, self._port = runner, sock.getsockname()[1]

    def _endpoint(self, render: Render | None
                  ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self._handle(request, render)
        return handle

    async def _handle(self, request: web.Request, render: Render | None) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = raw.decode(errors="replace")  # recorded as text, answered with a 400
        fault = self._record(request, body, faults=render is not None)
        if render is None:
            return self._error(404, "not_found",
                               f"{request.method} {request.path} is not served by this fake")
        if fault is not None and fault.wait:
            await asyncio.sleep(fault.wait)
        if fault is not None and fault.status is not None:
            return self._error(fault.status, fault.kind, fault.message, fault)
        if fault is not None and fault.kind == "reset":
            _abort(request, reset=True)
            return web.Response()
        if not isinstance(body, dict):
            return self._error(400, "bad_request", "the request body is not a JSON object")
        try:
            answer = render(body, fault)
        except RequestRejected as rejected:
            return self._error(rejected.status, rejected.kind, rejected.message)
        except Exception as exc:  # most likely the user's reply function: show it, keep serving
            return self._error(500, "server_error", f"the fake server could not answer: {exc!r}")
        cut = fault is not None and fault.kind == "cut_stream"
        return await self._send(request, answer, fault.after if cut and fault else None, cut)

    def _record(self, request: web.Request, body: Any, *, faults: bool) -> Fault | None:
        headers = {k.lower(): _redact(k, v) for k, v in request.headers.items()}
        with self._lock:
            fault = None
            if faults and self._faults:
                fault = self._faults.popleft()
            elif faults and self._rate and self._rng.random() < self._rate:
                fault = self._rng.choice(self._rate_kinds)
            if fault is not None:
                self._served[fault.kind] += 1
            self._requests.append(RecordedRequest(
                request.method, request.path_qs, MappingProxyType(headers), body,
                fault.kind if fault else None, time.monotonic()))
        return fault

    def _error(self, status: int, kind: str, message: str | None,
               fault: Fault | None = None) -> web.Response:
        headers = {self.request_id_header: self.new_id("req_")}
        if fault is not None and fault.retry_after is not None:
            headers["Retry-After"] = f"{fault.retry_after:g}"
        if fault is not None and fault.retry_after_ms is not None:
            headers["retry-after-ms"] = str(fault.retry_after_ms)
        body = self.error_body(status, kind, message)
        return web.Response(status=status, text=json.dumps(body), headers=headers,
                            content_type="application/json")

    async def _send(self, request: web.Request, answer: Answer, after: int | None,
                    cut: bool) -> web.StreamResponse:
        headers = {self.request_id_header: self.new_id("req_")}
        response = web.StreamResponse(status=answer.status, headers=headers)
        response.content_type = answer.content_type
        if answer.frames is None:
            data = json.dumps(answer.body).encode()
            if not cut:
                return web.Response(status=answer.status, body=data, headers=headers,
                                    content_type=answer.content_type)
            response.content_length = len(data)  # promise it all, deliver half
            frames, stop = [data[: len(data) // 2]], 1
        else:
            response.headers["Cache-Control"] = "no-cache"
            frames, stop = answer.frames, len(answer.frames)
            if cut:  # never the final frame, so the client cannot mistake it for an ending
                stop = max(0, min(stop - 1, stop // 2 if after is None else after))
        await response.prepare(request)
        for frame in frames[:stop]:
            await response.write(frame)
            if self.chunk_delay:
                await asyncio.sleep(self.chunk_delay)
        if cut:  # a FIN, not a RST, so the frames already sent still reach the client
            _abort(request, reset=False)
            return response
        await response.write_eof()
        return response


async def _shutdown(runner: web.AppRunner | None) -> None:
    """Close the site and its connections, then cancel what is left (slow handlers)."""
    if runner is not None:
        await runner.cleanup()
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


# -- helpers shared by the vendors -----------------------------------------------------------
def count_tokens(text: str) -> int:
    """A deterministic token estimate (about four characters a token, at least one)."""
    return max(1, math.ceil(len(text) / 4))


def text_pieces(text: str) -> list[str]:
    """Split text into word-sized stream deltas that join back to the original."""
    return re.findall(r"\s*\S+\s*$|\s*\S+", text) or ([text] if text else [])


def fragments(text: str, parts: int = 3) -> list[str]:
    """Split serialised JSON into ``parts`` fragments, as vendors stream tool arguments."""
    step = max(1, math.ceil(len(text) / parts))
    return [text[i:i + step] for i in range(0, len(text), step)] or [""]


def broken_json(arguments: dict[str, Any]) -> str:
    """The arguments' JSON with its closing brace missing: never valid JSON."""
    return json.dumps(arguments)[:-1]


def tool_arguments(reply: Completion, malformed: bool,
                   tool_names: Sequence[str]) -> list[tuple[ToolCall, str]]:
    """Each tool call with its JSON arguments; ``malformed`` breaks them (adding a call to the
    first offered tool when the reply has none), as a model emitting bad JSON would."""
    calls = list(reply.tool_calls)
    if malformed and not calls:
        name = next((n for n in tool_names if n), "tool")
        calls = [ToolCall(id="", name=name, arguments={"query": reply.text[:40]})]
    return [(c, broken_json(c.arguments) if malformed else json.dumps(c.arguments))
            for c in calls]


def hashed_embedding(text: str, dim: int) -> list[float]:
    """A unit vector from hashed lowercase words, so texts sharing words lie close together."""
    vector = [0.0] * dim
    for token in re.findall(r"\w+", text.lower()) or [text]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        vector[h % dim] += 1.0 if (h >> 40) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        vector[0], norm = 1.0, 1.0
    return [v / norm for v in vector]


def _redact(name: str, value: str) -> str:
    if name.lower() not in _SECRET_HEADERS:
        return value
    scheme = value.split(" ", 1)[0] if " " in value else ""
    return f"{scheme} <redacted>" if scheme else "<redacted>"


def _abort(request: web.Request, *, reset: bool) -> None:
    """Drop the connection; with ``reset`` by a TCP RST, like a crashed load balancer."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if reset and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
