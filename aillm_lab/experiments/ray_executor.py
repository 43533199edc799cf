"""``RayExecutor``: an experiment's cells spread over Ray workers, one shard per worker.

The driver plans the run exactly as the local runner does (``runner.plan_run``: the cells
not done yet, the budget left), deals the cells to ``workers`` shards round-robin, and sends
each shard to a Ray task. A worker opens its own ``Lab`` on the same home, so its calls go
through its own gateway into the same call log and record/replay store, and runs the same
async runner (``runner.run_cells``) on its shard: its rows go to its own journal and
Parquet parts in the run's folder, and its account of the shard to ``workers/<n>.json``,
which the driver merges into ``manifest.json``. The results are read back by the driver
exactly as after a local run, so the two executors give the same table.

Sharing what must hold for the whole run:

* **Budget:** what ``budget_usd`` leaves is split evenly over the workers and each worker's
  gateway enforces its share, so the run never spends more than the budget; a worker whose
  share runs out stops (status ``budget``) even if another's share is left over.
* **Rate limits:** each worker gets ``1/workers`` of every model's concurrency (at least 1),
  RPM and TPM, and of the Lab-wide budgets; ``exp.concurrency`` is split the same way.
* **Failures:** a cell that fails is a row with its error, as in the local runner; a worker
  that dies (or whose runner raises) turns each cell of its shard it had not finished into a
  row with the worker's error, so the run returns and a later run retries those cells.

Secrets never travel: the workers get the Lab's settings without its API keys and read
their own from their environment. The home must be a folder every worker sees (one machine,
or a shared file system), and a ``Model`` object in ``models`` is pickled to each worker
(give a ``ScriptedModel`` a function, not a queue: each worker has its own copy).
"""

from __future__ import annotations

import asyncio
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import ConfigError
from aillm_lab.experiments import store
from aillm_lab.experiments.results import ExperimentRun
from aillm_lab.experiments.runner import (
    Outcome,
    cell_row,
    logged_spend,
    plan_run,
    progress_bar,
    run_cells,
)
from aillm_lab.llm.base import Model
from aillm_lab.llm.limits import UNSET

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.config import LabSettings
    from aillm_lab.experiments.spec import Cell, Experiment

SECRETS = frozenset({"openai_api_key", "anthropic_api_key"})
_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds aillm_lab/


