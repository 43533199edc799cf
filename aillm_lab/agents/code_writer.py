"""``CodeWriterAgent``: write Python, run the tests in the sandbox, fix what fails, repeat.

The model only writes code (a ```` ```python ```` block, what small models write naturally,
or a ``submit_code`` call); the agent judges each answer by running it: ``acheck_answer``
sends code + tests + a small runner (``code_test_runner``) to a per-run ``PythonSandbox``
through the Lab's Safety Guard (``run_python``: approval policy applies, one audit row per
test run, ``call_id`` ``<run id>:test<n>``), then accepts a pass or sends the failure output
back as the next prompt. Without ``tests=`` the first step asks the model for tests; they
are kept in ``run.inputs`` so a fork goes on with them.

After every iteration ``run.output`` holds the ``CodeResult`` so far, so a run stopped by
``max_steps``, the budget or the time limit still returns its last code with
``passed=False``. The tests step and a failing iteration are progress, not mistakes
(``Verdict(failed=False)``), so they do not count towards ``max_repairs``: the step limit
ends a run whose tests keep failing (status ``max_steps``); replies without code do count.
Each iteration is also kept in its step's ``state``, so a fork past it (even of a reloaded
run) goes on counting from the replayed iterations, with no test run again (``arestore``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from aillm_lab.agents.base import Agent, ModelArg
from aillm_lab.agents.code_test_runner import (
    MAX_FEEDBACK,
    clip_feedback,
    new_marker,
    read_report,
    runner_program,
)
from aillm_lab.agents.fork import record, recorded
from aillm_lab.agents.modes import ToolMode, Verdict
from aillm_lab.agents.run import AgentEvent, AgentRun, AgentStep
from aillm_lab.agents.toolset import ToolsArg
from aillm_lab.errors import ConfigError, SafetyViolation
from aillm_lab.llm.types import Completion, GenerationParams, Message, ToolCall, ToolSpec
from aillm_lab.runtime import sync_twin
from aillm_lab.tools.base import Tool, ToolResult

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aillm_lab import Lab
    from aillm_lab.llm.base import Model
    from aillm_lab.memory.long_term import LongTermMemory
    from aillm_lab.tools.python import PythonSandbox

# -- prompts (data: what the model is told, and why) -------------------------------------------
# The role, and the one answer format we can parse from any model: a fenced python block.
CODE_SYSTEM = (
    "You are an expert Python programmer. Write correct, self-contained Python code for the "
    "user's task. Reply with the complete code in one ```python block, or call the "
    "`submit_code` tool with it. Your code is run against tests: they can import it as "
    "`solution` and also see its names directly. Do not include tests or example usage in "
    "the solution.")

# First step without tests=: tests come first, so the code is judged by something fixed.
TESTS_REQUEST = (
    "Task:\n{task}\n\nBefore any solution, write tests for this task: pytest-style `test_*` "
    "functions that use plain `assert` (no fixtures), in one ```python block. The "
    "solution's functions will be available by name (or `from solution import ...`). "
    "Reply with the tests only.")

# First step with tests=: the model sees exactly what its code must pass.
CODE_REQUEST = (
    "Task:\n{task}\n\nYour code must pass these tests:\n```python\n{tests}\n```\n"
    "Reply with the complete solution in one ```python block.")

# After the tests step: the next answer is the solution, not more tests.
WRITE_CODE = (
    "Tests recorded. Now write the solution that passes them; reply with the complete "
    "code in one ```python block.")

# A failing iteration: the runner's output is the whole point of the loop, so it goes back.
TESTS_FAILED = (
    "Iteration {iteration}: the tests did not pass.\n\n{output}\n\nFix the code and reply "
    "with the complete corrected code in one ```python block.")

# A reply we could not read: say exactly what format is expected.
NO_CODE = (
    "I found no Python code in your reply. Reply with the {what} in one ```python block "
    "(```python ... ```), or call `submit_code` with it.")

BAD_TESTS = (
    "These tests cannot be used: {problem}. Reply with pytest-style `test_*` functions "
    "that use plain `assert`, in one ```python block.")

SUBMIT_TOOL = "submit_code"
ITERATION = "iteration"  # step state: the CodeIteration the step's answer was tested as
SUBMIT_DESCRIPTION = ("Submit Python source: the tests when you are asked for tests, "
                      "otherwise the complete solution.")
SUBMIT_SEEN = "Received; the result follows."
NOT_RUN = f"Not run: `{SUBMIT_TOOL}` ends the turn, so the other calls were skipped."


# -- the result ---------------------------------------------------------------------------------
class CodeIteration(BaseModel):
    """One try: the code, what the test runner printed, and whether every test passed."""

    iteration: int
    step: int = Field(description="index of the run step whose answer this code was")
    code: str
    test_output: str
    passed: bool
    tests_passed: int = 0
    tests_failed: int = 0


class CodeResult(BaseModel):
    """``run.output`` of a ``CodeWriterAgent``: the last code, its tests and how it went."""

    code: str = ""
    tests: str = ""
    passed: bool = False
    iterations: int = 0
    history: list[CodeIteration] = Field(default_factory=list)
    tests_generated: bool = Field(default=False, description="the model wrote the tests")
    saved_to: str | None = Field(default=None, description="workspace path of save_to=")
    save_error: str | None = Field(default=None, description="why save_to= was not written")


# -- the agent ----------------------------------------------------------------------------------
class CodeWriterAgent(Agent):
    """Write code until the tests pass: ``al.CodeWriterAgent(lab=lab).run(task, tests=src)``.

    ``save_to``: a workspace path the passing code is written to through ``write_file`` (the
    guard, its approval policy and the audit apply; a refusal is kept in ``save_error``).
    ``test_timeout_s``: wall-clock limit of one test run (capped by the code policy).
    """

    system_prompt = CODE_SYSTEM

    def __init__(self, tools: ToolsArg = None, model: ModelArg = None, lab: Lab | None = None,
                 max_steps: int = 10, max_cost_usd: float | None = None,
                 max_seconds: float | None = None, output: type[BaseModel] | None = None,
                 memory: LongTermMemory | bool | None = None, *, save_to: str | None = None,
                 test_timeout_s: float = 30.0,
                 params: GenerationParams | dict[str, Any] | None = None,
                 **options: Any) -> None:
        if output is not None and output is not CodeResult:
            raise ConfigError(f"output={getattr(output, '__name__', output)!r}: a "
                              f"CodeWriterAgent's output is always a CodeResult; leave "
                              f"output= unset", fields=("output",))
        if save_to is not None and (not isinstance(save_to, str) or not save_to.strip()):
            raise ValueError(f"save_to={save_to!r}: give a file path relative to the "
                             f"workspace, e.g. 'solution.py', or None")
        if not test_timeout_s > 0:
            raise ValueError(f"test_timeout_s={test_timeout_s}: give a positive number")
        super().__init__(tools, model, lab, max_steps, max_cost_usd, max_seconds, None, memory,
                         params=(params if isinstance(params, GenerationParams)
                                 else {"max_tokens": 2048, **(params or {})}), **options)
        self.save_to, self.test_timeout_s = save_to, test_timeout_s
        self.tools.add_spec(ToolSpec(name=SUBMIT_TOOL, description=SUBMIT_DESCRIPTION,
                                     parameters={"type": "object", "required": ["code"],
                                                 "properties": {"code": {"type": "string"}}}))
        self.tool_mode = _SubmitAware(self.tool_mode)
        self._runs: dict[str, _RunState] = {}

    # -- doors ---------------------------------------------------------------------------------
    async def arun(self, task: str, tests: str | None = None) -> AgentRun:
        """Write code for ``task`` that passes ``tests`` (Python source of ``test_*``
        functions or asserts; without them the model writes the tests first)."""
        return await self._launch(AgentRun(task=task, inputs=_inputs(tests)))

    async def astream(self, task: str, tests: str | None = None) -> AsyncIterator[AgentEvent]:
        """Events as they happen; the last one is ``final`` and carries the ``AgentRun``."""
        run = AgentRun(task=task, inputs=_inputs(tests))
        state = self._open(run)
        try:
            live = self._start(run, self.model, None)
            async for event in self.runner.aiterate(lambda: self._events(live)):
                yield event
        finally:
            await self._close(run, state)

    run = sync_twin(arun)
    stream = sync_twin(astream)

    async def _launch(self, run: AgentRun, model: ModelArg = None,
                      history: list[Message] | None = None) -> AgentRun:
        """Every run (``run``, ``fork``) gets its state and sandbox, released at the end."""
        state = self._open(run)
        try:
            return await super()._launch(run, model, history)
        finally:
            await self._close(run, state)

    # -- hooks ---------------------------------------------------------------------------------
    def initial_messages(self, run: AgentRun, memories: list[str]) -> list[Message]:
        messages = super().initial_messages(run, memories)
        tests = run.inputs.get("tests")
        text = (TESTS_REQUEST.format(task=run.task) if tests is None
                else CODE_REQUEST.format(task=run.task, tests=tests.strip()))
        return [*messages[:-1], Message.user(text)]

    async def acheck_answer(self, run: AgentRun, text: str) -> Verdict:
        """Tests phase: keep valid tests. Code phase: run them in the sandbox, accept a
        pass, send a failure back. A reply without code is repaired."""
        state = self._state(run)
        step = run.steps[-1] if run.steps else None
        calls = step.tool_calls if step is not None else []
        source = _submitted(calls) or extract_code(text)
        if state.tests is None:
            verdict = self._take_tests(run, state, source)
            _answer_calls(step, calls, SUBMIT_SEEN)
            return verdict
        if source is None:
            _answer_calls(step, calls, SUBMIT_SEEN)
            return Verdict(repair=NO_CODE.format(what="complete solution"))
        iteration = await self._test(run, state, source, step.index if step else 0)
        _answer_calls(step, calls, iteration.test_output[:MAX_FEEDBACK])
        result = state.result()
        run.output = result  # a run stopped later still returns its last try
        if not iteration.passed:
            return Verdict(repair=TESTS_FAILED.format(
                iteration=iteration.iteration, output=clip_feedback(iteration.test_output)),
                failed=False)
        if self.save_to is not None:
            await self._save(run, result)
        return Verdict(output=result)

    check_answer = sync_twin(acheck_answer)

    async def arestore(self, run: AgentRun, replayed: list[AgentStep]) -> None:
        """The iterations the replayed steps tested, from their state; the run's output is
        the result so far, as it was after the last of them."""
        state = self._state(run)
        state.history = [CodeIteration.model_validate(i) for i in recorded(replayed, ITERATION)]
        if state.history:
            run.output = state.result()

    # -- phases --------------------------------------------------------------------------------
    def _take_tests(self, run: AgentRun, state: _RunState, source: str | None) -> Verdict:
        if source is None:
            return Verdict(repair=NO_CODE.format(what="tests"))
        problem = tests_problem(source)
        if problem is not None:
            return Verdict(repair=BAD_TESTS.format(problem=problem))
        state.tests, state.generated = source, True
        run.inputs.update(tests=source, tests_generated=True)
        return Verdict(repair=WRITE_CODE, failed=False)

    async def _test(self, run: AgentRun, state: _RunState, code: str,
                    step: int) -> CodeIteration:
        """Run ``code`` against the tests in the sandbox, through the guard (audited)."""
        assert state.tests is not None
        number = len(state.history) + 1
        program = runner_program(code, state.tests, state.marker)
        result = await self.runner.arun(self.lab.tools.guard.invoke(
            state.tool(self), {"code": program, "timeout_s": self.test_timeout_s},
            f"{run.id}:test{number}"))
        if not result.ok and (result.rule or "").startswith("approval."):
            raise SafetyViolation(result.rule or "approval.denied", f"the tests could not "
                                  f"run: {result.content}")  # ends the run: no fix possible
        counts, shown = read_report(result, state.marker)
        passed = (counts is not None and counts["passed"] > 0
                  and counts["failed"] == counts["errors"] == 0)
        iteration = CodeIteration(iteration=number, step=step, code=code, test_output=shown,
                                  passed=passed, tests_passed=(counts or {}).get("passed", 0),
                                  tests_failed=(counts or {}).get("failed", 0))
        state.history.append(iteration)
        record(run, ITERATION, iteration.model_dump(mode="json"))
        return iteration

    async def _save(self, run: AgentRun, result: CodeResult) -> None:
        """Write the passing code through ``write_file`` (guard, approval, audit)."""
        assert self.save_to is not None
        written = await self.lab.tools.ainvoke(
            "write_file", {"path": self.save_to, "content": result.code}, f"{run.id}:save")
        if written.ok:
            result.saved_to = self.save_to
        else:
            result.save_error = written.content

    # -- per-run state -------------------------------------------------------------------------
    def _open(self, run: AgentRun) -> _RunState:
        state = self._runs[run.id] = _RunState.of(run)
        return state

    def _state(self, run: AgentRun) -> _RunState:
        """This run's state; made on demand for a run judged outside ``run``/``fork``."""
        return self._runs.get(run.id) or self._open(run)

    async def _close(self, run: AgentRun, state: _RunState) -> None:
        self._runs.pop(run.id, None)
        if state.sandbox is not None:
            await state.sandbox.aclose()


