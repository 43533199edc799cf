"""ReAct on the real local model (SmolLM2-135M on the CPU): a task that needs two different
tools, the second fed by the first's result. Tool calls are valid by construction (the
grammar); whether the 135M model chains them depends on the sampling seed, so the
acceptance is "right in at least 1 of 3 seeds" (benchmarks/bench_agents_local.py measures
the rate over 10)."""

from __future__ import annotations

import pytest

import aillm_lab as al

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

HOMES = {"alice": "Paris", "bob": "Tokyo"}
WEATHER = {"paris": "sunny and 21 C", "tokyo": "rainy and 14 C"}


@al.tool
def find_home(person: str) -> str:
    """Return the city where a person lives."""
    return HOMES.get(person.strip().lower(), "unknown person")


@al.tool
def get_weather(city: str) -> str:
    """Return today's weather in a city."""
    return WEATHER.get(city.strip().lower(), "unknown city")


TASK = "Find where Alice lives, then get the weather there."


@pytest.fixture(scope="module")
def lab(module_runner, tmp_path_factory):
    with al.Lab(home=tmp_path_factory.mktemp("react-local"), runner=module_runner,
                models_dir=al.LabSettings().model_path) as lab:
        yield lab


def test_react_on_smollm2_chains_two_tools_to_the_right_answer(lab):
    tools = {"find_home": find_home, "get_weather": get_weather}
    runs = []
    for seed in range(3):
        agent = al.ReActAgent(tools=list(tools.values()), model="local:smollm2", lab=lab,
                              max_steps=6, params={"max_tokens": 64, "temperature": 0.4,
                                                   "seed": seed})
        runs.append(agent.run(TASK))
    for run in runs:  # every call it made, in every seed, fits its tool's schema
        assert run.model == "local:smollm2" and run.tool_calls
        for call in run.tool_calls:
            tools[call.name].validate(call.arguments)
    right = [run for run in runs if run.status == "completed" and "21" in str(run.output)
             and [c.name for c in run.tool_calls][:2] == ["find_home", "get_weather"]]
    assert right, [(r.status, r.output, [(c.name, c.arguments) for c in r.tool_calls])
                   for r in runs]
    run = right[0]  # the chain is real: the second call used the first call's result
    assert run.tool_calls[1].arguments == {"city": "Paris"}
    assert run.steps[1].tool_results[0].content == "sunny and 21 C"
    calls = lab.calls()
    assert set(calls[calls["run_id"] == run.id]["model"]) == {"local:smollm2"}
