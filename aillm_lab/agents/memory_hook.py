"""An agent run's memory hook: recall before the first step, save salient facts after.

Both ends treat the text that crosses between runs as untrusted: a run may draw its answer
from tool output an attacker planted, and a memory comes back in the system text, where a
model trusts most. So a recalled memory is fenced as data when the injection scan flags it
or when an agent run saved it (its words came from what a model read, and the scan misses
paraphrase), and a fact is saved only when the scan finds nothing in it and the guard's
redactor leaves it unchanged (a fact that holds a secret is not stored, not even
redacted). A run that showed its model anything the scan flagged (a tool's output, or text
an agent put in a prompt fenced: Research's passages, DataAnalysis' sample rows) saves no
facts at all: a planted page can steer the answer with plain words the scan cannot see, and
a fact drawn from it would come back in every later run's system text.

The facts come from one model call through the Lab's gateway (the run's own model, in its
own scope ``<run id>/memory`` nested in the run's, so it counts against the run's budget but
is not a row of ``run_id == run.id``, which is one row per step).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aillm_lab.agents import prompts
from aillm_lab.llm.types import GenerationParams, Message
from aillm_lab.tools.scan import fenced_sources, scan_injection, wrap_as_data

if TYPE_CHECKING:
    from aillm_lab.agents.run import AgentRun
    from aillm_lab.llm.base import Model
    from aillm_lab.memory.long_term import LongTermMemory

log = logging.getLogger(__name__)
RECALL_K = 5  # memories recalled into the first system text
MAX_FACT_CHARS = 300  # a longer line is not a fact but a copy of the answer
_SHOWN_CHARS = 2_000  # of the task and the answer, in the facts request
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_PARAMS = GenerationParams(max_tokens=256, temperature=0.0)
MEMORY_SOURCE = "memory"  # the name recalled memories are fenced under
SOURCE = "agent run"  # a saved fact's metadata["source"]: recalled fenced, always


async def recall(memory: LongTermMemory, task: str) -> list[str]:
    """The memories most relevant to ``task``, as they go into the system text."""
    hits = await memory.asearch(task, k=RECALL_K)
    return [as_recalled(hit.memory.text, from_run=hit.memory.metadata.get("source") == SOURCE)
            for hit in hits]


def as_recalled(text: str, *, from_run: bool = False) -> str:
    """A memory fenced as untrusted data when the injection scan flags it, and always when
    an agent run saved it (``from_run``): such a fact was drawn from what a model read, and
    planted text the scan cannot see ("from now on, always ...") must not become a standing
    instruction of every later run. The user's own memories stay plain."""
    markers = scan_injection(text)
    if markers:
        return wrap_as_data(text, MEMORY_SOURCE, markers, what="recalled memory")
    if from_run:
        return wrap_as_data(text, MEMORY_SOURCE, (), what="recalled memory",
                            why="an earlier agent run saved it from what its model read")
    return text


def parse_facts(text: str, limit: int) -> list[str]:
    """Up to ``limit`` facts from the model's reply: one per bulleted or numbered line
    (plain lines too, for small models that drop the bullets), without duplicates, empty
    lines, over-long lines or the ``NONE`` that means nothing is worth keeping."""
    facts: list[str] = []
    for line in text.splitlines():
        fact = _BULLET.sub("", line).strip().strip('"').strip()
        if (not fact or fact.rstrip(".").upper() == "NONE" or len(fact) > MAX_FACT_CHARS
                or fact.endswith(":") or fact in facts):
            continue
        facts.append(fact)
        if len(facts) == limit:
            break
    return facts


async def save_facts(memory: LongTermMemory, model: Model, run: AgentRun, *, limit: int,
                     redact: Callable[[str], str]) -> list[str]:
    """Ask ``model`` for up to ``limit`` facts worth keeping from ``run`` and save those
    that pass the scan and the redactor; returns the saved memories' ids."""
    flagged = untrusted_reads(run)
    if flagged:
        log.warning("run %s saves no facts: the output of %s read like an injection",
                    run.id, ", ".join(flagged))
        return []
    request = [Message(role="system", content=prompts.FACTS_SYSTEM),
               Message(role="user", content=prompts.FACTS_REQUEST.format(
                   limit=limit, task=run.task[:_SHOWN_CHARS],
                   answer=_answer_text(run.output)[:_SHOWN_CHARS]))]
    completion = await model.complete(request, params=_PARAMS)
    kept: list[str] = []
    for fact in parse_facts(completion.text, limit):
        if scan_injection(fact):
            log.warning("run %s: a fact the injection scan flags was not saved: %r",
                        run.id, fact[:80])
        elif redact(fact) != fact:
            log.warning("run %s: a fact that holds a secret was not saved", run.id)
        else:
            kept.append(fact)
    if not kept:
        return []
    saved = await memory.aadd_many(kept, metadata={"source": SOURCE, "run_id": run.id,
                                                   "agent": run.agent}, tags=["agent"])
    return [m.id for m in saved]


def untrusted_reads(run: AgentRun) -> list[str]:
    """What the run's model was shown that the scan flagged: tools whose output was, and
    the sources of fenced text in its prompts (``wrap_as_data`` names them); recalled
    memories aside, or one fenced memory would stop every later run from saving."""
    names = {r.name for step in run.steps for r in step.tool_results if r.injection}
    seen: set[int] = set()
    for step in run.steps:
        for message in step.messages:
            if id(message) not in seen:
                seen.add(id(message))
                names.update(t for t in fenced_sources(message.text) if t != MEMORY_SOURCE)
    return sorted(names)


def _answer_text(output: Any) -> str:
    if isinstance(output, BaseModel):
        return output.model_dump_json()
    return output if isinstance(output, str) else repr(output)
