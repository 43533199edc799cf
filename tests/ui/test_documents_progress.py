"""The Documents page without a browser: its ingest progress bar follows the chunks embedded
(``lab.aingest(progress=hook)``), its filters, and the answer's ``[n]`` links."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

pytest.importorskip("panel")

from aillm_lab import Lab  # noqa: E402
from aillm_lab.agents.research import ResearchAnswer, ResearchSource  # noqa: E402
from aillm_lab.testing import ScriptedModel  # noqa: E402
from aillm_lab.ui.workbench import documents, submit  # noqa: E402
from aillm_lab.ui.workbench.documents import DocumentsPage  # noqa: E402

pytestmark = [  # bokeh's DataFrame conversion (a Tabulator) uses an inplace pandas deprecated
    pytest.mark.filterwarnings(
        "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")]
DOCS = {"e4012.md": "# Errors\n\nE4012 means the bucket is over its storage quota.\n",
        "cats.md": "# Cats\n\nKittens sleep about sixteen hours a day.\n",
        "dogs.txt": "Dogs bark at the mail carrier every single morning.\n"}


@pytest.fixture
def page(tmp_path) -> Iterator[DocumentsPage]:
    with Lab(home=tmp_path / "home", model=ScriptedModel("unused")) as lab:
        notes = lab.settings.workspace_path / "notes"
        notes.mkdir(parents=True)
        for name, text in DOCS.items():
            (notes / name).write_text(text)
        yield DocumentsPage(lab)


def test_lab_ingest_reports_each_embedded_batch_to_a_progress_hook(page):
    calls: list[tuple[int, int]] = []
    folder = page.lab.settings.workspace_path / "notes"
    report = page.lab.ingest(folder, progress=lambda done, total: calls.append((done, total)))
    total = report.chunks_added
    assert total >= 3 and calls[0] == (0, total) and calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    calls.clear()
    page.lab.ingest(folder, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # nothing changed, nothing embedded


def test_the_page_progress_bar_shows_the_share_embedded_then_hides(page):
    seen: list[int] = []
    page.progress.param.watch(lambda event: seen.append(event.new), "value")
    assert asyncio.run(page.ingest("notes"))
    assert "3 added" in page.notice.text
    done, total = page.embedded
    assert total >= 3 and done == total
    assert 100 in seen and seen[-1] == -1  # full while it ran, reset once done
    assert not page.progress.visible and not page.progress.active


def test_search_filters_by_source_type_and_tags(page):
    assert asyncio.run(page.ingest("notes", tags=["pets"]))
    assert asyncio.run(page.search("quota", filters={"type": ["pdf"]}))
    assert page.results.value.empty
    assert page.notice.text == "0 passage(s) for 'quota' (hybrid, type pdf)."
    page.type_filter.value = ["text"]  # the widgets are the defaults
    assert asyncio.run(page.search("bark", mode="sparse"))
    assert list(page.results.value["source"].map(lambda s: s.rsplit("/", 1)[-1])) == [
        "dogs.txt"]
    assert page.notice.text == "1 passage(s) for 'bark' (sparse, type text)."
    assert asyncio.run(page.search("kittens", mode="sparse", filters=documents.search_filters(
        "*cats.md", [], " pets , ")))
    assert len(page.results.value) == 1
    assert page.notice.text.endswith("(sparse, source *cats.md, tags pets).")


def test_filters_and_tags_from_the_boxes():
    assert documents.search_filters("", [], "") == {}
    assert documents.search_filters(" notes/ ", "pdf", "a, b,,") == {
        "source": "notes/", "type": ["pdf"], "tags": ["a", "b"]}
    assert documents.split_tags(None) == []
    assert submit.read_fields("not json") is None
    assert submit.read_fields('{"fields": {"query": "x"}, "nonce": 1}') == {"query": "x"}


def test_answer_markers_link_to_their_chunks_and_a_dangling_one_stays_text():
    answer = ResearchAnswer(
        question="What is E4012?", text='Over quota [1]; see also [7].', unsupported=[7],
        sources=[ResearchSource(label=1, source="/w/notes/e4012.md", chunk_id=12,
                                section="Errors", text='E4012 means "over quota".')])
    text = documents.answer_markdown(answer)
    assert text.startswith("**Answer:** Over quota [[1]](#documents-source-1 "
                           "\"e4012.md: E4012 means 'over quota'.\"); see also [7].")
    assert '<a id="documents-source-1"></a>**[1]** `e4012.md` § Errors (chunk 12)' in text
    assert "Markers with no source: [7]" in text and text.endswith("*Question: What is E4012?*")
