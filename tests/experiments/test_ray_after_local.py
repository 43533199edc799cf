"""Issue 16: ``exp.run(executor="ray")`` in a process where an experiment already ran locally
with its Lab still open (a notebook's order) starts Ray lazily and gives the local results.

It used to fail: Ray starts its programs with ``Popen(preexec_fn=...)``, so the call log's
at-fork hook ran in each forked child and freed the parent's DuckDB handles there; DuckDB's
destructor joins threads the child does not have, the child died of SIGSEGV before it
exec'd, and ``ray.init`` timed out waiting for its GCS server. The hook now keeps the child's
copies of the handles (llm/calllog.py).

Each check runs in a fresh Python process, so Ray is not started already by another test
(Ray is per process); the child uses ``RayExecutor``'s own lazy start (a real 2-CPU local
cluster, never ``local_mode``) and shuts Ray down before it exits.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from _ray_common import SAME, needs_ray

ROOT = Path(__file__).resolve().parents[2]

# The child: the acceptance grid (3 scripted models x 2 prompts x 20 items) run locally in
# Lab A, then, with Lab A still open, the same grid on Ray from Lab B on another home.
CHILD = '''
import json, sys
from pathlib import Path

import aillm_lab as al
from aillm_lab.experiments.ray_executor import RayExecutor
from aillm_lab.testing import ScriptedModel

out = Path(sys.argv[1])
ROWS = [{"n": i, "answer": str(i * i)} for i in range(20)]
PROMPTS = ["What is {n} squared?", "Compute {n} * {n}. Reply with the number only."]
PRICES = {m: {"input": 1.0, "output": 2.0}
          for m in ("scripted:right", "scripted:off", "scripted:even")}


def number_in(text):
    return int(next(w for w in text.replace("*", " ").replace("?", " ").split()
                    if w.isdigit()))


def right(messages, request):
    return str(number_in(messages[-1].text) ** 2)


def off(messages, request):
    return "1"


def even(messages, request):
    n = number_in(messages[-1].text)
    return str(n * n) if n % 2 == 0 else "0"


def grid(lab):
    return al.Experiment(
        name="squares", dataset=ROWS, prompts=PROMPTS, lab=lab, concurrency=8,
        models=[ScriptedModel(right, name="right"), ScriptedModel(off, name="off"),
                ScriptedModel(even, name="even")],
        scorers=[al.scorers.exact("answer"), al.scorers.numeric("answer"),
                 al.scorers.cost()],
        params={"max_tokens": 16})


lab_a = al.Lab(home=out / "a", prices=PRICES)
local = grid(lab_a).run(progress=False)
lab_a.calls()  # the call log's DuckDB handles are open now, as in a notebook
import ray

up_before = ray.is_initialized()
with al.Lab(home=out / "b", prices=PRICES) as lab_b:
    ray_run = grid(lab_b).run(executor=RayExecutor(workers=2, init=INIT), progress=False)
started_here = not up_before and ray.is_initialized()
ray.shutdown()
lab_a.close()
local.results().to_pickle(out / "local.pkl")
ray_run.results().to_pickle(out / "ray.pkl")
(out / "runs.json").write_text(json.dumps({
    "local": [local.status, local.n_done], "ray": [ray_run.status, ray_run.n_done,
    ray_run.sent], "executor": ray_run.manifest.get("executor"),
    "workers": [w.get("status") for w in ray_run.manifest.get("workers", [])],
    "started_here": started_here}))
'''


def test_a_fork_while_ray_starts_leaves_the_call_logs_database_handles_to_the_parent(
        make_lab):
    """The cause, without Ray: a ``Popen`` with a ``preexec_fn`` (as Ray's) after the call
    log has opened DuckDB; the child must reach its exec (exit 0), not die of SIGSEGV
    freeing the parent's handles (-11)."""
    lab = make_lab()
    lab.calls("select count(*) from calls")  # DuckDB handles open in the call log's threads
    child = subprocess.Popen([sys.executable, "-c", "pass"], preexec_fn=lambda: None)
    assert child.wait(timeout=60) == 0
    lab.calls()  # and the parent's own handles still work


def _run_child(tmp_path: Path, init: dict[str, object]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD).replace("INIT", repr(init)))
    return subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=420)


@needs_ray
def test_a_lazy_ray_start_after_a_local_run_in_the_same_process_gives_the_local_results(
        tmp_path):
    child = _run_child(tmp_path, {"num_cpus": 2, "include_dashboard": False,
                                  "log_to_driver": False})
    assert child.returncode == 0, child.stderr[-3000:]
    runs = json.loads((tmp_path / "runs.json").read_text())
    assert runs["local"] == ["completed", 120]
    assert runs["ray"] == ["completed", 120, 120]  # every cell sent by the Ray workers
    assert runs["executor"] == "ray" and runs["workers"] == ["completed", "completed"]
    assert runs["started_here"]  # RayExecutor started Ray itself, after the local run
    local = pd.read_pickle(tmp_path / "local.pkl")[SAME]
    on_ray = pd.read_pickle(tmp_path / "ray.pkl")[SAME]
    pd.testing.assert_frame_equal(on_ray, local)


def test_ray_executor_init_may_not_repeat_its_own_arguments():
    from aillm_lab.errors import ConfigError
    from aillm_lab.experiments.ray_executor import RayExecutor

    with pytest.raises(ConfigError, match=r"\['address'\].*RayExecutor's own") as info:
        RayExecutor(init={"address": "auto", "num_cpus": 2})
    assert info.value.fields == ("init",)
    assert RayExecutor(init={"num_cpus": 2}).init == {"num_cpus": 2}