class RayExecutor:
    """Run an experiment's cells on Ray: ``exp.run(executor="ray")`` or
    ``exp.run(executor=RayExecutor(workers=8))``.

    ``workers``: how many shards (Ray tasks), by default the cluster's CPUs. If Ray is not
    started yet it is started here with ``start_ray(address=address, runtime_env=...,
    **init)`` (``runtime_env`` by default puts this checkout on the workers'
    ``PYTHONPATH``; on a cluster give one that installs ``aillm_lab``; ``init``: more
    ``ray.init`` arguments, e.g. ``{"num_cpus": 2}``) and left running for the next run.
    Starting it after local runs in the same process is safe (see ``start_ray``).
    """

    def __init__(self, workers: int | None = None, *, address: str | None = None,
                 runtime_env: dict[str, Any] | None = None, cpus_per_worker: float = 1.0,
                 init: dict[str, Any] | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                    or workers < 1):
            raise ConfigError(f"RayExecutor workers={workers!r}: give a whole number >= 1, "
                              "or None for one per CPU of the Ray cluster",
                              fields=("workers",))
        if not isinstance(cpus_per_worker, int | float) or cpus_per_worker <= 0:
            raise ConfigError(f"RayExecutor cpus_per_worker={cpus_per_worker!r}: give a "
                              "number > 0 (Ray's num_cpus per task)",
                              fields=("cpus_per_worker",))
        self.workers, self.address = workers, address
        clash = sorted({"address", "runtime_env"} & set(init or {}))
        if clash:
            raise ConfigError(f"RayExecutor init={init!r}: give {clash} as RayExecutor's own "
                              "argument(s), not inside init", fields=("init",))
        self.runtime_env, self.cpus_per_worker = runtime_env, float(cpus_per_worker)
        self.init = dict(init or {})

    def __repr__(self) -> str:
        return f"<RayExecutor workers={self.workers or 'one per CPU'}>"

    async def arun(self, exp: Experiment, lab: Lab, *, progress: bool = True
                   ) -> ExperimentRun:
        """Run the cells of ``exp`` not done yet on Ray workers; return the run."""
        plan = await plan_run(exp, lab)
        outcome = Outcome()
        started = time.time()
        try:
            rescore = not plan.done.empty and bool(exp.scorers)
            if rescore:  # scorers added since score the done cells here: no model call
                await run_cells(exp, lab, plan.folder, plan.run_id, [], cap=plan.cap,
                                outcome=outcome, rescore=plan.done)
            cap = plan.cap
            if rescore and exp.budget_usd is not None:  # a judge's spend is the run's too
                spent = max(float(plan.done["cost_usd"].fillna(0.0).sum()),
                            await logged_spend(lab, plan.run_id), plan.spent + outcome.spent)
                cap = max(exp.budget_usd - spent, 0.0)
            if plan.todo:
                plan.manifest["workers"] = await self._run_shards(
                    exp, lab, plan.run_id, plan.folder, plan.todo, cap, outcome, progress,
                    started, len(plan.cells))
        except asyncio.CancelledError:
            outcome.status, outcome.message = "cancelled", "cancelled from outside (Ctrl-C?)"
            raise
        except Exception as exc:  # the driver's own failure: say so in the manifest
            if outcome.status == "completed":
                outcome.status, outcome.message = "error", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            plan.manifest.update(status=outcome.status, message=outcome.message,
                                 executor="ray", spent_usd=plan.spent + outcome.spent,
                                 updated_at=time.time())
            await asyncio.shield(asyncio.to_thread(store.write_manifest, plan.folder,
                                                   plan.manifest))
        return await asyncio.to_thread(ExperimentRun, plan.folder, status=outcome.status,
                                       message=outcome.message, sent=outcome.sent)

    async def _run_shards(self, exp: Experiment, lab: Lab, run_id: str, folder: Path,
                          todo: list[Cell], cap: Any, outcome: Outcome, progress: bool,
                          started: float, total: int) -> list[dict[str, Any]]:
        """Send the shards, wait for them, turn dead workers' cells into error rows, and
        merge the workers' manifests into ``outcome``; returns them for the manifest."""
        ray = await asyncio.to_thread(self._ray)
        workers = self.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        shards = [todo[i::workers] for i in range(min(workers, len(todo)))]
        n = len(shards)
        share = UNSET if cap is UNSET else cap / n
        payload = ray.put({"settings": worker_settings(lab.settings, exp, n, lab),
                           "experiment": _portable(exp, lab, n), "default": lab.given_model,
                           "run_id": run_id,
                           "budget": None if share is UNSET else share})
        task = ray.remote(max_retries=0, num_cpus=self.cpus_per_worker)(run_shard)
        await asyncio.to_thread(store.clear_worker_manifests, folder)
        refs = [task.remote(payload, index, [c.cell_id for c in shard])
                for index, shard in enumerate(shards)]
        bar = progress_bar(progress, total, total - len(todo), exp.name)

        async def wait(ref: Any, size: int) -> Any:
            try:
                return await ref
            finally:
                if bar is not None:
                    bar.update(size)

        try:
            results = await asyncio.gather(*(wait(r, len(s)) for r, s in
                                             zip(refs, shards, strict=True)),
                                           return_exceptions=True)
        except BaseException:  # cancelled: the workers stop too (their rows are kept)
            for ref in refs:
                ray.cancel(ref)
            raise
        finally:
            if bar is not None:
                bar.close()
        failed = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
        for exc in failed.values():
            if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not a cell's
                raise exc
        await asyncio.to_thread(store.fold_orphans, folder)  # a dead worker's journal
        unfinished = (await asyncio.to_thread(_fail_unfinished, folder, run_id, shards, failed,
                                              started) if failed else {})
        found = await asyncio.to_thread(store.read_worker_manifests, folder)
        merged = []
        for index, shard in enumerate(shards):
            worker = found.get(index) or {"worker": index, "cells": len(shard)}
            if index in failed:
                worker.update(status="failed", message=_describe(failed[index]),
                              unfinished=unfinished[index])
            merged.append(worker)
        _merge(merged, exp, n, outcome)
        return merged

    def _ray(self) -> Any:
        """The ``ray`` module, started if it is not yet (blocking: call it in a thread)."""
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("executor='ray' needs Ray: pip install 'aillm-lab[ray]', or run "
                              "with executor='local'", fields=("executor",)) from exc
        if not ray.is_initialized():
            env = self.runtime_env
            if env is None:
                path = os.pathsep.join(p for p in (str(_ROOT), os.environ.get("PYTHONPATH"))
                                       if p)
                env = {"env_vars": {"PYTHONPATH": path}}
            start_ray(address=self.address, runtime_env=env, **self.init)
        return ray


