"""``Experiment``: the spec of a grid (items × prompts × models × samples × epochs) and its doors.

The spec is data, validated when it is made: a dataset column a prompt or scorer needs and
the dataset lacks is a ``ConfigError`` before anything is sent. Every cell of the grid has a
deterministic id (a hash of the item, prompt, model, parameters, sample and epoch), and the
run id is the name plus a hash of all cells, so running the same spec again finds its own
results under ``<home>/experiments/<run_id>/`` and sends only the cells not yet done.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aillm_lab.errors import ConfigError
from aillm_lab.experiments.results import CELL_VIEW
from aillm_lab.experiments.scorers import Scorer, as_scorer
from aillm_lab.llm.base import Model
from aillm_lab.llm.types import GenerationParams
from aillm_lab.runtime import LoopRunner, sync_twin

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.experiments.ray_executor import RayExecutor
    from aillm_lab.experiments.results import ExperimentRun

RESERVED = frozenset(CELL_VIEW)  # a scorer may not shadow a results column
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=str)


class Experiment(BaseModel):
    """A grid of prompts × models over a dataset, scored, resumable; ``exp.run()`` runs it.

    ``dataset``: a list of dicts, a pandas DataFrame, or a ``.jsonl`` / ``.csv`` path.
    ``prompts``: templates over the dataset's columns (``"Q: {question}"``; write ``{{``
    for a literal brace), or instead ``task``: a function ``(item, model, lab)`` (async or
    not) that does its own calls through ``lab`` and returns the output (text, a
    ``Completion`` or any value, kept as text or JSON). ``models``: model strings or
    ``Model`` objects (None: the Lab's default). ``tools``: ``@al.tool`` tools, ToolSpecs
    or typed functions offered to the model, or the name of a column holding each item's
    own function schemas (BFCL's ``function``); the calls are kept, not run: score them
    with ``al.scorers.tool_call``. ``samples`` answers per item and
    prompt, repeated ``epochs`` times; sample ``k`` of epoch ``e`` is sent with
    ``seed + e * samples + k`` unless ``params`` sets a seed. ``budget_usd`` caps the
    run's spend across resumes; ``concurrency`` bounds the cells in flight (each model's
    calls also keep the gateway's own limit, 4 at once by default: raise it with
    ``Lab(limits={"provider:model": {"concurrency": 64}})``). ``lab``: whose gateway,
    call log and home to use (``al.default_lab()``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    name: str = Field(min_length=1, max_length=80)
    dataset: list[dict[str, Any]]
    prompts: list[str] = Field(default_factory=list)
    task: Any = None
    models: list[Any] = Field(default_factory=lambda: [None], min_length=1)
    scorers: list[Any] = Field(default_factory=list)
    system: str | None = None
    tools: list[Any] | str | None = None
    params: GenerationParams = Field(default_factory=GenerationParams)
    samples: int = Field(default=1, ge=1, le=10_000)
    epochs: int = Field(default=1, ge=1, le=10_000)
    seed: int = 0
    budget_usd: float | None = Field(default=None, ge=0)
    concurrency: int = Field(default=8, ge=1, le=4096)
    lab: Any = Field(default=None, exclude=True, repr=False)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:  # one typed error that names each field and the fix
            problems = [(_field(e), e["msg"].removeprefix("Value error, "))
                        for e in exc.errors()]
            message = "; ".join(m if m.startswith(f) else f"{f}: {m}" for f, m in problems)
            raise ConfigError(f"Experiment: {message}",
                              fields=tuple(f for f, _ in problems)) from None

    @field_validator("dataset", mode="before")
    @classmethod
    def _load_dataset(cls, value: Any) -> list[dict[str, Any]]:
        return load_dataset(value)

    @field_validator("models", mode="before")
    @classmethod
    def _check_models(cls, value: Any) -> list[Any]:
        models = [value] if isinstance(value, str | Model) or value is None else list(value)
        for model in models:
            if model is not None and not isinstance(model, str | Model):
                raise ConfigError(f"models: {model!r} is neither a 'provider:model' string "
                                  "nor a Model; give e.g. 'openai:gpt-4o-mini'",
                                  fields=("models",))
        return models

    @field_validator("prompts", mode="before")
    @classmethod
    def _one_prompt(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("scorers", mode="before")
    @classmethod
    def _as_scorers(cls, value: Any) -> list[Scorer]:
        scorers = [as_scorer(s) for s in (value if isinstance(value, list | tuple) else [value])]
        names = Counter(s.name for s in scorers)
        twice = sorted(n for n, c in names.items() if c > 1)
        if twice:
            raise ConfigError(f"scorers: the name(s) {twice} appear twice; give one of each a "
                              "name, e.g. al.scorers.contains('answer', name='contains_answer')",
                              fields=("scorers",))
        taken = sorted(n for n in names if n in RESERVED)
        if taken:
            raise ConfigError(f"scorers: {taken} would hide a results column of that name; "
                              "give the scorer another name= ", fields=("scorers",))
        return scorers

    @field_validator("tools", mode="before")
    @classmethod
    def _as_specs(cls, value: Any) -> Any:
        if value is None or isinstance(value, str):
            return value  # a column: checked with the others, converted per item
        from aillm_lab.tools.base import tool_specs

        return tool_specs(value)

    @model_validator(mode="after")
    def _check_columns(self) -> Experiment:
        if (self.task is None) == (not self.prompts):
            raise ConfigError("prompts/task: give prompt templates (prompts=['Q: {question}']) "
                              "or a task function (task=solve), exactly one of them",
                              fields=("prompts", "task"))
        if self.task is not None and not callable(self.task):
            raise ConfigError(f"task: {self.task!r} is not a function; give a function "
                              "(item, model, lab) -> output", fields=("task",))
        columns = sorted({key for row in self.dataset for key in row})
        for index, template in enumerate(self.prompts):
            for needed in template_fields(template, f"prompts[{index}]"):
                if needed not in columns:
                    raise ConfigError(f"prompts[{index}] uses {{{needed}}}, which no dataset "
                                      f"row has; the columns are {columns}. Rename the field, "
                                      "or write {{ }} for a literal brace.",
                                      fields=("prompts",))
        if isinstance(self.tools, str) and self.tools not in columns:
            raise ConfigError(f"tools={self.tools!r} names no dataset column; the columns are "
                              f"{columns}", fields=("tools",))
        for scorer in self.scorers:
            missing = [c for c in scorer.columns if c not in columns]
            if missing:
                raise ConfigError(f"scorers: {scorer.name!r} reads the column(s) {missing}, "
                                  f"which no dataset row has; the columns are {columns}. Pass "
                                  f"the right one, e.g. al.scorers.{scorer.name}('{columns[0]}')",
                                  fields=("scorers",))
        return self

    # -- doors ---------------------------------------------------------------------------
    @property
    def runner(self) -> LoopRunner:
        return self.resolve_lab().runner

    def resolve_lab(self) -> Lab:
        """The Lab this experiment runs in (``al.default_lab()`` unless one was given)."""
        if self.lab is None:
            import aillm_lab  # the public door: experiments sit beside core, not above it

            self.lab = aillm_lab.default_lab()
        return self.lab

    async def arun(self, *, executor: str | RayExecutor = "local",
                   progress: bool = True) -> ExperimentRun:
        """Run every cell not yet done (through the Lab's gateway, under one run id), score
        it, store it, and return the run; a budget or Ctrl-C stops it with what was done kept.
        ``executor``: ``"local"`` (asyncio on the Lab's runner loop) or ``"ray"`` (the cells
        sharded over Ray workers, each with its own gateway on the same home; pass a
        ``RayExecutor(workers=...)`` to choose how many). Both give the same results."""
        from aillm_lab.experiments.ray_executor import RayExecutor
        from aillm_lab.experiments.runner import run_experiment

        if isinstance(executor, str) and executor == "ray":
            executor = RayExecutor()
        if not isinstance(executor, RayExecutor) and executor != "local":
            raise ConfigError(f"executor={executor!r}: give 'local' (asyncio on the Lab's "
                              "loop), 'ray' (Ray workers; pip install 'aillm-lab[ray]') or a "
                              "RayExecutor(workers=...)", fields=("executor",))
        lab = self.resolve_lab()
        if isinstance(executor, RayExecutor):
            return await lab.runner.arun(executor.arun(self, lab, progress=progress))
        return await lab.runner.arun(run_experiment(self, lab, progress=progress))

    run = sync_twin(arun)

    # -- the grid --------------------------------------------------------------------------
    def cells(self, lab: Lab | None = None) -> list[Cell]:
        """Every cell of the grid in a fixed order, with its deterministic id."""
        lab = lab or self.resolve_lab()
        for field, names in (("models", [_model_id(m, lab) for m in self.models]),
                             ("prompts", self.prompts)):
            twice = sorted(n for n, c in Counter(names).items() if c > 1)
            if twice:  # the same cells twice: one id, two answers
                raise ConfigError(f"{field}: {twice} appear more than once; give each once "
                                  "(a ScriptedModel needs its own name=)", fields=(field,))
        items = item_ids(self.dataset)
        tools = ([] if isinstance(self.tools, str)  # per item: the item is in the hash
                 else [t.model_dump(mode="json") for t in self.tools or []])
        found = []
        for model_index, model in enumerate(self.models):
            model_id = _model_id(model, lab)
            for prompt_index, template in enumerate(self.prompts or [task_name(self.task)]):
                for epoch in range(self.epochs):
                    for sample in range(self.samples):
                        params = self._params(epoch, sample)
                        for index, (item, item_id) in enumerate(zip(self.dataset, items,
                                                                    strict=True)):
                            config = {"system": self.system, "params": params.model_dump(),
                                      **({"tools": tools} if tools else {})}
                            cell_id = digest([item_id, template, model_id, config, sample,
                                              epoch])[:20]
                            found.append(Cell(
                                cell_id=cell_id, item_id=item_id, item_index=index, item=item,
                                prompt_index=prompt_index, prompt=template,
                                model_index=model_index, model=model_id, epoch=epoch,
                                sample=sample, params=params,
                                text=template.format_map(item) if self.prompts else ""))
        return found

    def run_id(self, cells: list[Cell]) -> str:
        """``<name>-<hash of every cell id>``: the same spec finds the same folder."""
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.name).strip("-.") or "experiment"
        return f"{slug}-{digest([c.cell_id for c in cells])[:12]}"

    def manifest_spec(self, lab: Lab) -> dict[str, Any]:
        """The spec as JSON data for the run's manifest."""
        return {
            "name": self.name, "n_items": len(self.dataset),
            "dataset_sha256": digest(self.dataset), "prompts": self.prompts,
            "task": task_name(self.task) if self.task is not None else None,
            "models": [_model_id(m, lab) for m in self.models],
            "scorers": [s.name for s in self.scorers], "system": self.system,
            "params": self.params.model_dump(mode="json"), "samples": self.samples,
            "tools": (self.tools if isinstance(self.tools, str)
                      else [t.name for t in self.tools or []]),
            "epochs": self.epochs, "seed": self.seed, "budget_usd": self.budget_usd,
            "concurrency": self.concurrency,
        }

    def tools_for(self, item: dict[str, Any]) -> list[Any] | None:
        """The tools offered for ``item``: the spec's, or the item's own schemas."""
        if not isinstance(self.tools, str):
            return self.tools
        from aillm_lab.experiments.tool_scorer import function_specs

        return function_specs(item.get(self.tools))

    def _params(self, epoch: int, sample: int) -> GenerationParams:
        if self.params.seed is not None:
            return self.params
        return self.params.model_copy(update={"seed": self.seed + epoch * self.samples + sample})


@dataclass(frozen=True)
class Cell:
    """One model call of the grid: an item under one prompt, model, sample and epoch."""

    cell_id: str
    item_id: str
    item_index: int
    item: dict[str, Any]
    prompt_index: int
    prompt: str
    model_index: int
    model: str
    epoch: int
    sample: int
    text: str
    params: GenerationParams


def load_dataset(value: Any) -> list[dict[str, Any]]:
    """Rows as plain JSON dicts from a list of dicts, a DataFrame, or a JSONL / CSV path."""
    if isinstance(value, str | Path):
        rows = _read_file(Path(value))
    elif hasattr(value, "to_json") and hasattr(value, "columns"):  # a pandas DataFrame
        rows = json.loads(value.to_json(orient="records"))
    elif isinstance(value, list | tuple):
        rows = list(value)
    else:
        raise ConfigError(f"dataset: a {type(value).__name__} is not a dataset; give a list of "
                          "dicts, a DataFrame, or a .jsonl / .csv path", fields=("dataset",))
    if not rows:
        raise ConfigError("dataset: it has no rows; give at least one item",
                          fields=("dataset",))
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ConfigError(f"dataset[{index}] is a {type(row).__name__}, not a dict of "
                              "columns; give rows like {'question': ..., 'answer': ...}",
                              fields=("dataset",))
    try:  # one JSON round trip: numpy scalars, NaN and dates become plain JSON values
        return json.loads(json.dumps(rows, default=_jsonable, allow_nan=False))
    except ValueError:
        return json.loads(json.dumps([{k: _finite(v) for k, v in r.items()} for r in rows],
                                     default=_jsonable))


def template_fields(template: str, where: str) -> list[str]:
    """The ``{column}`` names a template reads; a malformed template is a ConfigError."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} in {template!r}; write {{{{ and }}}} for literal "
                          "braces", fields=("prompts",)) from exc
    names = []
    for _, field_name, _, _ in parsed:
        if field_name is None:
            continue
        if not field_name.isidentifier():
            raise ConfigError(f"{where}: {{{field_name}}} is not a column name; use "
                              "{column} only, and {{ }} for literal braces",
                              fields=("prompts",))
        names.append(field_name)
    return names


def item_ids(rows: list[dict[str, Any]]) -> list[str]:
    """A content hash per row; the k-th repeat of an identical row gets its own id."""
    seen: Counter[str] = Counter()
    ids = []
    for row in rows:
        base = digest(row)[:16]
        ids.append(base if seen[base] == 0 else f"{base}.{seen[base]}")
        seen[base] += 1
    return ids


def task_name(task: Any) -> str:
    """``task:<module>.<qualname>``: how a task function is named in ids and results."""
    module = getattr(task, "__module__", None) or ""
    name = getattr(task, "__qualname__", None) or type(task).__qualname__
    return f"task:{module}.{name}" if module else f"task:{name}"


def digest(value: Any) -> str:
    return hashlib.sha256(_CANONICAL.encode(value).encode()).hexdigest()


def _field(error: Any) -> str:
    """The field a validation error is about: ours name it, pydantic's give its location."""
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, ConfigError) and cause.fields:
        return cause.fields[0]
    return ".".join(map(str, error["loc"])) or "spec"


def _model_id(model: Any, lab: Lab) -> str:
    if isinstance(model, Model):
        return model.id
    return model or lab.default_model_id


def _read_file(path: Path) -> list[Any]:
    if not path.is_file():
        raise ConfigError(f"dataset: {path} is not a file; give an existing .jsonl or .csv "
                          "path", fields=("dataset",))
    if path.suffix.lower() == ".csv":
        import pandas as pd

        return json.loads(pd.read_csv(path).to_json(orient="records"))
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ConfigError(f"dataset: {path.name} is neither .jsonl nor .csv; convert it, or "
                          "load it into a DataFrame first", fields=("dataset",))
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise ConfigError(f"dataset: {path.name} line {number} is not JSON ({exc}); fix "
                              "that line", fields=("dataset",)) from exc
    return rows


def _jsonable(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        return item()
    return str(value)


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value
