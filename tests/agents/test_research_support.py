"""The lexical support check: a cited sentence must share a content word with its source;
through the ResearchAgent, an invented answer is repaired once, then "not found"."""

from __future__ import annotations

from aillm_lab.agents.research_support import unsupported_sentences

TEA = ("Green tea is made from leaves of Camellia sinensis that are steamed or pan-fired "
       "soon after picking, which keeps them from oxidising.")
E4012 = "# Error E4012\n\nThe upload was rejected because the bucket quota was exceeded."


def test_an_invented_answer_citing_an_unrelated_source_is_flagged():
    text = "A zorblat is a red sports car [1]."
    assert unsupported_sentences(text, {1: TEA}, "What is a zorblat?") == [
        "A zorblat is a red sports car [1]."]


def test_faithful_answers_and_paraphrases_pass():
    passages = {1: TEA, 2: E4012}
    assert unsupported_sentences(
        "Green tea leaves are steamed after picking [1]. E4012 means the upload hit the "
        "bucket's quota [2].", passages, "What is green tea? What does E4012 mean?") == []
    # "rejection" meets "rejected" by its prefix; the number meets the title
    assert unsupported_sentences("Error 4012 is a rejection for exceeding a quota [2].",
                                 passages) == []


def test_only_the_unsupported_sentence_is_flagged_and_the_question_proves_nothing():
    text = ("Green tea is pan-fired [1]. The E4012 error is caused by a solar flare [1].")
    assert unsupported_sentences(text, {1: TEA, 2: E4012}, "What causes the E4012 error?") \
        == ["The E4012 error is caused by a solar flare [1]."]


def test_sentences_that_cannot_be_judged_pass():
    assert unsupported_sentences("Yes [1].", {1: TEA}) == []
    assert unsupported_sentences("Is it green tea? It is green tea [1].", {1: "unrelated"},
                                 "Is it green tea?") == []
    assert unsupported_sentences("No citation here at all.", {1: TEA}) == []
    assert unsupported_sentences("Dangling [9].", {1: TEA}) == []  # cite()'s business
    assert unsupported_sentences("", {}) == []


def test_a_sentence_citing_two_sources_needs_support_from_either():
    assert unsupported_sentences("The quota was exceeded [1][2].", {1: TEA, 2: E4012}) == []
    assert unsupported_sentences("Zorblats are fast [1][2].", {1: TEA, 2: E4012}) == [
        "Zorblats are fast [1][2]."]


# -- through the ResearchAgent ---------------------------------------------------------------
DOCS = {"tea.txt": TEA + "\n", "e4012.md": E4012 + "\n"}


def _lab(make_lab, tmp_path, model):
    folder = tmp_path / "docs_support"
    folder.mkdir()
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    lab = make_lab(model)
    assert lab.ingest(folder, progress=False).docs_added == len(DOCS)
    return lab


def test_an_answer_invented_twice_is_not_found_with_its_claims_listed(make_lab, tmp_path):
    import aillm_lab as al
    from aillm_lab.agents.research import NOT_FOUND
    from aillm_lab.testing import ScriptedModel

    model = ScriptedModel(["A zorblat is a red sports car [1].",
                           "Zorblats are fast red cars [1]."])
    run = al.ResearchAgent(lab=_lab(make_lab, tmp_path, model)).run("What is a zorblat?")
    assert run.status == "completed" and len(run.steps) == 2
    repair = run.steps[0].observations[0].text
    assert "not supported by the sources" in repair and "red sports car" in repair
    answer = run.output
    assert answer.text == NOT_FOUND and answer.found is False and not answer.supported
    assert answer.unsupported_claims == ["Zorblats are fast red cars [1]."]


def test_a_repaired_answer_that_the_source_supports_is_accepted(make_lab, tmp_path):
    import re

    import aillm_lab as al
    from aillm_lab.testing import ScriptedModel

    def faithful(messages, request):
        label = next(n for n, text in re.findall(r"(?m)^\[(\d+)\] \((.*)$", messages[0].text)
                     if "tea" in text)
        return f"Green tea is steamed soon after picking [{label}]."

    replies = iter(["Green tea comes from the moon [1].", None])
    model = ScriptedModel(lambda m, r: next(replies) or faithful(m, r))
    run = al.ResearchAgent(lab=_lab(make_lab, tmp_path, model)).run("How is green tea made?")
    assert run.output.found and run.output.supported, run.output
    assert run.output.unsupported_claims == [] and "steamed" in run.output.text
