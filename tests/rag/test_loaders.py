"""Loaders: every supported type becomes a Document with a hash; odd files are skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from aillm_lab.rag.loaders import (
    Document,
    LoaderError,
    UnsupportedFile,
    doc_type,
    iter_files,
    load,
    load_file,
)


def _pdf(path: Path, text: str) -> None:
    """A one-page PDF with ``text`` in Helvetica, written without extra libraries."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    path.write_bytes(out)


@pytest.fixture()
def corpus(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("Plain notes about tea.\r\nSecond line.")
    (tmp_path / "guide.md").write_text("# Guide\n\nInstall with pip.\n")
    (tmp_path / "page.html").write_text(
        "<html><head><title>Kettle  Page</title><script>var x = 'hidden';</script></head>"
        "<body><article><h1>Kettles</h1><p>A kettle boils water quickly and safely for "
        "tea. Electric kettles switch off automatically when the water boils.</p>"
        "</article></body></html>")
    nb = {"cells": [{"cell_type": "markdown", "source": ["# Analysis\n", "We load data."]},
                    {"cell_type": "code", "source": "import pandas as pd\ndf = pd.DataFrame()"},
                    {"cell_type": "raw", "source": "ignored raw cell"}],
          "metadata": {"language_info": {"name": "python"}}, "nbformat": 4,
          "nbformat_minor": 5}
    (tmp_path / "analysis.ipynb").write_text(json.dumps(nb))
    sub = tmp_path / "src"
    sub.mkdir()
    (sub / "tool.py").write_text("def brew(minutes: int) -> str:\n    return 'tea'\n")
    _pdf(tmp_path / "paper.pdf", "Teapots keep heat")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    git = tmp_path / ".git"
    git.mkdir()
    (git / "config.txt").write_text("never loaded")
    return tmp_path


def test_folder_loads_every_supported_type_and_skips_the_rest(corpus: Path) -> None:
    result = load(corpus)
    by_name = {Path(d.source).name: d for d in result.documents}
    assert set(by_name) == {"notes.txt", "guide.md", "page.html", "analysis.ipynb", "tool.py",
                            "paper.pdf"}
    assert {Path(s.source).name for s in result.skipped} == {"image.png"}
    assert "unsupported file type '.png'" in result.skipped[0].reason
    assert by_name["notes.txt"].type == "text"
    assert by_name["notes.txt"].text == "Plain notes about tea.\nSecond line."
    assert by_name["guide.md"].metadata["title"] == "Guide"
    assert by_name["tool.py"].type == "code"
    assert by_name["tool.py"].metadata["language"] == "python"


def test_each_document_hash_is_the_sha256_of_its_text(corpus: Path) -> None:
    for doc in load(corpus).documents:
        assert doc.content_hash == hashlib.sha256(doc.text.encode()).hexdigest()
        assert doc.mtime is not None and doc.source == str(Path(doc.source).resolve())


def test_html_keeps_article_text_and_title_but_drops_scripts(corpus: Path) -> None:
    doc = load_file(corpus / "page.html")
    assert doc.type == "html"
    assert "kettle boils water" in doc.text
    assert "hidden" not in doc.text
    assert doc.metadata["title"] == "Kettle Page"


def test_notebook_keeps_markdown_and_fenced_code_cells(corpus: Path) -> None:
    doc = load_file(corpus / "analysis.ipynb")
    assert doc.type == "notebook"
    assert doc.text.startswith("# Analysis\nWe load data.")
    assert "```python\nimport pandas as pd\ndf = pd.DataFrame()\n```" in doc.text
    assert "ignored raw cell" not in doc.text


def test_pdf_text_is_extracted(corpus: Path) -> None:
    doc = load_file(corpus / "paper.pdf")
    assert doc.type == "pdf" and "Teapots keep heat" in doc.text
    assert doc.metadata["pages"] == 1


def test_glob_selects_matching_files_only(corpus: Path) -> None:
    names = sorted(p.name for p in iter_files(str(corpus / "**" / "*.py")))
    assert names == ["tool.py"]


def test_a_path_listed_twice_is_loaded_once(corpus: Path) -> None:
    assert len(list(iter_files([corpus / "guide.md", str(corpus / "guide.md")]))) == 1


def test_missing_path_raises_a_loader_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="no-such-folder"):
        load(tmp_path / "no-such-folder")
    with pytest.raises(LoaderError, match="matched no file"):
        load(str(tmp_path / "*.nothing"))


def test_binary_content_with_a_text_suffix_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "blob.txt").write_bytes(b"abc\x00def")
    result = load(tmp_path)
    assert result.documents == []
    assert "binary" in result.skipped[0].reason


def test_broken_notebook_and_pdf_are_skipped_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "bad.ipynb").write_text("{not json")
    (tmp_path / "bad.pdf").write_bytes(b"%PDF-1.4 garbage")
    (tmp_path / "ok.md").write_text("fine")
    result = load(tmp_path)
    assert [Path(d.source).name for d in result.documents] == ["ok.md"]
    assert len(result.skipped) == 2


def test_oversized_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 100)
    with pytest.raises(UnsupportedFile, match="max_bytes=10"):
        load_file(tmp_path / "big.txt", max_bytes=10)


def test_latin1_file_is_decoded_instead_of_failing(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_bytes("café".encode("latin-1"))
    assert load_file(tmp_path / "old.txt").text == "café"


def test_doc_type_maps_suffixes() -> None:
    assert doc_type(Path("a.MD")) == "markdown"
    assert doc_type(Path("a.ts")) == "code"
    assert doc_type(Path("README")) == "text"
    assert doc_type(Path("a.exe")) is None


def test_document_given_text_computes_its_own_hash() -> None:
    a, b = Document(source="x", text="same", type="text"), Document(source="y", text="same",
                                                                     type="text")
    assert a.content_hash == b.content_hash
    assert a.content_hash != Document(source="x", text="other", type="text").content_hash
