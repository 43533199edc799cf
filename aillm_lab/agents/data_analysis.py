"""``DataAnalysisAgent``: answers a question about DataFrames and workspace files with SQL.

- **A Database per run**: the run's tables (``data={"sales": df, "costs": "costs.csv"}``) on
  a read-only DuckDB opened for the run and closed after it; each schema and a few sample rows
  go into the first prompt, so the first query can use real column names. Registering (which
  checks names and paths) happens before the run starts, so bad ``data`` raises; reading the
  schemas and samples is the run's first work (``aprepare``), under its limits.
- **Every query is an audited tool call**: ``run_sql`` is a per-run ``Tool`` sent through the
  Lab's Safety Guard. A fenced ```` ```sql ```` block (models without tool calling) becomes
  the same call through ``SqlBlocks``, a ``ToolMode``. Errors and refusals go back to the
  model as observations, within ``max_repairs``.
- **The narrative is checked**: each number in it must be in the result frame (as rounded, or
  as a percentage), the question or the SQL (``narrative_numbers``); otherwise it is
  rewritten once, then flagged.
- **The result is data**: ``AnalysisResult`` keeps its frame as columns, dtypes and records
  (``frame_json``) and its chart as a ``ChartSpec`` (``charts``), so a run's JSON reloads with
  its frame and chart. Each successful query's result is also kept in its step's ``state``,
  so a fork past it (even of a reloaded run) describes that result without running the
  query again (``arestore``).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, PrivateAttr, field_serializer, field_validator

from aillm_lab.agents.base import Agent, ModelArg
from aillm_lab.agents.charts import ChartSpec, build_chart, choose_chart
from aillm_lab.agents.fork import record, recorded
from aillm_lab.agents.frame_json import frame_from_json, frame_to_json
from aillm_lab.agents.live import Emit
from aillm_lab.agents.modes import NativeTools, ToolMode, Verdict
from aillm_lab.agents.narrative_numbers import unsupported_numbers
from aillm_lab.agents.run import AgentEvent, AgentRun, AgentStep
from aillm_lab.agents.toolset import AgentTools, ToolsArg
from aillm_lab.errors import ConfigError
from aillm_lab.llm.types import Completion, Message, ToolCall, ToolSpec
from aillm_lab.runtime import sync_twin
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.database import Database, to_text
from aillm_lab.tools.scan import scan_injection, wrap_as_data
from aillm_lab.tools.toolbox import Toolbox

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.llm.base import Model
    from aillm_lab.memory.long_term import LongTermMemory
    from aillm_lab.tools.paths import Workspace

DataSource = pd.DataFrame | str | os.PathLike[str]

# -- prompts (data: what the model is told, and why) ------------------------------------------
# The system text names both ways to send SQL (tool or fenced block) so small models without
# tool calling can still work, and forbids new arithmetic in the answer, because the narrative
# is checked number by number against the result.
ANALYST_SYSTEM = (
    "You are a data analyst. Answer the user's question about the tables below with DuckDB "
    "SQL.\n"
    "1. Write one read-only SELECT over those tables. Run it with the `run_sql` tool, or "
    "reply with only the query in a ```sql fenced block.\n"
    "2. If the query fails, read the error, fix the query and run it again.\n"
    "3. When the result answers the question, reply in plain text, with no SQL, in two or "
    "three sentences. Use only numbers that appear in the result; let the SQL do any "
    "arithmetic rather than computing new numbers yourself.")

# The question first, then every table the run registered: its columns, types, row count
# and a few sample rows, so the first query can use real column names and value formats.
TASK = "{question}\n\nTables you can query:\n\n{tables}"
TABLE = "Table {name} ({kind}, {rows} rows). Columns: {columns}.\nSample rows:\n{sample}"

# A fenced block's result comes back as a user message (there was no tool call to answer);
# it repeats step 3 because the model reads it right before writing the narrative.
SQL_RESULT = (
    "Result of your SQL query:\n{result}\n\nIf this answers the question, reply in plain "
    "text using only these numbers; otherwise send a corrected query.")

# A text answer before any query succeeded has nothing behind its numbers.
NEED_RESULT = (
    "No query has run successfully yet, so there is no result to describe. Run a SELECT "
    "with `run_sql` (or send it in a ```sql block) first.")

# Sent once: the numbers it names, and the result again, so the rewrite can copy from it.
UNSUPPORTED = (
    "Your answer mentions {numbers}, which do not appear in the query result. Rewrite it "
    "using only numbers from this result (rounding is fine), or run a query that computes "
    "what you want to say:\n{result}")

SQL_TOOL = "run_sql"
RESULT = "result"  # step state: the SQL and frame (JSON) of the step's last good query
REWRITTEN = "rewritten"  # step state: the one rewrite of the narrative was asked for there
_BLOCK_ID = "sqlblock-"  # call ids of queries sent as fenced blocks (no native tool call)
_SAMPLE_ROWS = 3
_KEPT_RUNS = 16  # runs whose DataFrames an agent keeps (by reference) so they can be forked


class AnalysisResult(BaseModel):
    """What a ``DataAnalysisAgent`` run found: the ``sql``, its result ``frame``, a
    ``chart`` when the result suits one (else None) and the ``narrative``.

    ``unsupported_numbers`` lists numbers the narrative still held that the result does not
    (after one rewrite); ``truncated`` says the frame was cut by the SQL policy's caps.
    After a reload, ``AnalysisResult.model_validate(run.output)`` rebuilds frame and chart.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    sql: str
    frame: pd.DataFrame
    narrative: str = ""
    chart_spec: ChartSpec | None = None
    unsupported_numbers: list[str] = []
    truncated: bool = False
    _chart: Any = PrivateAttr(default=None)

    @property
    def chart(self) -> Any:
        """A bokeh figure drawn from ``chart_spec`` (once), or None."""
        if self.chart_spec is None:
            return None
        if self._chart is None:
            self._chart = build_chart(self.chart_spec, self.frame)
        return self._chart

    @field_validator("frame", mode="before")
    @classmethod
    def _load_frame(cls, value: Any) -> pd.DataFrame:
        if isinstance(value, pd.DataFrame):
            return value
        if isinstance(value, Mapping) and {"columns", "records"} <= set(value):
            return frame_from_json(value)
        raise ValueError(f"frame must be a DataFrame or its JSON form (columns, dtypes, "
                         f"records), got {type(value).__name__}")

    @field_serializer("frame")
    def _dump_frame(self, frame: pd.DataFrame) -> dict[str, Any]:
        return frame_to_json(frame)

    def __eq__(self, other: object) -> bool:
        """Equal as data: same SQL, narrative, flags, chart spec and frame (as JSON)."""
        if not isinstance(other, AnalysisResult):
            return NotImplemented
        return self.model_dump(mode="json") == other.model_dump(mode="json")

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        rows, cols = self.frame.shape
        chart = self.chart_spec.kind if self.chart_spec else None
        return (f"<AnalysisResult {rows}x{cols} chart={chart} sql={_cut(self.sql)!r} "
                f"narrative={_cut(self.narrative)!r}>")

    def _repr_html_(self) -> str:
        flag = (f"<p style='color:#c62828'>Numbers not in the result: "
                f"{html.escape(', '.join(self.unsupported_numbers))}</p>"
                if self.unsupported_numbers else "")
        return (f"<div><p>{html.escape(self.narrative)}</p>{flag}<details><summary>SQL"
                f"</summary><pre>{html.escape(self.sql)}</pre></details>"
                f"{self.frame.to_html(max_rows=20, index=False)}</div>")


