"""The trace of an agent run as data: ``AgentRun``, its ``AgentStep``s and ``AgentEvent``s.

Why pydantic models: a trace must outlive the process that made it (saved under the Lab's
home, reloaded, diffed, shown in a notebook), so ``run.model_dump_json()`` round-trips through
``AgentRun.model_validate_json``. The agent that made a run is not part of the data: the run
keeps it in a private attribute (for ``fork``), left out of JSON and of ``==``, so a reloaded
run equals the original.

A structured ``output`` (a pydantic model: ``CodeResult``, ``AnalysisResult``, an ``output=``
model) is saved with its type's name (``output_type``, ``"module:QualName"``) and validated back
into that type on load, so ``lab.load_run(id).output.passed`` works. A saved run is data from a
file, so its type name never makes code run: only a class already imported (in
``sys.modules``) or one in the ``aillm_lab`` package is used; any other name, or data that no
longer validates, leaves the output as its JSON data (a dict), with a logged warning.
An ``AnalysisResult``'s chart (a bokeh figure, not data) is saved and compared as its
``chart_spec``; after a reload the figure is drawn again from that spec and the frame.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    computed_field,
    model_validator,
)

from aillm_lab.display import Displayable
from aillm_lab.llm.types import Completion, Message, ToolCall, Usage
from aillm_lab.runtime import sync_twin
from aillm_lab.tools.base import ToolResult

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.llm.base import Model

log = logging.getLogger(__name__)
_RESULT_CHARS = 200  # of one tool result in ``to_pandas``

RunStatus = Literal["running", "completed", "max_steps", "budget", "timeout", "error",
                    "cancelled"]
EventType = Literal["step_start", "token", "tool_call", "tool_result", "final", "error"]


class AgentStep(BaseModel):
    """One turn: the messages sent, the model's answer, its tool calls and their results.

    ``observations`` are the messages the loop added after the answer (tool results, repair
    hints); ``messages + [answer] + observations`` is the history the next step sends, which
    is what ``fork`` replays. ``replayed`` marks a step copied from another run by a fork.
    ``state`` is what the agent derived from the step while it was live (a source it
    numbered, a query's result, a test run), as JSON data: a fork, even of a reloaded run,
    rebuilds the agent's per-run state from it without calling anything again.
    """

    index: int
    model: str = ""
    messages: list[Message] = Field(default_factory=list)
    completion: Completion | None = None
    tool_results: list[ToolResult] = Field(default_factory=list)
    observations: list[Message] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float | None = 0.0
    latency_s: float = 0.0
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    replayed: bool = False
    error: str | None = None
    state: dict[str, Any] = Field(default_factory=dict)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return list(self.completion.tool_calls) if self.completion is not None else []

    @property
    def text(self) -> str:
        return self.completion.text if self.completion is not None else ""

    def history(self) -> list[Message]:
        """The messages the step after this one starts from."""
        answer = [self.completion.to_message()] if self.completion is not None else []
        return [*self.messages, *answer, *self.observations]


class AgentRun(BaseModel, Displayable):
    """What an agent run did and how it ended; returned by ``agent.run`` / ``arun``.

    ``status`` is ``completed`` or the limit that stopped it (``max_steps``, ``budget``,
    ``timeout``, ``error``, ``cancelled``); a stopped run keeps every step it took.
    ``output`` is the final text, or a validated instance of the agent's ``output=`` model;
    after a reload it is that model again when its type can be found without importing
    foreign code (see the module docstring), else its JSON data. Model calls are in
    ``lab.calls()`` with ``run_id == run.id``, one row per live step, in step order.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str = Field(default_factory=lambda: f"agent-{uuid.uuid4().hex[:12]}")
    agent: str = ""
    model: str = ""
    task: str = ""
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="the run's other arguments as JSON data (tests=, "
        "collections=, data sources): what a fork or a reload needs to run it again")
    status: RunStatus = "running"
    output: Any = None
    error: str | None = None
    steps: list[AgentStep] = Field(default_factory=list)
    started_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    latency_s: float = 0.0
    forked_from: str | None = Field(default=None, description="run id and step: 'id@N'")
    remembered: list[str] = Field(
        default_factory=list, description="ids of the memories saved after the run "
        "(agents with memory=): the salient facts the run's model picked")
    _agent: Any = PrivateAttr(default=None)
    _output_type: str | None = PrivateAttr(default=None)  # a saved name not resolved here

    @computed_field(  # type: ignore[prop-decorator]
        description="'module:QualName' of a pydantic output, so a reload validates the "
        "output back into that type; None for text or plain data")
    @property
    def output_type(self) -> str | None:
        if isinstance(self.output, BaseModel):
            cls = type(self.output)
            return f"{cls.__module__}:{cls.__qualname__}"
        return self._output_type

    @model_validator(mode="wrap")
    @classmethod
    def _typed_output(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> AgentRun:
        """Validate a saved output back into the type ``output_type`` names (if allowed)."""
        name = None
        if isinstance(data, dict) and "output_type" in data:
            data = dict(data)
            name = data.pop("output_type")
        run = handler(data)
        if isinstance(name, str) and not isinstance(run.output, BaseModel):
            run.output, typed = _typed(run.id, name, run.output)
            run._output_type = None if typed else name
        return run

    def __eq__(self, other: object) -> bool:
        """Equal as data: the agent kept for ``fork`` is not compared."""
        if not isinstance(other, AgentRun):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # mutable, like every pydantic model

    # -- totals ------------------------------------------------------------------------------
    @property
    def usage(self) -> Usage:
        total = Usage()
        for step in self.steps:
            if not step.replayed:
                total = total + step.usage
        return total

    @property
    def cost_usd(self) -> float | None:
        """USD of this run's own model calls (replayed steps cost nothing); None if unknown."""
        costs = [s.cost_usd for s in self.steps if not s.replayed]
        return None if any(c is None for c in costs) else float(sum(c or 0.0 for c in costs))

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for step in self.steps for call in step.tool_calls]

    # -- views ---------------------------------------------------------------------------------
    def to_pandas(self) -> pd.DataFrame:
        """One row per step: tool calls, what they returned (``tool_results``, each cut to
        200 characters; the full text is in ``run.steps``), tokens, cost and latency."""
        import pandas as pd

        rows = [{
            "run_id": self.id, "step": s.index, "model": s.model, "replayed": s.replayed,
            "text": s.text, "tool_calls": [f"{c.name}({_args(c)})" for c in s.tool_calls],
            "tool_results": [_cut(r.content, _RESULT_CHARS) for r in s.tool_results],
            "tools_ok": [r.ok for r in s.tool_results], "input_tokens": s.usage.input_tokens,
            "output_tokens": s.usage.output_tokens, "cost_usd": s.cost_usd,
            "latency_s": s.latency_s, "error": s.error} for s in self.steps]
        return pd.DataFrame(rows, columns=["run_id", "step", "model", "replayed", "text",
                                           "tool_calls", "tool_results", "tools_ok",
                                           "input_tokens", "output_tokens", "cost_usd",
                                           "latency_s", "error"])

    def __repr__(self) -> str:
        cost = "?" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        return (f"<AgentRun {self.id} {self.status} steps={len(self.steps)} "
                f"tokens={self.usage.total_tokens} cost={cost} {self.latency_s:.2f}s "
                f"output={_short(self.output)}>")

    def __str__(self) -> str:
        from aillm_lab.agents.display import render_text

        return render_text(self)

    def _repr_html_(self) -> str:
        from aillm_lab.agents.display import render_html

        return render_html(self)

    # -- fork ----------------------------------------------------------------------------------
    async def afork(self, step: int, model: str | Model | None = None, *,
                    agent: Forker | None = None) -> AgentRun:
        """A new run that reuses steps before ``step`` (no model or tool calls) and goes on
        live from there, with ``model`` if given. ``agent=`` is needed only for a reloaded
        run (the agent is not saved with it)."""
        return await self._forker(agent).afork(self, step, model)

    fork = sync_twin(afork)

    def _forker(self, agent: Forker | None) -> Forker:
        found = agent or self._agent
        if found is None:
            raise LookupError(f"run {self.id} has no live agent to continue it (it was "
                              f"reloaded, or its agent is gone): pass agent=ReActAgent(...)")
        return found


