"""Issue 12: an interrupt (Ctrl-C in a script, the kernel's interrupt in Jupyter) cancels the
agent run in flight and ends it cleanly, with a partial ``AgentRun`` whose status is
``cancelled``, and the Lab's loop thread still works afterwards.

Both cases run the same slow run through the public API only: a ``ScriptedModel`` calls
``add`` (a step that finishes) and then ``slow``, an async tool that sleeps for a minute, notes
on disk that it started and, when cancelled, that it was cancelled. The script case runs it in
a child Python process and sends that process SIGINT; the Jupyter case runs it in a real
kernel and calls ``interrupt_kernel()``. Each case runs once per module (a fixture); the tests
read what it left behind. Every wait is bounded, so a broken interrupt fails instead of
hanging.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import KernelManager

import aillm_lab as al

pytestmark = pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")

START_WAIT = 30.0  # seconds for the child or kernel to reach the slow tool (imports included)
PROMPT = 2.0  # seconds an interrupt may take to end the run (the runner's grace is 1 s)
FINISH_WAIT = 20.0  # seconds for what follows an interrupt, before we call it a hang

# The slow run, as code for a child process or a kernel cell; {home} and {marks} are filled in.
SLOW_RUN = """\
import asyncio
import json
import time
from pathlib import Path

import aillm_lab as al
from aillm_lab.testing import ScriptedModel

marks = Path({marks!r})


@al.tool
def add(a: int, b: int) -> int:
    \"\"\"Add two integers.\"\"\"
    return a + b


@al.tool
async def slow(seconds: float) -> str:
    \"\"\"Wait, then say done.\"\"\"
    (marks / "started").write_text(repr(time.time()))
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        (marks / "cancelled").write_text(repr(time.time()))
        raise
    (marks / "finished").write_text(repr(time.time()))
    return "done"


def call(name, call_id, **arguments):
    return al.ToolCall(id=call_id, name=name, arguments=arguments)


model = ScriptedModel([call("add", "c1", a=1, b=2), call("slow", "c2", seconds=60),
                       call("add", "c3", a=2, b=2), "2 + 2 = 4"])
lab = al.Lab(home={home!r}, model=model)
# max_seconds: a broken interrupt ends as a timeout (status "timeout"), never a hang
agent = al.ReActAgent(tools=[add, slow], lab=lab, max_seconds=45)


def describe(run, **extra):
    return json.dumps({{"id": run.id, "status": run.status, "error": run.error,
                       "calls": [[c.name for c in s.tool_calls] for s in run.steps],
                       "results": [[r.content for r in s.tool_results] for s in run.steps],
                       "output": run.output, **extra}})
"""

# The script: the slow run, and on Ctrl-C what a script's user would look at, then a second
# run on the same agent (the same Lab, the same loop thread), then the interrupt goes on.
SCRIPT_TAIL = """
try:
    agent.run("wait for a minute")
except KeyboardInterrupt:
    caught = time.time()
    print("INTERRUPTED", describe(agent.last_run, caught=caught), flush=True)
    again = agent.run("what is 2 + 2?")
    print("AGAIN", describe(again), flush=True)
    raise
print("NOT INTERRUPTED", describe(agent.last_run), flush=True)
"""

# The kernel's second cell, after the interrupted one: a look at the run, then a second run.
KERNEL_AFTER = """\
print("INTERRUPTED", describe(agent.last_run), flush=True)
again = agent.run("what is 2 + 2?")
print("AGAIN", describe(again), flush=True)
"""


def home_and_marks(base: Path) -> tuple[Path, Path]:
    home, marks = base / "home", base / "marks"
    marks.mkdir(parents=True)
    return home, marks


def wait_for(path: Path, seconds: float, alive: Any = lambda: True) -> bool:
    """Whether ``path`` appears within ``seconds`` (gives up early once ``alive()`` is
    false)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        if not alive():
            return path.exists()
        time.sleep(0.02)
    return path.exists()


def mark_time(marks: Path, name: str) -> float | None:
    path = marks / name
    return float(path.read_text()) if path.exists() else None


def printed(lines: str, tag: str) -> dict[str, Any] | None:
    """The JSON the child printed after ``tag``, or None when it printed none."""
    for line in lines.splitlines():
        if line.startswith(tag + " {"):
            return json.loads(line[len(tag) + 1:])
    return None