def check_data(data: Mapping[str, DataSource] | None, ws: Workspace) -> dict[str, Any]:
    """``data=`` as names to DataFrames, or to paths relative to ``ws`` (checked there):
    the one check of the agent's tables, also run by ``al.ui.chat(data=...)`` when the widget
    is made. Raises ``ConfigError`` naming ``data``, or ``SafetyViolation`` for a path
    outside the workspace."""
    if data is None or not isinstance(data, Mapping) or not data:
        got = "nothing" if not data else type(data).__name__
        raise ConfigError(f"data= needs a dict of table names to DataFrames or workspace "
                          f"files, e.g. data={{'sales': df}}; got {got}", fields=("data",))
    sources: dict[str, Any] = {}
    for name, src in data.items():
        if not isinstance(name, str):
            raise ConfigError(f"data= keys are table names (str), got {name!r}",
                              fields=("data",))
        if isinstance(src, pd.DataFrame):
            sources[name] = src
        elif isinstance(src, str | os.PathLike):
            sources[name] = ws.relative(ws.resolve(src))  # SafetyViolation if outside
        else:
            hint = (" (a Series: use .to_frame())" if isinstance(src, pd.Series) else "")
            raise ConfigError(f"data[{name!r}] is a {type(src).__name__}{hint}; give a "
                              f"pandas DataFrame or the path of a CSV, Parquet or JSON "
                              f"file in the workspace {ws.root}", fields=("data",))
    return sources