class Forker(Protocol):
    """What ``AgentRun.fork`` needs from an agent."""

    async def afork(self, run: AgentRun, step: int,
                    model: str | Model | None = None) -> AgentRun: ...


class AgentEvent(BaseModel):
    """One thing that happened during ``agent.stream``; ``str()`` is its text delta.

    Order per step: ``step_start``, ``token``s (model text), then for each tool call a
    ``tool_call`` and later its ``tool_result``. A run ends with ``error`` (when it did not
    complete) and always ``final``, which carries the ``AgentRun``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: EventType
    step: int = 0
    text: str = ""
    tool_call: ToolCall | None = None
    tool_result: ToolResult | None = None
    run: AgentRun | None = None

    def __str__(self) -> str:
        return self.text


def remember_agent(run: AgentRun, agent: Forker) -> None:
    """Keep the agent that made ``run`` with it, so ``run.fork`` can go on."""
    run._agent = agent


_TYPE_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def output_class(name: str) -> type[BaseModel] | None:
    """The pydantic class ``"module:QualName"`` names, or None. A module is imported only
    if it is ``aillm_lab`` or under it (our own code); any other must already be in
    ``sys.modules``: a name read from a file must never make foreign code run."""
    if not _TYPE_NAME.fullmatch(name):
        return None
    module_name, qualname = name.split(":")
    module = sys.modules.get(module_name)
    if module is None and (module_name == "aillm_lab" or module_name.startswith("aillm_lab.")):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return None
    found: Any = module
    for part in qualname.split("."):
        found = getattr(found, part, None)
    return found if isinstance(found, type) and issubclass(found, BaseModel) else None


def _typed(run_id: str, name: str, data: Any) -> tuple[Any, bool]:
    """``data`` validated as the class ``name`` names, and whether it was."""
    cls = output_class(name)
    if cls is None:
        log.warning("run %s: its output stays JSON data: %r names no pydantic class that is "
                    "imported or in aillm_lab (import its module before loading the run, or "
                    "use %s.model_validate(run.output))", run_id, name, name.split(":")[-1])
        return data, False
    try:
        return cls.model_validate(data), True
    except ValidationError as exc:
        log.warning("run %s: its output stays JSON data: it no longer validates as %s (%d "
                    "errors, first: %s)", run_id, name, exc.error_count(),
                    exc.errors()[0]["msg"] if exc.errors() else "")
        return data, False


def _args(call: ToolCall) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())


def _short(value: Any, limit: int = 60) -> str:
    return _cut(repr(value), limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."
