"""A long agent run shows a tqdm bar of its steps (out of ``max_steps``) once it has gone on
for ``progress`` seconds; a short run never builds one, and ``progress=False`` turns it off.
The bar is a real ``tqdm.auto`` bar writing to the (captured) stderr."""

from __future__ import annotations

import time

import pytest
import tqdm.auto
from _agent_tools import add, call

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@al.tool
def nap(seconds: float) -> str:
    """Sleep (a sync tool that blocks, so it runs in a worker thread)."""
    time.sleep(seconds)
    return "rested"


@pytest.fixture
def bars(monkeypatch) -> list[tqdm.auto.tqdm]:
    """Every bar the runs build (still real tqdm bars), kept so a test can see each was
    closed by the run rather than by the garbage collector."""
    built: list[tqdm.auto.tqdm] = []

    class Kept(tqdm.auto.tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Kept)
    return built


def script() -> list[object]:
    return [call("nap", "c1", seconds=0.3), call("nap", "c2", seconds=0.31),
            call("nap", "c3", seconds=0.32), "rested three times"]


def test_a_long_run_shows_its_steps_out_of_max_steps_and_closes_the_bar(make_lab, capsys,
                                                                        bars):
    lab = make_lab(ScriptedModel(script()))
    agent = al.ReActAgent(tools=[nap], lab=lab, max_steps=6, progress=0.5, save=False)
    run = agent.run("nap three times")
    assert run.status == "completed" and len(run.steps) == 4
    err = capsys.readouterr().err
    assert f"ReActAgent {run.id}" in err  # the bar names the run
    assert "4/6" in err  # its last state: four steps out of max_steps, drawn on close
    assert "1/6" not in err  # built late: the first steps went by before the threshold
    assert len(bars) == 1 and bars[0].disable  # closed when the run ended
    assert (bars[0].n, bars[0].total) == (4, 6)


def test_a_short_run_and_a_run_with_progress_off_build_no_bar(make_lab, capsys, bars):
    short = al.ReActAgent(tools=[add], lab=make_lab(ScriptedModel([call("add", a=1, b=2),
                                                                   "3"])),
                          progress=0.5, save=False).run("1 + 2")
    assert short.status == "completed"
    off = al.ReActAgent(tools=[nap], lab=make_lab(ScriptedModel(script())), max_steps=6,
                        progress=False, save=False).run("nap three times")
    assert off.status == "completed" and off.latency_s > 0.5
    err = capsys.readouterr().err
    assert "/6" not in err and "step" not in err, err
    assert bars == []


def test_a_run_that_ends_on_a_limit_closes_its_bar_too(make_lab, capsys, bars):
    model = ScriptedModel([call("nap", f"c{i}", seconds=0.2 + i / 100) for i in range(9)])
    run = al.ReActAgent(tools=[nap], lab=make_lab(model), max_steps=4, progress=0.3,
                        save=False).run("nap forever")
    assert run.status == "max_steps"
    assert "4/4" in capsys.readouterr().err
    assert len(bars) == 1 and bars[0].disable


@pytest.mark.parametrize("bad", [-1, "soon", None])
def test_progress_takes_a_bool_or_seconds(bad):
    with pytest.raises(ValueError, match="progress="):
        al.ReActAgent(tools=[add], progress=bad)
