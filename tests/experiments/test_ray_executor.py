"""Issue 16's Ray executor: the acceptance grid (3 scripted models × 2 prompts × 20 items) on
``ray.init(num_cpus=2)`` gives the local executor's results; a resume sends only the cells
not done; a worker that dies leaves failed rows, not a crash; a budget holds across workers.

Needs the ``[ray]`` extra (skipped with that reason without it). Ray is started once for the
module (a real local cluster, not ``local_mode``) with this checkout and this folder on the
workers' ``PYTHONPATH``, so they import ``aillm_lab`` from here and this module's functions
by reference, and it is shut down after the last test.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _ray_common import RAY_MISSING, SAME, needs_ray

import aillm_lab as al
from aillm_lab.errors import ConfigError
from aillm_lab.experiments.ray_executor import RayExecutor, start_ray
from aillm_lab.testing import ScriptedModel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ROWS = [{"n": i, "answer": str(i * i)} for i in range(20)]
PROMPTS = ["What is {n} squared?", "Compute {n} * {n}. Reply with the number only."]
PRICES = {m: {"input": 1.0, "output": 2.0}
          for m in ("scripted:right", "scripted:off", "scripted:even")}
pytestmark = [
    # Ray's own start-up notices, raised from inside ray; ours stay errors.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning:ray.*"),
]


def number_in(text: str) -> int:
    return int(next(w for w in text.replace("*", " ").replace("?", " ").split() if w.isdigit()))


def right(messages: Any, request: Any) -> str:
    return str(number_in(messages[-1].text) ** 2)


def off(messages: Any, request: Any) -> str:
    return "1"


def even(messages: Any, request: Any) -> str:
    n = number_in(messages[-1].text)
    return str(n * n) if n % 2 == 0 else "0"


class Crashing(ScriptedModel):
    """``scripted:even`` that kills its process at item 7 while ``marker`` exists."""

    def __init__(self, marker: str) -> None:
        super().__init__(self.reply, name="even")
        self.marker = marker

    def reply(self, messages: Any, request: Any) -> str:
        if number_in(messages[-1].text) == 7 and Path(self.marker).exists():
            os._exit(1)  # a worker that dies mid-shard, as an OOM kill would
        return even(messages, request)


def _grid(lab: al.Lab, third: ScriptedModel | None = None, **overrides: Any) -> al.Experiment:
    models = [ScriptedModel(right, name="right"), ScriptedModel(off, name="off"),
              third or ScriptedModel(even, name="even")]
    spec = {"name": "squares", "dataset": ROWS, "prompts": PROMPTS, "models": models,
            "scorers": [al.scorers.exact("answer"), al.scorers.numeric("answer"),
                        al.scorers.cost()],
            "params": {"max_tokens": 16}, "lab": lab, "concurrency": 8}
    return al.Experiment(**{**spec, **overrides})


def _same(run: al.ExperimentRun) -> Any:
    return run.results()[SAME]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    """A 2-CPU local Ray cluster for this module, shut down after it (no processes left)."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip(RAY_MISSING)
    import ray

    path = os.pathsep.join([str(ROOT), str(HERE)])
    start_ray(num_cpus=2, include_dashboard=False, log_to_driver=False,  # ray.init, retried
              runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def local_results(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The acceptance grid run by the local executor: what Ray must reproduce."""
    with al.Lab(home=tmp_path_factory.mktemp("local"), prices=PRICES) as lab:
        run = _grid(lab).run(progress=False)
        assert run.status == "completed" and run.n_done == 120 and run.cost_usd > 0
        return run.run_id, _same(run)


@needs_ray
def test_ray_runs_the_grid_with_results_identical_to_the_local_executor(
        ray_cluster, local_results, tmp_path):
    run_id, expected = local_results
    with al.Lab(home=tmp_path, prices=PRICES) as lab:
        run = _grid(lab).run(executor=RayExecutor(workers=2), progress=False)
        calls = lab.calls()
    assert run.run_id == run_id
    assert run.status == "completed" and run.n_done == 120 and run.sent == 120
    assert _same(run).equals(expected)
    mine = calls[calls["run_id"] == run_id]  # the workers' gateways wrote the same call log
    assert len(mine) == 120 and (mine["status"] == "ok").all()
    workers = run.manifest["workers"]  # each worker's manifest, merged by the driver
    assert [w["status"] for w in workers] == ["completed", "completed"]
    assert sum(w["cells"] for w in workers) == 120
    assert run.manifest["executor"] == "ray"


@needs_ray
def test_a_dead_worker_leaves_failed_rows_and_a_resume_sends_only_the_rest(
        ray_cluster, local_results, tmp_path):
    run_id, expected = local_results
    marker = tmp_path / "crash"
    marker.touch()
    with al.Lab(home=tmp_path / "home", prices=PRICES) as lab:
        first = _grid(lab, Crashing(str(marker))).run(executor="ray", progress=False)
        assert first.status == "completed"  # returned, not raised
        failed = first.results()
        dead = failed[failed["error"].notna()]
        assert len(dead) >= 1 and first.n_done + first.n_errors == 120
        assert dead["error"].str.match(r"worker \d failed: WorkerCrashedError").all()
        assert "failed (WorkerCrashedError" in first.message and "run again" in first.message

        marker.unlink()
        second = _grid(lab, Crashing(str(marker))).run(executor="ray", progress=False)
        assert second.status == "completed" and second.n_errors == 0
        assert second.sent == 120 - first.n_done  # the done cells are not sent again
        assert _same(second).equals(expected)

        third = _grid(lab).run(executor="ray", progress=False)
        assert third.sent == 0 and third.n_done == 120


@needs_ray
def test_a_budget_holds_across_ray_workers(ray_cluster, tmp_path):
    with al.Lab(home=tmp_path / "full", prices=PRICES) as lab:
        full = _grid(lab).run(progress=False).cost_usd
    budget = full / 2
    with al.Lab(home=tmp_path / "half", prices=PRICES) as lab:
        run = _grid(lab, budget_usd=budget).run(executor="ray", progress=False)
        calls = lab.calls()
    assert run.status == "budget" and run.n_errors == 0 and 0 < run.n_done < 120
    assert run.cost_usd <= budget and calls["cost_usd"].sum() <= budget
    assert "split evenly over 2 Ray workers" in run.message
    assert run.manifest["spent_usd"] == pytest.approx(calls["cost_usd"].sum())  # merged
    assert (calls["status"] == "ok").sum() == run.n_done  # a refused call is never sent


def test_an_unknown_executor_is_a_config_error_naming_executor(make_lab):
    model = ScriptedModel(right, name="right")
    exp = _grid(make_lab(), models=[model])
    with pytest.raises(ConfigError, match="executor='nope'.*'local'.*'ray'") as info:
        exp.run(executor="nope")
    assert info.value.fields == ("executor",) and model.requests == []


@pytest.mark.parametrize("workers", [0, -1, 1.5, True])
def test_ray_executor_refuses_a_bad_worker_count(workers):
    with pytest.raises(ConfigError, match="workers=") as info:
        RayExecutor(workers=workers)
    assert info.value.fields == ("workers",)


@needs_ray
def test_start_ray_stops_only_what_a_failed_start_left_running_and_tries_again(monkeypatch):
    import subprocess
    import sys

    import ray

    def program(name: str) -> subprocess.Popen[bytes]:  # looks like one of Ray's own
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                                 str(Path(ray.__file__).parent / "core" / name)])

    earlier = program("gcs_server")  # a Ray this process started before: not ours to stop
    left: list[subprocess.Popen[bytes]] = []

    def init(**kwargs: Any) -> str:
        if not left:  # the first try starts a "raylet" and then times out, as Ray does
            left.append(program("raylet"))
            raise RuntimeError("The current node timed out during startup.")
        return f"started with {kwargs}"

    monkeypatch.setattr(ray, "init", init)
    try:
        assert start_ray(num_cpus=2) == "started with {'num_cpus': 2}"
        assert left[0].returncode is not None  # stopped and waited for, not left running
        assert earlier.poll() is None
    finally:
        earlier.kill()
        earlier.wait()

    monkeypatch.setattr(ray, "init", lambda **kw: (_ for _ in ()).throw(RuntimeError("no")))
    with pytest.raises(RuntimeError, match="no"):
        start_ray(attempts=2)


@needs_ray
def test_a_lab_default_model_object_reaches_the_workers(ray_cluster, tmp_path):
    """``models=[None]`` with ``Lab(model=ScriptedModel(...))``: the workers answer with that
    model, not a fresh ``scripted:<name>`` from the registry (which has no replies)."""
    with al.Lab(home=tmp_path / "local", prices=PRICES,
                model=ScriptedModel(right, name="right")) as lab:
        expected = _same(_grid(lab, models=[None]).run(progress=False))
    with al.Lab(home=tmp_path / "ray", prices=PRICES,
                model=ScriptedModel(right, name="right")) as lab:
        run = _grid(lab, models=[None]).run(executor=RayExecutor(workers=2), progress=False)
    assert run.status == "completed" and run.n_errors == 0 and run.n_done == 40
    assert _same(run).equals(expected)
