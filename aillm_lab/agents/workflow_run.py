"""What a workflow run did: ``WorkflowRun`` and one ``StepRun`` per step, as data.

A separate type from ``AgentRun`` because a workflow's unit is a step of a graph, not a
model turn: each has a status (``restored`` when a resume took its checkpoint instead of
running it), attempts, a time window, a cost and an output. ``to_pandas()`` (also
``report()``) is the run report, one row per step; ``outputs`` are the final outputs.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.agents.run import RunStatus
from aillm_lab.display import Displayable, fields_table, pre

if TYPE_CHECKING:
    import pandas as pd

StepStatus = Literal["pending", "running", "completed", "restored", "skipped", "failed",
                     "cancelled"]
COLUMNS = ["step", "kind", "status", "attempts", "started_at", "finished_at", "duration_s",
           "cost_usd", "output", "error"]


class StepRun(BaseModel):
    """One step of one run. ``attempts`` counts tries made by this run (0 when restored
    or skipped); ``cost_usd`` is None when a model's price is unknown."""

    id: str
    kind: str
    status: StepStatus = "pending"
    attempts: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float = 0.0
    cost_usd: float | None = 0.0
    output: Any = None
    error: str | None = None
    input_hash: str | None = None


class WorkflowRun(BaseModel, Displayable):
    """A run of a ``Workflow``; returned by ``WorkflowAgent.run``.

    ``status`` is ``completed``, ``error`` (a step failed; independent branches still ran),
    ``budget``, ``timeout`` or ``cancelled``. ``id`` is the ``run_id`` to resume with;
    ``resumed`` says whether checkpoints were found. ``cost_usd`` is what this invocation
    spent (restored steps cost nothing again).
    """

    id: str
    workflow: str
    status: RunStatus = "running"
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRun] = Field(default_factory=list)
    error: str | None = None
    resumed: bool = False
    started_at: datetime | None = None
    latency_s: float = 0.0

    def step(self, step_id: str) -> StepRun:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(f"run {self.id} has no step {step_id!r}")

    @property
    def executed(self) -> list[str]:
        """Steps this invocation ran (not restored, not skipped)."""
        return [s.id for s in self.steps if s.attempts > 0]

    @property
    def restored(self) -> list[str]:
        """Steps whose checkpoint was reused."""
        return [s.id for s in self.steps if s.status == "restored"]

    @property
    def cost_usd(self) -> float | None:
        costs = [s.cost_usd for s in self.steps if s.status != "restored"]
        return None if any(c is None for c in costs) else float(sum(c or 0.0 for c in costs))

    def to_pandas(self) -> pd.DataFrame:
        """The run report: one row per step (status, attempts, time window, cost, output)."""
        import pandas as pd

        rows = [{"step": s.id, "kind": s.kind, "status": s.status, "attempts": s.attempts,
                 "started_at": s.started_at, "finished_at": s.finished_at,
                 "duration_s": s.duration_s, "cost_usd": s.cost_usd, "output": s.output,
                 "error": s.error} for s in self.steps]
        frame = pd.DataFrame(rows, columns=COLUMNS)
        frame.attrs["outputs"] = self.outputs
        return frame

    def report(self) -> pd.DataFrame:
        """``to_pandas()``, read as the run report; ``.attrs["outputs"]`` holds the outputs."""
        return self.to_pandas()

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.steps:
            counts[s.status] = counts.get(s.status, 0) + 1
        done = " ".join(f"{k}={v}" for k, v in counts.items())
        cost = "?" if self.cost_usd is None else f"${self.cost_usd:.4f}"
        return (f"<WorkflowRun {self.id} {self.workflow} {self.status} {done} cost={cost} "
                f"{self.latency_s:.2f}s>")

    __str__ = __repr__

    def _repr_html_(self) -> str:
        table = self.to_pandas().drop(columns=["started_at", "finished_at"])
        body = table.to_html(index=False, escape=True, max_rows=200)
        if self.outputs:
            import json

            body += pre(json.dumps(self.outputs, indent=2, default=str, ensure_ascii=False))
        return fields_table(f"Workflow {self.workflow}: {self.status}", [
            ("run id", self.id), ("resumed", "yes" if self.resumed else None),
            ("error", self.error), ("seconds", f"{self.latency_s:.2f}")], body)
