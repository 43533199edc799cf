"""OpenAPI documents as tools, against a real Notes API served on 127.0.0.1 by the test:
schemas from parameters and bodies ($refs resolved), calls with the right path, query and
body through the Safety Guard, auth sent but never logged, the network policy's host rules,
and bad documents or arguments refused with errors that name the problem."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import pytest
import yaml
from _openapi_server import SPEC, notes_server

import aillm_lab as al
from aillm_lab.errors import ConfigError, SafetyViolation
from aillm_lab.tools.base import ValidationError
from aillm_lab.tools.netguard import FetchError
from aillm_lab.tools.openapi import OpenAPISpecError, json_schema

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

SECRET = "nts-5ecret-7f3a9c2e41b8d6"
LOCAL = {"network": {"allow_loopback": True, "allow_hosts": ["127.0.0.1"]}}


@pytest.fixture
def server():
    with notes_server() as srv:
        yield srv


@pytest.fixture
def lab(make_lab):
    return make_lab(safety=LOCAL, openapi_auth={"notes": SECRET})


def _tools(lab: al.Lab, url: str, **options) -> dict[str, al.Tool]:
    tools = al.openapi_tools(SPEC, base_url=url, lab=lab, **options)
    return {t.name: t for t in tools}


def test_each_operation_is_a_tool_whose_schema_comes_from_its_parameters_and_body(lab):
    tools = _tools(lab, "http://127.0.0.1:9/api", auth="notes")
    assert list(tools) == ["listNotes", "createNote", "getNote", "whoami", "health"]
    assert all(t.risk is al.RiskLevel.NETWORK for t in tools.values())
    listing = tools["listNotes"].spec
    assert "List notes" in listing.description and "(GET /notes)" in listing.description
    assert listing.parameters["properties"]["tag"] == {  # a $ref to components/parameters
        "type": "string", "description": "only notes with this tag"}
    assert listing.parameters["additionalProperties"] is False
    assert listing.parameters["required"] == []
    body = tools["createNote"].spec.parameters
    assert body["required"] == ["body"]
    note = body["properties"]["body"]  # $ref to components/schemas, nested $ref inside
    assert note["required"] == ["title"] and note["additionalProperties"] is False
    assert note["properties"]["priority"] == {"type": ["string", "null"],
                                              "enum": ["low", "high", None]}
    one = tools["getNote"].spec.parameters  # a path-level parameter joins the operation's
    assert one["required"] == ["note_id"]
    assert set(one["properties"]) == {"note_id", "X-Trace"}
    assert "$ref" not in str([t.spec.parameters for t in tools.values()])


def test_calls_through_the_guard_send_the_right_path_query_and_body(lab, server):
    tools = _tools(lab, server.url, auth="notes")
    guard = lab.tools.guard
    listed = lab.runner.run(guard.call(tools["listNotes"], {"tag": "shop", "limit": 5}))
    assert listed.content.startswith("HTTP 200") and '"milk"' in listed.content
    made = lab.runner.run(guard.call(tools["createNote"],
                                     {"body": {"title": "call mum", "tags": ["home"]}}))
    assert made.content.startswith("HTTP 201") and '"id": 3' in made.content
    got = lab.runner.run(guard.call(tools["getNote"], {"note_id": 3, "X-Trace": "t-1"}))
    assert '"call mum"' in got.content
    seen = [(r.method, r.path, r.query, r.body) for r in server.requests]
    assert seen == [("GET", "/api/notes", {"tag": ["shop"], "limit": ["5"]}, None),
                    ("POST", "/api/notes", {}, {"title": "call mum", "tags": ["home"]}),
                    ("GET", "/api/notes/3", {}, None)]
    assert server.requests[1].headers["content-type"] == "application/json"
    assert server.requests[2].headers["x-trace"] == "t-1"
    audit = lab.audit()
    assert list(audit["tool"]) == ["listNotes", "createNote", "getNote"]
    assert set(audit["decision"]) == {"allowed"} and set(audit["risk"]) == {"network"}


def test_the_auth_header_is_sent_but_never_reaches_results_audit_or_logs(lab, server,
                                                                          caplog):
    caplog.set_level(logging.DEBUG)
    tools = _tools(lab, server.url, auth="notes")
    result = lab.runner.run(lab.tools.guard.invoke(tools["whoami"], {}))
    failed = lab.runner.run(lab.tools.guard.invoke(tools["getNote"], {"note_id": 99}))
    lab.runner.run(lab.tools.guard.invoke(tools["health"], {}))
    assert [r.headers.get("authorization") for r in server.requests] == [
        f"Bearer {SECRET}", f"Bearer {SECRET}", None]  # health says `security: []`
    assert result.ok and "Bearer" in result.content and SECRET not in result.content
    direct = lab.runner.run(tools["whoami"].acall({}))  # the tool redacts an echo itself
    assert "Bearer [REDACTED" in direct and SECRET not in direct
    assert not failed.ok and "HTTP 404" in failed.content and SECRET not in failed.content
    assert SECRET not in repr(tools["whoami"]) + str(tools["whoami"].spec)
    audit = lab.audit()
    assert len(audit) == 3 and SECRET not in audit.to_string()
    assert SECRET not in caplog.text
    lab.close()
    for path in Path(lab.settings.home).rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(("scheme", "where"), [
    ({"type": "apiKey", "in": "header", "name": "X-Api-Key"}, "header"),
    ({"type": "apiKey", "in": "query", "name": "api_key"}, "query")])
def test_an_api_key_goes_where_the_security_scheme_says(lab, server, scheme, where):
    doc = yaml.safe_load(SPEC.read_text())
    doc["components"]["securitySchemes"] = {"key": scheme}
    doc["security"] = [{"key": []}]
    tools = {t.name: t for t in al.openapi_tools(doc, base_url=server.url, lab=lab,
                                                  auth="notes")}
    result = lab.runner.run(lab.tools.guard.invoke(tools["getNote"], {"note_id": 404}))
    seen = server.requests[-1]
    if where == "header":
        assert seen.headers["x-api-key"] == SECRET and "authorization" not in seen.headers
    else:
        assert seen.query["api_key"] == [SECRET]
    assert not result.ok and SECRET not in result.content
    assert SECRET not in lab.audit().to_string()


def test_the_secret_is_found_by_the_apis_host_when_auth_is_not_named(make_lab, server):
    port = server.url.split(":")[2].split("/")[0]
    lab = make_lab(safety=LOCAL, openapi_auth={f"127.0.0.1:{port}": SECRET})
    tools = _tools(lab, server.url)
    lab.runner.run(lab.tools.guard.call(tools["whoami"], {}))
    assert server.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


def test_an_unknown_auth_name_is_a_config_error_naming_the_setting(lab):
    with pytest.raises(ConfigError, match="openapi_auth") as info:
        _tools(lab, "http://127.0.0.1:9/api", auth="nope")
    assert "notes" in str(info.value) and SECRET not in str(info.value)


def test_a_spec_pointing_at_a_host_off_the_allow_list_is_refused(lab, server):
    doc = yaml.safe_load(SPEC.read_text())
    doc["servers"] = [{"url": "https://api.evil.example/v1"}]
    with pytest.raises(SafetyViolation) as info:
        al.openapi_tools(doc, lab=lab)
    assert info.value.rule == "network.host_not_allowed"
    with pytest.raises(SafetyViolation):
        al.openapi_tools(SPEC, base_url="http://169.254.169.254/", lab=lab)
    assert server.requests == []


def test_the_default_policy_refuses_a_loopback_api(make_lab, server):
    lab = make_lab()  # no allow_loopback: 127.0.0.1 is a private address
    with pytest.raises(SafetyViolation) as info:
        al.openapi_tools(SPEC, base_url=server.url, lab=lab)
    assert info.value.rule == "network.private_address"
    assert "allow_loopback = true" in info.value.detail
    assert server.requests == []


def test_a_spec_at_a_url_is_fetched_through_the_web_policy(lab, make_lab, server):
    root = server.url.removesuffix("/api")
    tools = al.openapi_tools(f"{root}/openapi.yaml", base_url=server.url, lab=lab)
    assert [t.name for t in tools][:2] == ["listNotes", "createNote"]
    assert server.requests[-1].path == "/openapi.yaml"
    strict = make_lab(safety={"network": {"allow_hosts": ["example.org"]}})
    with pytest.raises(SafetyViolation):
        al.openapi_tools(f"{root}/openapi.yaml", base_url=server.url, lab=strict)
    assert len(server.requests) == 1


def test_unknown_and_ill_typed_arguments_are_rejected_by_the_schema_before_any_request(
        lab, server):
    tools = _tools(lab, server.url, auth="notes")
    guard = lab.tools.guard
    extra = lab.runner.run(guard.invoke(tools["getNote"], {"note_id": 1, "verbose": True}))
    assert not extra.ok and "verbose: unknown argument (remove it)" in extra.content
    missing = lab.runner.run(guard.invoke(tools["getNote"], {}))
    assert "note_id: required argument is missing" in missing.content
    typed = lab.runner.run(guard.invoke(tools["listNotes"], {"limit": 500}))
    assert not typed.ok and "limit" in typed.content and "50" in typed.content
    nested = lab.runner.run(guard.invoke(tools["createNote"], {"body": {"title": "x",
                                                                        "colour": "red"}}))
    assert "body.colour: unknown argument" in nested.content
    assert "Expected parameters: note_id (integer, required)" in extra.content
    assert server.requests == []
    assert list(lab.audit()["decision"]) == ["error"] * 4
    with pytest.raises(ValidationError, match="note_id"):  # the raising door
        lab.runner.run(guard.call(tools["getNote"], {"note_id": "one"}))


def test_a_path_parameter_cannot_climb_to_another_path(lab, server):
    doc = yaml.safe_load(SPEC.read_text())
    doc["paths"]["/notes/{note_id}"]["parameters"][0]["schema"] = {"type": "string"}
    tools = {t.name: t for t in al.openapi_tools(doc, base_url=server.url, lab=lab)}
    result = lab.runner.run(lab.tools.guard.invoke(tools["getNote"], {"note_id": ".."}))
    assert not result.ok and result.rule == "openapi.path"
    slash = lab.runner.run(lab.tools.guard.invoke(tools["getNote"], {"note_id": "1/../2"}))
    assert not slash.ok and server.requests[-1].path == "/api/notes/1%2F..%2F2"


def test_an_http_error_is_a_failed_result_with_the_status_and_body(lab, server):
    tools = _tools(lab, server.url)
    with pytest.raises(FetchError) as info:
        lab.runner.run(lab.tools.guard.call(tools["getNote"], {"note_id": 7}))
    assert info.value.status == 404 and "no such note" in str(info.value)
    assert "/api/notes/7" in str(info.value)


def test_an_unreachable_api_is_a_fetch_error_not_a_hang(lab):
    tools = _tools(lab, "http://127.0.0.1:9/api")  # the discard port: nothing listens
    with pytest.raises(FetchError, match="check base_url"):
        lab.runner.run(lab.tools.guard.call(tools["health"], {}))


@pytest.mark.parametrize(("change", "named"), [
    (lambda d: d["info"].pop("version"), "info.version"),
    (lambda d: d["paths"]["/notes"]["get"].update(responses="none"),
     "paths./notes.get.responses"),
    (lambda d: d.update(openapi="2.0"), "'openapi'"),
    (lambda d: d["paths"]["/notes"]["post"]["requestBody"]["content"]["application/json"]
     .update(schema={"$ref": "#/components/schemas/Missing"}), "#/components/schemas/Missing"),
    (lambda d: d["paths"]["/notes"]["get"]["parameters"].append({"$ref": "other.yaml#/P"}),
     "other.yaml#/P"),
])
def test_a_malformed_spec_is_a_typed_error_naming_the_problem(change, named):
    doc = yaml.safe_load(SPEC.read_text())
    change(doc)
    with pytest.raises(OpenAPISpecError) as info:
        al.openapi_tools(doc, base_url="http://127.0.0.1:9/",
                         policy=al.LabSettings(safety=LOCAL).safety.network)
    assert named in str(info.value)
    assert isinstance(info.value, ConfigError) and info.value.fields == ("spec",)


def test_a_file_that_is_not_yaml_or_not_there_is_a_typed_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("openapi: 3.0.3\ninfo: [unclosed\n")
    with pytest.raises(OpenAPISpecError, match=r"bad.yaml is neither valid JSON nor YAML at "
                                               r"line \d+"):
        al.openapi_tools(bad)
    with pytest.raises(OpenAPISpecError, match="no such file"):
        al.openapi_tools(tmp_path / "missing.yaml")
    swagger = tmp_path / "swagger.json"
    swagger.write_text('{"swagger": "2.0", "info": {}, "paths": {}}')
    with pytest.raises(OpenAPISpecError, match="Swagger 2.0"):
        al.openapi_tools(swagger)


def test_a_relative_server_needs_base_url(lab):
    doc = copy.deepcopy(yaml.safe_load(SPEC.read_text()))
    doc["servers"] = [{"url": "/v1"}]
    with pytest.raises(OpenAPISpecError, match="pass base_url="):
        al.openapi_tools(doc, lab=lab)


def test_include_keeps_named_operations_and_refuses_unknown_ones(lab):
    tools = al.openapi_tools(SPEC, base_url="http://127.0.0.1:9/api", lab=lab,
                             include=["getNote"], prefix="")
    assert [t.name for t in tools] == ["getNote"]
    with pytest.raises(ConfigError, match="listNote"):
        al.openapi_tools(SPEC, base_url="http://127.0.0.1:9/api", lab=lab,
                         include=["listNote"])


def test_openapi_3_0_schema_quirks_become_json_schema():
    assert json_schema({"type": "integer", "minimum": 1, "exclusiveMinimum": True,
                        "example": 3}) == {"type": "integer", "exclusiveMinimum": 1}
    assert json_schema({"type": "array", "items": {"type": "string", "nullable": True}}) == {
        "type": "array", "items": {"type": ["string", "null"]}}
