"""``LabSettings.embedding_model`` and ``lab.ingest/search(embedding_model=)``: any provider
model that embeds, called through the gateway (so its calls are in the call log), and a
collection that keeps the model it was built with."""

from __future__ import annotations

from pathlib import Path

import pytest

import aillm_lab as al
from aillm_lab.rag.sparse import RagError
from aillm_lab.testing import FakeOpenAI

TEXTS = {"errors.md": "# Errors\n\nE4012 means the upload quota is exhausted.\n",
         "cats.md": "# Cats\n\nKittens sleep most of the day in warm places.\n",
         "tea.md": "# Tea\n\nGreen tea is steeped at eighty degrees for two minutes.\n"}


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in TEXTS.items():
        (folder / name).write_text(text)
    return folder


def _embedding_calls(lab: al.Lab) -> int:
    calls = lab.calls()
    return int((calls["model"] == "openai:text-embedding-3-small").sum())


def test_the_embedding_model_from_settings_is_used_by_ingest_and_search(
        lab_home: Path, docs: Path) -> None:
    with FakeOpenAI() as server, al.Lab(
            home=lab_home, embedding_model=f"openai:text-embedding-3-small@{server.url}") as lab:
        report = lab.ingest(docs, progress=False)
        assert report.chunks_added == 3
        after_ingest = _embedding_calls(lab)
        assert after_ingest >= 1  # the chunks went to the provider, through the gateway
        assert server.last_request.path == "/v1/embeddings"
        hits = lab.search(TEXTS["tea.md"].split("\n\n")[1], k=1, mode="dense")
        assert hits[0].source.endswith("tea.md")
        assert _embedding_calls(lab) == after_ingest + 1  # the query was embedded there too
        info = {c.name: c for c in lab.knowledge.collections()}
        assert info["default"].model_id == "openai:text-embedding-3-small"
        assert (lab.calls()["status"] == "ok").all()


def test_ingest_with_an_embedding_model_then_search_it_by_text_and_by_vector(
        lab_home: Path, docs: Path) -> None:
    spec = None
    with FakeOpenAI() as server, al.Lab(home=lab_home) as lab:
        spec = f"openai:text-embedding-3-small@{server.url}"
        lab.ingest(docs, collection="api", progress=False, embedding_model=spec)
        query = "Kittens sleep most of the day in warm places."
        by_text = lab.search(query, k=3, mode="dense", collection="api", embedding_model=spec)
        vector = lab.embed([query], model=spec)[0]
        by_vector = lab.search(vector=vector, k=3, collection="api", embedding_model=spec,
                               vector_model="openai:text-embedding-3-small")
        assert [(h.chunk_id, round(h.score, 6)) for h in by_text] == \
               [(h.chunk_id, round(h.score, 6)) for h in by_vector]
        assert by_text[0].source.endswith("cats.md")
        # the default (local MiniLM) collections are untouched by it
        lab.ingest(docs, progress=False)
        assert lab.search("E4012", k=1)[0].source.endswith("errors.md")


def test_a_collection_refuses_a_query_embedded_by_another_model(
        lab_home: Path, docs: Path) -> None:
    with FakeOpenAI() as server, al.Lab(home=lab_home) as lab:
        spec = f"openai:text-embedding-3-small@{server.url}"
        lab.ingest(docs, collection="api", progress=False, embedding_model=spec)
        with pytest.raises(RagError, match="built with openai:text-embedding-3-small") as err:
            lab.search("tea", collection="api")  # the local MiniLM would embed it
        assert "embedding_model" in str(err.value)
        lab.ingest(docs, collection="local", progress=False)
        with pytest.raises(RagError, match="collection='local' was built with"):
            lab.search("tea", collection="local", embedding_model=spec)
        with pytest.raises(RagError, match="collection='local' was built with"):
            lab.ingest(docs, collection="local", progress=False, embedding_model=spec)


def test_a_bad_embedding_model_is_refused_naming_the_field(lab_home: Path) -> None:
    with pytest.raises(al.ConfigError, match="embedding_model"):
        al.Lab(home=lab_home, embedding_model="text-embedding-3-small")
    with al.Lab(home=lab_home) as lab, pytest.raises(TypeError, match="embedding_model"):
        lab.search("tea", embedding_model=3)  # type: ignore[arg-type]
