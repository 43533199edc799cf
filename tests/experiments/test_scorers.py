"""Each built-in scorer on the plain case and its edges: an empty answer, non-JSON, a missing
key, a missing reference, a bad pattern or schema."""

from __future__ import annotations

import pytest

import aillm_lab as al

ITEM = {"answer": "Paris", "n": 42}


@pytest.mark.parametrize(("output", "expected"), [
    ("Paris", 1.0), ("  Paris \n", 1.0), ("paris", 0.0), ("Paris.", 0.0), ("", 0.0),
    (None, 0.0),
])
def test_exact_compares_the_stripped_output(output, expected):
    assert al.scorers.exact("answer")(output, ITEM) == expected


def test_exact_can_fold_case_and_has_no_score_without_a_reference():
    assert al.scorers.exact("answer", ignore_case=True)("PARIS", ITEM) == 1.0
    assert al.scorers.exact("answer")("Paris", {"question": "?"}) is None
    assert al.scorers.exact("answer")("Paris", {"answer": None}) is None
    assert al.scorers.exact("n")("42", ITEM) == 1.0  # a number reference compares as text


@pytest.mark.parametrize(("output", "expected"), [
    ("The capital is Paris.", 1.0), ("the capital is PARIS", 1.0), ("Lyon", 0.0), ("", 0.0),
])
def test_contains_finds_the_reference_anywhere_case_folded(output, expected):
    assert al.scorers.contains("answer")(output, ITEM) == expected


def test_contains_with_an_empty_reference_is_not_a_free_point():
    assert al.scorers.contains("answer")("anything", {"answer": ""}) == 0.0
    assert al.scorers.contains("answer", ignore_case=False)("PARIS", ITEM) == 0.0


def test_regex_searches_the_output_and_a_bad_pattern_is_a_config_error():
    scorer = al.scorers.regex(r"\b\d{4}\b")
    assert scorer("in 1889 it opened", ITEM) == 1.0
    assert scorer("in 18890", ITEM) == 0.0
    assert scorer("", ITEM) == 0.0 and scorer(None, ITEM) == 0.0
    with pytest.raises(al.ConfigError, match="does not compile") as info:
        al.scorers.regex("(unclosed")
    assert info.value.fields == ("pattern",)


SCHEMA = {"type": "object", "properties": {"city": {"type": "string"},
                                           "pop": {"type": "integer"}},
          "required": ["city", "pop"]}


@pytest.mark.parametrize(("output", "expected"), [
    ('{"city": "Paris", "pop": 2100000}', 1.0),
    ('```json\n{"city": "Paris", "pop": 2100000}\n```', 1.0),
    ('{"city": "Paris"}', 0.0),                    # a missing key
    ('{"city": "Paris", "pop": "many"}', 0.0),     # a wrong type
    ("Paris has 2.1M people", 0.0),                # not JSON
    ("", 0.0), (None, 0.0),                        # empty
    ('{"city": "Paris", "pop": 1', 0.0),           # truncated
])
def test_json_valid_checks_parse_and_schema(output, expected):
    assert al.scorers.json_valid(SCHEMA)(output, ITEM) == expected


def test_json_valid_without_a_schema_only_parses_and_a_bad_schema_is_refused():
    scorer = al.scorers.json_valid()
    assert scorer("[1, 2]", ITEM) == 1.0 and scorer("null", ITEM) == 1.0
    assert scorer("{'single': 'quotes'}", ITEM) == 0.0
    with pytest.raises(al.ConfigError, match="not a valid JSON schema"):
        al.scorers.json_valid({"type": "no-such-type"})


@pytest.mark.parametrize(("output", "expected"), [
    ("42", 1.0), ("The answer is 42.", 1.0), ("6 times 7 is 42", 1.0), ("42.0", 1.0),
    ("41", 0.0), ("no number here", 0.0), ("", 0.0), ("4,2", 0.0), ("-42", 0.0),
])
def test_numeric_reads_the_last_number(output, expected):
    assert al.scorers.numeric("n")(output, ITEM) == expected


