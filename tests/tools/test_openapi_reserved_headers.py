"""A document cannot hand the model a header the HTTP client owns (red-team O1).

Before: a header parameter named ``Host`` became a tool argument, and the model's value
went out as the Host header (another virtual host behind the same address). OpenAPI says
parameters named Accept, Content-Type or Authorization SHALL be ignored; Host, Cookie,
framing headers, Proxy-*, X-Forwarded-* and method overrides are refused too. Each is
dropped from the tool's schema with a logged reason and is never sent.
"""

from __future__ import annotations

import logging

import pytest
import yaml
from _openapi_server import SPEC, notes_server

import aillm_lab as al
from aillm_lab.tools.base import ValidationError

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

LOCAL = {"network": {"allow_loopback": True, "allow_hosts": ["127.0.0.1"]}}
REFUSED = ["Host", "cookie", "Content-Length", "Transfer-Encoding", "Connection",
           "Proxy-Authorization", "Accept", "Content-Type", "Authorization", "User-Agent",
           "X-Forwarded-Host", "X-HTTP-Method-Override", "Bad Name", "X-Split\r\nInjected"]


def _spec() -> dict:
    doc = yaml.safe_load(SPEC.read_text())
    params = doc["paths"]["/notes/{note_id}"]["get"]["parameters"]
    params += [{"name": n, "in": "header", "schema": {"type": "string"}} for n in REFUSED]
    params.append({"name": "a=b; admin", "in": "cookie", "schema": {"type": "string"}})
    params.append({"name": "session", "in": "cookie", "schema": {"type": "string"}})
    return doc


@pytest.fixture
def server():
    with notes_server() as srv:
        yield srv


def _get_note(make_lab, server, caplog) -> tuple[al.Lab, al.Tool]:
    lab = make_lab(safety=LOCAL)
    with caplog.at_level(logging.WARNING, logger="aillm_lab.tools.openapi"):
        tools = {t.name: t for t in al.openapi_tools(_spec(), base_url=server.url, lab=lab)}
    return lab, tools["getNote"]


def test_reserved_header_parameters_are_dropped_with_a_logged_reason(make_lab, server,
                                                                      caplog):
    _, tool = _get_note(make_lab, server, caplog)
    assert set(tool.spec.parameters["properties"]) == {"note_id", "X-Trace", "session"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name in [*REFUSED, "a=b; admin"]:
        assert repr(name) in logged, (name, logged)
    assert "GET /notes/{note_id}" in logged and "dropped from the tool" in logged


def test_the_model_cannot_set_the_host_header(make_lab, server, caplog):
    lab, tool = _get_note(make_lab, server, caplog)
    with pytest.raises(ValidationError):
        lab.runner.run(tool.acall({"note_id": 1, "Host": "internal.admin"}))
    result = lab.runner.run(lab.tools.guard.call(
        tool, {"note_id": 1, "X-Trace": "t-1", "session": "s1"}))
    assert result.content.startswith("HTTP 200"), result.content
    seen = server.requests[-1].headers
    assert seen["host"] == server.url.split("/")[2]
    assert seen["x-trace"] == "t-1" and seen["cookie"] == "session=s1"
    assert "injected" not in seen and "proxy-authorization" not in seen


def test_a_hand_built_operation_never_sends_a_reserved_header(make_lab, server):
    from aillm_lab.tools.openapi_http import Operation, Param, send

    lab = make_lab(safety=LOCAL)
    op = Operation(method="GET", base_url=server.url, path="/health",
                   params=(Param("h", "Host", "header"), Param("f", "X-Forwarded-For", "header"),
                           Param("ok", "X-Ok", "header")))
    out = lab.runner.run(send(op, {"h": "internal.admin", "f": "10.0.0.1", "ok": "y"},
                              lab.settings.safety.network))
    assert out.startswith("HTTP 200"), out
    seen = server.requests[-1].headers
    assert seen["host"] != "internal.admin" and "x-forwarded-for" not in seen
    assert seen["x-ok"] == "y"


def test_a_cookie_value_cannot_add_another_cookie(make_lab, server, caplog):
    """A model's ``s1; admin=1`` stays the one value of ``session`` (percent-encoded), so
    it cannot add or shadow a cookie; plain values go out as they are."""
    lab, tool = _get_note(make_lab, server, caplog)
    result = lab.runner.run(lab.tools.guard.call(
        tool, {"note_id": 1, "session": 's1; admin=1, x="2"\\'}))
    assert result.content.startswith("HTTP 200"), result.content
    cookie = server.requests[-1].headers["cookie"]
    assert cookie == "session=s1%3B%20admin=1%2C%20x=%222%22%5C", cookie
    assert cookie.count(";") == 0
