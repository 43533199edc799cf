"""``ContextManager``: pack system prompt, memory, sources and history into a token budget.

Budgets are counted with the target model's own tokenizer: OpenAI's BPE (o200k/cl100k via
``bpe-openai``, which ships the ranks, so it works offline where ``tiktoken`` would
download them), the HF tokenizer for local models, and a stated approximation otherwise.
Whole items are dropped, lowest priority first; nothing is cut mid-sentence. ``cite()``
maps ``[n]`` markers in an answer back to the numbered sources and flags dangling ones.
"""

from __future__ import annotations

import html
import math
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field

from aillm_lab.errors import AillmError
from aillm_lab.llm.types import Message

Kind = Literal["system", "memory", "source", "history"]
_CITE = re.compile(r"\[(\d+(?:\s*[,;]\s*\d+)*)\]")


class ContextOverflow(AillmError, ValueError):
    """Even the items that must stay (system prompt, latest question) exceed the budget."""


class TokenCounter(Protocol):
    name: str
    exact: bool

    def count(self, text: str) -> int: ...


@dataclass(frozen=True)
class FunctionCounter:
    """Any ``str -> int`` counter (an HF tokenizer's ``encode``, a model's count_tokens)."""

    fn: Callable[[str], int]
    name: str
    exact: bool = True

    def count(self, text: str) -> int:
        return self.fn(text)


@dataclass(frozen=True)
class ApproxCounter:
    """ceil(chars / 3.5): an over-estimate for English BPE vocabularies, stated as such."""

    name: str = "approx: ceil(chars / 3.5)"
    exact: bool = False
    chars_per_token: float = 3.5

    def count(self, text: str) -> int:
        return math.ceil(len(text) / self.chars_per_token)


def counter_for(model: Any = None) -> TokenCounter:
    """The tokenizer of ``model``: a ``provider:model`` string, a Model, or a tokenizer."""
    if model is None:
        return ApproxCounter()
    if hasattr(model, "count") and hasattr(model, "exact"):
        return model  # already a counter
    if hasattr(model, "encode") and not isinstance(model, str):  # HF / tokenizers object
        return FunctionCounter(lambda t: _encoded_len(model, t),
                               getattr(model, "name_or_path", type(model).__name__))
    spec = getattr(model, "id", model)
    if not isinstance(spec, str):
        raise TypeError(f"model: give a 'provider:model' string, a Model or a tokenizer, "
                        f"not {type(model).__name__}")
    provider, _, name = spec.partition(":")
    name = name.split("@", 1)[0]
    if provider == "openai":
        return _openai_counter(name)
    if provider == "local":
        return _local_counter(name)
    return ApproxCounter(name=f"approx for {spec}: ceil(chars / 3.5)")


class ContextItem(BaseModel):
    kind: Kind
    text: str
    priority: float = 0.0
    role: Literal["system", "user", "assistant", "tool"] = "user"
    source: str | None = None
    label: int | None = Field(default=None, description="[n] of a kept source")
    order: int = 0


class Source(BaseModel):
    label: int
    source: str
    text: str


class PackedContext(BaseModel):
    """What ``pack()`` kept, what it dropped, and the count by the model's tokenizer."""

    messages: list[Message]
    sources: list[Source]
    kept: list[ContextItem]
    dropped: list[ContextItem]
    tokens: int
    budget: int
    counter: str
    exact: bool

    def cite(self, answer: str) -> Citations:
        return cite(answer, self.sources)

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{i.kind}</td><td>{i.priority:g}</td>"
                       f"<td>{html.escape(i.text[:80])}</td></tr>" for i in self.dropped)
        return (f"<b>{self.tokens}/{self.budget} tokens</b> ({html.escape(self.counter)}), "
                f"{len(self.kept)} items kept, {len(self.dropped)} dropped"
                + (f"<table><tr><th>dropped</th><th>priority</th><th>text</th></tr>{rows}"
                   "</table>" if rows else ""))


