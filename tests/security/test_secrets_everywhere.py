"""A key in the environment and in workspace files never reaches any tool's output or audit.

One Lab, every built-in tool that could surface the file or the environment (files, shell,
git, web, SQL, the Python sandbox), plus failing calls and an approval request whose
arguments carry the key. The key is random, so only exact-value redaction (it was found in
the environment) can hide it; a second, OpenAI-shaped key lives only in a file and is hidden
by its format. Each check first proves the tool really read the text around the key.
"""

from __future__ import annotations

import secrets
import string
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.tools.base import ToolResult

ENV_KEY = "acme-" + secrets.token_hex(12)  # no known format: only its env value gives it away
FILE_KEY = "sk-proj-" + "".join(secrets.choice(string.ascii_letters + string.digits)
                                for _ in range(40))  # OpenAI-shaped, never in the env
LEAKS = (ENV_KEY, FILE_KEY)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    """A page on 127.0.0.1 that prints both keys."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "keys.html").write_text(f"<html><body><h1>Deploy notes</h1><p>Use {ENV_KEY} for "
                                    f"the API and {FILE_KEY} for the model.</p></body></html>")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/keys.html"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def lab(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[al.Lab]:
    monkeypatch.setenv("ACME_API_KEY", ENV_KEY)
    policy = al.SafetyPolicy(network={"allow_loopback": True})
    with al.Lab(home=tmp_path / "home", safety=policy) as the_lab:
        ws = the_lab.settings.workspace_path
        ws.mkdir(parents=True, exist_ok=True)
        (ws / "settings.ini").write_text(f"[api]\nurl = https://api.example.com\n"
                                         f"key = {ENV_KEY}\nmodel_key = {FILE_KEY}\n")
        (ws / "keys.csv").write_text(f"service,key\nacme,{ENV_KEY}\nmodel,{FILE_KEY}\n")
        yield the_lab


def _clean(result: ToolResult, *, must_show: str) -> str:
    """The result's text, after checking no key is in any of its fields."""
    dumped = result.model_dump_json() + repr(result) + str(result.error)
    for key in LEAKS:
        assert key not in result.content and key not in dumped, result.content
    assert must_show in result.content, result.content  # the tool did read the secret's line
    return result.content


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"})


def test_no_tool_output_or_audit_row_shows_a_key(lab: al.Lab, site: str,
                                                 tmp_path: Path) -> None:
    tools, ws = lab.tools, lab.settings.workspace_path
    asked: list[al.ApprovalRequest] = []
    tools.approver = lambda request: asked.append(request) or True
    results: list[ToolResult] = []

    def call(name: str, must_show: str, **args: object) -> str:
        result = tools.invoke(name, args)
        results.append(result)
        return _clean(result, must_show=must_show)

    text = call("read_file", "url = https://api.example.com", path="settings.ini")
    assert "key = [REDACTED" in text and "model_key = [REDACTED" in text
    call("search_text", "settings.ini", pattern="key =")
    call("diff_preview", "+key = rotated", path="settings.ini", new_content="key = rotated\n")
    call("run_shell", "model_key = [REDACTED", command="cat settings.ini")
    call("run_shell", "acme,[REDACTED", command="grep -n acme keys.csv")
    call("fetch_url", "Deploy notes", url=site)

    tools.database.register_file("keys", "keys.csv")
    call("sql_query", "[REDACTED", sql="SELECT * FROM keys")
    call("sql_query", "[REDACTED", sql="SELECT upper(service) AS s, key FROM keys")

    call("run_python", "[value]\nFalse", code="import os\n'ACME_API_KEY' in os.environ")
    call("run_python", "[REDACTED", code=f"print('the key is {ENV_KEY}')")

    repo = ws / "proj"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "app.cfg").write_text(f"token={ENV_KEY}\n")
    call("git_add", "", paths=["proj/app.cfg"], repo="proj")
    call("git_commit", "1 file changed", message=f"Add config with {ENV_KEY}", repo="proj")
    call("git_log", "Add config with [REDACTED", repo="proj")
    call("git_show", "+token=[REDACTED", rev="HEAD", repo="proj")
    (repo / "app.cfg").write_text(f"token={FILE_KEY}\n")
    call("git_diff", "+token=[REDACTED", repo="proj")

    call("read_file", "does not exist", path=f"missing-{ENV_KEY}.txt")  # echoed in an error
    call("run_shell", "[REDACTED", command=f"cat {ENV_KEY}")  # an error naming the key

    assert [r.tool for r in asked] == ["git_add", "git_commit"]
    assert all(key not in repr(r.arguments) for r in asked for key in LEAKS)
    assert sum(r.ok for r in results) >= 16  # the tools really ran, they were not all refused

    audit = lab.audit()
    assert len(audit) == len(results)
    for key in LEAKS:
        assert key not in audit.to_string() and key not in audit.to_json(date_format="iso")
    lab.close()  # flush the audit to disk, then read every byte SQLite wrote
    raw = b"".join(p.read_bytes() for p in (tmp_path / "home").glob("lab.db*"))
    assert b"read_file" in raw
    assert all(key.encode() not in raw for key in LEAKS)
    assert ENV_KEY in (ws / "settings.ini").read_text()  # redaction never edits the data


def test_the_key_is_hidden_even_from_a_user_tool_that_returns_it(lab: al.Lab) -> None:
    @al.tool
    def show_config() -> dict[str, str]:
        """Return the service configuration (including, carelessly, its key)."""
        return {"service": "acme", "api_key": ENV_KEY, "note": f"model key {FILE_KEY}"}

    lab.tools.add(show_config)
    result = lab.tools.call("show_config")
    text = _clean(result, must_show='"service":"acme"')
    assert text.count("[REDACTED") == 2
    assert lab.audit()["tool"].tolist() == ["show_config"]
