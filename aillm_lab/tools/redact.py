"""Secret redaction: hide API keys and other secrets in tool output and audit arguments.

Why a module of its own, apart from the injection scan in ``scan.py``: the two answer
different questions about the same text. The scan asks "does this text try to instruct the
model?" and fences it as data; redaction asks "does this text hold a secret?" and rewrites it,
and it also runs where no scan does: on the arguments the audit log stores, on a saved run,
on an OpenAPI tool's request line and errors. The guard (``safety.py``) applies both to every
tool's output, so every tool, and every third-party tool, gets the same protection and the
audit log never stores a key.
"""

from __future__ import annotations

import base64
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aillm_lab.config import SECRET_ENV_NAME

MIN_SECRET_CHARS = 8  # shorter values would redact ordinary words and numbers
# Letters and digits of a secret that must line up, separators dropped, for its split or
# encoded form to count: dropping separators joins words, so 8 would hit ordinary text
# ("task project" holds "skproj"); 12 random characters do not occur by chance.
MIN_TRANSFORMED_CHARS = 12
# Letters (no digits) of a secret that must line up in the text's letters alone: this pass
# reads through numbers put between pieces (``grep -o -b`` byte offsets, ``grep -n`` or
# ``cat -n`` line numbers). Dropping digits too joins more of ordinary text, so it takes
# more letters, and only secrets with that many letters get it: 16 letters of a random key
# do not occur by chance, even in 100 kB of hex (6**16 = 3e12 arrangements of its a-f).
MIN_LETTERS_CHARS = 16
# A secret read out in order with other characters between its own (``cut -c1-3,4-6
# --output-delimiter=ww`` prints ``skww-prwwoj...``) is found whatever those characters are:
# a run of ``MIN_GAPPED_CHARS`` of its characters in order, at most ``MAX_GAP`` characters
# apart and spread over at most ``MAX_SPREAD`` times their number, is hidden. 16 characters
# of a random key, each among the 4 after the last, do not line up by chance in ordinary
# text (none did in 10 MB of this repository's source, hex and numbers, 150 random keys).
MIN_GAPPED_CHARS = 16
# A secret of hex digits carries 4 bits a character, not 5 to 6: a run of its characters
# must be longer to be as unlikely by chance (in hex dumps and hashes above all).
MIN_GAPPED_HEX_CHARS = 20
_HEX = frozenset("0123456789abcdef")
MAX_GAP = 3
MAX_SPREAD = 3
# How many characters of a run one regex looks for before the exact check (5 for hex
# secrets: in hex text 4 hex digits with gaps line up too often, and each costs a check)
_ANCHOR_CHARS = 4
_ANCHOR_HEX_CHARS = 5
_ALNUM = re.compile(r"[A-Za-z0-9]")
_ALPHA = re.compile(r"[A-Za-z]")
_NOT_ALNUM_BYTES = bytes(b for b in range(256) if not (chr(b).isascii() and chr(b).isalnum()))
_NOT_ALPHA_BYTES = bytes(b for b in range(256) if not (chr(b).isascii() and chr(b).isalpha()))
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SECRET_FIELD = re.compile(r"^(.*[_-])?(password|passwd|secret|token|api[_-]?key|"
                           r"authorization|cookie|private[_-]?key)$", re.IGNORECASE)


