"""A run killed with SIGKILL halfway resumes: the cells that had finished are kept (the
journal), only the rest are sent, and the results equal an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd

import aillm_lab as al
from aillm_lab.experiments import store

# 3 models x 2 prompts x 20 items, each answer taking 0.1 s at 4 in flight: ~3 s in all
GRID = textwrap.dedent("""
    import asyncio, sys
    from pathlib import Path
    import aillm_lab as al
    from aillm_lab.testing import ScriptedModel

    def model(name, delay=0.0, answered=None):
        async def reply(messages, request):
            await asyncio.sleep(delay)
            text = messages[-1].text
            if answered is not None:
                with answered.open("a") as f:
                    f.write(f"{name}|{text!r}\\n")
            return f"{name}: {text.split()[-1]}"
        return ScriptedModel(reply, name=name)

    def experiment(lab, models):
        rows = [{"x": f"item{i}", "answer": f"m0: item{i}"} for i in range(20)]
        return al.Experiment(name="grid", dataset=rows, prompts=["say {x}", "repeat {x}"],
                             models=models, scorers=[al.scorers.exact("answer")], lab=lab,
                             concurrency=4)

    if __name__ == "__main__":
        home, answered = Path(sys.argv[1]), Path(sys.argv[2])
        with al.Lab(home=home) as lab:
            models = [model(f"m{i}", 0.1, answered) for i in range(3)]
            run = experiment(lab, models).run(progress=False)
            print(run.status, run.sent, flush=True)
""")
CONCURRENCY = 4


def _answered(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def _load_grid(script: Path):
    namespace: dict = {"__name__": "grid"}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    return namespace


def test_sigkill_halfway_then_resume_sends_only_the_unfinished_cells(tmp_path):
    script = tmp_path / "grid.py"
    script.write_text(GRID)
    home, answered = tmp_path / "home", tmp_path / "answered.txt"
    errors = tmp_path / "stderr.txt"
    with errors.open("wb") as err:
        child = subprocess.Popen([sys.executable, str(script), str(home), str(answered)],
                                 stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while _answered(answered) < 60 and child.poll() is None:  # between two flushes
            assert time.monotonic() < deadline, "the child never got going"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL, errors.read_text()
    before = {tuple(line.split("|", 1)) for line in answered.read_text().splitlines()}
    assert 60 <= len(before) < 120  # killed halfway, not at the end

    grid = _load_grid(script)
    models = [grid["model"](f"m{i}") for i in range(3)]  # at once, recording nothing
    lab = al.Lab(home=home)
    try:
        run = grid["experiment"](lab, models).run(progress=False)
        again = {(m.name, repr(r.messages[-1].text)) for m in models for r in m.requests}
        assert run.status == "completed" and run.n_done == 120 and run.n_errors == 0
        # every cell answered before the kill is kept, except at most the few caught
        # between their answer and their journal line (the cells in flight)
        assert len(before & again) <= CONCURRENCY
        assert len(before) + len(again) - len(before & again) == 120
        assert run.sent == len(again) and 0 < run.sent <= 120 - len(before) + CONCURRENCY
        resumed = run.results()
    finally:
        lab.close()

    # the same grid uninterrupted, on a fresh home, gives the same results
    fresh = [grid["model"](f"m{i}") for i in range(3)]
    with al.Lab(home=tmp_path / "fresh") as other:
        whole = grid["experiment"](other, fresh).run(progress=False).results()
    columns = ["cell_id", "model", "prompt_index", "item_index", "input", "output", "exact"]
    pd.testing.assert_frame_equal(resumed[columns], whole[columns])


def test_a_torn_journal_line_is_skipped_and_a_row_in_a_part_and_a_journal_counts_once(
        tmp_path):
    row = {"run_id": "r", "cell_id": "c1", "item_id": "i", "item_index": 0, "item": "{}",
           "prompt_index": 0, "prompt": "p", "model_index": 0, "model": "m", "epoch": 0,
           "sample": 0, "input": "p", "output": "o", "finished_at": 1.0}
    store.write_part(tmp_path / "cells", [row], store.CELL_COLUMNS)
    journal = store.Journal(tmp_path)
    journal.append("cells", [row, {**row, "cell_id": "c2", "finished_at": 2.0}])
    assert journal.path is not None
    with journal.path.open("a") as f:
        f.write('{"kind": "cells", "cell_id": "c3", "out')  # killed mid-write
    cells = store.latest_cells(tmp_path)
    assert cells["cell_id"].tolist() == ["c1", "c2"]
    path = journal.rotate()
    assert path is not None and path.exists() and journal.fd is None


def test_only_journals_no_live_writer_holds_are_folded_into_parts(tmp_path):
    row = {"run_id": "r", "cell_id": "c1", "item_id": "i", "item_index": 0, "item": "{}",
           "prompt_index": 0, "prompt": "p", "model_index": 0, "model": "m", "epoch": 0,
           "sample": 0, "input": "p", "output": "o", "finished_at": 1.0}
    live, dead = store.Journal(tmp_path), store.Journal(tmp_path)
    live.append("cells", [row])
    dead.append("cells", [{**row, "cell_id": "c2"}])
    dead_path = dead.rotate()  # closed: as if its process had died
    assert store.fold_orphans(tmp_path) == 1
    assert dead_path is not None and not dead_path.exists() and live.path.exists()
    assert len(list((tmp_path / "cells").glob("part-*.parquet"))) == 1
    assert sorted(store.latest_cells(tmp_path)["cell_id"]) == ["c1", "c2"]
    live.rotate()
