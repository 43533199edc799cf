"""A saved agent run holds no API key: tool-call arguments, tool results and the final answer
go through the Safety Guard's Redactor before ``<home>/runs/<id>.agent.json`` is written (as
the audit log does), while the run the caller gets is unchanged and the file reloads.

Finding R2 of the second red-team round: ``write_file`` content ``key=sk-proj-...`` and an
answer quoting the key were stored in clear, though the audit hid them."""

from __future__ import annotations

import json
import secrets

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

KEY = "sk-test-" + secrets.token_hex(16)
PIECE = KEY[10:26]  # not key-shaped: only the guard's known secrets can hide it


def test_a_saved_run_keeps_no_api_key_and_reloads(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    model = ScriptedModel([
        al.ToolCall(id="c1", name="write_file", arguments={"path": "out.txt",
                                                          "content": f"key={KEY}"}),
        al.ToolCall(id="c2", name="read_file", arguments={"path": "out.txt"}),
        al.ToolCall(id="c3", name="write_file", arguments={"path": "part.txt",
                                                          "content": f"part {PIECE}"}),
        f"The key is {KEY}; a piece of it is {PIECE}."])
    lab = al.Lab(al.LabSettings(home=tmp_path / "home"), runner=runner)
    try:
        agent = al.ReActAgent(lab=lab, model=model, tools=["write_file", "read_file"])
        run = agent.run("store the key")
        assert run.status == "completed", run.error
        assert KEY in run.output  # the caller's run is not changed
        assert run.steps[0].tool_calls[0].arguments["content"] == f"key={KEY}"

        files = list((tmp_path / "home" / "runs").glob("*.agent.json"))
        assert [f.name for f in files] == [f"{run.id}.agent.json"]
        text = files[0].read_text(encoding="utf-8")
        json.loads(text)  # still valid JSON
        assert KEY not in text and PIECE not in text
        assert KEY[:12] not in text and KEY[-12:] not in text

        saved = lab.load_run(run.id)
        assert saved.id == run.id and saved.status == "completed"
        assert len(saved.steps) == len(run.steps)
        assert KEY not in saved.output and "The key is" in saved.output
        assert saved.steps[0].tool_calls[0].arguments["path"] == "out.txt"
        assert list(lab.runs()["id"]) == [run.id]
    finally:
        lab.close()


def test_an_orchestrated_run_and_its_sub_runs_keep_no_api_key(tmp_path, runner, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    lab = al.Lab(al.LabSettings(home=tmp_path / "home"), runner=runner)
    try:
        model = ScriptedModel(lambda messages, request: f"done; the key was {KEY}")
        run = al.Orchestrator(lab, model=model).solve(f"List the files in my workspace; {KEY}")
        assert run.status == "completed", run.error
        files = list((tmp_path / "home" / "runs").glob("*.json"))
        assert len(files) >= 2  # the orchestrator's run and its sub-run
        for file in files:
            text = file.read_text(encoding="utf-8")
            json.loads(text)
            assert KEY not in text and PIECE not in text, file.name
    finally:
        lab.close()