class Redactor:
    """Replace known secret values, any piece of them, and well-known key formats.

    ``secrets`` are exact values (the Lab's API keys, secret-looking env vars); values shorter
    than ``MIN_SECRET_CHARS`` are ignored, since hiding them would mangle ordinary text. Any
    run of ``MIN_SECRET_CHARS`` or more characters taken from a secret is hidden too: a
    program that prints a key in pieces (``grep -o``, ``cut -c``, a line wrap) must not leak
    it piece by piece. The pieces are found in one pass with an Aho-Corasick automaton of
    every 8-character window of every secret (pyahocorasick), so the cost does not grow
    with the number of secrets.

    A secret can also be printed split by separators (``grep -o .`` puts one character per
    line, ``cut --output-delimiter=' '`` a space every few) or encoded. So a second pass
    reads only the text's ASCII letters and digits and looks for windows of
    ``MIN_TRANSFORMED_CHARS`` of a secret's letters and digits, of its hex (either case) and
    of its base64 (each of the three byte alignments; standard and URL-safe alike, since
    ``+/-_=`` are separators too). A third pass reads only the text's letters, for windows
    of ``MIN_LETTERS_CHARS`` of a secret's letters, so numbers printed between the pieces
    (``grep -o -b '.\\{1,7\\}'`` puts a byte offset before each 7-character piece) do not
    break it up. A hit maps back to the span of the original text it came from, separators
    included, and that span is hidden. Secrets with fewer than ``MIN_TRANSFORMED_CHARS``
    letters and digits are only matched as written (and in pieces).

    Separators need not be ones the passes know: ``cut --output-delimiter=ww`` puts letters
    between 3-character pieces. So a fourth pass looks for ``MIN_GAPPED_CHARS`` (20 for a
    secret of hex digits) of a secret's characters in order, each at most ``MAX_GAP``
    characters after the last and spread over at most ``MAX_SPREAD`` times their number,
    whatever lies between them (``_gapped_spans``). Every pass reads the text as given, and
    the spans they find are hidden together.

    Every pass compares case-folded text and also looks for the secret reversed, so
    SQL's ``upper(value)`` or ``reverse(value)`` and ``rev`` do not show it either.

    What output scanning cannot do: a secret read out in pieces shorter than
    ``MIN_SECRET_CHARS`` over several calls (``cut -c1-7``, then ``cut -c8-14``...) is never
    whole in one output, so no output holds anything to recognise; nor is a secret whose
    characters are printed further apart (one a piece, three-character separators). Keeping
    secrets out of what tools can read (the deny list, the environment) is what stops that;
    so is any
    transformation the passes above do not undo (a letter shift, arithmetic on codes).
    """

    def __init__(self, secrets: Iterable[str] = (), *, patterns: bool = True) -> None:
        self.patterns = patterns
        self._secrets: list[str] = []
        self._windows: Any = None
        self._transformed: Any = None
        self._letters: Any = None
        self._gapped: list[_Anchor] = []
        self.add(*secrets)

    def __repr__(self) -> str:  # never show the values
        return f"Redactor({len(self._secrets)} secrets, patterns={self.patterns})"

    def add(self, *secrets: str | None) -> None:
        """Remember more exact values (longest first, so overlapping secrets hide fully)."""
        fresh = {s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}
        self._secrets = sorted(set(self._secrets) | fresh, key=len, reverse=True)
        self._windows = _window_automaton(self._secrets) if self._secrets else None
        self._transformed = _transformed_automaton(self._secrets)
        self._letters = _letters_automaton(self._secrets)
        self._gapped = _gapped_anchors(self._secrets)

    def redact(self, text: str) -> str:
        """``text`` with every known secret, every 8+ char piece of one, and every
        key-shaped token replaced."""
        if self._windows is not None and len(text) >= MIN_SECRET_CHARS:
            # every pass reads the text as given; their spans are hidden together, once
            low = _fold(text)
            spans = _merged(self._windows.iter(low))
            if self._gapped and len(text) >= MIN_GAPPED_CHARS:
                spans += _gapped_spans(low, self._gapped)
            if self._transformed is not None and len(text) >= MIN_TRANSFORMED_CHARS:
                spans += _transformed_spans(text, self._transformed, _NOT_ALNUM_BYTES, _ALNUM)
            if self._letters is not None and len(text) >= MIN_LETTERS_CHARS:
                spans += _transformed_spans(text, self._letters, _NOT_ALPHA_BYTES, _ALPHA)
            text = _replaced(text, _union(spans)) if spans else text
        if self.patterns:
            # a pattern runs only where one of its anchors occurs: one pass finds them all
            hits = {i for _end, i in _anchor_automaton().iter(text.lower())}
            for i in sorted(hits):  # in table order, as each substitution changes the text
                _kind, pattern, replace, _anchors = _PATTERNS[i]
                text = pattern.sub(replace, text)
        return text

    def redact_value(self, value: Any) -> Any:
        """Redact recursively through dicts, lists and tuples (for audit arguments).

        A string under a key named like ``password``/``api_key``/``authorization`` is hidden
        whole, whatever it looks like.
        """
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Mapping):
            return {self.redact(str(k)): self._redact_field(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.redact_value(v) for v in value]
        return value

    def _redact_field(self, key: str, value: Any) -> Any:
        if isinstance(value, str) and value and _SECRET_FIELD.match(key):
            return f"[REDACTED:{key.lower()}]"
        return self.redact_value(value)


def _window_automaton(secrets: list[str]) -> Any:
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for secret in secrets:
        for form in (secret.lower(), secret.lower()[::-1]):
            for i in range(len(form) - MIN_SECRET_CHARS + 1):
                automaton.add_word(form[i:i + MIN_SECRET_CHARS], MIN_SECRET_CHARS)
    automaton.make_automaton()
    return automaton


def _transformed_automaton(secrets: list[str]) -> Any:
    """Windows of each secret's letters and digits (also reversed), hex and base64,
    separators dropped, lower-cased."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    for secret in secrets:
        raw = secret.encode("utf-8")
        if len(_flat(secret)) < MIN_TRANSFORMED_CHARS:
            continue
        forms = [(secret, MIN_TRANSFORMED_CHARS), (secret[::-1], MIN_TRANSFORMED_CHARS),
                 (raw.hex(), 2 * MIN_TRANSFORMED_CHARS)]
        for skip in range(3):  # where the secret starts within a 3-byte base64 group
            body = raw[skip:]
            whole_groups = body[:len(body) // 3 * 3]  # the last group mixes in what follows
            forms.append((base64.b64encode(whole_groups).decode("ascii"),
                          MIN_TRANSFORMED_CHARS * 4 // 3))
        for form, size in forms:
            flat = _flat(form).lower()
            for i in range(len(flat) - size + 1):
                automaton.add_word(flat[i:i + size], size)
    if not len(automaton):
        return None
    automaton.make_automaton()
    return automaton


def _letters_automaton(secrets: list[str]) -> Any:
    """Windows of each secret's letters alone (also reversed), lower-cased, for secrets
    with at least ``MIN_LETTERS_CHARS`` letters."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    size = MIN_LETTERS_CHARS
    for secret in secrets:
        letters = _flat(secret, _NOT_ALPHA_BYTES).lower()
        for form in (letters, letters[::-1]):
            for i in range(len(form) - size + 1):
                automaton.add_word(form[i:i + size], size)
    if not len(automaton):
        return None
    automaton.make_automaton()
    return automaton


_Anchor = tuple[str, int, int, re.Pattern[str]]  # (form, where the stretch starts, run, regex)


def _gapped_anchors(secrets: list[str]) -> list[_Anchor]:
    """For each secret of ``MIN_GAPPED_CHARS`` or more (lower-cased, and reversed): a few
    ``_ANCHOR_CHARS``-character stretches of it as regexes that allow ``MAX_GAP`` characters
    between each two. Every run of ``MIN_GAPPED_CHARS`` holds one of them whole, so a run is
    looked for only where a stretch matched (one C-speed regex pass per stretch)."""
    out = []
    gap = f".{{0,{MAX_GAP}}}?"  # bounded: at most (MAX_GAP + 1) ** 4 tries per start
    for secret in secrets:
        low = _fold(secret)
        hexy = set(low) <= _HEX
        run = MIN_GAPPED_HEX_CHARS if hexy else MIN_GAPPED_CHARS
        chars = _ANCHOR_HEX_CHARS if hexy else _ANCHOR_CHARS
        if len(low) < run:
            continue
        for form in (low, low[::-1]):
            for at in _anchor_starts(form, run, chars):
                stretch = form[at:at + chars]
                pattern = re.compile("(?s)" + gap.join(map(re.escape, stretch)))
                out.append((form, at, run, pattern))
    return out


def _anchor_starts(form: str, run: int, chars: int) -> list[int]:
    """Where the stretches start: every ``run``-character window of ``form`` must hold one,
    and among such choices the one whose first characters are rarest in ordinary text (a
    regex pass costs little where its first character is rare). A shortest-path over the
    start positions."""
    size, reach = len(form) - chars + 1, run - chars + 1
    cost = [1.0 + 20 * 0.88 ** _COMMON.get(form[i], 99) for i in range(size)]
    best: list[tuple[float, list[int]]] = []
    for i in range(size):
        if i < reach:  # the first window holds this stretch
            best.append((cost[i], [i]))
        else:
            prev = min(best[i - reach:i])
            best.append((prev[0] + cost[i], [*prev[1], i]))
    return min(best[max(size - reach, 0):])[1]


# ASCII characters by how often they occur in English and code, most common first; digits
# count as common, since numbers, hex dumps and hashes are full of them
_COMMON = {c: i for i, c in enumerate(' etsroanildc0123456789"fpmu.,_h()-:gy`b=wkvx[]{}>'
                                      "'q|j*/;#\\+z<!?@%$^~&")}


def _gapped_spans(low: str, anchors: list[_Anchor]) -> list[list[int]]:
    """Every ``[start, stop)`` span of the case-folded text where a secret's characters run
    in order with small gaps."""
    spans: list[list[int]] = []
    for form, at, run, pattern in anchors:
        m = pattern.search(low)
        while m:  # every start, overlapping ones too: a run may line up with any of them
            span = _gapped_run(low, form, at, m.start(), run)
            if span:
                spans.append(span)
            m = pattern.search(low, m.start() + 1)
    return spans


def _union(spans: list[list[int]]) -> list[list[int]]:
    """``[start, stop)`` spans sorted, overlapping or touching ones merged."""
    out: list[list[int]] = []
    for start, stop in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], stop)
        else:
            out.append([start, stop])
    return out


