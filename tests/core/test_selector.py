"""lab.select_model: every branch of the ModelSelector (a capability missing, over budget,
latency ranking, fallbacks, context, unknown prices, nothing fits) and its bad input."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.errors import ConfigError, ModelNotAvailable
from aillm_lab.testing import ScriptedModel


class ToolessModel(ScriptedModel):
    """A model that declares no tool calling and no JSON output."""

    supports_tools = False
    supports_structured = False


class TextOnlyModel(ScriptedModel):
    supports_images = False


def _answer(lab: al.Lab, model: ScriptedModel, times: int) -> None:
    for _ in range(times):
        lab.chat("hello", model=model)


def test_a_model_missing_a_needed_capability_is_left_out_and_named(settings_lab):
    lab = settings_lab()
    plain = ToolessModel(name="plain")
    pick = lab.select_model(needs={"tools", "json"}, candidates=[plain, "scripted:echo"])
    assert pick.model == "scripted:echo" and pick.fallbacks == []
    assert "scripted:plain (no tools; no json)" in pick.why
    assert lab.select_model(candidates=[plain, "scripted:echo"]).fallbacks  # no needs: both fit
    with pytest.raises(ModelNotAvailable) as none:
        lab.select_model(needs={"tools", "vision"},
                         candidates=[plain, TextOnlyModel(name="text")])
    assert "scripted:plain: no tools" in str(none.value)
    assert "scripted:text: no vision" in str(none.value)


def test_a_model_over_the_budget_per_call_is_left_out_and_named(settings_lab):
    lab = settings_lab(prices={"scripted:pricey": {"input": 10, "output": 10},
                           "scripted:cheap": {"input": 1, "output": 1}})
    cands = ["scripted:pricey", "scripted:cheap"]
    pick = lab.select_model(max_usd_per_call=0.01, candidates=cands)
    assert pick.model == "scripted:cheap" and pick.fallbacks == []
    assert "scripted:pricey (over budget: ~$0.015000 per call > $0.01)" in pick.why
    cheap = {c.model: c for c in pick.candidates}["scripted:cheap"]
    assert cheap.usd_per_call == pytest.approx(0.0015) and cheap.price_source == "override"
    with pytest.raises(ModelNotAvailable) as none:
        lab.select_model(max_usd_per_call=0.001, candidates=cands)
    assert "max_usd_per_call=0.001" in str(none.value)
    assert "scripted:cheap: over budget: ~$0.001500 per call > $0.001" in str(none.value)
    smaller = lab.select_model(max_usd_per_call=0.001, candidates=cands,
                               input_tokens=100, output_tokens=100)
    assert smaller.model == "scripted:cheap"  # 200 tokens cost $0.0002


def test_an_unknown_price_fits_only_without_a_cap(settings_lab):
    lab = settings_lab()
    unknown = "openai:no-such-model-xyz"
    assert lab.select_model(candidates=[unknown]).model == unknown
    with pytest.raises(ModelNotAvailable) as none:
        lab.select_model(max_usd_per_call=1.0, candidates=[unknown])
    assert "price unknown (set settings.prices for it)" in str(none.value)


def test_the_labs_remaining_budget_caps_what_a_call_may_cost(settings_lab):
    lab = settings_lab(budget_usd=0.001, prices={"scripted:pricey": {"input": 10, "output": 10}})
    pick = lab.select_model(candidates=["scripted:pricey", "scripted:echo"])
    assert pick.model == "scripted:echo"
    assert "over the Lab's remaining budget" in pick.why


def test_the_fastest_observed_model_ranks_first_and_unobserved_ones_last(settings_lab):
    lab = settings_lab()
    fast = ScriptedModel(["ok"] * 3, name="fast")
    slow = ScriptedModel(["ok"] * 3, name="slow", delay=0.15)
    _answer(lab, slow, 3)
    _answer(lab, fast, 3)
    pick = lab.select_model(candidates=["scripted:never", slow, fast])
    assert pick.model == "scripted:fast"
    assert pick.fallbacks == ["scripted:slow", "scripted:never"]
    assert "median latency" in pick.why and "over 3 calls here" in pick.why
    seen = {c.model: c for c in pick.candidates}
    assert seen["scripted:slow"].p50_latency_s >= 0.15 > seen["scripted:fast"].p50_latency_s
    assert seen["scripted:never"].p50_latency_s is None
    assert seen["scripted:never"].observed_calls == 0


def test_a_model_slower_than_max_latency_is_left_out(settings_lab):
    lab = settings_lab()
    _answer(lab, ScriptedModel(["ok"] * 3, name="slow", delay=0.15), 3)
    pick = lab.select_model(max_latency_s=0.1, candidates=["scripted:slow", "scripted:echo"])
    assert pick.model == "scripted:echo"
    assert "scripted:slow (too slow: p95" in pick.why


def test_prefer_cost_ranks_the_cheapest_first_whatever_its_latency(settings_lab):
    lab = settings_lab(prices={"scripted:fast": {"input": 5, "output": 5},
                           "scripted:slow": {"input": 1, "output": 1}})
    _answer(lab, ScriptedModel(["ok"] * 2, name="fast"), 2)
    _answer(lab, ScriptedModel(["ok"] * 2, name="slow", delay=0.1), 2)
    cands = ["scripted:fast", "scripted:slow"]
    assert lab.select_model(candidates=cands).model == "scripted:fast"
    by_cost = lab.select_model(candidates=cands, prefer="cost")
    assert by_cost.model == "scripted:slow" and by_cost.fallbacks == ["scripted:fast"]
    assert "Ranked cheapest of 2 that fit" in by_cost.why


def test_fallbacks_are_the_other_models_that_fit_in_rank_order(settings_lab):
    lab = settings_lab(prices={"scripted:b": {"input": 2, "output": 2},
                           "scripted:c": {"input": 1, "output": 1}})
    plain = ToolessModel(name="plain")
    pick = lab.select_model(needs={"tools"}, prefer="cost",
                            candidates=["scripted:b", plain, "scripted:c", "scripted:echo"])
    assert [pick.model, *pick.fallbacks] == ["scripted:echo", "scripted:c", "scripted:b"]
    frame = pick.to_frame()
    assert frame["model"].tolist() == ["scripted:echo", "scripted:c", "scripted:b",
                                       "scripted:plain"]
    assert frame["fits"].tolist() == [True, True, True, False]
    assert frame["missing"].tolist()[-1] == "no tools"


def test_context_length_comes_from_the_model_or_genai_prices(settings_lab):
    lab = settings_lab()
    long = ScriptedModel(name="long")
    long.context_window = 200_000
    hosted = "openai:gpt-4o-mini"  # genai-prices lists 128k
    pick = lab.select_model(min_context=150_000, candidates=[hosted, long, "scripted:echo"])
    assert pick.model == "scripted:long" and pick.fallbacks == []
    assert "openai:gpt-4o-mini (context 128,000 < 150,000 tokens)" in pick.why
    assert "scripted:echo (context window unknown (need 150,000 tokens))" in pick.why
    pick = lab.select_model(min_context=100_000, candidates=[hosted, long], prefer="cost")
    assert set([pick.model, *pick.fallbacks]) == {hosted, "scripted:long"}


def test_a_candidate_that_cannot_run_here_is_named_not_fatal(settings_lab):
    lab = settings_lab()
    pick = lab.select_model(candidates=["nope:model", "local:no-such-weights", "scripted:echo"])
    assert pick.model == "scripted:echo"
    missing = {c.model: c.missing for c in pick.candidates}
    assert missing["nope:model"][0].startswith("not available here: unknown model provider")
    assert missing["local:no-such-weights"][0].startswith("not available here:")


def test_the_default_candidates_are_the_labs_configured_and_observed_models(settings_lab):
    lab = settings_lab(fallbacks=["scripted:backup"],
                   prices={"scripted:priced": {"input": 1, "output": 1}})
    _answer(lab, ScriptedModel(["ok"], name="used"), 1)
    pick = lab.select_model()
    names = [c.model for c in pick.candidates]
    assert names[0] == lab.default_model_id
    assert {"scripted:backup", "scripted:priced", "scripted:used"} <= set(names)
    assert pick.model == "scripted:used"  # the only one seen answering
    assert al.ModelSelector(lab, candidates=["scripted:echo"]).select().model == \
        "scripted:echo"


def test_nothing_fits_raises_model_not_available_listing_each_candidates_lacks(settings_lab):
    lab = settings_lab(prices={"scripted:pricey": {"input": 100, "output": 100}})
    with pytest.raises(ModelNotAvailable) as none:
        lab.select_model(needs={"tools"}, max_usd_per_call=0.01,
                         candidates=[ToolessModel(name="plain"), "scripted:pricey"])
    text = str(none.value)
    assert "no candidate fits (needs={tools}, max_usd_per_call=0.01)" in text
    assert "scripted:plain: no tools" in text
    assert "scripted:pricey: over budget" in text
    assert none.value.missing["scripted:plain"] == ["no tools"]  # the reasons, as data
    assert none.value.missing["scripted:pricey"][0].startswith("over budget")
    with pytest.raises(ModelNotAvailable, match="no candidate models"):
        lab.select_model(candidates=[])


def test_the_selection_is_a_model_the_lab_can_call(settings_lab):
    lab = settings_lab()
    pick = lab.select_model(needs={"tools", "json"}, max_usd_per_call=0.01,
                            candidates=["scripted:echo"])
    assert lab.chat("ping", model=pick.model).text == "ping"
    assert str(pick) == "scripted:echo"
    html = pick._repr_mimebundle_()["text/html"]
    assert "Selection" in html and "scripted:echo" in html


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"needs": {"telepathy"}}, "needs"),
    ({"max_usd_per_call": -1}, "max_usd_per_call"),
    ({"min_context": 0}, "min_context"),
    ({"max_latency_s": 0}, "max_latency_s"),
    ({"prefer": "vibes"}, "prefer"),
    ({"input_tokens": -5}, "input_tokens"),
])
def test_bad_criteria_are_refused_naming_the_field(settings_lab, kwargs, field):
    lab = settings_lab()
    with pytest.raises(ConfigError) as bad:
        lab.select_model(candidates=["scripted:echo"], **kwargs)
    assert bad.value.fields == (field,)


def test_needs_accept_aliases_and_a_single_string(settings_lab):
    lab = settings_lab()
    assert lab.select_model(needs="images", candidates=["scripted:echo"]).model == \
        "scripted:echo"
    with pytest.raises(ModelNotAvailable, match="no json"):
        lab.select_model(needs=["structured"], candidates=[ToolessModel(name="plain")])
