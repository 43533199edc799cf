"""A saved run's file that cannot be read (edited by hand, cut short by a full disk, written
by another schema) is skipped by ``lab.runs()`` with a warning naming it, and
``lab.load_run`` of it raises ``SavedRunError`` naming the file and the fix."""

from __future__ import annotations

import logging

import pytest
from _agent_tools import add, call

import aillm_lab as al
from aillm_lab.agents.store import SavedRunError
from aillm_lab.errors import AillmError
from aillm_lab.testing import ScriptedModel

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

BAD_FILES = {
    "old_schema": (b'{"id": "agent-bad", "status": "paused"}', "status"),
    "cut_short": (b'{"id": "agent-bad", "steps": [{"index": 0, "mes', "Invalid JSON"),
    "not_utf8": (b'{"id": "agent-bad", "task": "\xff\xfe"}', "UnicodeDecodeError"),
    "not_a_run": (b'["a", "list"]', "the file"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_one_bad_file_is_skipped_with_a_warning_and_loading_it_names_the_file(
        make_lab, caplog, kind):
    lab = make_lab(ScriptedModel([call("add", a=1, b=2), "3"]))
    run = al.ReActAgent(tools=[add], lab=lab).run("1 + 2")
    content, why = BAD_FILES[kind]
    bad = lab.settings.home / "runs" / "agent-bad.agent.json"
    bad.write_bytes(content)

    with caplog.at_level(logging.WARNING, logger="aillm_lab.agents.store"):
        listed = lab.runs()
    assert list(listed["id"]) == [run.id]
    assert str(bad) in caplog.text and "skipped" in caplog.text
    assert lab.load_run(run.id) == run  # the good run is untouched

    with pytest.raises(SavedRunError) as info:
        lab.load_run("agent-bad")
    assert isinstance(info.value, AillmError) and isinstance(info.value, ValueError)
    assert info.value.path == str(bad)
    text = str(info.value)
    assert str(bad) in text and why in text and "delete the file" in text


def test_a_folder_of_only_bad_files_lists_no_runs(make_lab, caplog):
    lab = make_lab(ScriptedModel(["unused"]))
    folder = lab.settings.home / "runs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "agent-x.agent.json").write_text("")
    with caplog.at_level(logging.WARNING, logger="aillm_lab.agents.store"):
        listed = lab.runs()
    assert listed.empty and "id" in listed.columns
    assert "agent-x.agent.json" in caplog.text