def _gapped_run(low: str, form: str, at: int, start: int, run: int) -> list[int] | None:
    """The span of the longest run of ``form``'s characters through ``form[at]`` at ``start``,
    each at most ``MAX_GAP`` from the last, if it is long and dense enough.

    Exact, with no backtracking: the positions each next character can take are kept as a
    set (a frontier), so a character that also occurs between the pieces cannot lead the
    search astray."""
    first = last = at
    lows, highs = [start], [start]
    while last + 1 < len(form):  # forward, one character of the secret at a time
        ahead = _reach(low, form[last + 1], highs, 1)
        if not ahead:
            break
        highs, last = ahead, last + 1
    while first > 0:  # and backward
        behind = _reach(low, form[first - 1], lows, -1)
        if not behind:
            break
        lows, first = behind, first - 1
    length = last - first + 1
    # the tightest span: a character of the secret just outside it is not one the run needs
    if length < run or highs[0] - lows[-1] + 1 > MAX_SPREAD * length:
        return None
    return [lows[-1], highs[0] + 1]


def _reach(low: str, char: str, frontier: list[int], way: int) -> list[int]:
    """Positions of ``char`` at most ``MAX_GAP`` characters after (``way`` 1) or before (-1)
    a frontier position, sorted."""
    found: set[int] = set()
    for pos in frontier:
        if way > 0:
            lo, hi = pos + 1, pos + MAX_GAP + 2
        else:
            lo, hi = max(pos - MAX_GAP - 1, 0), pos
        at = low.find(char, lo, hi)
        while at != -1:
            found.add(at)
            at = low.find(char, at + 1, hi)
    return sorted(found)