class DataAnalysisAgent(Agent):
    """Answers ``question`` from ``data`` with read-only SQL, a chart and a checked narrative:
    ``al.DataAnalysisAgent(lab=lab).run("total sales per region", data={"sales": df})``.

    ``data`` maps table names to DataFrames or to CSV/Parquet/JSON files in the Lab's
    workspace. ``tools=`` adds your own tools next to ``run_sql``; ``output=`` is not
    accepted (the output is always an ``AnalysisResult``).
    """

    system_prompt = ANALYST_SYSTEM

    def __init__(self, tools: ToolsArg = None, model: ModelArg = None, lab: Lab | None = None,
                 max_steps: int = 10, max_cost_usd: float | None = None,
                 max_seconds: float | None = None, output: type[BaseModel] | None = None,
                 memory: LongTermMemory | bool | None = None, **options: Any) -> None:
        if output is not None:
            raise ConfigError("DataAnalysisAgent's run.output is always an AnalysisResult; "
                              "drop output=, or use ReActAgent(output=...) with the "
                              "sql_query tool", fields=("output",))
        if isinstance(tools, Toolbox):
            raise ConfigError("DataAnalysisAgent takes tools= as a list of tools, not a "
                              "Toolbox (its run_sql goes through the Lab's guard)",
                              fields=("tools",))
        options["tool_mode"] = SqlBlocks(options.get("tool_mode") or NativeTools())
        super().__init__(tools, model, lab, max_steps, max_cost_usd, max_seconds, None, memory,
                         **options)
        self._extra_tools = list(tools or [])
        self._runs: dict[str, _RunData] = {}
        self._frames: dict[str, dict[str, pd.DataFrame]] = {}  # for fork, by reference

    async def arun(self, question: str, data: Mapping[str, DataSource] | None = None
                   ) -> AgentRun:
        """Query ``data`` to answer ``question``; ``run.output`` is an ``AnalysisResult``.

        Bad ``data`` raises before the run starts: ``ConfigError`` (not a mapping of names
        to DataFrames or paths), ``SafetyViolation`` (a path outside the workspace) or
        ``DatabaseError`` (a missing file or one of unknown format, a bad table name). A
        file DuckDB cannot read is found when the run reads the schemas, under its limits:
        the run ends with ``error`` and DuckDB's message in ``run.error``.
        """
        sources = check_data(data, self.lab.tools.workspace)
        return await self.runner.arun(self._analyse(_new_run(question, sources), sources,
                                                    None, None))

    async def astream(self, question: str, data: Mapping[str, DataSource] | None = None
                      ) -> AsyncIterator[AgentEvent]:
        """Events as they happen; the last one is ``final`` and carries the ``AgentRun``."""
        sources = check_data(data, self.lab.tools.workspace)
        run = _new_run(question, sources)
        async for event in self.runner.aiterate(lambda: self._stream(run, sources)):
            yield event

    run = sync_twin(arun)
    stream = sync_twin(astream)

    # -- hooks -----------------------------------------------------------------------------
    async def aprepare(self, run: AgentRun, emit: Emit) -> None:
        """Read each table's schema, row count and sample rows for the first prompt."""
        state = self._runs.get(run.id)
        if state is not None:
            state.tables = _as_data(self.lab, await _describe_tables(state.db, state.sources))

    async def arestore(self, run: AgentRun, replayed: list[AgentStep]) -> None:
        """The last result the replayed steps got, from their state: no query runs."""
        state = self._runs.get(run.id)
        if state is None:
            return
        for kept in recorded(replayed, RESULT):
            frame = frame_from_json(kept["frame"])
            if kept.get("truncated"):
                frame.attrs["truncated"] = True
            state.result = (kept["sql"], frame)
        state.rewritten = any(recorded(replayed, REWRITTEN))

    def initial_messages(self, run: AgentRun, memories: list[str]) -> list[Message]:
        """The instructions, then the question with every table's schema and sample rows."""
        messages = super().initial_messages(run, memories)
        state = self._runs.get(run.id)
        tables = state.tables if state is not None else "(none)"
        messages[-1] = Message.user(TASK.format(question=run.task, tables=tables))
        return messages

    def tools_for(self, run: AgentRun) -> AgentTools:
        state = self._runs.get(run.id)
        return state.tools if state is not None else self.tools

    async def acheck_answer(self, run: AgentRun, text: str) -> Verdict:
        """Accept a narrative once a query has run and its numbers are in the result (one
        rewrite is asked for; after it, unsupported numbers are flagged, not refused)."""
        state = self._runs.get(run.id)
        if state is None or state.result is None:
            return Verdict(repair=NEED_RESULT)
        if not text.strip():
            return self.accept_text(text)
        sql, frame = state.result
        unsupported = unsupported_numbers(text, frame, also=(run.task, sql))
        if unsupported and not state.rewritten:
            state.rewritten = True
            record(run, REWRITTEN, True)
            return Verdict(repair=UNSUPPORTED.format(numbers=", ".join(unsupported),
                                                     result=to_text(frame)))
        return Verdict(output=AnalysisResult(
            sql=sql, frame=frame, narrative=text.strip(), chart_spec=choose_chart(frame,
                                                                                  run.task),
            unsupported_numbers=unsupported, truncated=bool(frame.attrs.get("truncated"))))

    async def _launch(self, run: AgentRun, model: ModelArg = None,
                      history: list[Message] | None = None) -> AgentRun:
        """A fork's door: its tables come from the run's inputs (files) and the DataFrames
        this agent was given for the run it forks."""
        return await self.runner.arun(self._analyse(run, self._sources_of(run), model,
                                                    history))

    # -- one run's database ----------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _tables(self, run: AgentRun, sources: dict[str, Any]) -> AsyncIterator[None]:
        """The run's Database with its tables registered, for as long as the run lasts
        (their schemas are read later, in the run: ``aprepare``)."""
        lab = self.lab
        db = Database(lab.tools.workspace, lab.settings.safety.sql)
        try:
            for name, src in sources.items():
                if isinstance(src, pd.DataFrame):
                    db.register(name, src)
                else:
                    db.register_file(name, src)
            state = _RunData(db, sources)
            state.tools = AgentTools(lab, [*_sql_tools(state, run), *self._extra_tools])
            self._runs[run.id] = state
            frames = {n: s for n, s in sources.items() if isinstance(s, pd.DataFrame)}
            if frames:
                self._frames[run.id] = frames
                while len(self._frames) > _KEPT_RUNS:
                    self._frames.pop(next(iter(self._frames)))
            yield
        finally:
            self._runs.pop(run.id, None)
            await db.aclose()

    async def _analyse(self, run: AgentRun, sources: dict[str, Any], model: ModelArg,
                       history: list[Message] | None) -> AgentRun:
        async with self._tables(run, sources):
            return await super()._launch(run, model, history)

    async def _stream(self, run: AgentRun, sources: dict[str, Any]
                      ) -> AsyncIterator[AgentEvent]:
        async with self._tables(run, sources):
            async for event in self._events(self._start(run, self.model, None)):
                yield event

    def _sources_of(self, run: AgentRun) -> dict[str, Any]:
        origin = (run.forked_from or run.id).split("@")[0]
        frames = self._frames.get(origin, {})
        sources: dict[str, Any] = {}
        for name, entry in dict(run.inputs.get("data") or {}).items():
            if entry.get("kind") == "file":
                sources[name] = entry["path"]
            elif name in frames:
                sources[name] = frames[name]
            else:
                raise ConfigError(f"run {origin} queried a DataFrame {name!r} this agent does "
                                  f"not hold (the run was reloaded or made by another "
                                  f"agent); run it again with data=", fields=("data",))
        return sources


