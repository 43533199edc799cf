"""lab.tools / lab.audit / lab.ingest / lab.search / lab.memory share the Lab's home and loop."""

from __future__ import annotations

from pathlib import Path

import pytest

import aillm_lab as al


def test_lab_tools_run_in_the_workspace_and_every_call_is_audited(lab_home: Path) -> None:
    with al.Lab(home=lab_home) as lab:
        assert lab.tools.workspace.root == lab.settings.workspace_path  # made on first use
        (lab.settings.workspace_path / "notes.txt").write_text("alpha\nbeta\n")
        assert lab.tools.call("read_file", path="notes.txt").content.startswith("alpha")
        with pytest.raises(al.SafetyViolation) as refused:
            lab.tools.call("read_file", path="../../etc/passwd")
        assert refused.value.rule.startswith("path.")
        audit = lab.audit()
        assert list(audit["tool"]) == ["read_file", "read_file"]
        assert list(audit["decision"]) == ["allowed", "refused"]
        assert lab.tools is lab.tools  # one Toolbox per Lab


def test_lab_ingest_and_search_use_the_lab_db(lab_home: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "errors.md").write_text("# Errors\n\nE4012 means the upload quota is exhausted.\n")
    (docs / "cats.md").write_text("# Cats\n\nKittens sleep most of the day in warm places.\n")
    with al.Lab(home=lab_home) as lab:
        report = lab.ingest(docs, progress=False)
        assert (report.docs_added, report.embeddings_computed) == (2, report.chunks_added)
        hits = lab.search("E4012", k=1)
        assert isinstance(hits, al.SearchResults) and hits[0].source.endswith("errors.md")
        assert lab.search("young felines napping", k=1, mode="dense")[0].source.endswith("cats.md")
        vector = lab.embed(["young felines napping"])[0]  # a vector the user already has
        assert lab.search(vector=vector, k=1)[0].source.endswith("cats.md")
        assert lab.knowledge.db.path == lab.settings.db_path


def test_lab_memory_is_durable_across_labs(lab_home: Path) -> None:
    with al.Lab(home=lab_home) as lab:
        memory = lab.memory.add("The user prefers metric units.", namespace="user")
    with al.Lab(home=lab_home) as lab:
        assert lab.memory.get(memory.id).text == "The user prefers metric units."
        assert lab.memory.search("which units?", namespace="user", k=1)[0].memory.id == memory.id
