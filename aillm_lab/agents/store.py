"""Finished agent runs saved as JSON under ``<home>/runs``, so another process can list and
reload them.

One file per run (``<run id>.agent.json``), written to a temp file and ``os.replace``d, so a
reader never sees half a run and a crash never leaves one. JSON rather than a table because
a trace is nested (messages, tool calls, results) and is read back whole.

A trace holds what tools were given and returned and what the model said, so it can hold a
secret the audit log would hide; ``redact`` (the Safety Guard's ``Redactor.redact_value``)
is applied to the run's JSON data before it is written: no API key is stored at rest.

A file that cannot be read back (hand-edited, cut short by a full disk, written by another
version of the schema) is skipped by ``list_runs`` with a logged warning naming it, so one bad
file never hides the others; ``load_run`` of that id raises ``SavedRunError`` naming the file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from aillm_lab.agents.run import AgentRun
from aillm_lab.errors import AillmError

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab import Lab

SUFFIX = ".agent.json"
log = logging.getLogger(__name__)


class SavedRunError(AillmError, ValueError):
    """A saved run's file is not a readable ``AgentRun``; ``path`` is the file."""

    def __init__(self, message: str, *, path: str | Path = "") -> None:
        super().__init__(message)
        self.path = str(path)


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
    """The saved run ``run_id``, equal to the one saved: a pydantic ``output`` comes back as
    its type where ``AgentRun`` may resolve it (``aillm_lab``'s own, or already imported),
    else as its JSON data. ``LookupError`` if there is no such run, ``SavedRunError`` if its
    file cannot be read."""
    path = runs_dir(_home(lab)) / f"{run_id}{SUFFIX}"
    if not path.is_file():
        raise LookupError(f"no saved agent run {run_id!r} under {path.parent}; "
                          f"lab.runs() lists the saved ones")
    return read_run(path)


def read_run(path: Path) -> AgentRun:
    """The run in ``path``, or ``SavedRunError`` naming the file, why, and what to do."""
    try:
        return AgentRun.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "the file"
        why = f"{where}: {first.get('msg', exc.title)}"
    except (OSError, UnicodeDecodeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    raise SavedRunError(
        f"saved agent run {path} cannot be read ({why}); it was edited, cut short, or "
        f"written by another version of aillm_lab: restore it from a backup or delete the "
        f"file (lab.runs() skips it)", path=path)


def list_runs(lab: Lab | Path) -> pd.DataFrame:
    """One row per saved run, newest first: id, agent, model, task, status, steps, cost.
    A file that cannot be read is skipped with a logged warning naming it."""
    import pandas as pd

    rows = []
    for path in runs_dir(_home(lab)).glob(f"*{SUFFIX}"):
        try:
            run = read_run(path)
        except SavedRunError as exc:
            log.warning("lab.runs() skipped %s", exc)
            continue
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
