"""``Workflow``: a declarative DAG of steps, from Python or YAML, validated before it runs.

A step is one of four kinds, told apart by the key that names it: ``llm:`` (a prompt through
the Lab's gateway), ``tool:`` (a tool through the Safety Guard), ``agent:`` (an agent run)
or ``call:`` (a Python function). A workflow read from text (``from_yaml``, ``from_dict``)
is data someone else may have written, so it imports nothing by itself: its ``call:`` names
are looked up in the ``functions={"name": fn}`` its caller trusts, and a ``"module:function"``
(or an ``agent: "module:Class"``) is refused unless the caller passes ``allow_imports=True``,
which runs whatever code the file names (that policy is ``workflow_imports``). Steps take
values from the workflow's inputs and earlier steps through templates (``workflow_template``);
a step depends on every step it refers to, and on those in its ``needs:``. Everything that can be
checked without running is checked at load: fields (pydantic), templates, references to
unknown steps or undeclared inputs, cycles, and the functions the calls name. Each problem is a
``ConfigError`` whose ``fields`` name the step and the field (``steps.fetch.retry.attempts``).

::

    name: nightly
    inputs: {topic: null}          # null: required; anything else is the default
    steps:
      - id: draft
        llm: "Write three facts about {{ inputs.topic }}."
      - id: count
        call: count_words            # Workflow.from_yaml(path, functions={"count_words": f})
        args: {text: "{{ steps.draft.output.text }}"}
        retry: {attempts: 3, backoff_s: 0.5}
        timeout_s: 10
    outputs: {words: "{{ steps.count.output }}"}
"""

from __future__ import annotations

import graphlib
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError

from aillm_lab.agents.workflow_imports import (
    check_agent,
    import_object,
    names_from_text,
    trusted_call,
)
from aillm_lab.agents.workflow_template import (
    Condition,
    TemplateError,
    compile_condition,
    compile_tree,
    tree_refs,
)
from aillm_lab.errors import ConfigError
from aillm_lab.llm.types import GenerationParams

STEP_ID = r"^[A-Za-z_][A-Za-z0-9_]*$"
KINDS = ("llm", "tool", "agent", "call")
_NOT_HASHED = {"id", "needs", "when", "retry", "timeout_s"}



class RetryPolicy(BaseModel):
    """``attempts`` in all (1: no retry); the wait before try n+1 is ``backoff_s *
    factor**(n-1)``, at most ``max_backoff_s``. Safety refusals, budget refusals and bad
    templates are never retried: trying again cannot change them."""

    model_config = ConfigDict(extra="forbid")

    attempts: int = Field(1, ge=1, le=100)
    backoff_s: float = Field(1.0, ge=0, le=3600)
    factor: float = Field(2.0, ge=1, le=10)
    max_backoff_s: float = Field(60.0, ge=0, le=3600)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try ``attempt`` (1-based)."""
        return min(self.max_backoff_s, self.backoff_s * self.factor ** (attempt - 1))


class StepBase(BaseModel):
    """What every step has: an id, extra ``needs``, a ``when`` condition, a retry policy and
    a timeout per try."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    kind: ClassVar[str] = ""
    templated: ClassVar[tuple[str, ...]] = ()

    id: str = Field(pattern=STEP_ID)
    needs: list[str] = Field(default_factory=list)
    when: str | bool | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_s: float | None = Field(None, gt=0)

    def definition(self) -> dict[str, Any]:
        """What the step does, as JSON data (hashed with its rendered inputs)."""
        return {"kind": self.kind, **self.model_dump(mode="json", exclude=_NOT_HASHED)}


class LlmStep(StepBase):
    """``llm:`` the prompt; ``output:`` a JSON schema for a validated answer (in
    ``output.data``). Its output is ``{"text", "data", "model"}``."""

    kind: ClassVar[str] = "llm"
    templated: ClassVar[tuple[str, ...]] = ("llm", "system")

    llm: str
    system: str | None = None
    model: str | None = None
    params: GenerationParams = Field(default_factory=lambda: GenerationParams(max_tokens=1024))
    output: dict[str, Any] | None = None


class ToolStep(StepBase):
    """``tool:`` a tool of the Lab's toolbox, called through the Safety Guard with ``args``.
    Its output is ``{"text": <the guarded, redacted result>}``."""

    kind: ClassVar[str] = "tool"
    templated: ClassVar[tuple[str, ...]] = ("args",)

    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)


