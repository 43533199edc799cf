"""A known key is hidden when shown reversed, in another case, or in pieces between numbers.

Finding R1 of the second red-team round: with the Lab's key in an ordinary workspace file,
one run_shell call ``grep -o -b '.\\{1,7\\}' settings.csv`` printed it in 7-character pieces,
each after its byte offset (``21:j-q8f3k``), so neither the 8-character piece matcher nor
the separators-dropped pass saw it; and sql_query's ``upper(value)`` and ``reverse(value)``
showed it whole. The Redactor now compares case-folded text, looks for the reversed secret
too, and reads the text's letters alone for windows of the secret's letters.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from _key_lab import key_lab

from aillm_lab.tools.scan import MIN_LETTERS_CHARS, MIN_SECRET_CHARS, Redactor

KEY = "sk-proj-" + secrets.token_urlsafe(33)
LETTERS = re.sub(r"[^a-z]", "", KEY.lower())


def _leaks(text: str) -> list[str]:
    """Pieces of the key still readable: 8 characters in a row in any case, either way
    round, or ``MIN_LETTERS_CHARS`` of its letters once everything else is dropped."""
    low = text.lower()
    letters = re.sub(r"[^a-z]", "", low)
    found = []
    for form in (KEY.lower(), KEY.lower()[::-1]):
        found += [form[i:i + 8] for i in range(len(form) - 7) if form[i:i + 8] in low]
    for form in (LETTERS, LETTERS[::-1]):
        size = MIN_LETTERS_CHARS
        found += [form[i:i + size] for i in range(len(form) - size + 1)
                  if form[i:i + size] in letters]
    return found


@pytest.mark.parametrize("shown", [
    KEY.upper(), KEY.swapcase(), KEY[::-1], KEY[::-1].upper(), KEY.title(),
    f"value={KEY.upper()};", f"'{KEY[::-1]}'\n",
], ids=["upper", "swapcase", "reversed", "reversed-upper", "title", "assigned", "quoted"])
def test_a_key_in_another_case_or_reversed_is_redacted(shown: str) -> None:
    out = Redactor([KEY]).redact(f"before {shown} after")
    assert not _leaks(out), out
    assert out.startswith("before ") and out.endswith(" after") and "[REDACTED:secret]" in out


def _with_offsets(text: str, step: int, *, sep: str = ":") -> str:
    """What ``grep -o -b '.\\{1,step\\}'`` prints: each piece after its byte offset."""
    return "".join(f"{i}{sep}{text[i:i + step]}\n" for i in range(0, len(text), step))


@pytest.mark.parametrize("step", [3, 5, 6, 7])
@pytest.mark.parametrize("form", [KEY, KEY[::-1], KEY.upper()],
                         ids=["as-is", "reversed", "upper"])
def test_pieces_between_numbers_in_one_output_are_redacted(step: int, form: str) -> None:
    for sep in (":", "\t", " "):
        out = Redactor([KEY]).redact(_with_offsets(f"OPENAI_API_KEY={form}\n", step, sep=sep))
        pieces = "".join(re.findall(rf"^\d+{sep}(.*)$", out, re.MULTILINE))
        assert not _leaks(out) and not _leaks(pieces), (sep, out)


def test_a_piece_under_eight_characters_is_not_recognised() -> None:
    """The documented limit: one short piece per call holds nothing to recognise."""
    piece = KEY[8:8 + MIN_SECRET_CHARS - 1]
    assert Redactor([KEY]).redact(f"out: {piece}\n") == f"out: {piece}\n"


ORDINARY = [
    "\n".join(f"{i}:    def handler_{i}(request, response):  # line {i}" for i in range(1, 400)),
    "\n".join(f"{i * 7}:abcdef{i % 10}" for i in range(300)),
    secrets.token_hex(3000),
    "\n".join(f"commit {secrets.token_hex(20)}\nAuthor: A <a@b.c>\n" for _ in range(200)),
    base64.b64encode(secrets.token_bytes(3000)).decode(),
    "id,name,qty\n" + "\n".join(f"{i},ITEM-{i},{i * 7}" for i in range(500)),
    "The Quick Brown Fox Jumps Over The Lazy Dog. SK-LEARN TEST SET: 0.93 ACCURACY.\n",
    "".join(f"{n}:{w}\n" for n, w in enumerate("ordinary words, one a line, by grep".split())),
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_output_is_left_untouched(text: str) -> None:
    redactor = Redactor([KEY, "sk-other-" + secrets.token_hex(20), secrets.token_hex(32),
                         "hunter42", "Passw0rd!", "CorrectHorseBatteryStaple42"])
    assert redactor.redact(text) == text


@pytest.fixture
def lab(tmp_path: Any) -> Iterator[Any]:
    with key_lab(tmp_path, "AILLM_REVERSED_TEST_API_KEY", KEY, {
            "settings.csv": f"name,value\nOPENAI_API_KEY,{KEY}\nmodel,gpt\n"}) as the_lab:
        yield the_lab


@pytest.mark.parametrize("command", [
    "grep -o -b '.\\{1,7\\}' settings.csv",
    "grep -o -b '.\\{1,6\\}' settings.csv",
    "grep -o -b '.\\{1,4\\}' settings.csv",
    "grep -o -b -n '.\\{1,5\\}' settings.csv",
    "grep -o -n '.\\{1,7\\}' settings.csv",
])
def test_one_shell_call_cannot_show_the_key_in_pieces_between_numbers(
        lab: Any, command: str) -> None:
    result = lab.tools.invoke("run_shell", {"command": command})
    assert result.ok and "exit code 0" in result.content, result.content
    assert not _leaks(result.content), result.content
    assert "[REDACTED:secret]" in result.content
    audit = lab.tools.audit().to_json(date_format="iso")
    assert "settings.csv" in audit and not _leaks(audit)


@pytest.mark.parametrize("expression", ["upper(value)", "reverse(value)", "upper(reverse(value))",
                                        "lower(value)"])
def test_sql_upper_and_reverse_of_the_key_are_redacted(lab: Any, expression: str) -> None:
    assert lab.tools.invoke("load_table", {"path": "settings.csv", "name": "s"}).ok
    result = lab.tools.invoke("sql_query", {"sql": f"select name, {expression} as v from s"})
    assert result.ok, result.content
    assert not _leaks(result.content), result.content
    assert "[REDACTED:secret]" in result.content and "OPENAI_API_KEY" in result.content
