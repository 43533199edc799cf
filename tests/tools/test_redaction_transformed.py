"""A known key is hidden even when a program splits it with separators or encodes it.

Finding F4 of the red-team run: with the key in an ordinary workspace file, ``grep -o .``
printed it one character per line and ``cut -c 1-4,5-8,... --output-delimiter=' '`` as
``sk-t est- REDT ...``; no 8-character run was left for the piece matcher to find. Base64 and
hex of the key slipped through the same way. The Redactor now also looks for the secrets it
knows with the separators taken out, and for their base64 (every alignment) and hex.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from _key_lab import key_lab

from aillm_lab.tools.scan import MIN_TRANSFORMED_CHARS, Redactor

KEY = "sk-rt-" + secrets.token_hex(8) + "-" + secrets.token_urlsafe(18)
CORE = re.sub(r"[^A-Za-z0-9]", "", KEY)


def _leaks(text: str) -> list[str]:
    """Windows of the key's letters and digits still readable once separators are dropped."""
    flat = re.sub(r"[^A-Za-z0-9]", "", text)
    size = MIN_TRANSFORMED_CHARS
    return [CORE[i:i + size] for i in range(len(CORE) - size + 1) if CORE[i:i + size] in flat]


def _b64_leaks(text: str) -> list[str]:
    flat = re.sub(r"[^A-Za-z0-9]", "", text)
    found = []
    for skip in range(3):
        body = KEY.encode()[skip:]
        enc = re.sub(r"[^A-Za-z0-9]", "", base64.b64encode(body[:len(body) // 3 * 3]).decode())
        found += [enc[i:i + 16] for i in range(len(enc) - 15) if enc[i:i + 16] in flat]
    return found


@pytest.fixture
def lab(tmp_path: Any) -> Iterator[Any]:
    with key_lab(tmp_path, "AILLM_TRANSFORMED_TEST_API_KEY", KEY, {
            "settings.toml": f'api_key = "{KEY}"\nplain = "{KEY}"\n'}) as the_lab:
        yield the_lab


def _cut_ranges(step: int) -> str:
    return ",".join(f"{i}-{i + step - 1}" for i in range(1, 120, step))


@pytest.mark.parametrize("command", [
    "grep -o . settings.toml",
    f"cut -c {_cut_ranges(4)} --output-delimiter=' ' settings.toml",
    f"cut -c {_cut_ranges(3)} --output-delimiter=_ settings.toml",
    f"cut -c {_cut_ranges(7)} --output-delimiter='|' settings.toml",
    f"cut -c {_cut_ranges(2)} --output-delimiter=. settings.toml",
])
def test_a_key_split_by_separators_in_shell_output_is_redacted(lab: Any, command: str) -> None:
    result = lab.tools.invoke("run_shell", {"command": command})
    assert result.ok and "exit code 0" in result.content, result.content
    assert not _leaks(result.content), result.content
    assert "[REDACTED:secret]" in result.content
    audit = lab.tools.audit().to_json(date_format="iso")
    assert "settings.toml" in audit and not _leaks(audit)


@pytest.mark.parametrize("prefix", ["", "a", "ab", "key: ", "api_key = \""])
@pytest.mark.parametrize("wrap", [0, 76, 60])
def test_base64_of_a_key_at_any_alignment_is_redacted(lab: Any, prefix: str, wrap: int) -> None:
    encoded = base64.b64encode(f"{prefix}{KEY}\n".encode()).decode()
    if wrap:
        encoded = "\n".join(encoded[i:i + wrap] for i in range(0, len(encoded), wrap))
    (lab.tools.workspace.root / "blob.b64").write_text(f"data:\n{encoded}\nend\n")
    for tool, args in (("read_file", {"path": "blob.b64"}),
                       ("run_shell", {"command": "cat blob.b64"})):
        content = lab.tools.invoke(tool, args).content
        assert not _b64_leaks(content), (tool, content)
        assert "[REDACTED:secret]" in content and "data:" in content and "end" in content


@pytest.mark.parametrize("encode", [
    lambda raw: raw.hex(),
    lambda raw: raw.hex().upper(),
    lambda raw: " ".join(f"{b:02x}" for b in raw),
    lambda raw: base64.urlsafe_b64encode(raw).decode(),
])
def test_hex_and_urlsafe_encodings_of_a_key_are_redacted(lab: Any, encode: Any) -> None:
    encoded = encode(KEY.encode())
    (lab.tools.workspace.root / "dump.txt").write_text(f"dump {encoded} done\n")
    content = lab.tools.invoke("read_file", {"path": "dump.txt"}).content
    assert encoded not in content and "[REDACTED:secret]" in content
    assert content.startswith("dump ") and content.rstrip().endswith("done")


def test_text_around_a_split_key_is_kept() -> None:
    redactor = Redactor([KEY])
    spaced = " ".join(KEY[i:i + 3] for i in range(0, len(KEY), 3))
    shown = redactor.redact(f"first line\nthe value: {spaced}\nlast line\n")
    assert re.fullmatch(r"first line\nthe value: \[REDACTED:secret\][-_]?\nlast line\n", shown)


ORDINARY = [
    "The quick brown fox jumps over the lazy dog. sk learn test set: 0.93 accuracy.\n",
    "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39\nAuthor: A <a@b.c>\n\n    fix: typo\n",
    base64.b64encode(secrets.token_bytes(3000)).decode(),
    secrets.token_hex(2000),
    "id,name,qty\n" + "\n".join(f"{i},item-{i},{i * 7}" for i in range(500)),
    "".join(f"{c}\n" for c in "ordinary words printed one per line by grep -o ."),
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_output_is_left_untouched(text: str) -> None:
    redactor = Redactor([KEY, "sk-other-" + secrets.token_hex(20), "hunter42", "Passw0rd!"])
    assert redactor.redact(text) == text


def test_short_secrets_are_not_searched_for_in_transformed_forms() -> None:
    redactor = Redactor(["hunter42", "abcdefghijk"])  # under MIN_TRANSFORMED_CHARS
    for text in ("h u n t e r 4 2", "a-b-c-d-e-f-g-h-i-j-k", base64.b64encode(b"hunter42").decode(),
                 b"abcdefghijk".hex()):
        assert redactor.redact(text) == text
    assert redactor.redact("pw hunter42 ok") == "pw [REDACTED:secret] ok"  # whole still hidden