@dataclass
class _RunState:
    """One run's tests, tries and sandbox (made on the first test run, closed at the end)."""

    tests: str | None
    generated: bool
    marker: str = field(default_factory=new_marker)
    history: list[CodeIteration] = field(default_factory=list)
    sandbox: PythonSandbox | None = None
    _tool: Tool | None = None

    @classmethod
    def of(cls, run: AgentRun) -> _RunState:
        return cls(tests=run.inputs.get("tests"),
                   generated=bool(run.inputs.get("tests_generated")))

    def tool(self, agent: Agent) -> Tool:
        """The sandbox's ``run_python`` tool, under the Lab's code policy."""
        if self._tool is None:
            from aillm_lab.tools.python import PythonSandbox

            self.sandbox = PythonSandbox(agent.lab.settings.safety.code, runner=agent.runner)
            (self._tool,) = self.sandbox.tools()
        return self._tool

    def result(self) -> CodeResult:
        last = self.history[-1] if self.history else None
        return CodeResult(code=last.code if last else "", tests=self.tests or "",
                          passed=bool(last and last.passed), iterations=len(self.history),
                          history=list(self.history), tests_generated=self.generated)


class _SubmitAware:
    """A ``ToolMode`` that hides ``submit_code`` calls from the loop, so a submission is
    judged by ``acheck_answer`` like a code block (the call stays in the trace)."""

    def __init__(self, inner: ToolMode) -> None:
        self.inner = inner

    def for_model(self, model: Model) -> ToolMode:
        inner = self.inner.for_model(model)
        return self if inner is self.inner else _SubmitAware(inner)

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]
                ) -> tuple[list[Message], list[ToolSpec] | None]:
        return self.inner.request(messages, tools)

    def calls(self, completion: Completion) -> list[ToolCall]:
        calls = self.inner.calls(completion)
        return [] if any(c.name == SUBMIT_TOOL for c in calls) else calls


