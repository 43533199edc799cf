"""lab.embed / al.embed: local MiniLM by default, a provider's embeddings through the gateway."""

from __future__ import annotations

import math

import pytest

import aillm_lab as al
from aillm_lab.testing import FakeOpenAI


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b))


def test_default_embeddings_are_local_minilm_and_put_paraphrases_close(lab_home):
    with al.Lab(home=lab_home) as lab:
        cat, kitten, tax = lab.embed(["A cat sits on the mat.", "A kitten rests on a rug.",
                                      "Quarterly corporate tax filing deadlines."])
        assert len(cat) == 384 and math.isclose(sum(x * x for x in cat), 1.0, rel_tol=1e-4)
        assert _cos(cat, kitten) > _cos(cat, tax) + 0.2
        assert lab.embed("one text") == [lab.embed(["one text"])[0]]
        assert lab.embed([]) == []


def test_a_provider_model_embeds_through_the_gateway_and_is_logged(lab_home):
    with FakeOpenAI() as server, al.Lab(home=lab_home) as lab:
        vectors = lab.embed(["alpha", "beta"],
                            model=f"openai:text-embedding-3-small@{server.url}")
        assert len(vectors) == 2 and vectors[0] != vectors[1]
        assert server.last_request.path == "/v1/embeddings"
        assert server.last_request.body["input"] == ["alpha", "beta"]
        row = lab.calls().iloc[-1]
        assert (row["model"], row["status"]) == ("openai:text-embedding-3-small", "ok")


def test_embed_names_the_argument_when_given_something_that_is_not_text(lab_home):
    with al.Lab(home=lab_home) as lab, pytest.raises(TypeError, match="texts: .* int"):
        lab.embed(["fine", 3])