class AgentRunStep(StepBase):
    """``agent:`` react, research, code_writer, data_analysis, "module:Class", or (in Python)
    an agent; it works on ``task``. Its output is ``{"text", "data", "run_id"}``; a run that
    ends other than ``completed`` fails the step."""

    kind: ClassVar[str] = "agent"
    templated: ClassVar[tuple[str, ...]] = ("task",)

    agent: Any
    task: str
    tools: list[str] | None = None
    model: str | None = None
    max_steps: int = Field(10, ge=1, le=1000)

    def definition(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude=_NOT_HASHED | {"agent"})
        return {"kind": self.kind, "agent": _name_of(self.agent), **data}


class CallStep(StepBase):
    """``call:`` a function ("module:function" or, in Python, the function itself) called
    with ``args``; it returns JSON data. A sync function runs in a worker thread unless
    ``inline: true`` (for quick ones: it then runs on the loop); a timeout stops waiting for
    it, but its thread runs on to the end (Python cannot stop a thread)."""

    kind: ClassVar[str] = "call"
    templated: ClassVar[tuple[str, ...]] = ("args",)

    call: Any
    args: dict[str, Any] = Field(default_factory=dict)
    inline: bool = False
    _fn: Callable[..., Any] | None = PrivateAttr(default=None)

    def definition(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude=_NOT_HASHED | {"call", "inline"})
        return {"kind": self.kind, "call": _name_of(self.call), **data}

    @property
    def fn(self) -> Callable[..., Any]:
        if self._fn is None:
            self._fn = self.call if callable(self.call) else import_object(self.call)
        return self._fn


def _step_kind(value: Any) -> str | None:
    if isinstance(value, StepBase):
        return value.kind
    if isinstance(value, Mapping):
        found = [k for k in KINDS if k in value]
        return found[0] if len(found) == 1 else None
    return None


Step = Annotated[
    Annotated[LlmStep, Tag("llm")] | Annotated[ToolStep, Tag("tool")]
    | Annotated[AgentRunStep, Tag("agent")] | Annotated[CallStep, Tag("call")],
    Discriminator(_step_kind, custom_error_type="step_kind",
                  custom_error_message="a step needs exactly one of llm:, tool:, agent:, "
                                       "call: (with id:)")]


