"""Every result class shows in Jupyter as text/plain and text/html (``_repr_mimebundle_``),
with what it holds escaped, so a model's or a tool's text can never inject markup."""

from __future__ import annotations

import pytest

import aillm_lab as al
from aillm_lab.memory.long_term import LongTermMemory
from aillm_lab.testing import HashingEmbedder, ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")
EVIL = "<script>alert(1)</script>"


def bundle_of(value: object) -> dict[str, str]:
    bundle = value._repr_mimebundle_()  # type: ignore[attr-defined]
    assert set(bundle) == {"text/plain", "text/html"}
    assert bundle["text/plain"] == repr(value)
    assert EVIL not in bundle["text/html"]  # escaped, never live markup
    return bundle


def test_a_completion_shows_its_text_model_and_tool_calls():
    reply = al.Completion(text=f"Paris {EVIL}", model="scripted:x",
                          tool_calls=[al.ToolCall(id="c1", name="add", arguments={"a": 1})],
                          usage=al.Usage(input_tokens=3, output_tokens=2), latency_s=0.25)
    html = bundle_of(reply)["text/html"]
    assert "Paris &lt;script&gt;" in html and "scripted:x" in html
    assert "3 in, 2 out" in html and "0.25 s" in html and "add(" in html


def test_a_tool_result_shows_ok_refused_or_error():
    refused = al.ToolResult(name="read_file", ok=False, rule="path.outside_workspace",
                            content=f"Refused {EVIL}")
    assert "read_file: refused (path.outside_workspace)" in bundle_of(refused)["text/html"]
    assert "read_file: ok" in bundle_of(al.ToolResult(name="read_file"))["text/html"]
    failed = al.ToolResult(name="add", ok=False, content="ValueError", truncated=True)
    html = bundle_of(failed)["text/html"]
    assert "add: error" in html and "truncated" in html


def test_an_agent_run_and_a_lab_show_both_types(make_lab):
    lab = make_lab(ScriptedModel([f"done {EVIL}"], name="x"))
    run = al.ReActAgent(lab=lab).run("say done")
    assert "done &lt;script&gt;" in bundle_of(run)["text/html"]
    html = bundle_of(lab)["text/html"]
    assert str(lab.settings.home) in html and "scripted:x" in html
    assert "spent in this process" in html


def test_an_agent_runs_html_has_a_collapsible_block_per_step_with_its_numbers(make_lab):
    @al.tool
    def echo(text: str) -> str:
        """Say it back."""
        return text

    model = ScriptedModel([al.ToolCall(id="c1", name="echo", arguments={"text": EVIL}),
                           "said it"], name="x")
    run = al.ReActAgent(tools=[echo], lab=make_lab(model)).run("echo it")
    html = bundle_of(run)["text/html"]
    assert html.count("<details><summary>step ") == len(run.steps) == 2
    for step in run.steps:
        assert (f"{step.usage.input_tokens} in / {step.usage.output_tokens} out tokens · "
                f"${step.cost_usd:.4f} · {step.latency_s:.2f} s</small>") in html
    assert "<code>echo(" in html and "&lt;script&gt;" in html


def test_memories_and_hits_show_both_types(tmp_path, runner):
    mem = LongTermMemory(db_path=tmp_path / "lab.db", embedder=HashingEmbedder(),
                         runner=runner)
    try:
        memory = mem.add(f"the user likes tea {EVIL}")
        hits = mem.search("tea", k=1)
        for value in (memory, hits, hits[0], mem.list()):
            assert "likes tea &lt;script&gt;" in bundle_of(value)["text/html"]
    finally:
        mem.close()


def test_include_and_exclude_pick_the_types():
    reply = al.Completion(text="x")
    assert set(reply._repr_mimebundle_(include=["text/plain"])) == {"text/plain"}
    assert set(reply._repr_mimebundle_(exclude=["text/plain"])) == {"text/html"}
