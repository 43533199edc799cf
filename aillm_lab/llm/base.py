"""The ``Model`` interface: one async door for every provider, local or hosted."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel

from aillm_lab.errors import UnsupportedInput
from aillm_lab.llm.types import Completion, GenerationParams, Message, StreamEvent, ToolSpec

OutputSpec = type[BaseModel] | dict[str, Any] | None


class Model(ABC):
    """A chat model. Subclasses implement ``complete``; ``stream`` has a working default."""

    provider: ClassVar[str] = ""
    supports_tools: ClassVar[bool] = True
    supports_structured: ClassVar[bool] = True
    supports_images: ClassVar[bool] = False
    native_structured: ClassVar[bool] = False  # output valid by construction, no retries
    base_url: str | None = None  # where a hosted model is served; part of cache keys

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def id(self) -> str:
        return f"{self.provider}:{self.name}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id}>"

    @abstractmethod
    async def complete(self, messages: Sequence[Message], *,
                       tools: Sequence[ToolSpec] | None = None,
                       output: OutputSpec = None,
                       params: GenerationParams | None = None) -> Completion:
        """Answer ``messages``; with ``output`` the text is JSON for that schema."""

    async def stream(self, messages: Sequence[Message], *,
                     tools: Sequence[ToolSpec] | None = None,
                     output: OutputSpec = None,
                     params: GenerationParams | None = None) -> AsyncIterator[StreamEvent]:
        """Yield text and tool-call events, then one ``done`` event with the completion."""
        completion = await self.complete(messages, tools=tools, output=output, params=params)
        for event in completion_events(completion):
            yield event

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, for providers that have embeddings (OpenAI, Ollama)."""
        raise UnsupportedInput(f"{self.id} has no embeddings; use an embedding model such as "
                               "'openai:text-embedding-3-small' or 'ollama:nomic-embed-text'")

    async def aclose(self) -> None:
        """Release clients or threads; the runner calls this on close."""


def completion_events(completion: Completion, *, text: bool = True,
                      tool_calls: bool = True) -> list[StreamEvent]:
    """The events that end a stream of ``completion``: its text and tool calls (pass False
    for what the stream already sent), its usage, then ``done``.

    One function, so that a stream ends the same way whether a vendor sent it, a replay or
    a script made it, or it stands in for a model that cannot stream.
    """
    events = [StreamEvent(type="text", text=completion.text)] if text and completion.text else []
    if tool_calls:
        events += [StreamEvent(type="tool_call", tool_call=call)
                   for call in completion.tool_calls]
    return [*events, StreamEvent(type="usage", usage=completion.usage),
            StreamEvent(type="done", completion=completion)]
