"""Pricing: genai-prices for hosted models, overrides, free local models, None when unknown."""

from __future__ import annotations

from importlib.metadata import version

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aillm_lab.errors import ConfigError
from aillm_lab.llm import pricing
from aillm_lab.llm.pricing import Price, Pricing, prices_version
from aillm_lab.llm.types import Usage


def test_a_known_openai_model_is_priced_per_million_tokens():
    cost = pricing.price("openai", "gpt-4o-mini", Usage(input_tokens=1_000_000,
                                                       output_tokens=1_000_000))
    assert cost == pytest.approx(0.15 + 0.60)


def test_prices_match_genai_prices_including_cached_input():
    usage = Usage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000,
                  cache_write_tokens=1_000)
    expected = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=10_000, output_tokens=2_000, cache_read_tokens=4_000,
                           cache_write_tokens=1_000),
        "claude-3-5-haiku-latest", provider_id="anthropic").total_price
    got = pricing.price("anthropic", "claude-3-5-haiku-latest", usage)
    assert got == pytest.approx(float(expected))
    uncached = pricing.price("anthropic", "claude-3-5-haiku-latest",
                             Usage(input_tokens=10_000, output_tokens=2_000))
    assert got != uncached  # cache reads and writes are priced differently


@pytest.mark.parametrize(("provider", "model"), [("openai", "no-such-model-xyz"),
                                                 ("acme", "gpt-4o-mini")])
def test_an_unknown_model_or_provider_costs_none_never_zero(provider, model):
    assert pricing.price(provider, model, Usage(input_tokens=10, output_tokens=10)) is None
    assert pricing.worst_case(provider, model, 10, 10) is None
    assert Pricing().source(provider, model) == "unknown"


@pytest.mark.parametrize("provider", ["local", "scripted", "ollama"])
def test_models_on_this_machine_cost_zero(provider):
    assert pricing.price(provider, "anything", Usage(input_tokens=10**6)) == 0.0
    assert pricing.worst_case(provider, "anything", 10**6, 10**6) == 0.0
    assert Pricing().source(provider, "anything") == "free"


def test_an_override_wins_and_prices_cache_reads_as_part_of_the_input():
    p = Pricing(overrides={"openai:gpt-4o-mini": {"input": 1.0, "output": 2.0,
                                                  "cache_read": 0.5}})
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000,
                  cache_read_tokens=400_000)
    assert p.price("openai", "gpt-4o-mini", usage) == pytest.approx(0.6 + 0.2 + 2.0)
    assert p.source("openai", "gpt-4o-mini") == "override"
    assert p.price("acme", "own", Usage(input_tokens=1)) is None


def test_an_override_makes_an_unknown_model_priceable():
    p = Pricing(overrides={"acme:own": Price(input=3.0, output=15.0)})
    assert p.price("acme", "own", Usage(input_tokens=2_000_000)) == pytest.approx(6.0)
    assert p.worst_case("acme", "own", 1_000_000, 1_000_000) == pytest.approx(18.0)


def test_cache_counts_larger_than_the_input_are_clipped_not_negative():
    price = Price(input=1.0, output=0.0, cache_read=0.1)
    usage = Usage(input_tokens=100, cache_read_tokens=1_000)
    assert price.cost(usage) == pytest.approx(100 * 0.1 / 1e6)


@pytest.mark.parametrize("bad", [{"input": 1.0}, {"input": 1.0, "output": 1.0, "cache": 1},
                                 {"input": -1.0, "output": 1.0}])
def test_a_bad_override_fails_at_construction_with_the_allowed_keys(bad):
    with pytest.raises(ConfigError, match="input|must be >= 0"):
        Pricing(overrides={"acme:own": bad})


def test_worst_case_assumes_every_input_token_is_an_expensive_cache_write():
    plain = pricing.price("anthropic", "claude-3-5-haiku-latest",
                          Usage(input_tokens=10_000, output_tokens=100))
    worst = pricing.worst_case("anthropic", "claude-3-5-haiku-latest", 10_000, 100)
    assert plain is not None and worst is not None and worst > plain


usages = st.builds(lambda i, o, r, w: (i, o, r, w), st.integers(0, 400_000),
                   st.integers(0, 8_000), st.integers(0, 400_000), st.integers(0, 400_000))


@settings(max_examples=150, deadline=None, database=None)
@given(usage=usages, spare_in=st.integers(0, 50_000), spare_out=st.integers(0, 4_000),
       model=st.sampled_from([("openai", "gpt-4o-mini"), ("anthropic", "claude-sonnet-4-5"),
                              ("anthropic", "claude-3-5-haiku-latest"), ("acme", "own")]))
def test_no_usage_within_the_limits_costs_more_than_the_worst_case(usage, spare_in, spare_out,
                                                                    model):
    p = Pricing(overrides={"acme:own": {"input": 1.0, "output": 4.0, "cache_read": 0.1,
                                        "cache_write": 1.25}})
    i, o, r, w = usage
    actual = p.price(*model, Usage(input_tokens=i, output_tokens=o, cache_read_tokens=r,
                                   cache_write_tokens=w))
    worst = p.worst_case(*model, i + spare_in, o + spare_out)
    assert actual is not None and worst is not None
    assert actual <= worst


def test_the_genai_prices_version_is_recorded():
    assert prices_version() == version("genai-prices") == genai_prices.__version__
    assert Pricing().version == prices_version()
    assert Pricing().source("openai", "gpt-4o-mini") == f"genai-prices {prices_version()}"
    assert prices_version() in repr(Pricing())


@pytest.mark.parametrize(("provider", "model"), [
    ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "gpt-4.1-nano"),
    ("anthropic", "claude-3-5-haiku-latest"), ("anthropic", "claude-sonnet-4-0"),
    ("google", "gemini-2.5-pro"), ("google", "gemini-1.5-flash")])
def test_the_flat_price_fast_path_matches_genai_prices_own_calculation(provider, model):
    from aillm_lab.llm.pricing import _genai_calc, _genai_price

    for usage in (Usage(input_tokens=1234, output_tokens=567),
                  Usage(input_tokens=300_000, output_tokens=10, cache_read_tokens=200_000),
                  Usage(input_tokens=5000, output_tokens=0, cache_read_tokens=1000,
                        cache_write_tokens=2000)):
        slow, fast = _genai_calc(provider, model, usage), _genai_price(provider, model, usage)
        assert slow is not None, f"{provider}:{model} should be priced"
        assert fast == pytest.approx(slow, rel=1e-12, abs=1e-15)
