"""A known key is hidden when its characters come out in order with any characters between.

Finding of the third red-team round: with the Lab's key in an ordinary workspace file, one
run_shell call ``cut -c18-20,21-23,... --output-delimiter=ww settings.py`` printed the whole
key in 3-character pieces joined by ``ww``. The Redactor's passes knew separators (spaces,
punctuation, digits) but not letters, so nothing matched. It now also looks for runs of a
secret's characters in order with small gaps, whatever fills the gaps.
"""

from __future__ import annotations

import pathlib
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from _key_lab import key_lab

import aillm_lab as al
from aillm_lab.tools.redact import MAX_GAP, MIN_GAPPED_CHARS, MIN_GAPPED_HEX_CHARS, Redactor

KEY = "sk-proj-" + secrets.token_urlsafe(33)


def _interleaved(text: str, piece: int, delimiter: str) -> str:
    """What ``cut -c1-3,4-6,... --output-delimiter=<delimiter>`` prints."""
    return delimiter.join(text[i:i + piece] for i in range(0, len(text), piece))


def _readable(shown: str, delimiter: str, form: str = KEY) -> list[str]:
    """Runs of ``MIN_SECRET_CHARS`` of ``form`` (any case, either way round) left readable
    once the delimiter is taken out again."""
    low = shown.replace(delimiter, "").lower() if delimiter else shown.lower()
    found = []
    for f in (form.lower(), form.lower()[::-1]):
        found += [f[i:i + 8] for i in range(len(f) - 7) if f[i:i + 8] in low]
    return found


DELIMITERS = ["ww", "w", "xy", "Q", "zzz", "9", "a1", KEY[10], KEY[20] + KEY[21], "ab-"]
# one character a piece with three between is spread too far: the documented limit below
CASES = [(piece, d) for piece in (1, 2, 3, 5) for d in DELIMITERS if piece + len(d) <= 3 * piece]


@pytest.mark.parametrize(("piece", "delimiter"), CASES,
                         ids=[f"{piece}-{DELIMITERS.index(d)}" for piece, d in CASES])
def test_a_key_interleaved_with_any_delimiter_is_redacted(piece: int, delimiter: str) -> None:
    for form in (KEY, KEY[::-1], KEY.upper(), KEY[1:], KEY[9:9 + MIN_GAPPED_CHARS + 2]):
        # (no letters around it: one that happens to be the key's next character joins the run)
        shown = Redactor([KEY]).redact(f"<<<\n{_interleaved(form, piece, delimiter)}\n>>>")
        assert not _readable(shown, delimiter, form), (form, shown)
        assert shown.startswith("<<<\n") and shown.endswith("\n>>>")
        assert "[REDACTED:secret]" in shown


def test_a_delimiter_made_of_the_keys_own_characters_does_not_lead_the_search_astray() -> None:
    """Each gap may hold a character the run needs next: the search keeps every position
    it could take (a frontier), not just the first."""
    for at in range(0, len(KEY) - 3):
        delimiter = KEY[at + 1] + KEY[at + 2]
        shown = Redactor([KEY]).redact(_interleaved(KEY, 1, delimiter))
        assert not _readable(shown, delimiter), (delimiter, shown)


def test_the_span_hidden_is_the_run_and_no_more() -> None:
    # '~' is no character of the key, so the run's ends are exact; with a letter delimiter
    # a key that ends in that letter ends its run one delimiter early (the tightest span)
    shown = Redactor([KEY]).redact(f"The key is {_interleaved(KEY, 3, '~~')} here.")
    assert shown == "The key is [REDACTED:secret] here."


def test_a_run_shorter_than_the_minimum_or_too_spread_out_is_left_alone() -> None:
    """The documented limits: too few characters of the key, or too far apart."""
    short = _interleaved(KEY[9:9 + MIN_GAPPED_CHARS - 1], 1, "ww")
    apart = _interleaved(KEY, 1, "w" * (MAX_GAP + 1))
    redactor = Redactor([KEY])
    assert redactor.redact(f"< {short} >") == f"< {short} >"
    assert redactor.redact(f"< {apart} >") == f"< {apart} >"


