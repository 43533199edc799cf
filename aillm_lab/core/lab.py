"""``Lab``: the owner of settings, models and the runner, with sync and async doors.

Every async method runs its work on the runner loop, so model clients and threads belong to
one loop whatever loop (or none) the caller is on; every sync twin goes through
``LoopRunner.run``, which works inside Jupyter cells, ``asyncio.run(main())`` and Panel.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from pydantic import BaseModel

from aillm_lab.config import LabSettings
from aillm_lab.core.services import LabServices
from aillm_lab.display import Displayable, fields_table
from aillm_lab.errors import ConfigError, ModelNotAvailable
from aillm_lab.llm.base import Model, OutputSpec
from aillm_lab.llm.calllog import CallLog
from aillm_lab.llm.gateway import Gateway, GatewayModel
from aillm_lab.llm.limits import UNSET
from aillm_lab.llm.pricing import Pricing
from aillm_lab.llm.registry import check_spec, default_model, registry
from aillm_lab.llm.store import ResponseCache, ResponseStore, TieredStore
from aillm_lab.llm.structured import complete_structured
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    Message,
    StreamEvent,
    ToolSpec,
    as_messages,
    generation_params,
)
from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner, sync_twin

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

    from aillm_lab.agents.run import AgentRun
    from aillm_lab.core.router import LlmMode, Route, TaskRouter

log = logging.getLogger(__name__)
Prompt = str | Message | list[Message] | list[dict[str, Any]]
ModelArg = str | Model | None
Tools = Sequence[Any] | None  # @al.tool tools, ToolSpecs or plain typed functions
OutputT = TypeVar("OutputT", bound=BaseModel)


class Lab(LabServices, Lifecycle, Displayable):
    """Settings, models and the runner in one object; use it as a (async) context manager."""

    def __init__(self, settings: LabSettings | None = None, *, model: ModelArg = None,
                 runner: LoopRunner | None = None, **overrides: Any) -> None:
        if settings is not None and overrides:
            settings = LabSettings(**{**settings.model_dump(), **overrides})
        self.settings = settings or LabSettings.load(**overrides)
        if not isinstance(model, Model | None):  # a typo fails here, not at the first chat
            check_spec(model, "model")
        self.runner = runner or get_runner()
        self._default = model
        self._models: dict[str, Model] = {}
        self._fallbacks: list[Model] | None = None
        self._lock = threading.Lock()
        self._default_choice: tuple[str, str] | None = None
        self._closer_loop: object = None
        self.calllog, self.store, self.gateway = _plumbing(self.settings, self.runner)

    def __repr__(self) -> str:
        return f"<Lab home={str(self.settings.home)!r} model={self.default_model_id!r}>"

    def _repr_html_(self) -> str:
        """Home, default model and why, the response store, and this process's spend (no
        I/O: a repr must not wait on the call log)."""
        model, why = (self.default_model_id, "given to the Lab") if self._default else \
            self.default_model_reason()
        return fields_table("Lab", [
            ("home", self.settings.home), ("default model", f"{model} ({why})"),
            ("responses", self.settings.cache_mode),
            ("spent in this process", f"${self.gateway.budget.spent_usd:.4f}")])

    # -- models ----------------------------------------------------------------------------
    @property
    def default_model_id(self) -> str:
        if isinstance(self._default, Model):
            return self._default.id
        return self._default or self.default_model_reason()[0]

    @property
    def given_model(self) -> Model | None:
        """The ``Model`` object given as ``Lab(model=...)``, if one was. A string default (or
        the automatic choice) is named by ``default_model_id`` and resolves in any process;
        an object must travel as itself (Ray's workers get it pickled)."""
        return self._default if isinstance(self._default, Model) else None

    def default_model_reason(self) -> tuple[str, str]:
        """The default model and why it was chosen (cached: probing Ollama takes time)."""
        if self._default is not None:
            return self.default_model_id, "given to Lab(model=...)"
        if self._default_choice is None:
            self._default_choice = default_model(self.settings)
        return self._default_choice

    def model(self, spec: ModelArg = None) -> Model:
        """``spec`` (or the default) behind this Lab's gateway; strings resolve only once."""
        if isinstance(spec, GatewayModel):
            return spec
        if spec is None and isinstance(self._default, Model):
            spec = self._default
        if isinstance(spec, Model):  # the caller owns it: wrapped per call, never closed here
            return self.gateway.wrap(spec, self._fallback_models(spec.id))
        key = spec or self.default_model_id
        model = self._models.get(key)  # one dict read is atomic; writers hold the lock
        if model is None:
            inner = registry.resolve(key, self.settings)
            wrapped = self.gateway.wrap(inner, self._fallback_models(inner.id))
            with self._lock:
                model = self._models.setdefault(key, wrapped)
            self._close_with_runner()
        return model

    def _fallback_models(self, primary: str) -> list[Model]:
        """``settings.fallbacks`` resolved once; ones that cannot run here are skipped."""
        if self._fallbacks is None:
            found = []
            for spec in self.settings.fallbacks:
                try:
                    found.append(registry.resolve(spec, self.settings))
                except ModelNotAvailable as exc:
                    log.warning("fallback %s is skipped: %s", spec, exc)
            self._fallbacks = found
        return [m for m in self._fallbacks if m.id != primary]

    # -- scopes, budgets and the call log ------------------------------------------------------
    def scope(self, run_id: str | None = None, budget_usd: float | None = UNSET) -> Any:
        """``with lab.scope("exp-1", budget_usd=0.5):`` tags the calls inside with the run
        id ``exp-1`` in the call log and caps their spend (default ``run_budget_usd``)."""
        return self.gateway.run(run_id, budget_usd)

    async def acalls(self, sql: str | None = None) -> pd.DataFrame:
        """The call log: one row per model call (cache and replay hits too) from every Lab
        and process on this home, sorted by time; rows are on disk within ~0.1 s.

        With ``sql``, DuckDB SQL over the view ``calls`` instead: ``lab.calls("select model,
        count(*) from calls group by model")``. It runs in a worker thread, so the loop
        never stalls; bad SQL raises ValueError naming the query and the columns.
        """
        if sql is None:
            return await self.calllog.aframe()
        return await self.calllog.asql(sql)

    calls = sync_twin(acalls)

    def _close_with_runner(self) -> None:
        """Have the runner release our models when it closes (at exit, say), without
        keeping this Lab alive just for that."""
        loop = self.runner.loop
        if self._closer_loop is loop:
            return
        self._closer_loop = loop
        ref = weakref.ref(self)

        async def closer() -> None:
            lab = ref()
            if lab is not None:
                await lab.aclose()

        self.runner.on_close(closer)

    # -- chat, complete and stream ---------------------------------------------------------
    async def achat(self, prompt: Prompt, model: ModelArg = None, *, system: str | None = None,
                    tools: Tools = None, **params: Any) -> Completion:
        """Answer a prompt (or message list) with ``model`` or the default model.

        ``tools`` takes ``@al.tool`` tools, ``ToolSpec``s or plain typed functions; the
        completion carries the model's tool calls (run them with ``lab.tools``).
        """
        gen = generation_params(params, ("model", "system", "tools"))
        coro = self._complete(prompt, self.model(model), system, tools, None, gen, 0)
        return await self.runner.arun(coro)

    @overload
    async def acomplete(self, prompt: Prompt, model: ModelArg = None, *,
                        output: type[OutputT],
                        system: str | None = None, tools: Tools = None, retries: int = 2,
                        **params: Any) -> OutputT: ...
    @overload
    async def acomplete(self, prompt: Prompt, model: ModelArg = None, *,
                        output: dict[str, Any], system: str | None = None,
                        tools: Tools = None, retries: int = 2, **params: Any) -> Any: ...
    @overload
    async def acomplete(self, prompt: Prompt, model: ModelArg = None, *,
                        output: None = None, system: str | None = None, tools: Tools = None,
                        retries: int = 2, **params: Any) -> Completion: ...
    async def acomplete(self, prompt: Prompt, model: ModelArg = None, *,
                        output: OutputSpec = None, system: str | None = None,
                        tools: Tools = None, retries: int = 2, **params: Any) -> Any:
        """Like ``achat``; with ``output=City`` it returns a validated ``City`` (a JSON
        schema dict gives the validated JSON value), retrying ``retries`` times on bad output."""
        gen = generation_params(params, ("model", "output", "system", "tools", "retries"))
        completion = await self.runner.arun(
            self._complete(prompt, self.model(model), system, tools, output, gen, retries))
        return completion.output if output is not None else completion

    async def astream(self, prompt: Prompt, model: ModelArg = None, *,
                      system: str | None = None, tools: Tools = None,
                      **params: Any) -> AsyncIterator[StreamEvent]:
        """Stream events; ``str(event)`` is its text, the last event carries the completion."""
        gen = generation_params(params, ("model", "system", "tools"))
        resolved = self.model(model)
        async for event in self.runner.aiterate(
                lambda: self._stream(prompt, resolved, system, tools, gen)):
            yield event

    chat = sync_twin(achat)
    stream = sync_twin(astream)
    if TYPE_CHECKING:  # the overloads, for type checkers; at run time the one-line twin
        @overload
        def complete(self, prompt: Prompt, model: ModelArg = None, *,
                     output: type[OutputT],
                     system: str | None = None, tools: Tools = None, retries: int = 2,
                     **params: Any) -> OutputT: ...
        @overload
        def complete(self, prompt: Prompt, model: ModelArg = None, *,
                     output: dict[str, Any], system: str | None = None, tools: Tools = None,
                     retries: int = 2, **params: Any) -> Any: ...
        @overload
        def complete(self, prompt: Prompt, model: ModelArg = None, *, output: None = None,
                     system: str | None = None, tools: Tools = None, retries: int = 2,
                     **params: Any) -> Completion: ...
        def complete(self, prompt: Prompt, model: ModelArg = None, *,
                     output: OutputSpec = None, system: str | None = None,
                     tools: Tools = None, retries: int = 2, **params: Any) -> Any: ...
    else:
        complete = sync_twin(acomplete)

    # -- lifecycle (close, with and async with come from Lifecycle) ------------------------
    async def aclose(self) -> None:
        """Release this Lab's models, services, store and call log; the shared runner stays
        up. Idempotent, and a Lab used again after it reopens what it needs."""
        await self.runner.arun(self._release())

    async def _release(self) -> None:  # on the runner loop
        with self._lock:
            models, self._models = list(self._models.values()), {}
            fallbacks, self._fallbacks = self._fallbacks or [], None
        await _close_all([*models, *fallbacks])
        await self._close_services()
        await self.store.aclose()
        await self.calllog.aclose()

    # -- agent runs --------------------------------------------------------------------------
    async def aruns(self) -> pd.DataFrame:
        """The agent runs saved under this home (``<home>/runs``), newest first: one row
        per run with its id, agent, task, status, steps, cost and time. A file that cannot
        be read (edited, cut short, another schema) is skipped with a logged warning."""
        from aillm_lab.agents.store import list_runs

        return await asyncio.to_thread(list_runs, self.settings.home)

    async def aload_run(self, run_id: str) -> AgentRun:
        """A saved agent run, equal to the one that was saved: a pydantic ``output``
        (``CodeResult``, ``AnalysisResult``, an ``output=`` model) comes back as its type when
        that type is in ``aillm_lab`` or already imported (a file never makes other code
        run), else as its JSON data (a dict). ``LookupError`` if unknown, ``SavedRunError``
        (a ``ValueError``) naming the file if it cannot be read. ``run.fork(step,
        agent=...)`` continues it."""
        from aillm_lab.agents.store import load_run

        return await asyncio.to_thread(load_run, self.settings.home, run_id)

    runs = sync_twin(aruns)
    load_run = sync_twin(aload_run)

    async def aexperiments(self) -> pd.DataFrame:
        """The experiment runs saved under this home (``<home>/experiments``), newest first:
        one row per run with its id, name, status, cells and models."""
        from aillm_lab.experiments.results import list_runs

        return await asyncio.to_thread(list_runs, self.settings.home)

    experiments = sync_twin(aexperiments)

    # -- routing and orchestration ------------------------------------------------------------
    @property
    def router(self) -> TaskRouter:
        """The Lab's ``TaskRouter`` (keywords and embeddings; its descriptions embedded once)."""
        from aillm_lab.core.router import TaskRouter

        return self._service("router", lambda: TaskRouter(self))

    async def aroute(self, task: str, *, llm: LlmMode | None = None) -> Route:
        """Which agent should take ``task``: ``Route(agent, confidence, why)``; ``llm=
        "fallback"`` or ``"always"`` also asks the default model (``TaskRouter``)."""
        return await self.router.aroute(task, llm=llm)

    async def asolve(self, task: str, plan: Literal["single", "llm"] = "single",
                     **config: Any) -> AgentRun:
        """Solve ``task`` with the agents: ``single`` routes it whole to one agent, ``llm``
        has the model plan subtasks, runs each on its agent (independent ones at once) and
        joins the answers. ``config``: ``OrchestratorConfig`` fields, and ``agents=`` (ready
        agents by router name). The run's steps hold the sub-runs (``Orchestrator``)."""
        from aillm_lab.core.orchestrator import Orchestrator

        return await Orchestrator(self, plan=plan, **config).asolve(task)

    route = sync_twin(aroute)
    solve = sync_twin(asolve)

    # -- backup ----------------------------------------------------------------------------
    async def abackup(self, path: str | Path) -> Path:
        """A consistent copy of ``lab.db`` at ``path`` (SQLite's online backup, on its own
        connection in a worker thread, so tools and memory go on meanwhile). It keeps the
        lab's id: copying it over a lost or damaged ``lab.db`` restores this home."""
        from aillm_lab.db import backup

        await self._flush_services()  # group-committed audit rows go into the copy too
        return await asyncio.to_thread(backup, self.settings.db_path, path)

    backup = sync_twin(abackup)

    # -- on the runner loop ------------------------------------------------------------------
    def _complete(self, prompt: Prompt, model: Model, system: str | None,
                  tools: Tools, output: OutputSpec,
                  params: GenerationParams, retries: int) -> Coroutine[Any, Any, Completion]:
        """The model's own coroutine (no wrapper frame per call); bad arguments raise here,
        in the caller, before anything is scheduled."""
        messages = as_messages(prompt, system)
        specs = _tool_specs(tools)
        if output is not None and specs:
            raise ConfigError("complete(): pass either tools= or output=, not both; ask for "
                              "the tool calls first, then the structured answer.",
                              fields=("tools", "output"))
        if output is not None:
            return complete_structured(model, messages, output, params, retries)
        return model.complete(messages, tools=specs, params=params)

    async def _stream(self, prompt: Prompt, model: Model, system: str | None,
                      tools: Tools,
                      params: GenerationParams) -> AsyncIterator[StreamEvent]:
        async for event in model.stream(as_messages(prompt, system),
                                        tools=_tool_specs(tools), params=params):
            yield event


def _tool_specs(tools: Tools) -> list[ToolSpec] | None:
    """``tools=`` as models take it: ``@al.tool`` tools, ToolSpecs and plain functions."""
    if tools is None:
        return None
    from aillm_lab.tools.base import tool_specs

    return tool_specs(tools)


async def _close_all(models: list[Model]) -> None:
    for model in models:
        await model.aclose()


def _plumbing(settings: LabSettings,
              runner: LoopRunner) -> tuple[CallLog, ResponseStore, Gateway]:
    """The call log, the record/replay store (behind an optional memory cache) and the
    gateway that every model call of a Lab passes through."""
    calllog = CallLog(settings.home)
    store = ResponseStore(settings.home, settings.cache_mode, runner=runner)
    cache = (ResponseCache(settings.cache_max_entries, settings.cache_ttl_s)
             if settings.memory_cache else None)
    prices = {spec: p.model_dump(exclude_none=True) for spec, p in settings.prices.items()}
    gateway = Gateway.from_settings(settings, on_record=calllog.append,
                                    store=TieredStore(store, cache),
                                    pricing=Pricing(overrides=prices))
    return calllog, store, gateway


# -- module-level conveniences over one default Lab -------------------------------------------
_lab: Lab | None = None
_lab_lock = threading.Lock()


def default_lab() -> Lab:
    """The Lab behind ``al.chat`` and friends, created on first use from the environment."""
    global _lab
    if _lab is None:
        with _lab_lock:
            if _lab is None:
                _lab = Lab()
    return _lab


def chat(prompt: Prompt, model: ModelArg = None, **params: Any) -> Completion:
    """Answer ``prompt`` with the default model; works in cells, scripts and running loops."""
    return default_lab().chat(prompt, model, **params)


async def achat(prompt: Prompt, model: ModelArg = None, **params: Any) -> Completion:
    return await default_lab().achat(prompt, model, **params)


@overload
def complete(prompt: Prompt, model: ModelArg = None, *, output: type[OutputT],
             **params: Any) -> OutputT: ...
@overload
def complete(prompt: Prompt, model: ModelArg = None, *, output: dict[str, Any],
             **params: Any) -> Any: ...
@overload
def complete(prompt: Prompt, model: ModelArg = None, *, output: None = None,
             **params: Any) -> Completion: ...
def complete(prompt: Prompt, model: ModelArg = None, *, output: OutputSpec = None,
             **params: Any) -> Any:
    """Like ``chat``; ``output=MyModel`` returns a validated ``MyModel``."""
    return default_lab().complete(prompt, model, output=output, **params)


@overload
async def acomplete(prompt: Prompt, model: ModelArg = None, *, output: type[OutputT],
                    **params: Any) -> OutputT: ...
@overload
async def acomplete(prompt: Prompt, model: ModelArg = None, *, output: dict[str, Any],
                    **params: Any) -> Any: ...
@overload
async def acomplete(prompt: Prompt, model: ModelArg = None, *, output: None = None,
                    **params: Any) -> Completion: ...
async def acomplete(prompt: Prompt, model: ModelArg = None, *, output: OutputSpec = None,
                    **params: Any) -> Any:
    return await default_lab().acomplete(prompt, model, output=output, **params)


def stream(prompt: Prompt, model: ModelArg = None, **params: Any) -> Iterator[StreamEvent]:
    """Yield stream events as they arrive; ``print(event, end="")`` shows the text."""
    return default_lab().stream(prompt, model, **params)


def astream(prompt: Prompt, model: ModelArg = None, **params: Any) -> AsyncIterator[StreamEvent]:
    return default_lab().astream(prompt, model, **params)


def embed(texts: str | Sequence[str], model: ModelArg = None) -> list[list[float]]:
    """Vectors for ``texts``: local all-MiniLM-L6-v2 by default, offline."""
    return default_lab().embed(texts, model)


async def aembed(texts: str | Sequence[str], model: ModelArg = None) -> list[list[float]]:
    return await default_lab().aembed(texts, model)