class Citations(BaseModel):
    """Markers found in an answer: the sources they name, and those that name nothing."""

    cited: list[Source]
    unknown: list[int] = Field(description="markers such as [7] with no source 7")
    uncited: list[int] = Field(description="source labels the answer never used")

    @property
    def ok(self) -> bool:
        return not self.unknown


class ContextManager:
    """Collect items with priorities, then ``pack()`` them into ``budget_tokens``.

    ``reserve_output`` tokens are kept free for the answer; each message costs
    ``per_message_tokens`` more for its chat-template wrapping.
    """

    def __init__(self, model: Any = None, budget_tokens: int = 2048, *,
                 reserve_output: int = 0, per_message_tokens: int = 4,
                 counter: TokenCounter | None = None) -> None:
        if budget_tokens <= 0:
            raise ValueError(f"budget_tokens must be > 0, got {budget_tokens}")
        if not 0 <= reserve_output < budget_tokens:
            raise ValueError(f"reserve_output must be in [0, budget_tokens), "
                             f"got {reserve_output}")
        self.counter = counter or counter_for(model)
        self.budget = budget_tokens - reserve_output
        self.total_budget = budget_tokens
        self.per_message = per_message_tokens
        self.items: list[ContextItem] = []

    def _add(self, kind: Kind, text: str, priority: float, **extra: Any) -> ContextManager:
        if not isinstance(text, str):
            raise TypeError(f"{kind} text must be a str, got {type(text).__name__}")
        self.items.append(ContextItem(kind=kind, text=text, priority=priority,
                                      order=len(self.items), **extra))
        return self

    def system(self, text: str) -> ContextManager:
        """The system prompt; it always stays (priority infinity)."""
        return self._add("system", text, math.inf, role="system")

    def memory(self, text: str, priority: float = 50.0) -> ContextManager:
        return self._add("memory", text, priority)

    def sources(self, hits: Iterable[Any], priority: float = 40.0) -> ContextManager:
        """Retrieved chunks (``SearchHit``s, dicts or strings), best first: earlier ones
        get a slightly higher priority, so the packer drops the weakest first."""
        for rank, hit in enumerate(hits):
            text, source = _hit_text(hit)
            self._add("source", text, priority - rank * 1e-3, source=source)
        return self

    def history(self, messages: Sequence[Message | dict[str, Any]],
                priority: float = 30.0) -> ContextManager:
        """Conversation turns, oldest first; the last user turn always stays, and newer
        turns outrank older ones."""
        msgs = [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]
        last_user = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1)
        for i, msg in enumerate(msgs):
            prio = math.inf if i == last_user else priority + i * 1e-3
            self._add("history", msg.text, prio, role=msg.role)
        return self

    def count(self, messages: Sequence[Message]) -> int:
        return sum(self.counter.count(m.text) + self.per_message for m in messages)

    def pack(self) -> PackedContext:
        """Greedy by priority, then re-counted on the rendered messages and trimmed until
        they fit, so the budget holds by the real tokenizer, not a sum of estimates."""
        by_priority = sorted(self.items, key=lambda i: (-i.priority, i.order))
        kept: list[ContextItem] = []
        used = self.per_message  # the system message's wrapping
        for item in by_priority:
            cost = self.counter.count(item.text) + (
                self.per_message if item.kind == "history" else 2)
            if used + cost <= self.budget or math.isinf(item.priority):
                kept.append(item)
                used += cost
        while True:
            messages, sources = self._render(kept)
            tokens = self.count(messages)
            if tokens <= self.budget:
                break
            optional = [i for i in kept if not math.isinf(i.priority)]
            if not optional:
                raise ContextOverflow(
                    f"the system prompt and latest question alone take {tokens} tokens "
                    f"({self.counter.name}), more than the budget of {self.budget}; raise "
                    f"budget_tokens or shorten them")
            kept.remove(min(optional, key=lambda i: (i.priority, -i.order)))
        dropped = [i for i in self.items if i not in kept]
        return PackedContext(messages=messages, sources=sources, kept=kept, dropped=dropped,
                             tokens=tokens, budget=self.budget, counter=self.counter.name,
                             exact=self.counter.exact)

    def _render(self, kept: list[ContextItem]) -> tuple[list[Message], list[Source]]:
        in_order = sorted(kept, key=lambda i: i.order)
        system = [i.text for i in in_order if i.kind == "system"]
        memory = [f"- {i.text}" for i in in_order if i.kind == "memory"]
        sources = [Source(label=n, source=i.source or f"source {n}", text=i.text)
                   for n, i in enumerate((i for i in in_order if i.kind == "source"), 1)]
        parts = list(system)
        if memory:
            parts.append("What you remember about the user:\n" + "\n".join(memory))
        if sources:
            parts.append("Sources (cite them as [n]):\n" + "\n\n".join(
                f"[{s.label}] ({s.source}) {s.text}" for s in sources))
        messages = [Message.system("\n\n".join(parts))] if parts else []
        messages += [Message(role=i.role, content=i.text) for i in in_order
                     if i.kind == "history"]
        return messages, sources


