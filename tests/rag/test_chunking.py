"""Chunking: sizes in the embedding model's tokens, headings kept as sections."""

from __future__ import annotations

import pytest

from aillm_lab.rag.chunking import Chunker, ChunkingError, split_sections
from aillm_lab.rag.embeddings import HashingEmbedder, LocalEmbedder
from aillm_lab.rag.loaders import Document

LONG = " ".join(f"Sentence number {i} talks about kettles, teapots and water." for i in range(80))


@pytest.fixture(scope="module")
def minilm() -> LocalEmbedder:
    return LocalEmbedder()  # the tokenizer only; the model loads on the first aembed


def test_no_chunk_exceeds_the_size_in_model_tokens(minilm: LocalEmbedder) -> None:
    chunker = Chunker.for_embedder(minilm, chunk_tokens=64, overlap_tokens=8)
    chunks = chunker.split(Document(source="a", text=LONG, type="text"))
    assert len(chunks) > 5
    assert all(c.token_count <= 64 for c in chunks)
    assert [c.token_count for c in chunks] == [minilm.count_tokens(c.text) for c in chunks]
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_default_size_never_exceeds_the_models_sequence_length(minilm: LocalEmbedder) -> None:
    assert minilm.max_tokens == minilm.max_seq_length - 2 == 254
    chunker = Chunker.for_embedder(minilm)
    assert chunker.chunk_tokens <= minilm.max_tokens
    text = "word " * 5000
    assert max(c.token_count for c in chunker.split(Document(source="a", text=text,
                                                              type="text"))) <= 254


def test_a_size_above_the_model_limit_is_refused(minilm: LocalEmbedder) -> None:
    with pytest.raises(ChunkingError, match="chunk_tokens=512.*8 to 254"):
        Chunker.for_embedder(minilm, chunk_tokens=512)


def test_overlap_of_half_the_chunk_or_more_is_refused() -> None:
    with pytest.raises(ChunkingError, match="overlap_tokens=50"):
        Chunker.for_embedder(HashingEmbedder(), chunk_tokens=100, overlap_tokens=50)


def test_consecutive_chunks_overlap(minilm: LocalEmbedder) -> None:
    chunker = Chunker.for_embedder(minilm, chunk_tokens=40, overlap_tokens=10)
    chunks = chunker.split(Document(source="a", text=LONG, type="text"))
    for first, second in zip(chunks, chunks[1:], strict=False):
        assert first.start < second.start < first.start + len(first.text)
    without = Chunker.for_embedder(minilm, chunk_tokens=40, overlap_tokens=0)
    assert len(without.split(Document(source="a", text=LONG, type="text"))) < len(chunks)


def test_chunk_start_offsets_point_into_the_document(minilm: LocalEmbedder) -> None:
    doc = Document(source="a", text="# Head\n\n" + LONG, type="markdown")
    for chunk in Chunker.for_embedder(minilm, chunk_tokens=50, overlap_tokens=0).split(doc):
        assert doc.text[chunk.start:chunk.start + len(chunk.text)] == chunk.text


def test_paragraph_boundaries_are_preferred_over_mid_paragraph_cuts(
        minilm: LocalEmbedder) -> None:
    paragraphs = [f"Paragraph {i} is about topic {i}. It has two sentences." for i in range(6)]
    chunker = Chunker.for_embedder(minilm, chunk_tokens=30, overlap_tokens=0)
    chunks = chunker.split(Document(source="a", text="\n\n".join(paragraphs), type="text"))
    assert len(chunks) > 1
    for para in paragraphs:  # each paragraph sits whole in one chunk, never cut in two
        assert sum(para in c.text for c in chunks) == 1
    assert all(c.text.strip().endswith("sentences.") for c in chunks)


def test_markdown_headings_become_the_section_path(minilm: LocalEmbedder) -> None:
    text = ("Intro before any heading.\n\n# Guide\n\n## Install\nUse pip.\n\n"
            "```bash\n# a comment, not a heading\npip install x\n```\n\n"
            "## Usage\n### Sync\nCall it.\n\n# Appendix\nMore.\n")
    chunks = Chunker.for_embedder(minilm).split(Document(source="a", text=text,
                                                          type="markdown"))
    sections = [c.section for c in chunks]
    assert sections == ["", "Guide > Install", "Guide > Usage > Sync", "Appendix"]
    assert "# a comment, not a heading" in chunks[1].text
    assert chunks[1].text.startswith("# Guide\n\n## Install")  # empty heading joins the next


def test_plain_text_and_code_get_no_sections(minilm: LocalEmbedder) -> None:
    doc = Document(source="a.py", text="# a python comment\nx = 1\n", type="code")
    assert [c.section for c in Chunker.for_embedder(minilm).split(doc)] == [""]


def test_empty_document_gives_no_chunks(minilm: LocalEmbedder) -> None:
    assert Chunker.for_embedder(minilm).split(Document(source="a", text=" \n ",
                                                        type="text")) == []


def test_split_sections_without_headings_returns_the_whole_text() -> None:
    assert split_sections("just text") == [("", 0, "just text")]