def _transformed_spans(text: str, windows: Any, dropped: bytes,
                       kept: re.Pattern[str]) -> list[list[int]]:
    """Find windows in the text's kept characters (ASCII letters and digits, or letters
    alone), lower-cased; the spans of the original text they cover.

    The flat copy costs one ``bytes.translate`` (0.04 ms for 100 kB, 45x less than a
    ``re.sub``); the position map is built only on a hit.
    """
    spans = _merged(windows.iter(_flat(text, dropped).lower()))
    if not spans:
        return []
    where = [m.start() for m in kept.finditer(text)]  # flat index -> text index
    return [[where[start], where[stop - 1] + 1] for start, stop in spans]


def _flat(text: str, dropped: bytes = _NOT_ALNUM_BYTES) -> str:
    """Only the ASCII letters and digits of ``text``, or its letters alone (every other
    character is >= 0x80 or a separator in UTF-8, so deleting bytes keeps exactly those)."""
    return text.encode("utf-8", "surrogatepass").translate(None, dropped).decode()


def _fold(text: str) -> str:
    """``text`` lower-cased, position for position (``str.lower`` turns ``İ`` into two
    characters; then only ASCII letters are lowered)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


@functools.cache
def _anchor_automaton() -> Any:
    """Every secret format's anchors -> its index in ``_PATTERNS`` (one Aho-Corasick pass
    finds which formats may occur: cheaper than a substring test per anchor)."""
    import ahocorasick

    automaton = ahocorasick.Automaton()
    by_anchor: dict[str, list[int]] = {}
    for i, (*_, anchors) in enumerate(_PATTERNS):
        for anchor in anchors:
            by_anchor.setdefault(anchor, []).append(i)
    for anchor, indexes in by_anchor.items():
        assert len(indexes) == 1, anchor  # one value per word: share no anchor
        automaton.add_word(anchor, indexes[0])
    automaton.make_automaton()
    return automaton


def _merged(hits: Any) -> list[list[int]]:
    """Aho-Corasick hits ``(end, size)``, in end order, as ``[start, stop)`` spans with
    overlapping or touching ones merged."""
    spans: list[list[int]] = []
    for end, size in hits:
        start = end - size + 1
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end + 1)
        else:
            spans.append([start, end + 1])
    return spans


def _replaced(text: str, spans: Any) -> str:
    """``text`` with each ``(start, stop)`` span, in order, replaced by the marker."""
    out, at = [], 0
    for start, stop in spans:
        out += [text[at:start], "[REDACTED:secret]"]
        at = stop
    out.append(text[at:])
    return "".join(out)


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of env vars named like a secret (``config.SECRET_ENV_NAME``: ``*KEY*``,
    ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``), the names whose variables
    ``config.environ_without_secrets`` keeps from child processes.

    Values under ``MIN_SECRET_CHARS`` and absolute paths (``HF_TOKEN_PATH=/home/...``) are
    skipped: they are not secrets, and hiding them would mangle tool output.
    """
    env = os.environ if environ is None else environ
    return [value for name, value in env.items()
            if SECRET_ENV_NAME.search(name) and len(value) >= MIN_SECRET_CHARS
            and not value.startswith(("/", "~"))]