# -- reading answers ----------------------------------------------------------------------------
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:\n[ \t]*```|\Z)", re.S)
_PYTHON = {"python", "py", "python3", "py3"}


def extract_code(text: str) -> str | None:
    """The Python in a reply: the longest ```python block (models often add a short usage
    example), else the longest unlabelled block, else the whole reply if it parses as
    Python with a top-level ``def``/``class``; None when there is none. An unclosed fence
    (a reply cut at ``max_tokens``) counts up to the end."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text or "")]
    for wanted in (lambda lang: lang in _PYTHON, lambda lang: lang == ""):
        found = [body for lang, body in blocks if wanted(lang) and body.strip()]
        if found:
            return max(found, key=len).strip("\n") + "\n"
    if not blocks and text and text.strip():
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return None
        if any(isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
               for n in tree.body):
            return text.strip("\n") + "\n"
    return None


def tests_problem(source: str) -> str | None:
    """Why ``source`` cannot serve as tests (None when it can): it must parse and hold a
    ``test_*`` function, a ``Test*`` class or an ``assert``."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return f"they are not valid Python ({exc.msg}, line {exc.lineno})"
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
            return None
        if isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            return None
    if any(isinstance(node, ast.Assert) for node in ast.walk(tree)):
        return None
    return "they define no test_* function and contain no assert"


def _submitted(calls: list[ToolCall]) -> str | None:
    for call in calls:
        code = call.arguments.get("code") if call.name == SUBMIT_TOOL else None
        if isinstance(code, str) and code.strip():
            return code
    return None


def _answer_calls(step: AgentStep | None, calls: list[ToolCall], text: str) -> None:
    """Give every tool call of a judged answer its result, so the history stays valid
    for providers that want one tool message per call."""
    if step is None:
        return
    for call in calls:
        content = text if call.name == SUBMIT_TOOL else NOT_RUN
        step.tool_results.append(ToolResult(name=call.name, call_id=call.id, content=content))
        step.observations.append(Message.tool(content, call.id, name=call.name))


def _inputs(tests: str | None) -> dict[str, Any]:
    if tests is not None:
        if not isinstance(tests, str):
            raise TypeError(f"tests= takes Python source as a str, got {type(tests).__name__}")
        problem = tests_problem(tests)
        if problem is not None:
            raise ValueError(f"tests=: {problem}; give pytest-style test_* functions or "
                             f"asserts as Python source")
    return {"tests": tests, "tests_generated": False}


__all__ = ["CodeIteration", "CodeResult", "CodeWriterAgent", "extract_code", "tests_problem"]