def cite(answer: str, sources: Sequence[Source]) -> Citations:
    """Map ``[n]`` and ``[n, m]`` markers to sources; flag numbers no source has."""
    by_label = {s.label: s for s in sources}
    seen: list[int] = []
    for match in _CITE.finditer(answer):
        for number in re.split(r"\s*[,;]\s*", match.group(1)):
            n = int(number)
            if n not in seen:
                seen.append(n)
    return Citations(cited=[by_label[n] for n in seen if n in by_label],
                     unknown=[n for n in seen if n not in by_label],
                     uncited=[s.label for s in sources if s.label not in seen])


# -- tokenizers -----------------------------------------------------------------------------
def _encoded_len(tokenizer: Any, text: str) -> int:
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:  # tokenizers.Tokenizer / BPE encoders take no such keyword
        ids = tokenizer.encode(text)
    return len(getattr(ids, "ids", ids))


@lru_cache(maxsize=8)
def _openai_counter(name: str) -> TokenCounter:
    try:
        with warnings.catch_warnings():  # it loads its ranks with a deprecated importlib API
            warnings.simplefilter("ignore", DeprecationWarning)
            import bpe_openai
    except ImportError:
        return ApproxCounter(name=f"approx for openai:{name} (pip install bpe-openai for "
                                  "exact counts)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            encoding = bpe_openai.encoding_for_model(name)
        except Exception:  # an unknown or newer model: the current OpenAI vocabulary
            encoding = bpe_openai.get_encoding("o200k_base")
    return FunctionCounter(lambda t: len(encoding.encode(t)), f"openai {encoding.name}")


@lru_cache(maxsize=8)
def _local_counter(name: str) -> TokenCounter:
    """The local model's tokenizer, read from the converted folder without torch."""
    from aillm_lab.config import LabSettings
    from aillm_lab.llm.local_files import find_model

    try:
        gguf = find_model(name, LabSettings().model_path)
    except Exception:
        return ApproxCounter(name=f"approx for local:{name} (model files not found)")
    for folder in sorted(Path(gguf).parent.glob(f".{Path(gguf).stem}.hf-*")):
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
            tok.no_padding()  # a counter wants the true length, not a padded window
            tok.no_truncation()
            return FunctionCounter(
                lambda t, tok=tok: len(tok.encode(t, add_special_tokens=False).ids),
                f"local:{name} tokenizer")
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(Path(gguf).parent, gguf_file=Path(gguf).name)
    return FunctionCounter(lambda t: _encoded_len(hf, t), f"local:{name} tokenizer")


def _hit_text(hit: Any) -> tuple[str, str | None]:
    if isinstance(hit, str):
        return hit, None
    if isinstance(hit, dict):
        return str(hit["text"]), hit.get("source")
    return str(hit.text), getattr(hit, "source", None)
