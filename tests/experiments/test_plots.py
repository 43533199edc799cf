"""The figures: one bar per prompt × model with its interval, and one per compared metric."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.experiments.compare import plot_comparison
from aillm_lab.testing import ScriptedModel

ROWS = [{"q": f"{i}", "answer": f"{i}"} for i in range(6)]


def _run(lab, name, reply):
    return al.Experiment(name=name, dataset=ROWS, prompts=["{q}", "say {q}"],
                         models=[ScriptedModel(reply, name=name)],
                         scorers=[al.scorers.exact("answer"), al.scorers.latency()],
                         lab=lab).run(progress=False)


def _bars(fig):
    from bokeh.models import HBar, Whisker

    glyphs = [r.glyph for r in fig.renderers if isinstance(r.glyph, HBar)]
    assert len(glyphs) == 1 and any(isinstance(x, Whisker) for x in fig.center)
    return fig.renderers[0].data_source.data


def test_a_run_plots_each_prompt_and_model_with_its_interval(make_lab):
    run = _run(make_lab(), "echo", lambda m, r: m[-1].text.split()[-1])
    data = _bars(run.plot())
    assert data["label"] == ["scripted:echo · prompt 0", "scripted:echo · prompt 1"]
    assert data["value"] == [1.0, 1.0] and data["lo"] == [1.0, 1.0]
    assert _bars(run.plot("latency"))["value"][0] > 0
    with pytest.raises(ValueError, match="pick one of"):
        run.plot("bleu")


def test_a_comparison_plots_each_metrics_difference(make_lab):
    lab = make_lab()
    a = _run(lab, "wrong", lambda m, r: "?")
    b = _run(lab, "right", lambda m, r: m[-1].text.split()[-1])
    table = al.compare(a, b)
    data = _bars(plot_comparison(table))
    assert data["label"] == ["exact", "latency"] and data["value"][0] == 1.0
