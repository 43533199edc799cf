"""Does a cited passage support the sentence that cites it? A lexical check, on purpose.

``cite()`` proves that every ``[n]`` names a retrieved source; it cannot tell that the source
says what the sentence claims. A model with nothing to go on still writes a fluent answer and
cites ``[1]`` ("A zorblat is a red sports car [1]" over a page about tea). This check
catches that kind of invention: a cited sentence whose own words (the question's words
removed, since echoing the question proves nothing) share no content word with any passage
it cites is unsupported. Shared words are compared by a short prefix, so "rejected" meets
"rejection", and numbers exactly.

Why not a model judge or embeddings: the check runs on every answer, offline and in the
same few microseconds whatever the model, and it must not itself be steerable by the text it
judges. It is lenient by design (one shared word is enough), so a faithful paraphrase is
very unlikely to be flagged; a subtle misreading of a source is out of its reach.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

STEM_CHARS = 5  # words are compared by this many leading characters
_WORD = re.compile(r"[^\W_]+")
_MARKER = re.compile(r"\[(\d+)\]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_STOP = frozenset("""
a about above after again against all also am an and any are as at be because been before
being below between both but by can could did do does doing down during each few for from
further had has have having he her here hers herself him himself his how i if in into is it
its itself just me more most my myself no nor not now of off on once only or other our ours
ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were
what when where which while who whom why will with would you your yours yourself yourselves
according answer based called cite cited describes document documents found given means
mentioned passage passages said says see shown source sources stated states text yes
""".split())


@dataclass(frozen=True)
class Support:
    """How many sentences of an answer cite a passage, and which of them none supports."""

    cited: int
    unsupported: list[str]

    @property
    def none_supported(self) -> bool:
        """Every citing sentence is unsupported: the answer is invented, not misworded."""
        return self.cited > 0 and len(self.unsupported) == self.cited


def check_support(text: str, passages: Mapping[int, str], question: str = "") -> Support:
    """Judge each sentence of ``text`` that cites sources (``[n]`` with ``n`` in
    ``passages``): unsupported when none of them shares a content word with it.

    A sentence with no content word of its own beyond the question's (``"Yes [1]."``)
    cannot be judged and passes; markers that name no passage are ``cite()``'s business.
    """
    asked = _stems(question)
    seen: dict[int, frozenset[str]] = {}
    flagged: list[str] = []
    citing = 0
    for sentence in _SENTENCE.split(text):
        cited = [int(n) for n in _MARKER.findall(sentence) if int(n) in passages]
        if not cited:
            continue
        citing += 1
        own = _stems(_MARKER.sub(" ", sentence)) - asked
        if not own:
            continue
        support: set[str] = set()
        for n in cited:
            if n not in seen:
                seen[n] = _stems(passages[n])
            support |= seen[n]
        if not own & support:
            flagged.append(sentence.strip())
    return Support(citing, flagged)


def unsupported_sentences(text: str, passages: Mapping[int, str],
                          question: str = "") -> list[str]:
    """The citing sentences of ``text`` no cited passage supports, in order, as written."""
    return check_support(text, passages, question).unsupported


def _stems(text: str) -> frozenset[str]:
    return frozenset(_stem(w) for w in _words(text))


def _words(text: str) -> Iterable[str]:
    for word in _WORD.findall(text.lower()):
        if any(c.isdigit() for c in word):
            yield word
        elif len(word) >= 3 and word not in _STOP:
            yield word


def _stem(word: str) -> str:
    return word if any(c.isdigit() for c in word) else word[:STEM_CHARS]


__all__ = ["Support", "check_support", "unsupported_sentences"]