def start_ray(attempts: int = 2, **init: Any) -> Any:
    """``ray.init(**init)``, tried ``attempts`` times, safe after a Lab has run here.

    Ray starts its programs with ``subprocess.Popen(preexec_fn=...)``, and with a
    ``preexec_fn`` CPython runs the ``os.register_at_fork`` child hooks in the forked child
    before it execs. The call log's hook used to free the child's copies of its DuckDB
    handles there, DuckDB's destructor joined threads the child does not have
    (duckdb/duckdb-python#292), the child died of SIGSEGV before its exec and ``ray.init``
    waited 30 s for a GCS server that never started; the hook now keeps them
    (``llm/calllog.py``), so a Ray started after a Lab has run works.

    On a loaded machine Ray's start-up can also miss its own fixed deadlines (the raylet
    gives its dashboard agent 15 s, ray-project/ray#65983) and ``ray.init`` raises with the
    processes it started still running and no handle to stop them: those, and only those,
    are stopped before the next try (a Ray this process started earlier is left alone)."""
    import ray

    ray_dir = str(Path(ray.__file__).parent)
    for attempt in range(1, attempts + 1):
        before = {id(p) for p in _ray_programs(ray_dir)}
        try:
            return ray.init(**init)
        except Exception:
            _stop([p for p in _ray_programs(ray_dir) if id(p) not in before])
            if attempt == attempts:
                raise
    return None


def _ray_programs(ray_dir: str) -> list[subprocess.Popen[Any]]:
    """The running programs of Ray's own folder this process started, as their ``Popen``s
    (all that is left of a failed ``ray.init``)."""
    import gc

    return [o for o in gc.get_objects() if isinstance(o, subprocess.Popen)
            and o.returncode is None and ray_dir in str(o.args)]