class SqlBlocks:
    """A ``ToolMode`` that also takes a fenced ```` ```sql ```` block as a ``run_sql`` call.

    Native calls pass through the inner mode untouched. A block becomes a call whose id
    starts with ``sqlblock-``; its result, which no tool call of the model's answers, is
    shown to the model as a user message, so every vendor accepts the history.
    """

    def __init__(self, inner: ToolMode) -> None:
        self.inner = inner

    def for_model(self, model: Model) -> ToolMode:
        inner = self.inner.for_model(model)
        return self if inner is self.inner else SqlBlocks(inner)

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]
                ) -> tuple[list[Message], list[ToolSpec] | None]:
        shown = [Message.user(SQL_RESULT.format(result=m.text))
                 if m.role == "tool" and (m.tool_call_id or "").startswith(_BLOCK_ID) else m
                 for m in messages]
        return self.inner.request(shown, tools)

    def calls(self, completion: Completion) -> list[ToolCall]:
        calls = self.inner.calls(completion)
        if calls:
            return calls
        sql = sql_block(completion.text)
        if sql is None:
            return []
        return [ToolCall(id=f"{_BLOCK_ID}{uuid.uuid4().hex[:8]}", name=SQL_TOOL,
                         arguments={"sql": sql})]


_FENCE = re.compile(r"```[ \t]*sql[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)


def sql_block(text: str) -> str | None:
    """The SQL of the last fenced ```` ```sql ```` block in ``text``, or None."""
    blocks = [b.strip() for b in _FENCE.findall(text or "") if b.strip()]
    return blocks[-1] if blocks else None


# -- per-run state and tools -------------------------------------------------------------------
@dataclass
class _RunData:
    """One run's database and table sources, the tables as prompt text, its tools and its
    last result."""

    db: Database
    sources: dict[str, Any]
    tables: str = "(none)"
    tools: AgentTools | None = None
    result: tuple[str, pd.DataFrame] | None = None
    rewritten: bool = False


def _sql_tools(state: _RunData, run: AgentRun) -> list[Tool]:
    """``run_sql`` (keeps the last good result for the answer, and in the step's state
    for a fork) and the Database's
    ``list_tables`` and ``describe_table``; its ``load_table`` is left out, so a run reads
    only the tables it was given."""
    db = state.db

    async def run_sql(sql: str) -> pd.DataFrame:
        """Run one read-only DuckDB SELECT over the tables and return its rows.

        Args:
            sql: a single SELECT statement in DuckDB SQL over the tables you were shown.
        """
        frame = await db.aquery(sql)
        state.result = (sql.strip(), frame)
        record(run, RESULT, {"sql": sql.strip(), "frame": frame_to_json(frame),
                             "truncated": bool(frame.attrs.get("truncated"))})
        return frame

    others = [t for t in db.tools() if t.name in ("list_tables", "describe_table")]
    return [Tool(run_sql, risk=RiskLevel.READ), *others]


async def _describe_tables(db: Database, sources: Mapping[str, Any]) -> str:
    """Each table's columns, types, row count and first rows, for the first prompt."""
    parts = []
    for name, src in sources.items():
        columns = await db.adescribe(name)
        count = await db.aquery(f'SELECT count(*) AS n FROM "{name}"')
        sample = await db.aquery(f'SELECT * FROM "{name}" LIMIT {_SAMPLE_ROWS}')
        kind = "DataFrame" if isinstance(src, pd.DataFrame) else f"file {Path(src)}"
        parts.append(TABLE.format(
            name=name, kind=kind, rows=int(count.iloc[0, 0]),
            columns=", ".join(f"{c} {t}" for c, t in zip(columns["column_name"],
                                                         columns["column_type"], strict=True)),
            sample=to_text(sample, max_rows=_SAMPLE_ROWS).rsplit("\n", 1)[0]))
    return "\n\n".join(parts)


def _new_run(question: str, sources: Mapping[str, Any]) -> AgentRun:
    """A run whose ``inputs`` say what each table was (JSON: a DataFrame's shape, a path)."""
    data = {name: ({"kind": "dataframe", "rows": len(src),
                    "columns": [str(c) for c in src.columns]}
                   if isinstance(src, pd.DataFrame) else {"kind": "file", "path": src})
            for name, src in sources.items()}
    return AgentRun(task=question, inputs={"data": data})


def _as_data(lab: Lab, text: str) -> str:
    """Sample rows are read from files: redacted and fenced like any tool output."""
    guard = lab.tools.guard
    if guard.policy.output.redact_secrets:
        text = guard.redactor.redact(text)
    markers = scan_injection(text) if guard.policy.output.scan_injection else []
    return wrap_as_data(text, "describe_table", markers) if markers else text


def _cut(text: str, limit: int = 50) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


__all__ = ["AnalysisResult", "ChartSpec", "DataAnalysisAgent", "SqlBlocks",
           "frame_from_json", "frame_to_json", "sql_block", "unsupported_numbers"]