# -- secret formats -------------------------------------------------------------------------
def _keep_prefix(kind: str) -> Callable[[re.Match[str]], str]:
    return lambda m: f"{m.group(1)}[REDACTED:{kind}]"


def _if_random(kind: str) -> Callable[[re.Match[str]], str]:
    """Only tokens with letters and digits: ``sk-learn-model-selection`` is not a key."""
    def replace(m: re.Match[str]) -> str:
        body = m.group(0)
        if any(c.isdigit() for c in body) and any(c.isalpha() for c in body[3:]):
            return f"[REDACTED:{kind}]"
        return body
    return replace


def _fixed(kind: str) -> str:
    return f"[REDACTED:{kind}]"


# (kind, pattern, replacement, lowercase substrings one of which a match must contain)
_PATTERNS: list[tuple[str, re.Pattern[str], Any, tuple[str, ...]]] = [
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?"
                               r"(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)"),
     _fixed("private_key"), ("private key-----",)),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"), _if_random("anthropic_key"),
     ("sk-ant-",)),
    ("openai_key", re.compile(r"\bsk-(?!ant-)[A-Za-z0-9_-]{20,}"), _if_random("openai_key"),
     ("sk-",)),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), _fixed("aws_access_key"),
     ("akia", "asia")),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
     _fixed("github_token"), ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), _fixed("slack_token"),
     ("xox",)),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}"), _fixed("google_api_key"),
     ("aiza",)),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
     _fixed("jwt"), ("eyj",)),
    ("authorization", re.compile(r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?"
                                 r"(?:bearer|basic|token|bot)\s+)[A-Za-z0-9._~+/=-]{6,}"),
     _keep_prefix("authorization"), ("authorization",)),
    ("bearer", re.compile(r"(?i)(\bbearer\s+)(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{20,}=*"),
     _keep_prefix("bearer"), ("bearer",)),
]

__all__ = ["MAX_GAP", "MAX_SPREAD", "MIN_GAPPED_CHARS", "MIN_GAPPED_HEX_CHARS", "MIN_LETTERS_CHARS",
           "MIN_SECRET_CHARS", "MIN_TRANSFORMED_CHARS", "Redactor", "env_secrets"]
