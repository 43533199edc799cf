"""Loaders: every supported type becomes a Document with a hash; odd files are skipped."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path

import pytest

from aillm_lab.rag.loaders import (
    Document,
    LoaderError,
    LoadResult,
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


def test_binary_data_behind_a_long_text_header_is_skipped(tmp_path: Path) -> None:
    header = b"# Release notes\n" + b"All good here.\n" * 2000  # about 30 KB of text
    (tmp_path / "dump.log").write_bytes(header + bytes(range(256)) * 4096)
    result = load(tmp_path)
    assert result.documents == []
    assert "binary content (NUL byte at offset" in result.skipped[0].reason


def test_control_bytes_without_nul_behind_a_text_header_are_skipped(tmp_path: Path) -> None:
    header = b"plain text line\n" * 1000  # 16 KB, past any fixed-size prefix check
    (tmp_path / "capture.txt").write_bytes(header + bytes(range(1, 32)) * 4000)
    result = load(tmp_path)
    assert result.documents == []
    assert "control characters" in result.skipped[0].reason


def test_tabs_form_feeds_and_ansi_colours_are_text(tmp_path: Path) -> None:
    (tmp_path / "run.log").write_bytes(b"\x1b[31mFAIL\x1b[0m\tcase\r\n\x0cnext page\n")
    result = load(tmp_path)
    assert result.skipped == [] and "FAIL" in result.documents[0].text


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


def test_invalid_utf8_is_replaced_and_flagged_not_guessed_as_latin1(tmp_path: Path) -> None:
    (tmp_path / "old.txt").write_bytes("Le café\nest très bon".encode("latin-1"))
    result = load(tmp_path)
    [doc] = result.documents
    assert doc.text == "Le caf\ufffd\nest tr\ufffds bon"
    [warning] = result.warnings
    assert warning.source == doc.source and doc.warnings == [warning.reason]
    assert "invalid UTF-8" in warning.reason and "2 character(s)" in warning.reason
    assert "line 1" in warning.reason and "re-save the file as UTF-8" in warning.reason


def test_valid_utf8_with_a_bom_loads_without_a_warning(tmp_path: Path) -> None:
    (tmp_path / "bom.md").write_bytes("\ufeff# Café\n".encode())
    result = load(tmp_path)
    assert result.documents[0].text == "# Café\n" and result.warnings == []


def test_text_that_is_mostly_not_utf8_is_skipped_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "greek.txt").write_bytes("καλημέρα κόσμε".encode("cp1253"))
    result = load(tmp_path)
    assert result.documents == []
    assert "not UTF-8 text" in result.skipped[0].reason
    assert "convert it to UTF-8" in result.skipped[0].reason


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


# -- what a folder walk never follows or opens --------------------------------------------
def _reasons(result: LoadResult) -> dict[str, str]:
    return {Path(s.source).name: s.reason for s in result.skipped}


def test_a_file_symlink_pointing_outside_the_folder_is_skipped_not_loaded(
        tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.md").write_text("the launch code is 1234")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ok.md").write_text("fine")
    (folder / "leak.md").symlink_to(outside / "secret.md")
    result = load(folder)
    assert [Path(d.source).name for d in result.documents] == ["ok.md"]
    assert all("launch code" not in d.text for d in result.documents)
    reason = _reasons(result)["leak.md"]
    assert "outside the ingested folder" in reason and "secret.md" in reason
    assert "never followed" in reason


def test_a_folder_symlink_pointing_outside_is_reported_not_walked(tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.md").write_text("the launch code is 1234")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "more").symlink_to(outside, target_is_directory=True)
    result = load(folder)
    assert result.documents == []
    assert "outside the ingested folder" in _reasons(result)["more"]


def test_a_symlink_inside_the_folder_is_not_followed_so_its_target_loads_once(
        tmp_path: Path) -> None:
    (tmp_path / "real.md").write_text("one copy")
    (tmp_path / "alias.md").symlink_to(tmp_path / "real.md")
    result = load(tmp_path)
    assert [Path(d.source).name for d in result.documents] == ["real.md"]
    assert "inside the folder" in _reasons(result)["alias.md"]
    assert "ingested once" in _reasons(result)["alias.md"]


def test_a_dangling_symlink_is_reported_as_skipped(tmp_path: Path) -> None:
    (tmp_path / "gone.md").symlink_to(tmp_path / "deleted.md")
    (tmp_path / "loop.md").symlink_to(tmp_path / "loop.md")
    result = load(tmp_path)
    assert result.documents == []
    assert "dangling symlink" in _reasons(result)["gone.md"]
    assert "deleted.md" in _reasons(result)["gone.md"]
    assert "dangling symlink" in _reasons(result)["loop.md"]


def test_a_fifo_is_reported_and_never_opened(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.txt")  # opening it for reading would block forever
    os.mkfifo(tmp_path / "README")
    result = load(tmp_path)
    assert result.documents == []
    assert "FIFO" in _reasons(result)["pipe.txt"] and "FIFO" in _reasons(result)["README"]
    with pytest.raises(UnsupportedFile, match="FIFO"):
        load_file(tmp_path / "pipe.txt")


def test_a_socket_is_reported_as_skipped(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a short relative path: AF_UNIX paths are limited
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("server.sock")
        result = load(tmp_path)
    assert "socket" in _reasons(result)["server.sock"]


def test_a_device_named_explicitly_is_reported_not_read() -> None:
    result = load("/dev/zero")
    assert result.documents == []
    assert "character device" in result.skipped[0].reason


def test_an_explicit_file_path_is_read_through_its_link(tmp_path: Path) -> None:
    (tmp_path / "real.md").write_text("chosen by the caller")
    (tmp_path / "link.md").symlink_to(tmp_path / "real.md")
    result = load([tmp_path / "link.md", tmp_path / "real.md"])
    assert [Path(d.source).name for d in result.documents] == ["real.md"]


def test_a_glob_never_follows_a_linked_folder_out_of_its_base(tmp_path: Path) -> None:
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "secret.md").write_text("the launch code is 1234")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "ok.md").write_text("fine")
    (folder / "more").symlink_to(outside, target_is_directory=True)
    (folder / "leak.md").symlink_to(outside / "secret.md")
    result = load(str(folder / "**" / "*.md"))
    assert [Path(d.source).name for d in result.documents] == ["ok.md"]
    assert {Path(s.source).name for s in result.skipped} == {"secret.md", "leak.md"}
    assert all("outside" in s.reason for s in result.skipped)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_file_is_reported_as_skipped(tmp_path: Path) -> None:
    locked = tmp_path / "locked.md"
    locked.write_text("x")
    locked.chmod(0)
    result = load(tmp_path)
    assert "unreadable" in _reasons(result)["locked.md"]
