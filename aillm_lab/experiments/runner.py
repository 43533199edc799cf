"""The local runner: an experiment's cells on the Lab's runner loop, through its gateway.

``concurrency`` workers take cells in grid order; each cell is one ``lab.acomplete`` inside
``lab.scope(run_id, budget_usd=...)``, so limits, retries, record/replay and the call log
all apply and every call is tagged with the run id. A failed cell becomes a row with its
error and the run goes on; a ``BudgetExceeded`` (nothing was sent) stops the workers taking
new cells, lets the ones in flight finish, and ends the run with status ``budget``. Rows are
appended to a journal as each cell finishes and folded into Parquet parts every few
seconds, so a resume after a crash re-sends only the cells that were in flight.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import BudgetExceeded
from aillm_lab.experiments import store
from aillm_lab.experiments.results import ExperimentRun
from aillm_lab.experiments.scorers import to_score
from aillm_lab.llm.limits import UNSET

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab import Lab
    from aillm_lab.experiments.scorers import Scorer
    from aillm_lab.experiments.spec import Cell, Experiment

FLUSH_ROWS = 2048  # the journal keeps finished cells safe; parts only keep journals short
FLUSH_SECONDS = 2.0


async def run_experiment(exp: Experiment, lab: Lab, *, progress: bool = True) -> ExperimentRun:
    """Run the cells of ``exp`` not done yet under ``lab``; return the run (see module doc)."""
    plan = await plan_run(exp, lab)
    outcome = Outcome()
    bar = progress_bar(progress, len(plan.cells), len(plan.cells) - len(plan.todo), exp.name)
    try:
        await run_cells(exp, lab, plan.folder, plan.run_id, plan.todo, cap=plan.cap,
                        outcome=outcome, bar=bar, rescore=plan.done)
    finally:
        if bar is not None:
            bar.close()
        plan.manifest.update(status=outcome.status, message=outcome.message,
                             spent_usd=plan.spent + outcome.spent, updated_at=time.time())
        await asyncio.shield(asyncio.to_thread(store.write_manifest, plan.folder,
                                               plan.manifest))
    return await asyncio.to_thread(ExperimentRun, plan.folder, status=outcome.status,
                                   message=outcome.message, sent=outcome.sent)


@dataclass
class Plan:
    """What a run of ``exp`` must do: its cells, folder, the cells left and the budget left.

    The local runner and the Ray driver both start here; only where ``todo`` runs differs."""

    cells: list[Cell]
    run_id: str
    folder: Path
    done: pd.DataFrame  # the cells already answered (no error): skipped, maybe rescored
    todo: list[Cell]
    cap: Any  # what the budget leaves (UNSET: no budget)
    manifest: dict[str, Any]
    spent: float  # what earlier runs of this spec spent


async def plan_run(exp: Experiment, lab: Lab) -> Plan:
    """Fold what a crash left, find the cells done and the spend so far, draft the manifest."""
    cells = exp.cells(lab)
    run_id = exp.run_id(cells)
    folder = store.experiments_dir(lab.settings.home) / run_id
    await asyncio.to_thread(store.fold_orphans, folder)
    done = await asyncio.to_thread(store.latest_cells, folder)
    ok = done[done["error"].isna()]
    done_ids = set(ok["cell_id"])
    earlier = (await asyncio.to_thread(store.read_manifest, folder)
               if (folder / "manifest.json").is_file() else {})
    # the manifest's own account also has what calls under nested runs (an agent's) spent
    spent_before = max(float(ok["cost_usd"].fillna(0.0).sum()),
                       await logged_spend(lab, run_id), float(earlier.get("spent_usd") or 0.0))
    manifest = {"run_id": run_id, "name": exp.name, "spec": exp.manifest_spec(lab),
                "seed": exp.seed, "prices": lab.gateway.pricing.version,
                "n_cells": len(cells), "created_at": time.time(),
                **await asyncio.to_thread(store.environment)}
    manifest["created_at"] = earlier.get("created_at", manifest["created_at"])
    todo = [c for c in cells if c.cell_id not in done_ids]
    cap = UNSET if exp.budget_usd is None else max(exp.budget_usd - spent_before, 0.0)
    return Plan(cells, run_id, folder, ok, todo, cap, manifest, spent_before)


async def run_cells(exp: Experiment, lab: Lab, folder: Path, run_id: str, todo: list[Cell],
                    *, cap: Any, outcome: Outcome, bar: Any = None,
                    rescore: pd.DataFrame | None = None) -> None:
    """Run ``todo`` with ``exp.concurrency`` workers in ``lab.scope(run_id, budget_usd=cap)``,
    writing rows under ``folder``; ``outcome`` says how it ended. ``rescore``: done cells
    to score with the scorers added since. A Ray worker calls this on its shard."""
    writer = _Writer(folder, run_id, lab)
    try:
        with lab.scope(run_id, budget_usd=cap) as scope:
            spent = scope.spent_usd
            if rescore is not None:
                await writer.rescore(rescore, exp.scorers)  # a judge's calls are the run's too
            work = iter(todo)
            workers = [asyncio.ensure_future(_worker(exp, lab, work, writer, outcome, bar))
                       for _ in range(min(exp.concurrency, len(todo)))]
            try:
                await asyncio.gather(*workers)
            except BaseException:
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                raise
            finally:  # nested runs' calls too: an agent's run is opened inside this one
                outcome.spent += scope.spent_usd - spent
    except asyncio.CancelledError:
        outcome.status, outcome.message = "cancelled", "cancelled from outside (Ctrl-C?)"
        raise
    except Exception as exc:  # the runner's own failure (a full disk, say): say so, keep rows
        outcome.status, outcome.message = "error", f"{type(exc).__name__}: {exc}"
        raise
    finally:
        unwritten = await _final_flush(writer, outcome)
        if unwritten is not None:
            raise unwritten


async def _final_flush(writer: _Writer, outcome: Outcome) -> Exception | None:
    """Fold the last rows into parts; a failure leaves them in the journal and is returned,
    so the manifest still says what happened before it is raised."""
    try:
        await asyncio.shield(writer.flush())
    except Exception as exc:
        outcome.status = "error"
        outcome.message = (f"the results could not be written ({type(exc).__name__}: {exc}); "
                           "the finished cells stay in the journal and count on the next run")
        return exc
    return None


async def logged_spend(lab: Lab, run_id: str) -> float:
    """What the call log says earlier runs of this spec spent: cells, judges and task calls
    alike (a task cell's own cost is not split out, so the log is the fuller account)."""
    frame = await lab.acalls("select coalesce(sum(cost_usd), 0) as spent from calls "
                             f"where run_id = '{run_id}'")  # run ids are [A-Za-z0-9_.-]
    return float(frame["spent"].iloc[0]) if len(frame) else 0.0


class Outcome:
    """How the run ended and what it sent; the workers share one."""

    def __init__(self) -> None:
        self.status, self.message, self.sent = "completed", "", 0
        self.spent = 0.0  # USD, by the run's own budget (calls in nested runs included)
        self.stop = False


async def _worker(exp: Experiment, lab: Lab, work: Iterator[Cell], writer: _Writer,
                  outcome: Outcome, bar: Any) -> None:
    for cell in work:
        if outcome.stop:
            return
        try:
            row = await _run_cell(exp, lab, cell)
        except BudgetExceeded as exc:  # nothing was sent: the cell stays to do
            if not outcome.stop:
                outcome.stop = True
                outcome.status = "budget"
                outcome.message = (f"stopped at the budget (budget_usd={exp.budget_usd}): "
                                   f"{exc}")
            return
        outcome.sent += 1
        await writer.add(row, exp.scorers, cell.item)
        if bar is not None:
            bar.update(1)


async def _run_cell(exp: Experiment, lab: Lab, cell: Cell) -> dict[str, Any]:
    """One cell as a row: the answer, or the error that stopped it (not a budget refusal)."""
    model = exp.models[cell.model_index]
    started = time.monotonic()
    row = cell_row(cell)
    try:
        with lab.gateway.sample(cell.epoch * exp.samples + cell.sample):
            if exp.task is not None:
                return await _run_task(exp, lab, cell, row, started)
            completion = await lab.acomplete(cell.text, model, system=exp.system,
                                             tools=exp.tools_for(cell.item),
                                             **cell.params.model_dump())
    except BudgetExceeded:
        raise
    except Exception as exc:  # isolated: the cell is a row with its error, the run goes on
        row.update(error=f"{type(exc).__name__}: {exc}",
                   latency_s=time.monotonic() - started, finished_at=time.time())
        return row
    provider, _, name = completion.model.partition(":")
    calls = [{"name": c.name, "arguments": c.arguments} for c in completion.tool_calls]
    row.update(output=completion.text, answered_by=completion.model,
               tool_calls=json.dumps(calls, ensure_ascii=False) if calls else None,
               input_tokens=completion.usage.input_tokens,
               output_tokens=completion.usage.output_tokens,
               cost_usd=lab.gateway.pricing.price(provider, name, completion.usage),
               latency_s=(completion.latency_s if completion.latency_s is not None
                          else time.monotonic() - started),
               finish_reason=completion.finish_reason, finished_at=time.time())
    return row


def cell_row(cell: Cell) -> dict[str, Any]:
    """The columns of a cell's row that say which cell it is (the answer comes after)."""
    return {
        "cell_id": cell.cell_id, "item_id": cell.item_id, "item_index": cell.item_index,
        "item": json.dumps(cell.item, ensure_ascii=False), "prompt_index": cell.prompt_index,
        "prompt": cell.prompt, "model_index": cell.model_index, "model": cell.model,
        "epoch": cell.epoch, "sample": cell.sample, "input": cell.text,
    }


async def _run_task(exp: Experiment, lab: Lab, cell: Cell, row: dict[str, Any],
                    started: float) -> dict[str, Any]:
    """A task cell: the user's function does its own calls through ``lab``, inside the
    run's scope, so they count against its budget, an agent's too (its run is opened inside
    this one). Cells run concurrently, so the spend is not split per cell: ``cost_usd``
    stays empty, and the call log has each call (an agent's under its own run id). A call
    the run's budget refused while the task ran (an agent ends with status ``budget``
    instead of raising) stops the run: the cell is not kept, and stays to do; a cell in
    flight alongside is treated the same, so it may be sent again on a rerun."""
    budget = lab.gateway.runs.current.budget  # the run's: run_cells opened it
    refused = budget.refused
    output = exp.task(cell.item, exp.models[cell.model_index], lab)
    if inspect.isawaitable(output):
        output = await output
    if budget.refused > refused:  # refused in a nested run (an agent's), which went on
        raise BudgetExceeded(f"the run's budget (budget_usd={exp.budget_usd}) refused a "
                             "call while this cell's task ran; the cell stays to do")
    row.update(output=_as_text(output), finished_at=time.time(),
               latency_s=time.monotonic() - started)
    return row


def _as_text(output: Any) -> str:
    if isinstance(output, str):
        return output
    text = getattr(output, "text", None)  # a Completion
    if isinstance(text, str):
        return text
    if hasattr(output, "model_dump_json"):
        return str(output.model_dump_json())
    try:
        return json.dumps(output, ensure_ascii=False)
    except TypeError:
        return str(output)


class _Writer:
    """Buffers cell and score rows and writes them as Parquet parts off the loop."""

    def __init__(self, folder: Path, run_id: str, lab: Lab) -> None:
        self.folder, self.run_id, self.lab = folder, run_id, lab
        self.cells: list[dict[str, Any]] = []
        self.scores: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.lock = asyncio.Lock()
        self.journal = store.Journal(folder)

    async def add(self, row: dict[str, Any], scorers: list[Scorer],
                  item: dict[str, Any]) -> None:
        row["run_id"] = self.run_id
        scores = (await score_rows(self.run_id, row, item, scorers, self.lab)
                  if row.get("error") is None else [])
        self.journal.append("cells", [row])  # on disk before the next cell is taken
        self.journal.append("scores", scores)
        self.cells.append(row)
        self.scores += scores
        due = len(self.cells) >= FLUSH_ROWS or time.monotonic() - self.last >= FLUSH_SECONDS
        if due and not self.lock.locked():  # one worker folds; the others go on with cells
            await self.flush()

    async def rescore(self, done: Any, scorers: list[Scorer]) -> None:
        """Score the done cells a scorer added since has not seen (no model call)."""
        if done.empty or not scorers:
            return
        have = await asyncio.to_thread(store.latest_scores, self.folder)
        seen = set(zip(have["cell_id"], have["scorer"], strict=True))
        for row in done.to_dict("records"):
            missing = [s for s in scorers if (row["cell_id"], s.name) not in seen]
            if missing:
                clean = {k: (None if _is_na(v) else v) for k, v in row.items()}
                self.scores += await score_rows(self.run_id, clean,
                                                json.loads(clean["item"]), missing, self.lab)
        await self.flush()

    async def flush(self) -> None:
        async with self.lock:
            cells, self.cells = self.cells, []
            scores, self.scores = self.scores, []
            journal = self.journal.rotate()  # holds exactly the rows swapped out above
            self.last = time.monotonic()
            if cells:
                await asyncio.to_thread(store.write_part, self.folder / "cells", cells,
                                        store.CELL_COLUMNS)
            if scores:
                await asyncio.to_thread(store.write_part, self.folder / "scores", scores,
                                        store.SCORE_COLUMNS)
            if journal is not None:
                journal.unlink(missing_ok=True)


async def score_rows(run_id: str, row: dict[str, Any], item: dict[str, Any],
                     scorers: list[Scorer], lab: Lab) -> list[dict[str, Any]]:
    """One score row per scorer; a scorer that raises gets a row with its error."""
    now = time.time()
    rows = []
    for scorer in scorers:
        value, error = None, None
        try:
            if scorer.needs_lab:
                value = to_score(scorer.name, await scorer.fn(row.get("output"), item, row, lab))
            else:
                value = scorer(row.get("output"), item, row)
        except Exception as exc:  # a scorer's bug is the scorer's row, not the run's end
            error = f"{type(exc).__name__}: {exc}"
        rows.append({"run_id": run_id, "cell_id": row["cell_id"], "scorer": scorer.name,
                     "value": value, "error": error,
                     "higher_is_better": scorer.higher_is_better, "scored_at": now})
    return rows


def progress_bar(enabled: bool, total: int, initial: int, name: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a comfort, not a need
        return None
    return tqdm(total=total, initial=initial, desc=name, unit="cell")


def _is_na(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))
