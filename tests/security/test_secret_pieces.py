"""A key never comes out in pieces: any 8+ character run of a secret is redacted.

Finding 5 of the outside attack run: ``grep -ao 'SECRET[0-9]*'`` on the Lab's environ printed
the key's tail, and redaction only knew the whole value. Pieces can also come from a file,
a wrapped line, or a program that cuts columns; the guard hides them all, and leaves
7-character pieces (which would mangle ordinary text) alone.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

import aillm_lab as al
from aillm_lab.tools.scan import MIN_SECRET_CHARS, Redactor

KEY = "zq" + secrets.token_hex(16)


@pytest.fixture
def lab(tmp_path: Any) -> Iterator[Any]:
    os.environ["AILLM_PIECES_TEST_API_KEY"] = KEY
    try:
        with al.Lab(home=tmp_path / "home") as the_lab:
            yield the_lab
    finally:
        os.environ.pop("AILLM_PIECES_TEST_API_KEY", None)


def _windows(text: str, size: int) -> list[str]:
    return [KEY[i:i + size] for i in range(len(KEY) - size + 1) if KEY[i:i + size] in text]


@pytest.mark.parametrize("piece", [KEY[:8], KEY[-8:], KEY[5:21], KEY[1:], KEY[3:11] + KEY[20:30]])
def test_a_piece_of_a_key_in_a_file_is_redacted(lab: Any, piece: str) -> None:
    # words with no hex digit, z or q: a word next to a piece whose letters continue the key
    # (one in 16 for each hex letter) is rightly hidden with it, and the test would flake
    (lab.tools.workspace.root / "dump.txt").write_text(f"prolix {piece} outro\n")
    for tool, args in (("read_file", {"path": "dump.txt"}),
                       ("run_shell", {"command": "cat dump.txt"}),
                       ("run_shell", {"command": ["cut", "-c", "8-40", "dump.txt"]}),
                       ("search_text", {"pattern": "prolix"})):
        content = lab.tools.invoke(tool, args).content
        cut = args.get("command") == ["cut", "-c", "8-40", "dump.txt"]  # drops the words
        assert ("prolix" in content and "outro" in content) or cut, (tool, content)
        assert not _windows(content, MIN_SECRET_CHARS), (tool, content)
    audit = lab.tools.audit().to_json(date_format="iso")
    assert "dump.txt" in audit and not _windows(audit, MIN_SECRET_CHARS)


def test_a_key_split_across_lines_is_redacted_piece_by_piece() -> None:
    redactor = Redactor([KEY])
    wrapped = "\n".join(KEY[i:i + 10] for i in range(0, len(KEY), 10))
    shown = redactor.redact(wrapped)
    assert not _windows(shown, MIN_SECRET_CHARS) and "[REDACTED:secret]" in shown


def test_pieces_shorter_than_the_minimum_are_left_alone() -> None:
    redactor = Redactor([KEY])
    text = f"id {KEY[:MIN_SECRET_CHARS - 1]} and {KEY[10:10 + MIN_SECRET_CHARS - 1]}"
    assert redactor.redact(text) == text


def test_overlapping_and_adjacent_pieces_become_one_redaction() -> None:
    redactor = Redactor([KEY, "another-secret-value"])
    shown = redactor.redact(f"<{KEY[2:20]}{KEY[15:30]}|secret-value>")
    # the key's pieces are one redaction; the other secret is its own, unless the gapped
    # pass's run for this (random) key reaches across the '|' into it: a key's next
    # characters may stand within MAX_GAP of its end, and then the two merge (more hidden,
    # never less)
    assert shown in ("<[REDACTED:secret]|[REDACTED:secret]>", "<[REDACTED:secret]>"), shown
