"""``GatewayModel`` (a ``Model`` whose calls go through a ``Gateway``) and the gateway's
helpers for a started stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import ProviderError, StreamInterrupted
from aillm_lab.llm.base import Model, OutputSpec
from aillm_lab.llm.limits import within
from aillm_lab.llm.types import (
    DEFAULT_PARAMS,
    Completion,
    GenerationParams,
    Message,
    StreamEvent,
    ToolSpec,
)

if TYPE_CHECKING:
    from aillm_lab.llm.gateway import Gateway

_DELEGATED = ("provider", "supports_tools", "supports_structured", "supports_images",
              "native_structured", "base_url")


class GatewayModel(Model):
    """A ``Model`` whose every call goes through a ``Gateway``; looks like the model it wraps.

    ``fallbacks`` are tried in order when ``inner`` fails with a retryable error after its
    attempts, or raises ``ModelNotAvailable``. ``aclose`` closes ``inner`` only: fallbacks
    belong to whoever resolved them. Other attributes are read from ``inner``.
    """

    def __init__(self, inner: Model, gateway: Gateway, fallbacks: Sequence[Model] = ()) -> None:
        super().__init__(inner.name)
        self.inner, self.gateway, self.fallbacks = inner, gateway, list(fallbacks)
        for name in _DELEGATED:
            setattr(self, name, getattr(inner, name))

    def __repr__(self) -> str:
        extra = f" → {', '.join(m.id for m in self.fallbacks)}" if self.fallbacks else ""
        return f"<GatewayModel {self.id}{extra}>"

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def complete(self, messages: Sequence[Message], *,
                 tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                 params: GenerationParams | None = None) -> Coroutine[Any, Any, Completion]:
        # the gateway's coroutine itself, not one awaiting it: a frame fewer per call
        return self.gateway.complete(self, list(messages), tools, output,
                                     params or DEFAULT_PARAMS)

    def stream(self, messages: Sequence[Message], *,
               tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
               params: GenerationParams | None = None) -> AsyncIterator[StreamEvent]:
        # the gateway's own generator, not a wrapper, so closing it reaches the gateway
        return self.gateway.stream(self, list(messages), tools, output,
                                   params or DEFAULT_PARAMS)

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return await self.gateway.embed(self, list(texts))

    async def aclose(self) -> None:
        await self.inner.aclose()


# -- helpers ---------------------------------------------------------------------------------
async def next_event(agen: AsyncIterator[StreamEvent], deadline: float | None,
                      model: Model) -> StreamEvent | None:
    """The next event of a started stream; any provider failure now is StreamInterrupted."""
    try:
        return await within(anext_or_none(agen), None, "next event", model, at=deadline)
    except StreamInterrupted:
        raise
    except ProviderError as exc:
        raise StreamInterrupted(
            f"{model.id}: the stream broke after its first event ({type(exc).__name__}: "
            f"{exc}); not retried, since its text was already shown.",
            provider=exc.provider or model.provider, model=exc.model or model.name,
            status=exc.status, vendor_message=exc.vendor_message) from exc


async def anext_or_none(agen: AsyncIterator[StreamEvent]) -> StreamEvent | None:
    try:
        return await anext(agen)
    except StopAsyncIteration:
        return None


async def aclose_stream(agen: AsyncIterator[StreamEvent]) -> None:
    close = getattr(agen, "aclose", None)
    if close is not None:
        await close()
