"""``Toolbox``: registry, guarded calls through the runner, audit, lazy built-ins, closing."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from aillm_lab.config import LabSettings
from aillm_lab.errors import RegistryError, SafetyViolation
from aillm_lab.runtime import LoopRunner
from aillm_lab.tools.base import Tool, tool
from aillm_lab.tools.safety import ApprovalRequest
from aillm_lab.tools.toolbox import Toolbox, lab_secrets

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")


@pytest.fixture
def settings(tmp_path: Path) -> LabSettings:
    return LabSettings.load(home=tmp_path / "home")


@tool
def shout(text: str) -> str:
    """Upper-case the text."""
    return text.upper()


@tool(risk="write")
def touch(name: str) -> str:
    """Pretend to write."""
    return f"touched {name}"


def test_workspace_folder_is_created(settings: LabSettings, runner: LoopRunner) -> None:
    box = Toolbox(settings, runner, builtins=False)
    assert settings.workspace_path.is_dir() and box.workspace.root == settings.workspace_path
    assert box.audit_log.path == settings.db_path


def test_added_tools_are_listed_and_duplicates_raise(settings: LabSettings,
                                                     runner: LoopRunner) -> None:
    box = Toolbox(settings, runner, builtins=False)
    assert box.names() == [] and len(box) == 0
    added = box.add(shout)
    assert box.get("shout") is added and "shout" in box and list(box) == [added]
    assert [s.name for s in box.specs()] == ["shout"]
    with pytest.raises(RegistryError, match="already registered"):
        box.add(shout)

    def plain(n: int) -> int:
        """A plain function becomes a tool."""
        return n

    assert isinstance(box.add(plain), Tool) and box.names() == ["shout", "plain"]


def test_call_runs_through_the_guard_and_is_audited(settings: LabSettings,
                                                    runner: LoopRunner) -> None:
    with Toolbox(settings, runner, builtins=False) as box:
        box.add(shout)
        result = box.call("shout", text="hi")
        audit = box.audit()
    assert result.ok and result.content == "HI" and result.value == "HI"
    assert list(audit["tool"]) == ["shout"] and list(audit["decision"]) == ["allowed"]


def test_async_doors_work_from_another_loop(settings: LabSettings, runner: LoopRunner) -> None:
    box = Toolbox(settings, runner, builtins=False)
    box.add(shout)

    async def main() -> tuple[str, str, int]:
        first = await box.acall("shout", text="a")
        second = await box.ainvoke("shout", {"text": "b"}, call_id="c2")
        frame = await box.aaudit()
        await box.aclose()
        return first.content, second.content, len(frame)

    assert asyncio.run(main()) == ("A", "B", 2)


def test_call_raises_and_invoke_reports_a_refusal(settings: LabSettings,
                                                  runner: LoopRunner) -> None:
    settings.safety.approvals.by_tool = {"touch": "deny"}
    with Toolbox(settings, runner, builtins=False) as box:
        box.add(touch)
        with pytest.raises(SafetyViolation) as info:
            box.call("touch", name="x")
        reported = box.invoke("touch", {"name": "x"}, call_id="c1")
        audit = box.audit()
    assert info.value.rule == "approval.denied_by_policy"
    assert reported.ok is False and reported.rule == "approval.denied_by_policy"
    assert reported.call_id == "c1"
    assert list(audit["decision"]) == ["denied", "denied"]


def test_invoke_of_an_unknown_tool_lists_the_known_ones(settings: LabSettings,
                                                        runner: LoopRunner) -> None:
    with Toolbox(settings, runner, builtins=False) as box:
        box.add(shout)
        result = box.invoke("nope", {})
        with pytest.raises(RegistryError):
            box.call("nope")
    assert result.ok is False and "registered: shout" in result.content


def test_approver_can_be_set_after_creation(settings: LabSettings, runner: LoopRunner) -> None:
    settings.safety.approvals.by_risk = {**settings.safety.approvals.by_risk, "write": "ask"}
    seen: list[ApprovalRequest] = []
    with Toolbox(settings, runner, builtins=False) as box:
        box.add(touch)
        assert box.invoke("touch", {"name": "a"}).rule == "approval.no_approver"
        box.approver = lambda request: seen.append(request) or True
        assert box.approver is box.guard.approver
        assert box.call("touch", name="b").content == "touched b"
    assert [r.arguments for r in seen] == [{"name": "b"}]


def test_audit_limit_and_tool_filter(settings: LabSettings, runner: LoopRunner) -> None:
    with Toolbox(settings, runner, builtins=False) as box:
        box.add(shout)
        box.add(touch)
        for i in range(3):
            box.call("shout", text=str(i))
        box.call("touch", name="t")
        assert list(box.audit(limit=2)["tool"]) == ["shout", "touch"]
        assert len(box.audit(tool="shout")) == 3


def test_close_is_idempotent_and_a_later_call_reopens(settings: LabSettings,
                                                      runner: LoopRunner) -> None:
    box = Toolbox(settings, runner, builtins=False)
    box.add(shout)
    box.call("shout", text="x")
    box.close()
    box.close()
    assert box.call("shout", text="y").content == "Y"
    assert len(box.audit()) == 2
    box.close()


BUILTINS = {"read_file", "write_file", "run_shell", "git_status", "git_commit", "fetch_url",
            "sql_query", "run_python"}


def test_builtins_load_once_on_first_use_and_resources_close(settings: LabSettings,
                                                             runner: LoopRunner) -> None:
    box = Toolbox(settings, runner)
    assert box._resources == []  # nothing made until the tools are needed
    assert BUILTINS <= set(box.names())
    jail, db, sandbox = box._resources
    assert [type(r).__name__ for r in (jail, db, sandbox)] == ["Jail", "Database",
                                                               "PythonSandbox"]
    assert db.runner is runner and sandbox.runner is runner  # closed on the loop that made them
    assert jail.runner is runner
    assert box.names() == box.names() and box._resources == [jail, db, sandbox]  # loaded once
    assert (box.database, box.sandbox) == (db, sandbox)
    box.call("run_shell", command="true")  # starts the jail's launcher
    box.close()
    assert db._closed and sandbox._closed and jail._conn is None


@pytest.mark.skipif(importlib.util.find_spec("aillm_lab.tools.files") is None,
                    reason="the files domain module is not written yet")
def test_real_file_tools_are_registered_and_guarded(settings: LabSettings,
                                                    runner: LoopRunner) -> None:
    with Toolbox(settings, runner) as box:
        (box.workspace.root / "a.txt").write_text("hello")
        assert "read_file" in box.names()
        assert box.call("read_file", path="a.txt").content == "hello"
        refused = box.invoke("read_file", {"path": "../outside.txt"})
        audit = box.audit()
    assert refused.ok is False and refused.rule == "path.outside"
    assert list(audit["decision"]) == ["allowed", "refused"]


def test_lab_secrets_include_api_keys_and_secret_env_vars(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-value-123")
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-value-456789")
    found = lab_secrets(LabSettings.load(home=tmp_path))
    assert "sk-ant-test-value-123" in found and "tok-value-456789" in found
    with_api = LabSettings.load(home=tmp_path, openapi_auth={"crm": "crm-secret-0123456789"})
    assert "crm-secret-0123456789" in lab_secrets(with_api)  # every Lab hides OpenAPI auth


def test_repr_shows_tools_and_workspace(settings: LabSettings, runner: LoopRunner) -> None:
    box = Toolbox(settings, runner, builtins=False)
    box.add(shout)
    assert repr(box) == f"<Toolbox 1 tools, workspace={str(box.workspace.root)!r}>"


def test_a_capped_sql_result_tells_the_model_it_was_truncated(settings: LabSettings,
                                                               runner: LoopRunner) -> None:
    settings.safety.sql.max_rows = 5
    with Toolbox(settings, runner) as box:
        (box.workspace.root / "nums.csv").write_text("n\n" + "\n".join(map(str, range(40))))
        box.database.register_file("nums", "nums.csv")
        result = box.call("sql_query", sql="select n from nums order by n")
        assert "Truncated:" in result.content and "Aggregate or filter" in result.content
        assert " 4\n" in result.content + "\n" and " 5\n" not in result.content + "\n"