def _stop(processes: list[subprocess.Popen[Any]]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def run_shard(payload: dict[str, Any], index: int, cell_ids: list[str]) -> dict[str, Any]:
    """In a Ray worker: one shard of cells under its own Lab on the run's home."""
    import aillm_lab  # the public door: experiments sit beside core, not above it

    settings = aillm_lab.LabSettings(**payload["settings"])
    with aillm_lab.Lab(settings, model=payload["default"]) as lab:
        exp = payload["experiment"].model_copy(update={"lab": lab})
        budget = UNSET if payload["budget"] is None else payload["budget"]
        return lab.runner.run(_run_shard(exp, lab, payload["run_id"], index, cell_ids,
                                         budget))


async def _run_shard(exp: Experiment, lab: Lab, run_id: str, index: int,
                     cell_ids: list[str], cap: Any) -> dict[str, Any]:
    cells = exp.cells(lab)
    if exp.run_id(cells) != run_id:  # a different default model or dataset out here
        raise RuntimeError(f"worker {index} sees the grid {exp.run_id(cells)}, the driver "
                           f"{run_id}; give every model explicitly (models=[...])")
    folder = store.experiments_dir(lab.settings.home) / run_id
    wanted = set(cell_ids)
    todo = [c for c in cells if c.cell_id in wanted]
    outcome = Outcome()
    manifest = {"worker": index, "pid": os.getpid(), "node": platform.node(),
                "cells": len(todo), "started_at": time.time()}
    try:
        await run_cells(exp, lab, folder, run_id, todo, cap=cap, outcome=outcome)
    finally:
        manifest.update(sent=outcome.sent, status=outcome.status, message=outcome.message,
                        spent_usd=outcome.spent, updated_at=time.time())
        await asyncio.shield(asyncio.to_thread(store.write_worker_manifest, folder, index,
                                               manifest))
    return manifest


def worker_settings(settings: LabSettings, exp: Experiment, workers: int, lab: Lab
                    ) -> dict[str, Any]:
    """The Lab's settings for one of ``workers`` workers: no API keys, absolute paths, and
    ``1/workers`` of each model's limits and of the Lab-wide budgets."""
    data = settings.model_dump(exclude=set(SECRETS))
    for name in ("home", "models_dir", "workspace"):
        if data.get(name) is not None:
            data[name] = Path(data[name]).expanduser().resolve()
    ids = {m.id if isinstance(m, Model) else (m or lab.default_model_id) for m in exp.models}
    limits = {}
    for model_id in sorted(set(settings.limits) | ids):
        base = settings.limits_for(model_id)
        limits[model_id] = base.model_copy(update={
            "concurrency": max(base.concurrency // workers, 1),
            "rpm": None if base.rpm is None else base.rpm / workers,
            "tpm": None if base.tpm is None else base.tpm / workers}).model_dump()
    data["limits"] = limits
    for name in ("budget_usd", "run_budget_usd"):
        if data.get(name) is not None:
            data[name] = data[name] / workers
    return data


def _portable(exp: Experiment, lab: Lab, workers: int) -> Experiment:
    """``exp`` without its Lab, each default model given (the Lab's ``Model`` object, else
    its id: a worker would resolve a scripted or custom model's id to a fresh, empty one),
    and its concurrency split."""
    default = lab.given_model or lab.default_model_id
    models = [m if m is not None else default for m in exp.models]
    return exp.model_copy(update={"lab": None, "models": models,
                                  "concurrency": max(exp.concurrency // workers, 1)})



def _fail_unfinished(folder: Path, run_id: str, shards: list[list[Cell]],
                     failed: dict[int, BaseException], started: float) -> dict[int, int]:
    """A row with the worker's error for each cell of a failed shard it did not finish;
    returns how many per worker."""
    cells = store.latest_cells(folder)
    reached = set(cells.loc[cells["finished_at"] >= started, "cell_id"])
    now = time.time()
    rows = [{**cell_row(cell), "run_id": run_id, "finished_at": now,
             "error": f"worker {index} failed: {_describe(exc)}"}
            for index, exc in failed.items() for cell in shards[index]
            if cell.cell_id not in reached]
    if rows:
        store.write_part(folder / "cells", rows, store.CELL_COLUMNS)
    return {index: sum(r["error"].startswith(f"worker {index} ") for r in rows)
            for index in failed}


def _merge(workers: list[dict[str, Any]], exp: Experiment, n: int, outcome: Outcome) -> None:
    """The run's outcome from its workers': the cells sent, a budget stop, the failures."""
    outcome.sent = sum(int(w.get("sent", 0)) for w in workers)
    outcome.spent += sum(float(w.get("spent_usd") or 0.0) for w in workers)
    notes = []
    if any(w.get("status") == "budget" for w in workers):
        outcome.status = "budget"
        notes.append(f"stopped at the budget (budget_usd={exp.budget_usd}, split evenly "
                     f"over {n} Ray workers)")
    for worker in workers:
        if worker.get("status") == "failed":
            notes.append(f"Ray worker {worker['worker']} failed ({worker['message']}): the "
                         f"{worker['unfinished']} cells of its shard it had not finished are "
                         "rows with that error; run again to retry them")
    outcome.message = "; ".join(notes)


def _describe(exc: BaseException) -> str:
    """One line for a worker's failure: the worker's own exception when Ray carries it."""
    cause = getattr(exc, "cause", None)
    shown = cause if isinstance(cause, BaseException) else exc
    first = (str(shown).strip().splitlines() or [""])[0]
    return f"{type(shown).__name__}: {first}"[:300]