class Workflow(BaseModel):
    """A validated DAG of steps; run it with ``WorkflowAgent(wf).run(inputs, run_id=...)``.

    ``inputs``: the names the workflow takes, with defaults (``None``: required); a list
    means all required; left out, any inputs are accepted. ``outputs``: the final outputs as
    templates; left out, the outputs of the steps nothing depends on. ``budget_usd``: the
    most the run's model calls may cost, over all its resumes. ``max_concurrency``: how many
    steps run at once. Bad fields, templates and graphs raise ``ConfigError`` at creation.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    name: str = Field("workflow", min_length=1, max_length=200)
    description: str = ""
    inputs: dict[str, Any] | list[str] | None = None
    steps: list[Step] = Field(min_length=1)
    outputs: dict[str, Any] | None = None
    budget_usd: float | None = Field(None, ge=0)
    max_concurrency: int = Field(16, ge=1, le=10_000)
    _compiled: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)
    _deps: dict[str, list[str]] = PrivateAttr(default_factory=dict)
    _outputs: Any = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise _config_error(exc, data) from None
        self._check()

    @classmethod
    def from_yaml(cls, source: str | Path, *,
                  functions: Mapping[str, Callable[..., Any]] | None = None,
                  allow_imports: bool = False) -> Workflow:
        """A workflow from a YAML file (a path), or YAML text (a string with a newline).

        The file is data: a ``call:`` names one of ``functions`` (the callables you trust,
        by the name the file uses); a ``"module:function"`` not among them, or an ``agent:
        "module:Class"``, is a ConfigError unless ``allow_imports=True``, which imports and
        runs on this machine whatever the file names (only for files you wrote)."""
        import yaml

        text, where = _read(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError(f"{where}: not valid YAML{at}: {problem}. Fix the file.",
                              fields=("yaml",)) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a workflow is a mapping with steps: (and name:, "
                              f"inputs:, outputs:), not {type(data).__name__}.",
                              fields=("yaml",))
        return cls.from_dict(data, functions=functions, allow_imports=allow_imports)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *,
                  functions: Mapping[str, Callable[..., Any]] | None = None,
                  allow_imports: bool = False) -> Workflow:
        """A workflow from parsed text (JSON, YAML): names resolve as in ``from_yaml``."""
        with names_from_text(functions, allow_imports):
            return cls(**dict(data))

    def step(self, step_id: str) -> StepBase:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"workflow {self.name!r} has no step {step_id!r}")

    def needs(self, step_id: str) -> list[str]:
        """The steps ``step_id`` waits for: those it refers to and those in its needs."""
        return self._deps[step_id]

    def compiled(self, step_id: str) -> dict[str, Any]:
        """The step's templated fields (and ``when``), compiled at load."""
        return self._compiled[step_id]

    def order(self) -> list[str]:
        """Step ids in an order that runs each after what it needs."""
        return list(graphlib.TopologicalSorter(self._deps).static_order())

    def leaves(self) -> list[str]:
        """Steps nothing depends on, in file order: the default final outputs."""
        used = {d for deps in self._deps.values() for d in deps}
        return [s.id for s in self.steps if s.id not in used]

    def bind(self, inputs: Mapping[str, Any] | None) -> dict[str, Any]:
        """The run's inputs: given values over declared defaults; a missing required one or
        an undeclared one is a ConfigError naming it."""
        given = dict(inputs or {})
        declared = self.declared_inputs()
        if declared is None:
            return given
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ConfigError(f"workflow {self.name!r} takes no input {unknown[0]!r}; its "
                              f"inputs are {sorted(declared)}.",
                              fields=tuple(f"inputs.{u}" for u in unknown))
        missing = sorted(k for k, v in declared.items() if v is None and k not in given)
        if missing:
            raise ConfigError(f"workflow {self.name!r} needs input {missing[0]!r}: pass "
                              f"inputs={{{missing[0]!r}: ...}}.",
                              fields=tuple(f"inputs.{m}" for m in missing))
        return {**{k: v for k, v in declared.items() if v is not None}, **given}

    def declared_inputs(self) -> dict[str, Any] | None:
        if isinstance(self.inputs, list):
            return dict.fromkeys(self.inputs)
        return self.inputs

    def compiled_outputs(self) -> Any:
        """``outputs`` compiled at load (None: the leaves' outputs)."""
        return self._outputs

    # -- checks at load -----------------------------------------------------------------------
    def _check(self) -> None:
        ids = [s.id for s in self.steps]
        seen: set[str] = set()
        for i, sid in enumerate(ids):
            if sid in seen:
                raise ConfigError(f"step id {sid!r} is used twice (steps[{i}]); give each "
                                  "step its own id.", fields=(f"steps.{sid}.id",))
            seen.add(sid)
        declared = self.declared_inputs()
        for step in self.steps:
            compiled = self._compile_step(step)
            deps: list[str] = []
            for field, tree in compiled.items():
                for ref in tree_refs(tree):
                    self._check_ref(step.id, field, ref.path, ref.text, seen, declared)
                    if ref.step is not None and ref.step not in deps:
                        deps.append(ref.step)
            for need in step.needs:
                if need not in seen:
                    raise ConfigError(_dangling(step.id, "needs", need, ids),
                                      fields=(f"steps.{step.id}.needs",))
                if need not in deps:
                    deps.append(need)
            if isinstance(step, CallStep):
                fn = trusted_call(step.id, step.call)
                if fn is not None:
                    step._fn = fn
                try:
                    step.fn  # noqa: B018 - import now: a typo fails at load, not mid-run
                except (ImportError, AttributeError, ValueError) as exc:
                    raise ConfigError(f"step {step.id!r}: call {step.call!r} cannot be "
                                      f"imported: {exc}. Name it as 'module:function' on "
                                      "the Python path.", fields=(f"steps.{step.id}.call",)
                                      ) from None
            if isinstance(step, AgentRunStep):
                check_agent(step.id, step.agent)
            self._compiled[step.id], self._deps[step.id] = compiled, deps
        try:
            graphlib.TopologicalSorter(self._deps).prepare()
        except graphlib.CycleError as exc:
            cycle = list(exc.args[1])
            raise ConfigError(f"steps {' -> '.join(cycle)} form a cycle: a step cannot wait "
                              f"for itself. Remove one of these references or needs.",
                              fields=tuple(f"steps.{s}" for s in dict.fromkeys(cycle))
                              ) from None
        if self.outputs is not None:
            try:
                self._outputs = compile_tree(self.outputs)
            except TemplateError as exc:
                raise ConfigError(f"outputs: {exc}.", fields=("outputs",)) from None
            for ref in tree_refs(self._outputs):
                self._check_ref(None, "outputs", ref.path, ref.text, seen, declared)

    def _compile_step(self, step: StepBase) -> dict[str, Any]:
        compiled: dict[str, Any] = {}
        for field in step.templated:
            try:
                compiled[field] = compile_tree(getattr(step, field))
            except TemplateError as exc:
                raise ConfigError(f"step {step.id!r}, {field}: {exc}.",
                                  fields=(f"steps.{step.id}.{field}",)) from None
        if step.when is not None:
            try:
                compiled["when"] = compile_condition(step.when)
            except TemplateError as exc:
                raise ConfigError(f"step {step.id!r}: {exc}.",
                                  fields=(f"steps.{step.id}.when",)) from None
        return compiled

    def _check_ref(self, step: str | None, field: str, path: tuple[str, ...], text: str,
                   ids: set[str], declared: dict[str, Any] | None) -> None:
        where = f"steps.{step}.{field}" if step else field
        owner = f"step {step!r}" if step else "outputs"
        if path[0] == "inputs":
            if len(path) < 2:
                raise ConfigError(f"{owner}: {text} names no input; write "
                                  "{{ inputs.<name> }}.", fields=(where,))
            if declared is not None and path[1] not in declared:
                raise ConfigError(f"{owner} refers to {text}, but the workflow declares no "
                                  f"input {path[1]!r} (inputs: {sorted(declared)}); declare "
                                  "it under inputs: or fix the name.", fields=(where,))
            return
        target = path[1]
        if target not in ids:
            raise ConfigError(_dangling(step, field, target, sorted(ids), text),
                              fields=(where,))
        if target == step:
            raise ConfigError(f"step {step!r} refers to its own output ({text}): steps "
                              f"{step} -> {step} form a cycle.", fields=(where,))