# -- the script case ---------------------------------------------------------------------------
@dataclass
class ScriptCase:
    home: Path
    marks: Path
    sent: float  # time.time() when SIGINT was sent
    exited: float | None  # time.time() when the child was seen to exit; None: it hung
    returncode: int | None
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def script_case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptCase]:
    """Run the slow run in a child Python, send it SIGINT once the slow tool has started."""
    base = tmp_path_factory.mktemp("script")
    home, marks = home_and_marks(base)
    script = base / "slow_run.py"
    script.write_text(SLOW_RUN.format(home=str(home), marks=str(marks)) + SCRIPT_TAIL)
    child = subprocess.Popen([sys.executable, str(script)], cwd=base, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if not wait_for(marks / "started", START_WAIT, lambda: child.poll() is None):
            child.kill()
            out, err = child.communicate()
            pytest.fail(f"the child never reached the slow tool (rc {child.returncode}):\n"
                        f"{out}\n{err}")
        sent = time.time()
        child.send_signal(signal.SIGINT)
        try:
            out, err = child.communicate(timeout=FINISH_WAIT)
            exited: float | None = time.time()
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            exited = None
        yield ScriptCase(home, marks, sent, exited, None if exited is None else child.returncode,
                         out, err)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_ctrl_c_in_a_script_raises_keyboard_interrupt_promptly(script_case):
    case = script_case
    assert case.exited is not None, f"the child still ran {FINISH_WAIT} s after SIGINT"
    assert printed(case.stdout, "NOT INTERRUPTED") is None, case.stdout
    seen = printed(case.stdout, "INTERRUPTED")
    assert seen is not None, f"agent.run did not raise KeyboardInterrupt:\n{case.stderr}"
    assert seen["caught"] - case.sent < PROMPT  # agent.run returned control within ~1 s
    # the child re-raised it: a traceback that ends in KeyboardInterrupt, a failing status
    assert case.returncode != 0
    assert case.stderr.rstrip().splitlines()[-1] == "KeyboardInterrupt", case.stderr
    assert "agent.run(" in case.stderr


def test_ctrl_c_cancels_the_tool_coroutine_in_flight(script_case):
    cancelled = mark_time(script_case.marks, "cancelled")
    assert cancelled is not None, "the slow tool was never cancelled"
    seen = printed(script_case.stdout, "INTERRUPTED")
    assert seen is not None, script_case.stderr
    # by the interrupt, before agent.run gave control back (not later, at the process's exit)
    assert script_case.sent < cancelled <= seen["caught"]
    assert not (script_case.marks / "finished").exists()


def test_ctrl_c_leaves_a_partial_cancelled_run_as_agent_last_run(script_case):
    seen = printed(script_case.stdout, "INTERRUPTED")
    assert seen is not None, script_case.stderr
    # read in the except block at once: the run was already ended when agent.run raised
    assert seen["status"] == "cancelled", seen
    assert "keyboard interrupt" in seen["error"]
    assert seen["calls"] == [["add"], ["slow"]]  # the step in flight is in the trace
    assert seen["results"] == [["3"], []]  # and the finished step's result is kept
    assert seen["output"] is None


def test_the_same_agent_and_loop_run_again_after_ctrl_c(script_case):
    again = printed(script_case.stdout, "AGAIN")
    assert again is not None, f"the second run never finished:\n{script_case.stderr}"
    assert again["status"] == "completed" and again["output"] == "2 + 2 = 4", again
    assert again["results"] == [["4"], []]
    with al.Lab(home=script_case.home) as lab:  # saved: another process lists and reloads it
        runs = lab.runs()
        assert again["id"] in set(runs["id"])
        assert lab.load_run(again["id"]).status == "completed"


def test_a_run_cancelled_by_ctrl_c_is_saved_listed_and_reloaded(script_case):
    seen = printed(script_case.stdout, "INTERRUPTED")
    assert seen is not None, script_case.stderr
    with al.Lab(home=script_case.home) as lab:
        runs = lab.runs()
        row = runs[runs["id"] == seen["id"]]
        assert len(row) == 1, f"run {seen['id']} is not in lab.runs():\n{runs}"
        assert row["status"].iloc[0] == "cancelled" and row["steps"].iloc[0] == 2
        try:
            loaded = lab.load_run(seen["id"])
        except LookupError as exc:
            raise AssertionError(str(exc)) from exc
    assert loaded.status == "cancelled"
    assert loaded.steps[0].tool_results[0].content == "3"
    assert [c.name for c in loaded.steps[1].tool_calls] == ["slow"]


# -- the Jupyter case --------------------------------------------------------------------------
@dataclass
class Cell:
    reply: dict[str, Any] | None = None  # the execute_reply's content; None: no reply in time
    stdout: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class KernelCase:
    marks: Path
    sent: float
    replied: float | None  # when the interrupted cell's reply came
    slow_cell: Cell
    next_cell: Cell


def collect(kc: Any, msg_id: str, cell: Cell, seconds: float) -> float | None:
    """Fill ``cell`` with the reply and outputs of request ``msg_id``; the time of the reply."""
    deadline = time.monotonic() + seconds
    replied = None
    while cell.reply is None and time.monotonic() < deadline:
        try:
            msg = kc.get_shell_msg(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") == msg_id:
            cell.reply, replied = msg["content"], time.time()
    idle = False
    while not idle and time.monotonic() < deadline + 5:
        try:
            msg = kc.get_iopub_msg(timeout=1)
        except queue.Empty:
            break
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            cell.stdout += content["text"]
        elif kind == "error":
            cell.errors.append(content)
        idle = kind == "status" and content["execution_state"] == "idle"
    return replied


@pytest.fixture(scope="module")
def kernel_case(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelCase]:
    """Run the slow run in a cell of a real kernel, interrupt the kernel once the slow tool
    has started, then run one more cell in the same kernel."""
    base = tmp_path_factory.mktemp("kernel")
    home, marks = home_and_marks(base)
    km = KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(base))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=START_WAIT)
        slow_cell = Cell()
        slow_id = kc.execute(SLOW_RUN.format(home=str(home), marks=str(marks))
                             + '\nrun = agent.run("wait for a minute")\n')
        if not wait_for(marks / "started", START_WAIT, km.is_alive):
            collect(kc, slow_id, slow_cell, 1)
            pytest.fail(f"the kernel never reached the slow tool: {slow_cell}")
        sent = time.time()
        km.interrupt_kernel()
        replied = collect(kc, slow_id, slow_cell, FINISH_WAIT)
        next_cell = Cell()
        if slow_cell.reply is not None:  # else the kernel is still busy with the slow cell
            collect(kc, kc.execute(KERNEL_AFTER), next_cell, FINISH_WAIT)
        yield KernelCase(marks, sent, replied, slow_cell, next_cell)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_kernel_interrupt_ends_the_cell_with_keyboard_interrupt_promptly(kernel_case):
    case = kernel_case
    reply = case.slow_cell.reply
    assert reply is not None, f"the cell still ran {FINISH_WAIT} s after the interrupt"
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt", reply
    assert [e["ename"] for e in case.slow_cell.errors] == ["KeyboardInterrupt"]
    assert case.replied is not None and case.replied - case.sent < PROMPT
    cancelled = mark_time(case.marks, "cancelled")
    assert cancelled is not None, "the slow tool was never cancelled"
    assert case.sent < cancelled <= case.replied  # by the interrupt, before the cell ended
    assert not (case.marks / "finished").exists()


def test_the_same_kernel_keeps_the_cancelled_run_and_runs_the_agent_again(kernel_case):
    cell = kernel_case.next_cell
    assert cell.reply is not None, "the cell after the interrupt never finished"
    assert cell.reply["status"] == "ok", cell.errors or cell.reply
    seen = printed(cell.stdout, "INTERRUPTED")
    assert seen is not None, cell.stdout
    assert seen["status"] == "cancelled" and "keyboard interrupt" in seen["error"], seen
    assert seen["calls"] == [["add"], ["slow"]] and seen["results"] == [["3"], []]
    again = printed(cell.stdout, "AGAIN")
    assert again is not None, cell.stdout
    assert again["status"] == "completed" and again["output"] == "2 + 2 = 4", again

