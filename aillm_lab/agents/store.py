"""Finished agent runs saved as JSON under ``<home>/runs``, so another process can list and
reload them.

One file per run (``<run id>.agent.json``), written to a temp file and ``os.replace``d, so a
reader never sees half a run and a crash never leaves one. JSON rather than a table because
a trace is nested (messages, tool calls, results) and is read back whole.

A trace holds what tools were given and returned and what the model said, so it can hold a
secret the audit log would hide; ``redact`` (the Safety Guard's ``Redactor.redact_value``)
is applied to the run's JSON data before it is written: no API key is stored at rest.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.agents.run import AgentRun

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab import Lab

SUFFIX = ".agent.json"


def runs_dir(home: Path) -> Path:
    return Path(home) / "runs"


def save_run(home: Path, run: AgentRun, *, redact: Callable[[Any], Any] | None = None) -> Path:
    """Write ``run`` atomically; saving the same run again replaces it. ``redact`` maps the
    run's JSON data to what may be stored (values, not the text, so the file stays valid
    JSON); the ``run`` object itself is not changed."""
    text = run.model_dump_json()
    if redact is not None:
        text = json.dumps(redact(json.loads(text)), ensure_ascii=False)
    folder = runs_dir(home)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run.id}{SUFFIX}"
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{run.id}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_run(lab: Lab | Path, run_id: str) -> AgentRun:
    """The saved run ``run_id``; its ``output`` is plain JSON data (a dict for a model)."""
    path = runs_dir(_home(lab)) / f"{run_id}{SUFFIX}"
    if not path.is_file():
        raise LookupError(f"no saved agent run {run_id!r} under {path.parent}; "
                          f"lab.runs() lists the saved ones")
    return AgentRun.model_validate_json(path.read_text(encoding="utf-8"))


def list_runs(lab: Lab | Path) -> pd.DataFrame:
    """One row per saved run, newest first: id, agent, model, task, status, steps, cost."""
    import pandas as pd

    rows = []
    for path in runs_dir(_home(lab)).glob(f"*{SUFFIX}"):
        run = AgentRun.model_validate_json(path.read_text(encoding="utf-8"))
        rows.append({"id": run.id, "started_at": run.started_at, "agent": run.agent,
                     "model": run.model, "task": run.task, "status": run.status,
                     "steps": len(run.steps), "cost_usd": run.cost_usd,
                     "latency_s": run.latency_s, "forked_from": run.forked_from})
    columns = ["id", "started_at", "agent", "model", "task", "status", "steps", "cost_usd",
               "latency_s", "forked_from"]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("started_at", ascending=False, ignore_index=True)


def _home(lab: Lab | Path) -> Path:
    return Path(lab) if isinstance(lab, str | os.PathLike) else lab.settings.home