def _name_of(obj: Any) -> str:
    if isinstance(obj, str):
        return obj
    target = obj if inspect.isfunction(obj) or inspect.isclass(obj) else type(obj)
    return f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"


def _dangling(step: str | None, field: str, target: str, ids: list[str],
              text: str | None = None) -> str:
    owner = f"step {step!r}" if step else "outputs"
    what = text or target
    return (f"{owner} refers to {what} in {field}, but there is no step {target!r} "
            f"(steps: {', '.join(ids)}).")


def _read(source: str | Path) -> tuple[str, str]:
    if isinstance(source, str) and "\n" in source:
        return source, "workflow YAML"
    path = Path(source)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such workflow file.", fields=("path",)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}).", fields=("path",)) from None


def _config_error(exc: ValidationError, data: Mapping[str, Any]) -> ConfigError:
    """Pydantic's errors as one ConfigError; a step is named by its id when it has one."""
    steps = data.get("steps")
    names, lines = [], []
    for error in exc.errors(include_url=False):
        loc = list(error["loc"])
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            raw = steps[loc[1]] if isinstance(steps, list) and loc[1] < len(steps) else None
            sid = raw.get("id") if isinstance(raw, Mapping) else getattr(raw, "id", None)
            loc[1] = sid if isinstance(sid, str) and sid else f"[{loc[1]}]"
            if len(loc) > 2 and loc[2] in KINDS:
                del loc[2]  # the union's tag, not a field
        name = ".".join(map(str, loc)) or "workflow"
        names.append(name)
        value = f" = {error['input']!r}" if error["type"] not in ("missing",) else ""
        lines.append(f"{name}{value}: {error['msg']}")
    return ConfigError("bad workflow: " + "; ".join(lines) + ".", fields=tuple(names))


__all__ = ["AgentRunStep", "CallStep", "Condition", "LlmStep", "RetryPolicy", "Step",
           "ToolStep", "Workflow"]
