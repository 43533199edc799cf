"""Path spelling rules and workspace globs, applied before any path arithmetic.

Kept apart from ``Workspace`` because they are pure string checks: each spelling that can
hide a traversal (encodings, look-alikes, Windows syntax, '...', '~') is refused here, so
``Workspace.resolve`` only ever canonicalises plain paths.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote_to_bytes

from aillm_lab.errors import SafetyViolation

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX on common file systems
MAX_DECODE_ROUNDS = 4  # %25252e… deeper than this is refused outright

_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_U_ESCAPE = re.compile(r"%[uU][0-9A-Fa-f]{4}")
_DRIVE = re.compile(r"^[A-Za-z]:")
_SENSITIVE = frozenset(b"./\\~:%\x00")  # bytes that must never arrive percent-encoded
_LOOKALIKE = "./\\:~%"
_DOTS = re.compile(r"^\.{3,}\Z")
_GLOB_TOKEN = re.compile(r"/\*\*\Z|\*\*/|\*\*|\*|\?|\[[!^]?[^\]]+\]|.", re.DOTALL)
_GLOB_MAP = {"/**": "(?:/.*)?", "**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}


def glob_to_regex(pattern: str) -> str:
    """A regex for a workspace glob: ``*`` and ``?`` stay in one folder, ``**/`` spans many.

    A trailing ``/**`` also matches the folder itself, so ``.ssh/**`` covers ``.ssh``.
    """
    out: list[str] = []
    for tok in _GLOB_TOKEN.findall(pattern):
        if tok in _GLOB_MAP:
            out.append(_GLOB_MAP[tok])
        elif tok.startswith("[") and tok[1:-1] not in ("!", "^"):
            body = tok[1:-1].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body[0] in "!^" else body) + "]")
        else:
            out.append(re.escape(tok))
    return "(?s:" + "".join(out) + r")\Z"


def check_spelling(raw: str) -> None:
    """Refuse spellings that hide their meaning, before any path arithmetic is done."""
    if not raw:
        raise SafetyViolation("path.empty", "the path is empty; use '.' for the workspace root")
    if "\x00" in raw:
        raise SafetyViolation("path.nul", f"{show(raw)} contains a NUL byte; remove it")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise SafetyViolation("path.control_char", f"{show(raw)} contains a control "
                              "character; use a plain file name")
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise SafetyViolation("path.encoding", f"{show(raw)} is not valid Unicode "
                              "(lone surrogate); use a plain UTF-8 name") from None
    if len(encoded) > MAX_PATH_BYTES or any(
            len(p.encode("utf-8")) > MAX_NAME_BYTES for p in raw.split("/")):
        raise SafetyViolation("path.too_long", f"path of {len(encoded)} bytes is too long "
                              f"(at most {MAX_PATH_BYTES}, {MAX_NAME_BYTES} per name)")
    if "\\" in raw or _DRIVE.match(raw):
        raise SafetyViolation("path.windows", f"{show(raw)} uses Windows syntax "
                              "(backslash, drive letter or UNC); use '/'-separated relative paths")
    _check_encoding(raw)
    if any(_DOTS.match(part) for part in raw.split("/")):
        raise SafetyViolation("path.dots", f"{show(raw)} has a name made only of dots; "
                              "'...' means '../..' to some tools, so it is refused")
    if raw.startswith("~"):
        raise SafetyViolation("path.home", f"{show(raw)} points into a home directory; "
                              "paths are relative to the workspace root, not '~'")


def _check_encoding(raw: str) -> None:
    """Percent-encoded dots, slashes, NULs (at any depth) and overlong UTF-8 are refused.

    The path is never used decoded: a name like ``a%20b.txt`` stays literal. Decoding here
    only finds names that would turn into traversal in a decoder further down the line.
    """
    text = raw
    for _ in range(MAX_DECODE_ROUNDS + 1):
        if _U_ESCAPE.search(text):
            raise SafetyViolation("path.encoded", f"{show(raw)} contains a %u escape; "
                                  "send the plain characters instead")
        codes = [int(h, 16) for h in _ESCAPE.findall(text)]
        if not codes:
            break
        if any(c in _SENSITIVE and c != 0x25 or c < 0x20 or c == 0x7F for c in codes):
            raise SafetyViolation("path.encoded", f"{show(raw)} hides '.', '/', '\\', '~', "
                                  "':' or NUL behind %-encoding; send the plain path")
        try:
            text = unquote_to_bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise SafetyViolation("path.encoded", f"{show(raw)} decodes to invalid or "
                                  "overlong UTF-8 (e.g. %c0%ae); send the plain path") from None
    else:
        raise SafetyViolation("path.encoded", f"{show(raw)} is %-encoded more than "
                              f"{MAX_DECODE_ROUNDS} times; send the plain path")
    folded = unicodedata.normalize("NFKC", raw)
    if folded != raw and any(folded.count(c) != raw.count(c) for c in _LOOKALIKE):
        raise SafetyViolation("path.lookalike", f"{show(raw)} uses look-alike characters "
                              f"that normalise to {show(folded)}; use plain ASCII '.' and '/'")


def show(raw: str) -> str:
    """A path as refusals quote it: repr, cut at 120 characters."""
    return repr(raw if len(raw) <= 120 else raw[:117] + "...")


__all__ = ["MAX_DECODE_ROUNDS", "MAX_NAME_BYTES", "MAX_PATH_BYTES", "check_spelling",
           "glob_to_regex", "show"]
