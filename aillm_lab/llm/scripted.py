"""``scripted:`` models for tests and docs: a queue of replies or a Python function.

Token counts are whitespace word counts, stated as such, so tests can assert on them.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from aillm_lab.errors import AillmError
from aillm_lab.llm.base import Model, OutputSpec, completion_events
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)

Reply = (str | Completion | ToolCall | list[ToolCall] | dict[str, Any] | BaseModel
         | BaseException)
ReplyFn = Callable[[list[Message], "ScriptedRequest"], Reply | Awaitable[Reply]]
_ids = itertools.count(1)


class ScriptExhausted(AillmError, LookupError):
    """A ScriptedModel was asked for more replies than it was given."""


@dataclass
class ScriptedRequest:
    """What the model was asked, kept so tests can assert on it."""

    messages: list[Message]
    tools: list[ToolSpec] = field(default_factory=list)
    output: OutputSpec = None
    params: GenerationParams = field(default_factory=GenerationParams)


class ScriptedModel(Model):
    """Replies from a queue (``enqueue``) or a function ``(messages, request) -> reply``.

    A reply may be text, a dict or pydantic object (sent as JSON), one or more ``ToolCall``s,
    a full ``Completion``, or an exception to raise. ``delay`` sleeps before each streamed
    chunk, which makes slow calls for cancellation tests.
    """

    provider = "scripted"
    supports_images = True

    def __init__(self, replies: Iterable[Reply] | ReplyFn | None = None, *,
                 name: str = "scripted", delay: float = 0.0) -> None:
        super().__init__(name)
        self.delay = delay
        self.requests: list[ScriptedRequest] = []
        self._fn: ReplyFn | None = replies if callable(replies) else None
        if isinstance(replies, str | dict | BaseModel | ToolCall):
            replies = [replies]  # one reply, not an iterable of characters or keys
        self._queue: deque[Reply] = deque(() if self._fn or replies is None else replies)

    def enqueue(self, *replies: Reply) -> ScriptedModel:
        self._queue.extend(replies)
        return self

    async def complete(self, messages: Sequence[Message], *,
                       tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                       params: GenerationParams | None = None) -> Completion:
        params = params or GenerationParams()
        reply = await self._next(messages, tools, output, params)
        if self.delay:
            await asyncio.sleep(self.delay)
        return self._completion(reply, messages, params)

    async def stream(self, messages: Sequence[Message], *,
                     tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                     params: GenerationParams | None = None) -> AsyncIterator[StreamEvent]:
        params = params or GenerationParams()
        reply = await self._next(messages, tools, output, params)
        completion = self._completion(reply, messages, params)
        for chunk in re.findall(r"\S+\s*|\s+", completion.text):
            if self.delay:
                await asyncio.sleep(self.delay)
            yield StreamEvent(type="text", text=chunk)
        for event in completion_events(completion, text=False):
            yield event

    async def _next(self, messages: Sequence[Message], tools: Sequence[ToolSpec] | None,
                    output: OutputSpec, params: GenerationParams) -> Reply:
        request = ScriptedRequest(list(messages), list(tools or []), output, params)
        self.requests.append(request)
        if self._fn is not None:
            reply = self._fn(request.messages, request)
            if inspect.isawaitable(reply):
                reply = await reply
            return reply
        if not self._queue:
            raise ScriptExhausted(f"{self.id} has no replies left after {len(self.requests) - 1}"
                                  " calls; call .enqueue(...) with more")
        return self._queue.popleft()

    def _completion(self, reply: Reply, messages: Sequence[Message],
                    params: GenerationParams) -> Completion:
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, Completion):
            return reply.model_copy(update={"model": reply.model or self.id})
        calls: list[ToolCall] = []
        if isinstance(reply, ToolCall):
            calls, text = [reply], ""
        elif isinstance(reply, list):
            calls, text = list(reply), ""
        elif isinstance(reply, BaseModel):
            text = reply.model_dump_json()
        elif isinstance(reply, dict):
            text = json.dumps(reply)
        else:
            text = str(reply)
        text, finish = _apply_params(text, params)
        usage = Usage(input_tokens=sum(len(m.text.split()) for m in messages),
                      output_tokens=len(text.split()))
        return Completion(text=text, tool_calls=calls, usage=usage, model=self.id,
                          response_id=f"scripted-{next(_ids)}",
                          finish_reason="tool_calls" if calls else finish)


def _apply_params(text: str, params: GenerationParams) -> tuple[str, str]:
    """Honour ``stop`` and ``max_tokens`` (in words) like a real model would."""
    for stop in params.stop:
        if stop and stop in text:
            text = text[:text.index(stop)]
    words = re.findall(r"\S+\s*", text)
    if len(words) > params.max_tokens:
        return "".join(words[:params.max_tokens]).rstrip(), "length"
    return text, "stop"


def echo(messages: list[Message], request: ScriptedRequest) -> str:
    """Reply with the last user message, a handy default for demos."""
    last = next((m.text for m in reversed(messages) if m.role == "user"), "")
    return last


def create(name: str, settings: object = None) -> Model:
    """Factory for ``scripted:NAME``; ``echo`` is built in, any other name starts empty."""
    if name == "echo":
        return ScriptedModel(echo, name="echo")
    return ScriptedModel(name=name)
