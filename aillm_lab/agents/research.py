"""``ResearchAgent``: answers a question from the Lab's knowledge with numbered citations.

How a run goes, and why:

1. **Seed retrieval, before the first step.** The agent itself searches every collection for
   the whole question and for each part of it (sentences ending in ``?``, clauses after
   ``;``). Small models often answer without calling a tool, so the sources must already be
   in the first prompt; the searches are ``search_knowledge`` calls through the Lab's Safety
   Guard, so they are audited like any tool call.
2. **Packing.** ``ContextManager`` packs the system text, the hits (best first, interleaved
   across sub-questions) and the question into ``context_tokens`` by the model's own
   tokenizer; the sources it keeps are numbered ``[1]..[n]`` and only those can be cited.
   The packed prompt is step 0's messages, so what the model saw is in the trace.
3. **Sub-questions by the model.** The model may call ``search_knowledge`` with its own
   sub-questions (several in one turn); new hits are packed into ``search_tokens`` and get
   the next numbers. Retrieval is thus a visible tool call in ``run.steps``, through the
   guard and audited. With ``web=True`` it may also call ``read_web_page``, which fetches
   through the built-in ``fetch_url`` (the guard's network policy, approval and audit) and
   adds the page as a numbered source.
4. **Checking the answer** (``acheck_answer``) with ``cite()``: a marker naming no source, or
   an answer citing nothing, is sent back once for repair; what still dangles after that is
   reported in ``ResearchAnswer.unsupported``. With no source retrieved at all, or when the
   model says so, the answer is ``NOT_FOUND``: nothing retrieved means nothing to support a
   claim, whatever the model wrote.

Retrieved text is data someone else may have written, and it lands in the prompt (the seed
passages in the system message). So each passage the model reads is first made inert
(``research_passages``): a line imitating the prompt's own source markup (``[n] (name)``,
the ``Sources ... (cite them as [n]):`` header, a ``<sources>`` tag) is quoted and its
marker turned to ``(n)``, so no passage can forge another source or end the list; and a
passage with such a line, or one the tools' injection scan flags, is fenced with
``wrap_as_data`` as the Safety Guard fences tool output. The book keeps the original text
(``ResearchAnswer.sources``); labels are given as before. What a source is, and when two
hits are one source, is ``research_sources``.

The seed runs in the loop's body (``aprepare``), so ``max_seconds``, ``agent.cancel()`` and
``task.cancel()`` stop a slow search too; ``stream`` tells each seed search as events of
step 0. Forks: the seed's numbered sources are kept in ``run.inputs["sources"]`` and each
source a later step numbered in that step's ``state``, so a fork (even of a reloaded run)
restores the sources its replayed steps showed (``arestore``) and their citations hold,
with no search made again; a fork at step 0 seeds afresh.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from aillm_lab.agents.base import Agent, ModelArg
from aillm_lab.agents.fork import record, recorded
from aillm_lab.agents.live import Emit
from aillm_lab.agents.modes import Verdict
from aillm_lab.agents.research_passages import one_line, passage_for_model
from aillm_lab.agents.research_sources import (
    ResearchSource,
    SourceBook,
    interleave,
    name_for_model,
    source_from_hit,
    source_key,
)
from aillm_lab.agents.research_support import check_support
from aillm_lab.agents.run import AgentEvent, AgentRun, AgentStep
from aillm_lab.agents.toolset import AgentTools, ToolsArg
from aillm_lab.errors import ConfigError
from aillm_lab.llm.types import Message, ToolCall
from aillm_lab.rag.context import ContextManager, cite, counter_for
from aillm_lab.rag.sparse import RagError
from aillm_lab.runtime import sync_twin
from aillm_lab.tools.base import RiskLevel, Tool
from aillm_lab.tools.toolbox import Toolbox

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.memory.long_term import LongTermMemory
    from aillm_lab.rag.retriever import Knowledge, Mode

# -- prompts (data) ----------------------------------------------------------------------------
# The answer the agent gives when the sources hold none; the system text asks for it verbatim
# so it can be recognised, and tests and users can compare against one constant.
NOT_FOUND = "Not found in the sources."

# The role: search per part, answer only from numbered sources, cite each claim, and the exact
# words for "no answer". Short sentences, because small local models read this too.
RESEARCH_SYSTEM = (
    "You answer questions using only the numbered sources below. If the question has "
    "several parts, or the sources miss a part, call `search_knowledge` with one short "
    "sub-question per part (several calls in one turn are fine){web}; new sources get new "
    "numbers. Then answer in plain text. After each claim, put the number of the source that "
    "supports it in square brackets, e.g. [2]. Cite only numbers listed as sources. If the "
    "sources do not contain the answer, reply exactly: " + NOT_FOUND)

# Added to the role when web access is on: the only way a page becomes a citable source.
WEB_NOTE = ", or `read_web_page` with a URL to add a web page as a source"

# Said when nothing was retrieved yet, so the model searches or admits it, not invents.
NO_SOURCES = ("No sources are listed yet: call `search_knowledge` to find some, or reply "
              "exactly: " + NOT_FOUND)

# The one repair for markers that name no source: which numbers exist, and the way out.
DANGLING_REPAIR = (
    "Your answer cites {bad}, but no source has that number; the sources are {labels}. "
    "Rewrite the answer citing only those numbers, or reply exactly: " + NOT_FOUND)

# The one repair for an answer with no marker at all: an uncited claim is unsupported.
UNCITED_REPAIR = (
    "Your answer cites no source. After each claim put the number of the source that "
    "supports it in square brackets, e.g. [1], or reply exactly: " + NOT_FOUND)

# The one repair for sentences whose cited sources share no word with them (research_support).
UNSUPPORTED_REPAIR = (
    "These sentences are not supported by the sources they cite:\n{sentences}\nAnswer only "
    "with what the sources say, citing them, or reply exactly: " + NOT_FOUND)

EMPTY_REPLY = "Your reply was empty. Answer with citations, or reply exactly: " + NOT_FOUND

# What a search tool call returns: numbered passages the model can cite.
SEARCH_HEADER = "Sources for {query!r} (cite them as [n]):"
SEARCH_NONE = ("No passages found for {query!r} in {collections}. Try other words, or reply "
               "exactly: " + NOT_FOUND)
SEARCH_KNOWN = "[{label}] ({name}) is already listed above."
SEARCH_OVER_BUDGET = "Passages were found but none fit the context budget."

# What was searched before the first step: the trace shows it, and the model need not repeat it.
SEARCHED = "Already searched: {queries}."

# One line per search that failed before the first step (a policy that denies the tool).
SEED_FAILED = "The search for {query!r} failed: {error}"

SEARCH_TOOL = "search_knowledge"
WEB_TOOL = "read_web_page"
SOURCES = "sources"  # run.inputs and step state: the sources numbered there, as JSON data
REPAIRED = "repaired"  # step state: the one repair of the citations was asked for there


class ResearchAnswer(BaseModel):
    """``run.output`` of a ``ResearchAgent``: the answer, its cited sources, dangling markers.

    ``found`` is False when the sources held no answer (``text`` is then ``NOT_FOUND``).
    ``unsupported`` lists markers such as ``[9]`` that name no retrieved source even after
    one repair; ``unsupported_claims`` the sentences whose cited sources share no word with
    them after the repair (``research_support``). When every citing sentence is such a claim
    the answer was invented: ``text`` is ``NOT_FOUND`` and the claims stay listed.
    """

    question: str = ""
    text: str
    sources: list[ResearchSource] = Field(default_factory=list)
    unsupported: list[int] = Field(default_factory=list)
    unsupported_claims: list[str] = Field(default_factory=list)
    found: bool = True

    @property
    def supported(self) -> bool:
        """Every marker maps to a source that shares words with its sentence, and at least
        one source is cited."""
        return bool(self.sources) and not self.unsupported and not self.unsupported_claims


class ResearchAgent(Agent):
    """Answer from the Lab's knowledge with citations: ``ResearchAgent(lab=lab).run(q)``.

    ``web``: offer ``read_web_page`` (built-in ``fetch_url``, under the network policy).
    ``knowledge``: the ``Knowledge`` to search (default ``lab.knowledge``). ``k``: hits per
    search and collection. ``context_tokens``: the first prompt's budget (system, sources,
    question); ``search_tokens``: the budget of each later search's passages.
    ``tools``: more tools the model may use, as a list.
    """

    system_prompt = RESEARCH_SYSTEM

    def __init__(self, tools: ToolsArg = None, model: ModelArg = None, lab: Lab | None = None,
                 max_steps: int = 6, max_cost_usd: float | None = None,
                 max_seconds: float | None = None, output: type[BaseModel] | None = None,
                 memory: LongTermMemory | bool | None = None, *, web: bool = False,
                 knowledge: Knowledge | None = None, k: int = 5, mode: Mode = "hybrid",
                 context_tokens: int = 3000, search_tokens: int | None = None,
                 max_sub_questions: int = 4, **options: Any) -> None:
        if output is not None and output is not ResearchAnswer:
            raise ConfigError(f"output={getattr(output, '__name__', output)!r}: a "
                              f"ResearchAgent's output is always a ResearchAnswer; leave "
                              f"output= unset", fields=("output",))
        if isinstance(tools, Toolbox):
            raise ConfigError("tools=: a ResearchAgent adds its own search tools, so give a "
                              "list of tools, not a Toolbox", fields=("tools",))
        if not isinstance(web, bool):
            raise ConfigError(f"web={web!r}: give True or False", fields=("web",))
        if mode not in ("dense", "sparse", "hybrid"):
            raise ConfigError(f"mode={mode!r}: use 'hybrid', 'dense' or 'sparse'",
                              fields=("mode",))
        search_tokens = max(64, context_tokens // 2) if search_tokens is None else search_tokens
        for name, value, low in (("k", k, 1), ("context_tokens", context_tokens, 64),
                                 ("search_tokens", search_tokens, 64),
                                 ("max_sub_questions", max_sub_questions, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ConfigError(f"{name}={value!r}: give an integer >= {low}",
                                  fields=(name,))
        super().__init__(tools, model, lab, max_steps, max_cost_usd, max_seconds, None,
                         memory, **options)
        self._extra_tools = list(tools or [])
        self.web, self._knowledge, self.k, self.mode = web, knowledge, k, mode
        self.context_tokens = context_tokens
        self.search_tokens = search_tokens
        self.max_sub_questions = max_sub_questions
        self._sessions: dict[str, _Session] = {}

    @property
    def knowledge(self) -> Knowledge:
        """What the agent searches: the ``knowledge=`` given, else the Lab's."""
        return self._knowledge if self._knowledge is not None else self.lab.knowledge

    # -- doors -----------------------------------------------------------------------------
    async def arun(self, question: str,  # type: ignore[override]
                   collections: str | Sequence[str] | None = None) -> AgentRun:
        """Research ``question`` in ``collections`` (default ``["default"]``); the run's
        ``output`` is a ``ResearchAnswer``. An unknown collection raises ``RagError``."""
        return await self._launch(await self._new_run(question, collections))

    async def astream(self, question: str,  # type: ignore[override]
                      collections: str | Sequence[str] | None = None,
                      ) -> AsyncIterator[AgentEvent]:
        """``arun``'s events as they happen (the seed searches first, as ``tool_call`` and
        ``tool_result`` events of step 0); the last one is ``final`` with the run."""
        run = await self._new_run(question, collections)
        async for event in self.runner.aiterate(lambda: self._stream(run)):
            yield event

    run = sync_twin(arun)
    stream = sync_twin(astream)

    async def _launch(self, run: AgentRun, model: ModelArg = None,
                      history: list[Message] | None = None) -> AgentRun:
        """Every run (``run``, ``fork``) drops its session when it ends."""
        try:
            return await super()._launch(run, model, history)
        finally:
            self._sessions.pop(run.id, None)

    async def _new_run(self, question: str,
                       collections: str | Sequence[str] | None) -> AgentRun:
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"question={question!r}: give the question as a non-empty text")
        names = await self._check_collections(collections)
        return AgentRun(task=question.strip(), inputs={"collections": names, "web": self.web})

    async def _stream(self, run: AgentRun) -> AsyncIterator[AgentEvent]:
        """On the runner loop: the loop's events (the seed's first); the session ends
        with them."""
        try:
            async for event in self._events(self._start(run, self.model, None)):
                yield event
        finally:
            self._sessions.pop(run.id, None)

    # -- hooks -----------------------------------------------------------------------------
    async def aprepare(self, run: AgentRun, emit: Emit) -> None:
        """The seed retrieval, inside the run's limits."""
        await self._seed(run, self._session(run), emit)

    async def arestore(self, run: AgentRun, replayed: list[AgentStep]) -> None:
        """Number again the sources the replayed steps showed: the seed's (in ``inputs``),
        then those each step numbered (its ``state``); no search is made."""
        session = self._session(run)
        for data in [*run.inputs.get(SOURCES, []), *recorded(replayed, SOURCES)]:
            source = ResearchSource.model_validate(data)
            session.add(source, source.label)
        session.repaired = any(recorded(replayed, REPAIRED))

    def instructions(self) -> str:
        text = self.system if self.system is not None else self.system_prompt
        return text.replace("{web}", WEB_NOTE if self.web else "")

    def initial_messages(self, run: AgentRun, memories: list[str]) -> list[Message]:
        """System text, memories and the seed hits packed by ``ContextManager``; the kept
        hits become sources ``[1]..[n]``."""
        session = self._session(run)
        system = self.instructions()
        if session.seed_queries:
            system += "\n\n" + SEARCHED.format(
                queries="; ".join(repr(q) for q in session.seed_queries))
        if session.notes:
            system += "\n\n" + "\n".join(session.notes)
        if not session.pending:
            system += "\n\n" + NO_SOURCES
        cm = ContextManager(counter=counter_for(run.model or None),
                            budget_tokens=self.context_tokens).system(system)
        for memory in memories:
            cm.memory(memory)
        first = len(cm.items)
        cm.sources([{"text": passage_for_model(s.text), "source": name_for_model(s)}
                    for s in session.pending])
        cm.history([Message.user(run.task)])
        packed = cm.pack()
        kept = sorted((i for i in packed.kept if i.kind == "source"), key=lambda i: i.order)
        for item, numbered in zip(kept, packed.sources, strict=True):
            session.add(session.pending[item.order - first], numbered.label)
        session.pending = []
        run.inputs[SOURCES] = [s.model_dump(mode="json") for s in session.book.values()]
        return packed.messages

    def tools_for(self, run: AgentRun) -> AgentTools:
        return self._session(run).tools

    async def acheck_answer(self, run: AgentRun, text: str) -> Verdict:
        """Accept an answer whose markers all name sources; repair once, then flag."""
        session = self._session(run)
        text = text.strip()
        if not text:
            return Verdict(repair=EMPTY_REPLY)
        if not session.book:  # nothing retrieved: nothing can support a claim
            return Verdict(output=ResearchAnswer(question=run.task, text=NOT_FOUND,
                                                 found=False))
        found = cite(text, session.sources())
        if not found.cited and not found.unknown and _says_not_found(text):
            return Verdict(output=ResearchAnswer(question=run.task, text=NOT_FOUND,
                                                 found=False))
        support = check_support(text, {n: s.text for n, s in session.book.items()}, run.task)
        if ((found.unknown or not found.cited or support.unsupported)
                and not session.repaired):
            session.repaired = True
            record(run, REPAIRED, True)
            if found.unknown:
                return Verdict(repair=DANGLING_REPAIR.format(
                    bad=", ".join(f"[{n}]" for n in found.unknown),
                    labels=", ".join(f"[{s.label}]" for s in session.book.values())))
            if not found.cited:
                return Verdict(repair=UNCITED_REPAIR)
            return Verdict(repair=UNSUPPORTED_REPAIR.format(
                sentences="\n".join(f"- {c}" for c in support.unsupported)))
        if support.none_supported:  # invented after the repair too: say so, keep what
            return Verdict(output=ResearchAnswer(  # it claimed for the reader to see
                question=run.task, text=NOT_FOUND, found=False,
                unsupported_claims=support.unsupported))
        return Verdict(output=ResearchAnswer(
            question=run.task, text=text, unsupported=found.unknown,
            unsupported_claims=support.unsupported,
            sources=[session.book[s.label] for s in found.cited]))

    check_answer = sync_twin(acheck_answer)

    # -- retrieval -------------------------------------------------------------------------
    async def _check_collections(self, collections: str | Sequence[str] | None) -> list[str]:
        names = ["default"] if collections is None else (
            [collections] if isinstance(collections, str) else list(collections))
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"collections={collections!r}: give a collection name or a "
                             f"list of names, e.g. ['default']")
        knowledge = self.knowledge
        known = {c.name: c for c in await knowledge.acollections()}
        for name in names:
            if name not in known:
                raise RagError(f"collections: {name!r} does not exist; ingest into it first "
                               f"with lab.ingest(path, collection={name!r}) (existing: "
                               f"{sorted(known) or 'none'})")
            if known[name].model_id != knowledge.embedder.model_id:
                raise RagError(f"collections: {name!r} was built with "
                               f"{known[name].model_id}, but the agent searches with "
                               f"{knowledge.embedder.model_id}; pass knowledge= a Knowledge "
                               f"with that embedder")
        return list(dict.fromkeys(names))

    async def _seed(self, run: AgentRun, session: _Session, emit: Emit) -> None:
        """Search the question and its parts through the guard; hits wait for packing.
        Each search is told as a ``tool_call`` and a ``tool_result`` event of step 0."""
        session.seeding = True
        try:
            session.seed_queries = sub_questions(run.task, self.max_sub_questions)
            for i, query in enumerate(session.seed_queries):
                call = ToolCall(id=f"seed-{i}", name=SEARCH_TOOL, arguments={"query": query})
                emit(AgentEvent(type="tool_call", step=0, tool_call=call))
                result = await session.tools.ainvoke(call)
                if not result.ok:
                    session.notes.append(SEED_FAILED.format(query=query, error=result.content))
                emit(AgentEvent(type="tool_result", step=0, tool_call=call,
                                tool_result=result.model_copy(update={"value": None})))
        finally:
            session.seeding = False
        session.pending = interleave(session.seed_hits)

    async def _search(self, session: _Session, query: str) -> list[ResearchSource]:
        """The ``k`` best hits per collection, interleaved by rank, without repeats."""
        per: list[list[ResearchSource]] = []
        for name in session.collections:
            results = await self.knowledge.asearch(query, k=self.k, mode=self.mode,
                                                   collection=name)
            per.append([source_from_hit(hit, name) for hit in results])
        return interleave(per)

    def _session(self, run: AgentRun) -> _Session:
        session = self._sessions.get(run.id)
        if session is None:  # arun and stream made none: a fork of this agent
            while len(self._sessions) >= 256:
                self._sessions.pop(next(iter(self._sessions)))
            collections = run.inputs.get("collections") or ["default"]
            web = bool(run.inputs.get("web", self.web))
            session = _Session(collections=list(collections), web=web)
            session.tools = AgentTools(self.lab, [*self._extra_tools,
                                                  *self._tools_of(run, session)])
            self._sessions[run.id] = session
        return session

    def _tools_of(self, run: AgentRun, session: _Session) -> list[Tool]:
        """The run's own tools, bound to its session: search, and the web when allowed."""
        agent = self

        async def search_knowledge(query: str) -> str:
            """Search the knowledge base; returns passages numbered [n] to cite.

            Args:
                query: one short, focused question or a few keywords
            """
            hits = await agent._search(session, query)
            if session.seeding:
                session.seed_hits.append(hits)
                return f"{len(hits)} passages found; they are numbered in the prompt."
            if not hits:
                return SEARCH_NONE.format(query=query, collections=session.collections)
            return agent._number(run, session, query, hits)

        tools = [Tool(search_knowledge, name=SEARCH_TOOL)]
        if not session.web:
            return tools

        async def read_web_page(url: str) -> str:
            """Read a public web page and add it as a numbered source to cite.

            Args:
                url: absolute http:// or https:// URL of a public page
            """
            page = await agent.lab.tools.acall("fetch_url", url=url,
                                               max_chars=agent.search_tokens * 3)
            source = ResearchSource(label=0, source=url, text=page.content, kind="web")
            label = agent._add(run, session, source)
            # the guard already scanned and fenced the page; only its markup is made inert
            text = passage_for_model(page.content, scan=False)
            return f"[{label}] ({one_line(url)}) {text}"

        return [*tools, Tool(read_web_page, name=WEB_TOOL, risk=RiskLevel.NETWORK)]

    @staticmethod
    def _add(run: AgentRun, session: _Session, source: ResearchSource) -> int:
        """Number ``source`` during a step; a new one is kept in the step's state."""
        known = session.label_of(source)
        if known is not None:
            return known
        label = session.add(source)
        record(run, SOURCES, session.book[label].model_dump(mode="json"), append=True)
        return label

    def _number(self, run: AgentRun, session: _Session, query: str,
                hits: list[ResearchSource]) -> str:
        """Pack new hits into ``search_tokens``, number the kept ones, render them all."""
        fresh = [h for h in hits if session.label_of(h) is None]
        cm = ContextManager(counter=counter_for(run.model or None),
                            budget_tokens=self.search_tokens, per_message_tokens=0)
        cm.sources([{"text": passage_for_model(h.text), "source": name_for_model(h)}
                    for h in fresh])
        for order in sorted(i.order for i in cm.pack().kept):
            self._add(run, session, fresh[order])
        new = {source_key(h) for h in fresh}
        lines = [SEARCH_HEADER.format(query=query)]
        for hit in hits:
            label = session.label_of(hit)
            if label is None:  # over the budget: not shown, so not citable
                continue
            shown = session.book[label]
            name = name_for_model(shown)
            lines.append(f"[{label}] ({name}) {passage_for_model(shown.text)}"
                         if source_key(hit) in new
                         else SEARCH_KNOWN.format(label=label, name=name))
        if len(lines) == 1:
            lines.append(SEARCH_OVER_BUDGET)
        return "\n\n".join(lines)


@dataclass(kw_only=True)
class _Session(SourceBook):
    """One run's retrieval state: its collections, the numbered sources, one repair."""

    collections: list[str]
    web: bool
    tools: AgentTools = field(init=False)
    seeding: bool = False
    seed_queries: list[str] = field(default_factory=list)
    seed_hits: list[list[ResearchSource]] = field(default_factory=list)
    pending: list[ResearchSource] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    repaired: bool = False


def sub_questions(question: str, limit: int = 4) -> list[str]:
    """The question itself, then its parts (sentences ending in ``?``, clauses after ``;``
    or on new lines) of two words or more: a model-free split that small models need not
    get right."""
    parts = [p.strip(" ,;\t") for p in re.split(r"(?<=\?)\s+|;\s*|\n+", question)]
    queries = [question.strip()] + [p for p in parts if len(p.split()) >= 2]
    return list(dict.fromkeys(q for q in queries if q))[:limit]


def _says_not_found(text: str) -> bool:
    return "not found in the sources" in " ".join(text.lower().split())


__all__ = ["NOT_FOUND", "ResearchAgent", "ResearchAnswer", "ResearchSource", "sub_questions"]
