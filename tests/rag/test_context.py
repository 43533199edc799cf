"""ContextManager: the budget holds by the real tokenizer, priorities decide, citations check."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aillm_lab.llm.types import Message
from aillm_lab.rag.context import (
    ApproxCounter,
    ContextManager,
    ContextOverflow,
    FunctionCounter,
    Source,
    cite,
    counter_for,
)
from aillm_lab.rag.embeddings import local_model_path

SENTENCES = st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "Zs"]),
                    min_size=1, max_size=300)


@pytest.fixture(scope="module")
def minilm_counter():
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(local_model_path() / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    return FunctionCounter(lambda t: len(tok.encode(t, add_special_tokens=False).ids),
                           "all-MiniLM-L6-v2")


def test_openai_models_count_with_the_real_bpe_offline():
    counter = counter_for("openai:gpt-4o-mini@http://127.0.0.1:1/v1")
    assert counter.exact and "o200k" in counter.name
    assert counter.count("Hello world, the capital of France is Paris.") == 10


def test_unknown_providers_get_a_stated_over_estimate():
    counter = counter_for("anthropic:claude-3-5-haiku-latest")
    assert not counter.exact and "approx" in counter.name
    assert counter.count("x" * 35) == 10


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(system=SENTENCES, memories=st.lists(SENTENCES, max_size=6),
       chunks=st.lists(SENTENCES, max_size=12), turns=st.lists(SENTENCES, min_size=1, max_size=8),
       budget=st.integers(min_value=400, max_value=1500))
def test_packing_never_exceeds_the_budget_by_the_real_tokenizer(
        system, memories, chunks, turns, budget):
    counter = counter_for("openai:gpt-4o")
    cm = ContextManager(counter=counter, budget_tokens=budget, per_message_tokens=4)
    cm.system(system[:200])
    for m in memories:
        cm.memory(m)
    cm.sources(chunks)
    history = [Message(role="user" if i % 2 == 0 else "assistant", content=t[:100])
               for i, t in enumerate(turns)]
    cm.history(history)
    packed = cm.pack()
    real = sum(counter.count(m.text) + 4 for m in packed.messages)
    assert real == packed.tokens <= budget
    kept_text = {i.text for i in packed.kept}
    assert system[:200] in kept_text and history[-1 if len(turns) % 2 else -2].text in kept_text


@settings(max_examples=25, deadline=None)
@given(chunks=st.lists(SENTENCES, min_size=1, max_size=15),
       budget=st.integers(min_value=60, max_value=600))
def test_packing_holds_with_the_local_hf_tokenizer_too(minilm_counter, chunks, budget):
    packed = ContextManager(counter=minilm_counter, budget_tokens=budget).system(
        "Answer from the sources.").sources(chunks).pack()
    assert sum(minilm_counter.count(m.text) + 4 for m in packed.messages) <= budget


def test_the_highest_priority_items_are_kept_and_whole_items_dropped():
    counter = ApproxCounter(chars_per_token=1.0)  # 1 char = 1 token: easy arithmetic
    cm = ContextManager(counter=counter, budget_tokens=220, per_message_tokens=0)
    cm.system("S" * 20).memory("M" * 40, priority=90).memory("m" * 40, priority=10)
    cm.sources(["best " * 8, "second " * 8, "worst " * 8])
    cm.history([Message.user("question?")])
    packed = cm.pack()
    kept = [(i.kind, i.text[:4]) for i in packed.kept]
    assert ("memory", "MMMM") in kept and ("source", "best") in kept
    assert ("memory", "mmmm") not in kept and ("source", "wors") not in kept
    assert all(i.text in packed.messages[0].text or i.kind == "history" for i in packed.kept)
    assert all(i.text not in packed.messages[0].text for i in packed.dropped)  # never cut
    assert packed.messages[-1].text == "question?"


def test_sources_are_numbered_in_rank_order_and_cite_maps_markers_back():
    cm = ContextManager(budget_tokens=2000).system("sys")
    cm.sources([{"text": "Paris is the capital.", "source": "france.md"},
                {"text": "Rome is the capital.", "source": "italy.md"}])
    cm.history([Message.user("capitals?")])
    packed = cm.pack()
    assert "[1] (france.md) Paris" in packed.messages[0].text
    assert "[2] (italy.md) Rome" in packed.messages[0].text
    result = packed.cite("Paris [1] and Rome [1, 2].")
    assert [s.source for s in result.cited] == ["france.md", "italy.md"] and result.ok


def test_a_citation_to_a_source_that_was_not_given_is_flagged():
    sources = [Source(label=n, source=f"doc{n}.md", text="t") for n in range(1, 6)]
    result = cite("As shown in [2] and [7]; see also [3;9].", sources)
    assert result.unknown == [7, 9] and not result.ok
    assert [s.label for s in result.cited] == [2, 3]
    assert result.uncited == [1, 4, 5]


def test_newer_history_outranks_older_and_the_last_question_always_stays():
    counter = ApproxCounter(chars_per_token=1.0)
    turns = [Message.user("old " * 10), Message.assistant("older answer " * 3),
             Message.user("new question")]
    packed = ContextManager(counter=counter, budget_tokens=70, per_message_tokens=0).history(
        turns).pack()
    assert [m.text for m in packed.messages] == ["older answer " * 3, "new question"]


def test_bad_input_fails_with_the_argument_named():
    with pytest.raises(ValueError, match="budget_tokens"):
        ContextManager(budget_tokens=0)
    with pytest.raises(ValueError, match="reserve_output"):
        ContextManager(budget_tokens=100, reserve_output=100)
    with pytest.raises(TypeError, match="model"):
        counter_for(3.5)
    with pytest.raises(ContextOverflow, match="budget"):
        ContextManager(counter=ApproxCounter(chars_per_token=1.0), budget_tokens=10).system(
            "x" * 50).pack()
    assert math.isinf(ContextManager().system("s").items[0].priority)
