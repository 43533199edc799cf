"""IntegrationAgent with scripted models: it calls the operations of an OpenAPI document
against a real API on 127.0.0.1 (right path, query and body; auth sent and never logged)
and the tools of a real MCP server subprocess (through the guard, audited, no process left
after the run); bad ``openapi=``/``mcp=`` values and refused hosts fail when it is made."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import psutil
import pytest
from _agent_tools import call

import aillm_lab as al
from aillm_lab.errors import ConfigError, SafetyViolation
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

TOOLS_DIR = Path(__file__).parents[1] / "tools"
MCP_SERVER = [sys.executable, str(TOOLS_DIR / "mcp_notes_server.py"), "--spawn"]
SECRET = "int-5ecret-93b1c0d7e2a4f8"
LOCAL = {"network": {"allow_loopback": True, "allow_hosts": ["127.0.0.1"]}}


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_h3_{name}", TOOLS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


server_mod = _load("_openapi_server")


@pytest.fixture
def api():
    with server_mod.notes_server() as srv:
        yield srv


def _descendants() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "mcp_notes_server.py" in line or "time.sleep(600)" in line:
            found.append(proc)
    return found


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            continue
    return alive


def test_a_scripted_agent_calls_the_api_with_the_right_path_query_and_body(make_lab, api):
    model = ScriptedModel([
        call("listNotes", tag="work", limit=1),
        call("createNote", "c2", body={"title": "ring Ann", "tags": ["home"]}),
        call("getNote", "c3", note_id=3),
        "Created note 3, 'ring Ann'."])
    lab = make_lab(model, safety=LOCAL, openapi_auth={"notes": SECRET})
    agent = al.IntegrationAgent(openapi=[{"spec": server_mod.SPEC, "base_url": api.url,
                                          "auth": "notes"}], lab=lab)
    run = agent.run("file a note to ring Ann, after checking my work notes")
    assert run.status == "completed" and run.output == "Created note 3, 'ring Ann'."
    assert [(r.method, r.path, r.query, r.body) for r in api.requests] == [
        ("GET", "/api/notes", {"tag": ["work"], "limit": ["1"]}, None),
        ("POST", "/api/notes", {}, {"title": "ring Ann", "tags": ["home"]}),
        ("GET", "/api/notes/3", {}, None)]
    assert {r.headers["authorization"] for r in api.requests} == {f"Bearer {SECRET}"}
    results = [r.content for s in run.steps for r in s.tool_results]
    assert '"paper"' in results[0] and '"id": 3' in results[1] and "ring Ann" in results[2]
    shown = {s.name for s in model.requests[0].tools}
    assert {"listNotes", "createNote", "getNote", "whoami", "health"} <= shown
    audit = lab.audit()
    assert list(audit["tool"]) == ["listNotes", "createNote", "getNote"]
    assert set(audit["decision"]) == {"allowed"}
    # the secret is nowhere: trace, audit, call log, saved run, anything under home
    assert SECRET not in run.model_dump_json() and SECRET not in audit.to_string()
    assert SECRET not in lab.calls().to_string()
    lab.close()
    for path in Path(lab.settings.home).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_an_echoed_key_is_redacted_by_the_labs_guard_too(make_lab, api):
    lab = make_lab(ScriptedModel([call("whoami"), "done"]), safety=LOCAL,
                   openapi_auth={"notes": SECRET})
    run = al.IntegrationAgent(openapi=[{"spec": server_mod.SPEC, "base_url": api.url,
                                        "auth": "notes"}], lab=lab).run("who am I?")
    echoed = run.steps[0].tool_results[0].content
    assert "Bearer" in echoed and SECRET not in echoed
    assert SECRET not in lab.tools.guard.redactor.redact(f"x {SECRET} y")


def test_unknown_parameters_from_the_model_are_refused_and_it_repairs_the_call(make_lab,
                                                                               api):
    model = ScriptedModel([call("getNote", note_id=1, verbose=True),
                           call("getNote", "c2", note_id=1), "milk"])
    lab = make_lab(model, safety=LOCAL)
    run = al.IntegrationAgent(openapi=[{"spec": server_mod.SPEC, "base_url": api.url}],
                              lab=lab).run("what is note 1?")
    first = run.steps[0].tool_results[0]
    assert not first.ok and "verbose: unknown argument (remove it)" in first.content
    assert [r.path for r in api.requests] == ["/api/notes/1"]
    assert run.output == "milk"


def test_a_scripted_agent_calls_both_mcp_tools_through_the_guard_and_leaves_no_process(
        make_lab):
    seen: list[psutil.Process] = []

    def reply(messages, request):
        seen.extend(p for p in _descendants() if p.pid not in {s.pid for s in seen})
        done = sum(m.role == "tool" for m in messages)
        return [call("add", a=2, b=3), call("shout", "c2", text="five"), "5, FIVE"][done]

    lab = make_lab(ScriptedModel(reply))
    agent = al.IntegrationAgent(mcp=[MCP_SERVER], lab=lab)
    run = agent.run("add 2 and 3, then shout five")
    assert run.status == "completed" and run.output == "5, FIVE"
    assert [r.content for s in run.steps for r in s.tool_results] == ["5", "FIVE"]
    audit = lab.audit()
    assert list(audit["tool"]) == ["add", "shout"] and set(audit["decision"]) == {"allowed"}
    assert len(seen) == 2  # the server and the child it started, while the run went on
    assert _running(seen) == [] and _descendants() == []


def test_an_opened_agent_keeps_the_servers_for_every_run_inside_the_block(make_lab):
    lab = make_lab(ScriptedModel([call("calc_add", a=1, b=1), "2", call("calc_add", a=2, b=2),
                                  "4"]))
    agent = al.IntegrationAgent(mcp=[{"command": MCP_SERVER, "prefix": "calc_"}], lab=lab)
    assert _descendants() == []  # made, not started
    with agent.open():
        first = _descendants()
        assert len(first) == 2
        assert agent.run("1+1").output == "2"
        assert agent.run("2+2").output == "4"
        assert {p.pid for p in _descendants()} == {p.pid for p in first}
    assert _running(first) == []
    assert list(lab.audit()["tool"]) == ["calc_add", "calc_add"]


def test_openapi_and_mcp_tools_serve_one_run_together(make_lab, api):
    model = ScriptedModel([[call("health"), call("add", "c2", a=40, b=2)], "ok, 42"])
    lab = make_lab(model, safety=LOCAL)
    agent = al.IntegrationAgent(openapi=[{"spec": str(server_mod.SPEC), "base_url": api.url,
                                          "include": ["health"]}], mcp=[MCP_SERVER], lab=lab)
    run = agent.run("is the API up, and what is 40 + 2?")
    assert [r.content.splitlines()[0] for r in run.steps[0].tool_results] == [
        "HTTP 200 OK", "42"]
    assert sorted(lab.audit()["tool"]) == ["add", "health"]
    assert _descendants() == []


def test_a_document_whose_host_the_policy_refuses_fails_when_the_agent_is_made(make_lab):
    lab = make_lab(ScriptedModel(["-"]), safety=LOCAL)
    with pytest.raises(SafetyViolation) as info:
        al.IntegrationAgent(openapi=[{"spec": server_mod.SPEC,
                                      "base_url": "https://api.evil.example"}], lab=lab)
    assert info.value.rule == "network.host_not_allowed"


@pytest.mark.parametrize(("arguments", "field"), [
    ({"openapi": "notes.yaml"}, "openapi"),
    ({"openapi": [42]}, "openapi"),
    ({"mcp": ["python", "server.py"]}, "mcp"),  # one server is a list inside the list
    ({"mcp": [[]]}, "mcp"),
    ({"mcp": [{"command": ["python"], "colour": "red"}]}, "mcp"),
])
def test_bad_openapi_or_mcp_values_are_config_errors_naming_the_field(make_lab, arguments,
                                                                      field):
    lab = make_lab(ScriptedModel(["-"]))
    with pytest.raises(ConfigError) as info:
        al.IntegrationAgent(lab=lab, **arguments)
    assert info.value.fields == (field,)


def test_a_streamed_run_has_the_servers_while_it_streams_and_none_after(make_lab):
    lab = make_lab(ScriptedModel([call("shout", text="hey"), "HEY"]))
    events = list(al.IntegrationAgent(mcp=[MCP_SERVER], lab=lab).stream("shout hey"))
    results = [e.tool_result.content for e in events if e.type == "tool_result"]
    assert results == ["HEY"] and events[-1].type == "final"
    assert events[-1].run.status == "completed" and _descendants() == []


def test_a_run_that_times_out_still_stops_its_servers(make_lab):
    lab = make_lab(ScriptedModel(["never seen"], delay=600))
    run = al.IntegrationAgent(mcp=[MCP_SERVER], lab=lab, max_seconds=1).run("wait")
    assert run.status == "timeout"
    assert _descendants() == []
