"""The Lab's services beyond chat: embeddings, tools, RAG and memory, each made on first use.

A mixin so ``core/lab.py`` stays about models; every service lives on the Lab's runner loop,
shares its settings (``home``, ``lab.db``, ``workspace``, ``safety``) and closes with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aillm_lab.runtime import sync_twin

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

    import pandas as pd

    from aillm_lab.config import LabSettings
    from aillm_lab.core.selector import Selection
    from aillm_lab.llm.base import Model
    from aillm_lab.memory.long_term import LongTermMemory
    from aillm_lab.rag.results import SearchResults
    from aillm_lab.rag.retriever import Filters, IngestReport, Knowledge, Mode, ProgressHook
    from aillm_lab.runtime import LoopRunner
    from aillm_lab.tools.toolbox import Toolbox

S = TypeVar("S")
C = TypeVar("C")
_CLOSE_WITH = "close_with:"


class LabServices:
    """Lazily built services; ``Lab`` provides ``settings``, ``runner`` and ``model()``."""

    settings: LabSettings
    runner: LoopRunner
    model: Callable[..., Model]

    def _service(self, name: str, make: Callable[[], S]) -> S:
        services: dict[str, Any] = self.__dict__.setdefault("_services", {})
        lock: threading.Lock = self.__dict__.setdefault("_services_lock", threading.Lock())
        with lock:
            if name not in services:
                services[name] = make()
            return services[name]

    async def _flush_services(self) -> None:
        """Commit what made services hold in buffers (the audit's group commit), so a
        backup or a reader in another process sees every call made so far."""
        tools = self.__dict__.get("_services", {}).get("tools")
        if tools is not None:
            await self.runner.arun(tools.audit_log.flush())

    async def _close_services(self) -> None:
        services: dict[str, Any] = self.__dict__.get("_services", {})
        # what was handed to close_with goes first: a monitor still running reads the
        # audit and the call log, so it must stop before they close
        for name in sorted(services, key=lambda n: not n.startswith(_CLOSE_WITH)):
            service = services.pop(name)
            closer = getattr(service, "aclose", None)
            if closer is not None:
                await closer()

    def close_with(self, resource: C) -> C:
        """Have this Lab close ``resource`` (anything with ``async def aclose``) when it
        closes, before its own services: a ``MonitoringAgent`` started on this Lab stops
        with it. Idempotent per object; the Lab holds it until then. Returns ``resource``."""
        if not callable(getattr(resource, "aclose", None)):
            raise TypeError(f"close_with: {type(resource).__name__} has no aclose(); pass an "
                            "object with `async def aclose(self)`")
        return self._service(f"{_CLOSE_WITH}{id(resource)}", lambda: resource)

    # -- model selection --------------------------------------------------------------------
    async def aselect_model(self, needs: Iterable[str] = (), *,
                            max_usd_per_call: float | None = None,
                            min_context: int | None = None,
                            max_latency_s: float | None = None,
                            prefer: Literal["latency", "cost"] = "latency",
                            candidates: Iterable[str | Model] | None = None,
                            input_tokens: int = 1000, output_tokens: int = 500) -> Selection:
        """The model that has ``needs`` (``tools``, ``json``, ``vision``), costs at most
        ``max_usd_per_call`` for a call of ``input_tokens`` in and ``output_tokens`` out,
        and answered fastest here; with fallbacks and why (``ModelSelector.aselect``).
        Raises ``ModelNotAvailable`` naming what each candidate lacks when none fits."""
        from aillm_lab.core.selector import ModelSelector

        selector = ModelSelector(self, input_tokens=input_tokens,  # type: ignore[arg-type]
                                 output_tokens=output_tokens)
        return await selector.aselect(needs, max_usd_per_call=max_usd_per_call,
                                      min_context=min_context, max_latency_s=max_latency_s,
                                      prefer=prefer, candidates=candidates)

    select_model = sync_twin(aselect_model)

    # -- embeddings -------------------------------------------------------------------------
    async def aembed(self, texts: str | Sequence[str], model: str | Model | None = None,
                     ) -> list[list[float]]:
        """One vector per text: the local all-MiniLM-L6-v2 by default (offline, free), or a
        provider's embedding model (``"openai:text-embedding-3-small"``) via the gateway."""
        batch = _texts(texts)
        if not batch:
            return []
        if model is None:
            embedder = self._service("embedder", _default_embedder)
            vectors = await self.runner.arun(embedder.aembed(batch))
            return [list(map(float, v)) for v in vectors]
        resolved = self.model(model)
        return await self.runner.arun(resolved.embed(batch))

    embed = sync_twin(aembed)

    # -- tools ------------------------------------------------------------------------------
    @property
    def tools(self) -> Toolbox:
        """The built-in tools and yours, in ``settings.workspace``, behind the Safety Guard."""
        def make() -> Toolbox:
            from aillm_lab.tools.toolbox import Toolbox

            return Toolbox(self.settings, self.runner)

        return self._service("tools", make)

    async def aaudit(self, limit: int | None = None, *, tool: str | None = None,
                     ) -> pd.DataFrame:
        """Every tool call in ``lab.db`` (oldest first): arguments redacted, decision, rule."""
        return await self.tools.aaudit(limit, tool=tool)

    audit = sync_twin(aaudit)

    # -- RAG --------------------------------------------------------------------------------
    @property
    def knowledge(self) -> Knowledge:
        """Document collections in ``lab.db`` with usearch and BM25 indexes under ``home``,
        embedded with ``settings.embedding_model`` (the local MiniLM when unset)."""
        return self.knowledge_for(self.settings.embedding_model)

    def knowledge_for(self, embedding_model: str | None) -> Knowledge:
        """The collections embedded with ``embedding_model`` (a ``provider:model`` that
        embeds, called through this Lab's gateway so its cost is in the call log; ``None``
        is the local MiniLM). A collection keeps the model it was built with and refuses
        another's vectors, so each model gets its own ``Knowledge`` over the same files."""
        def make() -> Knowledge:
            from aillm_lab.rag.embeddings import ModelEmbedder, default_embedder
            from aillm_lab.rag.retriever import Knowledge

            embedder = (default_embedder() if embedding_model is None
                        else ModelEmbedder(self.model(embedding_model)))
            return Knowledge(self.settings, runner=self.runner, embedder=embedder)

        if embedding_model is not None and not isinstance(embedding_model, str):
            raise TypeError(f"embedding_model: give a 'provider:model' string, got "
                            f"{type(embedding_model).__name__}")
        same = embedding_model == self.settings.embedding_model
        return self._service("knowledge" if same else f"knowledge:{embedding_model}", make)

    async def aingest(self, paths: str | Path | Iterable[str | Path],
                      collection: str = "default", sync: bool = False, *,
                      tags: Iterable[str] = (), progress: bool | ProgressHook | None = None,
                      embedding_model: str | None = None) -> IngestReport:
        """Load, chunk, embed and index files (unchanged ones cost nothing);
        ``embedding_model`` overrides ``settings.embedding_model`` for this collection."""
        kb = self.knowledge_for(embedding_model or self.settings.embedding_model)
        return await kb.aingest(paths, collection, sync, tags=tags, progress=progress)

    ingest = sync_twin(aingest)

    async def asearch(self, query: str | None = None, k: int = 10, mode: Mode | None = None,
                      collection: str = "default",
                      filters: Filters | dict[str, Any] | None = None, *,
                      vector: Any = None, vector_model: str | None = None,
                      embedding_model: str | None = None) -> SearchResults:
        """Hybrid (dense + BM25, fused by RRF), ``dense`` or ``sparse`` search; ``vector``
        searches by a query vector you already have (see ``Knowledge.asearch``);
        ``embedding_model`` must be the one the collection was built with."""
        kb = self.knowledge_for(embedding_model or self.settings.embedding_model)
        return await kb.asearch(query, k, mode, collection, filters,
                                vector=vector, vector_model=vector_model)

    search = sync_twin(asearch)

    # -- memory -----------------------------------------------------------------------------
    @property
    def memory(self) -> LongTermMemory:
        """Long-term memories per namespace in ``lab.db`` (durable, deduplicated, versioned)."""
        def make() -> LongTermMemory:
            from aillm_lab.memory.long_term import LongTermMemory
            from aillm_lab.rag.embeddings import default_embedder

            return LongTermMemory(self.settings, runner=self.runner,
                                  embedder=default_embedder(), models=self.model)

        return self._service("memory", make)


def _texts(texts: str | Sequence[str]) -> list[str]:
    batch = [texts] if isinstance(texts, str) else list(texts)
    bad = [type(t).__name__ for t in batch if not isinstance(t, str)]
    if bad:
        raise TypeError(f"texts: give a string or a list of strings; got items of type "
                        f"{', '.join(sorted(set(bad)))}")
    return batch


def _default_embedder() -> Any:
    from aillm_lab.rag.embeddings import default_embedder

    return _Shared(default_embedder())


class _Shared:
    """The process-wide embedder, which a Lab uses but must not close."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def aembed(self, texts: list[str]) -> Any:
        return await self.inner.aembed(texts)