def test_a_hex_key_needs_a_longer_run() -> None:
    """Hex digits carry fewer bits, so a run of a hex key must be longer to count."""
    key = secrets.token_hex(32)
    redactor = Redactor([key])
    whole = _interleaved(key, 2, "ww")
    run = _interleaved(key[5:5 + MIN_GAPPED_HEX_CHARS], 1, "x")
    short = _interleaved(key[5:5 + MIN_GAPPED_HEX_CHARS - 1], 1, "x")
    assert redactor.redact(f"<{whole}>") == "<[REDACTED:secret]>"
    assert redactor.redact(f"<{run}>") == "<[REDACTED:secret]>"
    assert redactor.redact(f"<{short}>") == f"<{short}>"


def _source_text(limit: int = 400_000) -> str:
    root = pathlib.Path(al.__file__).parent
    return "".join(p.read_text() for p in sorted(root.rglob("*.py")))[:limit]


def test_real_text_is_not_redacted_by_the_gapped_pass() -> None:
    """A random key is not a run of characters with small gaps in ordinary text: 400 kB of
    this package's own source, hex (commit ids, dumps) and numbered lines stay as they are."""
    hexy = "\n".join(f"commit {secrets.token_hex(20)}  {secrets.token_hex(8)}" for _ in range(3000))
    numbers = "\n".join(f"{i}:{i * 7},{i * 13 % 1000}" for i in range(20_000))
    keys = [KEY, secrets.token_hex(32), secrets.token_hex(20), "ghp_" + secrets.token_urlsafe(30),
            secrets.token_urlsafe(16)]
    redactor = Redactor(keys, patterns=False)
    for text in (_source_text(), hexy, numbers):
        assert redactor.redact(text) == text


@pytest.fixture
def lab(tmp_path: Any) -> Iterator[Any]:
    # rev.txt, upper.txt: what `rev` and `tr a-z A-Z` would write (run_shell runs no pipes)
    with key_lab(tmp_path, "AILLM_GAPPED_TEST_API_KEY", KEY, {
            "settings.py": f'OPENAI_API_KEY = "{KEY}"\nMODEL = "gpt"\n',
            "rev.txt": f'"{KEY[::-1]}"\n', "upper.txt": f'"{KEY.upper()}"\n'}) as the_lab:
        yield the_lab


def _ranges(start: int, piece: int) -> str:
    return ",".join(f"{a}-{a + piece - 1}" for a in range(start, start + len(KEY) + 1, piece))


@pytest.mark.parametrize("command", [
    # the red-team's call: from the quote before the key, 3 characters a piece, "ww" between
    ["cut", f"-c{_ranges(18, 3)}", "--output-delimiter=ww", "settings.py"],
    ["cut", f"-c{_ranges(19, 2)}", "--output-delimiter=q", "settings.py"],
    ["cut", f"-c{_ranges(20, 1)}", "--output-delimiter=Zz", "settings.py"],
    f"cut -c{_ranges(1, 3)} --output-delimiter=ww rev.txt",
    f"cut -c{_ranges(2, 4)} --output-delimiter=x1 upper.txt",
], ids=["ww-3", "q-2", "Zz-1", "reversed", "upper"])
def test_one_shell_call_cannot_show_the_key_interleaved_with_letters(lab: Any,
                                                                     command: Any) -> None:
    result = lab.tools.invoke("run_shell", {"command": command})
    assert result.ok and "exit code 0" in result.content, result.content
    body = result.content.split("--- stdout ---", 1)[-1]
    for delimiter in ("ww", "q", "zz", "x1"):
        assert not _readable(body, delimiter), (delimiter, result.content)
    assert "[REDACTED:secret]" in body
    audit = lab.tools.audit().to_json(date_format="iso")
    assert "--output-delimiter" in audit and not _readable(audit, "ww")
    assert not re.search(re.escape(KEY[8:20]), audit, re.IGNORECASE)