def test_numeric_tolerances_thousands_and_references_that_are_not_numbers():
    assert al.scorers.numeric("n", abs_tol=0.5)("42.4", ITEM) == 1.0
    assert al.scorers.numeric("n", abs_tol=0.5)("42.6", ITEM) == 0.0
    assert al.scorers.numeric("n", rel_tol=0.1)("45", ITEM) == 1.0
    assert al.scorers.numeric("pop")("about 1,234,567", {"pop": "1234567"}) == 1.0
    assert al.scorers.numeric("pop")("1e3", {"pop": 1000}) == 1.0
    assert al.scorers.numeric("answer")("42", ITEM) is None  # "Paris" is no number
    assert al.scorers.numeric("missing")("42", ITEM) is None
    with pytest.raises(al.ConfigError, match="tolerances"):
        al.scorers.numeric("n", abs_tol=-1)


def test_latency_and_cost_read_the_cell_and_lower_is_better():
    cell = {"latency_s": 0.25, "cost_usd": 0.001}
    assert al.scorers.latency()("x", ITEM, cell) == 0.25
    assert al.scorers.cost()("x", ITEM, cell) == 0.001
    assert al.scorers.cost()("x", ITEM, {"cost_usd": None}) is None  # price unknown
    assert al.scorers.latency()(None, ITEM, {}) is None
    assert not al.scorers.latency().higher_is_better and not al.scorers.cost().higher_is_better
    assert al.scorers.exact().higher_is_better


def test_a_plain_function_is_a_scorer_named_after_itself():
    from aillm_lab.experiments.scorers import as_scorer

    def shouting(output, item):
        return output.isupper()

    def tokens(output, item, cell):
        return cell["output_tokens"]

    assert as_scorer(shouting).name == "shouting" and as_scorer(shouting)("HI", {}) == 1.0
    assert as_scorer(tokens)("a b", {}, {"output_tokens": 2}) == 2.0
    with pytest.raises(TypeError, match="return a number"):
        as_scorer(lambda output, item: "yes")("x", {})
    with pytest.raises(al.ConfigError, match="not a function"):
        as_scorer("exact")


RELEVANT = {"relevant": ["d1", "d4"]}


def test_recall_at_k_counts_the_relevant_ids_in_the_first_k():
    scorer = al.scorers.recall_at_k("relevant", k=3)
    assert scorer.name == "recall@3"
    assert scorer('["d1", "d2", "d3", "d4"]', RELEVANT) == 0.5
    assert scorer('["d4", "d1"]', RELEVANT) == 1.0
    assert scorer("d2, d4", RELEVANT) == 0.5               # comma separated text
    assert scorer("```json\n[\"d1\"]\n```", RELEVANT) == 0.5
    assert scorer("", RELEVANT) == 0.0 and scorer(None, RELEVANT) == 0.0
    assert scorer('["d1"]', {"relevant": []}) is None         # nothing to find: no score
    assert scorer('["d1"]', {"relevant": '["d1"]'}) == 1.0    # a CSV cell holding JSON
    assert scorer("[1, 4]", {"relevant": [1, 4]}) == 1.0      # numeric ids
    with pytest.raises(al.ConfigError, match="k=0"):
        al.scorers.recall_at_k(k=0)


def test_mrr_is_one_over_the_first_relevant_rank():
    scorer = al.scorers.mrr("relevant")
    assert scorer('["d1", "d2"]', RELEVANT) == 1.0
    assert scorer('["d2", "d3", "d4"]', RELEVANT) == pytest.approx(1 / 3)
    assert scorer('["d2", "d2", "d4"]', RELEVANT) == 0.5      # a repeat keeps its first rank
    assert scorer('["d9"]', RELEVANT) == 0.0 and scorer("", RELEVANT) == 0.0


def test_ndcg_is_one_for_the_ideal_order_and_uses_graded_relevance():
    binary = al.scorers.ndcg_at_k("relevant", k=5)
    assert binary('["d1", "d4", "d2"]', RELEVANT) == pytest.approx(1.0)
    assert binary('["d2", "d1", "d4"]', RELEVANT) == pytest.approx(
        (1 / 1.5849625 + 1 / 2) / (1 + 1 / 1.5849625))
    assert binary('["d2"]', RELEVANT) == 0.0 and binary("", RELEVANT) == 0.0
    graded = {"relevant": {"a": 3, "b": 1}}
    assert binary('["a", "b"]', graded) == pytest.approx(1.0)
    assert binary('["b", "a"]', graded) < 1.0
    assert binary('["a"]', {"relevant": {"a": 0}}) is None  # no relevant document at all
    assert al.scorers.ndcg_at_k(k=1)('["d4", "d1"]', RELEVANT) == pytest.approx(1.0)
