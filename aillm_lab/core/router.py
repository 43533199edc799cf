"""``TaskRouter`` (``lab.route``): which of the seven agents should take a task, and why.

Three signals, cheapest first. Keyword rules catch the words that give a task away
("csv", "OpenAPI", "p95"). Embedding similarity compares the task with each agent's
description through ``lab.aembed`` (the local MiniLM by default); the descriptions are
embedded once per router. An optional LLM classifier (``llm="fallback"`` below a confidence,
or ``"always"``) asks the model through the Lab's gateway for a validated choice. The
descriptions live in ``AGENTS``, the one table of the agents: what they do, where their
class is, the words that point at them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from aillm_lab.display import Displayable, fields_table, pre
from aillm_lab.errors import ConfigError
from aillm_lab.runtime import sync_twin

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from aillm_lab.core.lab import Lab
    from aillm_lab.llm.base import Model

LlmMode = Literal["off", "fallback", "always"]


@dataclass(frozen=True)
class AgentCard:
    """One agent as the router sees it: its class, what it does, the words that name it."""

    name: str
    cls: str  # "module:Class", imported only when a task is routed to it and run
    description: str
    facets: tuple[str, ...] = ()  # more ways to say what it does, each embedded on its own
    keywords: tuple[str, ...] = ()  # regular expressions, matched case-insensitively

    @property
    def texts(self) -> tuple[str, ...]:
        return (self.description, *self.facets)


AGENTS: dict[str, AgentCard] = {card.name: card for card in (
    AgentCard(
        "react", "aillm_lab.agents.react:ReActAgent",
        "A general assistant that does small jobs with tools, step by step.",
        ("Read, write, rename, move or delete files and folders in the workspace.",
         "Run a shell command and report what it printed.",
         "Check the git status, branch, log or diff of a repository.",
         "Look something up in a file and answer a quick question."),
        (r"\bfiles?\b", r"\bfolders?\b", r"\bdirector(y|ies)\b", r"\brename\b", r"\bmove\b",
         r"\bdelete\b", r"\bshell\b", r"\bcommand\b", r"\bgit\b", r"\bbranch\b", r"\bdiff\b",
         r"\bgrep\b", r"\bworkspace\b", r"\bcalculator\b")),
    AgentCard(
        "code_writer", "aillm_lab.agents.code_writer:CodeWriterAgent",
        "Writes, fixes and refactors code, with unit tests run in a sandbox until they pass.",
        ("Implement a function, class or algorithm in Python.",
         "Write pytest tests for code and make them pass.",
         "Fix a bug or a failing test; refactor code without changing its behaviour.",
         "Write a script or program."),
        (r"\bfunctions?\b", r"\bclass(es)?\b", r"\bimplement\w*", r"\bcode\b", r"\bscript\b",
         r"\bprogram\b", r"\bpytest\b", r"\bunit tests?\b", r"\btests?\b", r"\brefactor\w*",
         r"\bbug\b", r"\bregex\b", r"\balgorithm\b", r"\bdecorator\b", r"\bparser\b",
         r"\bdataclass\b", r"\bpython\b")),
    AgentCard(
        "research", "aillm_lab.agents.research:ResearchAgent",
        "Answers questions from documents, papers and the web, with numbered citations.",
        ("Summarise what the sources say about a topic and cite them.",
         "Explain a concept and where it comes from, with references to the literature.",
         "Find the answer in the knowledge base, the handbook or the notes."),
        (r"\bcit(e|es|ed|ing|ation|ations)\b", r"\bsources?\b", r"\breferences?\b",
         r"\bpapers?\b", r"\bliterature\b", r"\baccording to\b", r"\bexplain\b",
         r"\bhistory of\b", r"\boverview\b", r"\bdocs?\b", r"\bdocuments?\b",
         r"\bknowledge base\b", r"\bwho (introduced|invented)\b", r"\bresearch\b")),
    AgentCard(
        "data_analysis", "aillm_lab.agents.data_analysis:DataAnalysisAgent",
        "Analyses tables: CSV, Parquet or Excel files and DataFrames, with SQL, statistics "
        "and charts.",
        ("Aggregate, group, filter and join tabular data with SQL.",
         "Compute averages, medians, growth, correlations and outliers in a dataset.",
         "Plot a chart, a histogram or a line of a metric over time from data."),
        (r"\.csv\b", r"\.parquet\b", r"\.xlsx?\b", r"\bcsv\b", r"\bdataframe\b",
         r"\bdataset\b", r"\bsql\b", r"\bchart\b", r"\bplot\b", r"\bhistogram\b",
         r"\baverage\b", r"\bmedian\b", r"\bgroup\b", r"\bcorrelation\b", r"\boutliers?\b",
         r"\brows?\b", r"\bcolumns?\b", r"\bpivot\b", r"\bsum\b", r"\btable\b")),
    AgentCard(
        "workflow", "aillm_lab.agents.workflow:WorkflowAgent",
        "Runs a multi-step pipeline as a graph of steps, with parallel branches, retries, "
        "checkpoints and resume after a crash.",
        ("Chain steps so each uses the output of the one before, in order.",
         "Schedule a recurring or nightly job made of several steps.",
         "Resume an interrupted run from its last checkpoint without redoing steps."),
        (r"\bpipelines?\b", r"\bworkflows?\b", r"\bdag\b", r"\bsteps?\b", r"\bcheckpoint\w*",
         r"\bresume\b", r"\bretry\b", r"\bretries\b", r"\bschedul\w*", r"\bnightly\b",
         r"\bevery night\b", r"\brecurring\b", r"\bin parallel\b", r"\bbatch job\b",
         r"\borchestrat\w*", r"\bthen\b", r"\brerun\b", r"\bautomate\b")),
    AgentCard(
        "integration", "aillm_lab.agents.integration:IntegrationAgent",
        "Calls external services: REST APIs described by OpenAPI documents and the tools "
        "of MCP servers.",
        ("Use a web API to create, read or update records in another system.",
         "Connect to an MCP server and call its tools.",
         "Send a message or a notification through a service's API or webhook."),
        (r"\bapis?\b", r"\brest\b", r"\bendpoints?\b", r"\bopenapi\b", r"\bswagger\b",
         r"\bmcp\b", r"\bwebhooks?\b", r"\bgithub\b", r"\bslack\b", r"\bjira\b",
         r"\bstripe\b", r"\btwilio\b", r"\bnotion\b", r"\bservice\b", r"\bcrm\b")),
    AgentCard(
        "monitoring", "aillm_lab.agents.monitoring:MonitoringAgent",
        "Watches the lab's model calls and processes: cost, budget, errors, latency, cache "
        "and memory, and raises alerts.",
        ("How much the model calls cost and how fast the budget is being spent.",
         "Error rate, timeouts and p95 latency of the calls over a window.",
         "Alert me when a metric passes a threshold."),
        (r"\balerts?\b", r"\bmonitor\w*", r"\blatency\b", r"\bp9\d\b", r"\berror rate\b",
         r"\bcosts?\b", r"\bspen[dt]\b", r"\bbudget\b", r"\bburn rate\b", r"\bcache hit",
         r"\bmemory usage\b", r"\brss\b", r"\bhealth\b", r"\bmetrics?\b", r"\busage\b",
         r"\bwatch\b", r"\bnotify me\b", r"\bwarn me\b")),
)}


class Route(BaseModel, Displayable):
    """The router's choice: ``agent``, ``confidence`` in [0, 1] and ``why``, in words.

    ``scores`` holds every agent's combined score (embedding similarity plus keyword
    bonus), so a close second is visible; ``method`` says which signal decided.
    """

    agent: str
    confidence: float = Field(ge=0.0, le=1.0)
    why: str
    scores: dict[str, float] = Field(default_factory=dict)
    method: Literal["keywords+embeddings", "llm"] = "keywords+embeddings"

    def __repr__(self) -> str:
        return f"Route(agent={self.agent!r}, confidence={self.confidence:.2f}, why={self.why!r})"

    def _repr_html_(self) -> str:
        ranked = sorted(self.scores.items(), key=lambda kv: -kv[1])
        return fields_table(f"Route → {self.agent}", [
            ("confidence", f"{self.confidence:.2f}"), ("method", self.method),
            ("scores", ", ".join(f"{a} {s:.2f}" for a, s in ranked[:4]) or None)],
            pre(self.why))


class LlmChoice(BaseModel):
    """What the LLM classifier must answer (validated; a bad answer is asked again)."""

    agent: str = Field(description="one of the agent names listed")
    confidence: float = Field(ge=0.0, le=1.0)
    reason: str = Field(description="one sentence: why this agent")


@dataclass
class RouterReport(Displayable):
    """Accuracy and the confusion matrix (rows: expected agent, columns: chosen agent)."""

    accuracy: float
    confusion: pd.DataFrame
    predictions: pd.DataFrame = field(repr=False)

    def __repr__(self) -> str:
        return (f"<RouterReport accuracy={self.accuracy:.3f} n={len(self.predictions)}>\n"
                f"{self.confusion.to_string()}")

    def _repr_html_(self) -> str:
        return (f"<b>accuracy {self.accuracy:.3f}</b> on {len(self.predictions)} tasks"
                f"{self.confusion.to_html()}")


class TaskRouter:
    """Picks an agent for a task: ``TaskRouter(lab).route("plot revenue from sales.csv")``.

    ``llm``: ``"off"`` (keywords and embeddings only), ``"fallback"`` (ask the model when
    the confidence is under ``llm_below``) or ``"always"``. ``model``: the classifier's
    model (default: the Lab's). ``embedding_model``: passed to ``lab.aembed`` (default: the
    local MiniLM). ``keyword_weight``: the score one matched keyword adds (at most three
    count); ``temperature``: how sharply scores turn into a confidence.
    """

    def __init__(self, lab: Lab, *, agents: Mapping[str, AgentCard] | None = None,
                 llm: LlmMode = "off", llm_below: float = 0.5, model: str | Model | None = None,
                 embedding_model: str | None = None, keyword_weight: float = 0.1,
                 temperature: float = 0.05) -> None:
        if llm not in ("off", "fallback", "always"):
            raise ConfigError(f"llm={llm!r}: use 'off', 'fallback' or 'always'",
                              fields=("llm",))
        for name, value, low, high in (("llm_below", llm_below, 0.0, 1.0),
                                       ("keyword_weight", keyword_weight, 0.0, 1.0),
                                       ("temperature", temperature, 1e-3, 10.0)):
            if not isinstance(value, int | float) or not low <= value <= high:
                raise ConfigError(f"{name}={value!r}: give a number in [{low}, {high}]",
                                  fields=(name,))
        table = dict(AGENTS if agents is None else agents)
        if not table:
            raise ConfigError("agents={}: give at least one AgentCard", fields=("agents",))
        self.lab, self.agents = lab, table
        self.llm, self.llm_below, self.model = llm, llm_below, model
        self.embedding_model = embedding_model
        self.keyword_weight, self.temperature = keyword_weight, temperature
        self._patterns = {name: [re.compile(k, re.IGNORECASE) for k in card.keywords]
                          for name, card in table.items()}
        self._vectors: np.ndarray | None = None  # one row per description text
        self._owners: list[str] = []  # which agent each row describes

    def __repr__(self) -> str:
        return f"<TaskRouter agents={list(self.agents)} llm={self.llm!r}>"

    # -- doors -----------------------------------------------------------------------------
    async def aroute(self, task: str, *, llm: LlmMode | None = None) -> Route:
        """The agent for ``task``, its confidence and why (``llm`` overrides the router's)."""
        return (await self.aroute_many([task], llm=llm))[0]

    async def aroute_many(self, tasks: Sequence[str], *,
                          llm: LlmMode | None = None) -> list[Route]:
        """``aroute`` for several tasks, embedded in one batch."""
        batch = [_check_task(t) for t in tasks]
        mode = self.llm if llm is None else llm
        if mode not in ("off", "fallback", "always"):
            raise ConfigError(f"llm={mode!r}: use 'off', 'fallback' or 'always'",
                              fields=("llm",))
        return await self.lab.runner.arun(self._route_many(batch, mode))

    async def aevaluate(self, examples: Iterable[Mapping[str, Any]] | str | Path | pd.DataFrame,
                        *, llm: LlmMode | None = None) -> RouterReport:
        """Route labelled examples (``task`` and ``agent`` each; a JSONL path or a
        DataFrame too) and report accuracy and the confusion matrix."""
        import pandas as pd

        frame = _examples(examples)
        unknown = sorted(set(frame["agent"]) - set(self.agents))
        if unknown:
            raise ConfigError(f"examples name agents the router does not know: {unknown}; "
                              f"known: {list(self.agents)}", fields=("agent",))
        routes = await self.aroute_many(list(frame["task"]), llm=llm)
        frame = frame.assign(chosen=[r.agent for r in routes],
                             confidence=[r.confidence for r in routes],
                             why=[r.why for r in routes])
        names = list(self.agents)
        confusion = pd.crosstab(pd.Categorical(frame["agent"], names),
                                pd.Categorical(frame["chosen"], names),
                                rownames=["expected"], colnames=["chosen"], dropna=False)
        accuracy = float((frame["agent"] == frame["chosen"]).mean()) if len(frame) else 0.0
        return RouterReport(accuracy, confusion, frame)

    route = sync_twin(aroute)
    route_many = sync_twin(aroute_many)
    evaluate = sync_twin(aevaluate)

    def keyword_hits(self, task: str) -> dict[str, list[str]]:
        """The words of ``task`` that each agent's keyword rules matched."""
        return {name: hits for name, patterns in self._patterns.items()
                if (hits := [m.group(0).lower() for p in patterns
                             if (m := p.search(task))])}

    # -- on the runner loop ----------------------------------------------------------------
    async def _route_many(self, tasks: list[str], mode: LlmMode) -> list[Route]:
        import numpy as np

        if not tasks:
            return []
        vectors = await self._descriptions()
        queries = np.asarray(await self.lab.aembed(tasks, self.embedding_model),
                             dtype=np.float32)
        sims = _normalised(queries) @ vectors.T  # (tasks, description texts)
        routes = [self._combine(task, row) for task, row in zip(tasks, sims, strict=True)]
        if mode == "off":
            return routes
        return [await self._ask(task, route)
                if mode == "always" or route.confidence < self.llm_below else route
                for task, route in zip(tasks, routes, strict=True)]

    async def _descriptions(self) -> np.ndarray:
        """Every description text embedded once per router, rows normalised."""
        import numpy as np

        if self._vectors is None:
            owners = [name for name, card in self.agents.items() for _ in card.texts]
            texts = [text for card in self.agents.values() for text in card.texts]
            vectors = np.asarray(await self.lab.aembed(texts, self.embedding_model),
                                 dtype=np.float32)
            self._owners, self._vectors = owners, _normalised(vectors)
        return self._vectors

    def _combine(self, task: str, sims: np.ndarray) -> Route:
        """Best description similarity per agent plus a bonus per keyword hit (at most
        three), softmaxed into a confidence."""
        best: dict[str, float] = {}
        for owner, sim in zip(self._owners, sims.tolist(), strict=True):
            best[owner] = max(best.get(owner, -1.0), sim)
        hits = self.keyword_hits(task)
        scores = {name: best[name] + self.keyword_weight * min(len(hits.get(name, ())), 3)
                  for name in self.agents}
        top = max(scores, key=scores.__getitem__)
        exps = {n: math.exp((s - scores[top]) / self.temperature) for n, s in scores.items()}
        confidence = 1.0 / sum(exps.values())
        ranked = sorted(best, key=best.__getitem__, reverse=True)
        words = ", ".join(f"{n}: {'/'.join(h)}" for n, h in hits.items()) or "none"
        why = (f"keywords {words}; closest descriptions {ranked[0]} {best[ranked[0]]:.2f}, "
               f"{ranked[1]} {best[ranked[1]]:.2f}" if len(ranked) > 1 else
               f"keywords {words}; description similarity {best[ranked[0]]:.2f}")
        return Route(agent=top, confidence=round(confidence, 4), why=why,
                     scores={n: round(s, 4) for n, s in scores.items()})

    async def _ask(self, task: str, prior: Route) -> Route:
        """The LLM classifier: a validated ``LlmChoice`` naming a known agent."""
        from aillm_lab.errors import StructuredOutputError

        menu = "\n".join(f"- {name}: {card.description}" for name, card in self.agents.items())
        prompt = (f"Pick the agent that should handle the task.\nAgents:\n{menu}\n\n"
                  f"Task: {task}\n\nAnswer with the agent's name, your confidence (0 to 1) "
                  f"and a one-sentence reason.")
        try:
            choice = await self.lab.acomplete(prompt, self.model, output=LlmChoice)
        except StructuredOutputError as exc:
            return prior.model_copy(update={"why": f"{prior.why}; the LLM classifier gave "
                                                   f"no valid answer ({exc})"})
        if choice.agent not in self.agents:
            return prior.model_copy(update={"why": f"{prior.why}; the LLM named an unknown "
                                                   f"agent {choice.agent!r}, ignored"})
        return Route(agent=choice.agent, confidence=choice.confidence, method="llm",
                     scores=prior.scores,
                     why=f"LLM: {choice.reason} (keywords and embeddings said {prior.agent} "
                         f"at {prior.confidence:.2f})")


def load_examples(path: str | Path) -> list[dict[str, Any]]:
    """Labelled tasks from a JSONL file: one ``{"task": ..., "agent": ...}`` per line."""
    import json

    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _examples(examples: Iterable[Mapping[str, Any]] | str | Path | pd.DataFrame
              ) -> pd.DataFrame:
    import pandas as pd

    if isinstance(examples, str | Path):
        examples = load_examples(examples)
    frame = examples if isinstance(examples, pd.DataFrame) else pd.DataFrame(list(examples))
    missing = {"task", "agent"} - set(frame.columns)
    if missing:
        raise ConfigError(f"examples need the columns task and agent; missing "
                          f"{sorted(missing)}", fields=tuple(sorted(missing)))
    return frame.reset_index(drop=True)


def _check_task(task: object) -> str:
    if not isinstance(task, str) or not task.strip():
        raise ConfigError(f"task={task!r}: give the task as a non-empty text",
                          fields=("task",))
    return task.strip()


def _normalised(vectors: np.ndarray) -> np.ndarray:
    import numpy as np

    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1.0, norms)
