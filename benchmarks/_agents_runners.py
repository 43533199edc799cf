"""One framework's agent runs, timed in this process; ``bench_agents.py`` starts one per child.

Every framework gets the same task: a zero-latency fake model that answers the same three
steps (call ``add(2, 3)``, call ``mul(5, 4)``, then the text ``FINAL``), and the same two
plain Python functions as tools. Each framework's own fake-model door is used (our
``ScriptedModel``, smolagents' callable model, pydantic-ai's ``FunctionModel``, a LangChain
fake chat model, the Agents SDK's ``Model`` interface as its own tests fake it, Agno's
``Model`` with its provider call stubbed). The agent is built once and reused; every run
starts from the task string. Tool calls are counted inside the tools, so a framework that
skipped a call would be caught, not measured doing less work.

    python benchmarks/_agents_runners.py FRAMEWORK [--runs 1000] [--warmup 50]

Prints one JSON object: the framework's version, per-run samples in ns and the tool counts.
Peers run with ``PYTHONPATH=.bench-peers`` (set by the parent), ours without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

TASK = "Add 2 and 3, then multiply the sum by 4."
FINAL = "The answer is 20."
STEPS = 3  # model calls per run: add, mul, final text
CALLS: Counter[str] = Counter()
CPU_NS: list[int] = []  # process CPU time (all threads) over the timed runs


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    CALLS["add"] += 1
    return a + b


def mul(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first integer.
        b: The second integer.
    """
    CALLS["mul"] += 1
    return a * b


def script_step(tool_results_seen: int) -> tuple[str, dict[str, int]] | str:
    """The fake model's whole script: which reply comes after how many tool results."""
    if tool_results_seen == 0:
        return "add", {"a": 2, "b": 3}
    if tool_results_seen == 1:
        return "mul", {"a": 5, "b": 4}
    return FINAL


# -- timing ------------------------------------------------------------------------------------
async def time_async(once: Callable[[], Awaitable[Any]], check: Callable[[Any], None],
                     runs: int, warmup: int) -> list[int]:
    """Warm up, then time ``runs`` awaited runs one after another (ns each)."""
    for _ in range(warmup):
        check(await once())
    CALLS.clear()
    clock, samples, cpu = time.perf_counter_ns, [], time.process_time_ns()
    for _ in range(runs):
        t = clock()
        out = await once()
        samples.append(clock() - t)
        check(out)
    CPU_NS.append(time.process_time_ns() - cpu)
    return samples


def time_sync(once: Callable[[], Any], check: Callable[[Any], None], runs: int,
              warmup: int) -> list[int]:
    for _ in range(warmup):
        check(once())
    CALLS.clear()
    clock, samples, cpu = time.perf_counter_ns, [], time.process_time_ns()
    for _ in range(runs):
        t = clock()
        out = once()
        samples.append(clock() - t)
        check(out)
    CPU_NS.append(time.process_time_ns() - cpu)
    return samples


def expect(ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"check failed: {what}")


# -- ours --------------------------------------------------------------------------------------
def ours(runs: int, warmup: int, *, guard: bool, door: str,
         inline: bool = False) -> dict[str, Any]:
    """``ReActAgent`` over a ``ScriptedModel``; guard off = the output checks off by
    settings and no audit log on the Lab's guard (there is no switch to bypass the guard).
    ``inline``: the tools are ``@al.tool(inline=True)``, run on the loop as Agno runs sync
    tools, instead of through the worker hop."""
    import tempfile
    import warnings

    import aillm_lab as al
    from aillm_lab.testing import ScriptedModel

    warnings.filterwarnings("ignore", module="aillm_lab")  # e.g. an old SQLite's notice

    def reply(messages: list[Any], request: Any) -> Any:
        step = script_step(sum(1 for m in messages if m.role == "tool"))
        if isinstance(step, str):
            return step
        name, args = step
        return al.ToolCall(id=f"call_{name}", name=name, arguments=args)

    home = tempfile.mkdtemp(prefix="bench-agents-")
    settings: dict[str, Any] = {}
    if not guard:
        settings["safety"] = {"output": {"scan_injection": False, "redact_secrets": False}}
    lab = al.Lab(home=home, **settings)
    if not guard:
        lab.tools.guard.audit = None  # SafetyGuard(audit=None): calls are not audited
    model = ScriptedModel(reply)
    tools = [al.tool(inline=True)(add), al.tool(inline=True)(mul)] if inline else [add, mul]
    agent = al.ReActAgent(tools=tools, lab=lab, model=model, save=False)

    def check(run: Any) -> None:
        expect(run.status == "completed" and run.output == FINAL and len(run.steps) == STEPS,
               f"ours: {run.status} {run.error} {run.output!r} ({len(run.steps)} steps)")
        model.requests.clear()  # the fake keeps every request; don't let it grow

    if door == "arun":  # from the caller's own loop (as in Jupyter): hops to the runner
        samples = asyncio.run(time_async(lambda: agent.arun(TASK), check, runs, warmup))
    elif door == "arun-runner-loop":  # already on the Lab's runner loop: no hop
        samples = lab.runner.run(time_async(lambda: agent.arun(TASK), check, runs, warmup))
    elif door == "run":  # the sync door from a plain thread
        samples = time_sync(lambda: agent.run(TASK), check, runs, warmup)
    else:
        raise SystemExit(f"unknown door {door!r}")
    audited = None
    if guard:
        audit = lab.audit()
        audited = len(audit)
    lab.close()
    import shutil
    from importlib.metadata import version

    shutil.rmtree(home, ignore_errors=True)

    return {"version": version("aillm_lab"), "samples_ns": samples, "audit_rows": audited}


def hops_floor(runs: int, warmup: int) -> dict[str, Any]:
    """The hand-offs of one guard-off run with no framework work: ``await arun`` from the
    caller's loop to the Lab's runner loop and back, and two sync tools (the same ``add``
    and ``mul``) each through the worker hop every sync tool takes. What is left of ours
    once its own CPU is cut to zero; printed for information."""
    import tempfile
    import warnings

    import aillm_lab as al
    from aillm_lab.tools.base import in_worker

    warnings.filterwarnings("ignore", module="aillm_lab")
    lab = al.Lab(home=tempfile.mkdtemp(prefix="bench-agents-"))

    async def body() -> int:
        total = await in_worker(lambda: add(2, 3))
        return await in_worker(lambda: mul(total, 4))

    def check(out: Any) -> None:
        expect(out == 20, f"hops: {out!r}")

    samples = asyncio.run(time_async(lambda: lab.runner.arun(body()), check, runs, warmup))
    lab.close()
    from importlib.metadata import version

    return {"version": version("aillm_lab"), "samples_ns": samples}


# -- peers -------------------------------------------------------------------------------------
def smolagents_run(runs: int, warmup: int) -> dict[str, Any]:
    """``ToolCallingAgent`` with a callable model object (its ``Model`` subclass)."""
    import smolagents
    from smolagents import ChatMessage, Model, ToolCallingAgent, tool
    from smolagents.models import ChatMessageToolCall, ChatMessageToolCallFunction

    class Scripted(Model):
        def generate(self, messages: list[Any], stop_sequences: Any = None,
                     response_format: Any = None, tools_to_call_from: Any = None,
                     **kwargs: Any) -> ChatMessage:
            seen = sum(1 for m in messages if _role(m) in ("tool-response", "tool_response"))
            step = script_step(seen)
            if isinstance(step, str):
                name, args = "final_answer", {"answer": step}
            else:
                name, args = step
            call = ChatMessageToolCall(id=f"call_{name}", type="function",
                                       function=ChatMessageToolCallFunction(name=name,
                                                                            arguments=args))
            return ChatMessage(role="assistant", content="", tool_calls=[call])

    agent = ToolCallingAgent(tools=[tool(add), tool(mul)], model=Scripted(model_id="scripted"),
                             max_steps=5, verbosity_level=-1)

    def check(out: Any) -> None:
        expect(out == FINAL, f"smolagents: {out!r}")

    samples = time_sync(lambda: agent.run(TASK), check, runs, warmup)
    return {"version": smolagents.__version__, "samples_ns": samples, "door": "run (sync only)",
            "note": "the final answer is its final_answer tool call (its protocol)"}


def _role(message: Any) -> str:
    role = message["role"] if isinstance(message, dict) else message.role
    return getattr(role, "value", role)


def pydantic_ai_run(runs: int, warmup: int) -> dict[str, Any]:
    """``Agent`` over ``FunctionModel``."""
    from importlib.metadata import version

    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    def fn(messages: list[Any], info: AgentInfo) -> ModelResponse:
        seen = sum(1 for m in messages for p in m.parts if isinstance(p, ToolReturnPart))
        step = script_step(seen)
        if isinstance(step, str):
            return ModelResponse(parts=[TextPart(step)])
        name, args = step
        return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id=f"call_{name}")])

    agent = Agent(FunctionModel(fn), tools=[add, mul])

    def check(out: Any) -> None:
        expect(out.output == FINAL, f"pydantic-ai: {out.output!r}")

    samples = asyncio.run(time_async(lambda: agent.run(TASK), check, runs, warmup))
    return {"version": version("pydantic-ai-slim"), "samples_ns": samples}


def langgraph_run(runs: int, warmup: int) -> dict[str, Any]:
    """``create_react_agent`` over a fake chat model that can bind tools."""
    from importlib.metadata import version

    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    try:
        from langgraph.prebuilt import create_react_agent
    except ImportError:  # newer releases moved it
        from langchain.agents import create_agent as create_react_agent

    class Scripted(GenericFakeChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
            return self

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            step = script_step(sum(1 for m in messages if isinstance(m, ToolMessage)))
            if isinstance(step, str):
                message = AIMessage(content=step)
            else:
                name, args = step
                message = AIMessage(content="", tool_calls=[
                    {"name": name, "args": args, "id": f"call_{name}", "type": "tool_call"}])
            return ChatResult(generations=[ChatGeneration(message=message)])

        async def _agenerate(self, messages: list[Any], stop: Any = None,
                             run_manager: Any = None, **kwargs: Any) -> ChatResult:
            return self._generate(messages, stop, None, **kwargs)

    graph = create_react_agent(Scripted(messages=iter(())), [add, mul])

    def check(out: Any) -> None:
        expect(out["messages"][-1].content == FINAL, f"langgraph: {out['messages'][-1]!r}")

    samples = asyncio.run(time_async(
        lambda: graph.ainvoke({"messages": [("user", TASK)]}), check, runs, warmup))
    return {"version": version("langgraph"), "samples_ns": samples,
            "langchain_core": version("langchain-core")}


def openai_agents_run(runs: int, warmup: int) -> dict[str, Any]:
    """``Agent`` + ``Runner.run`` over a ``Model`` that answers from the script, shaped
    like the SDK's own test ``FakeModel`` (the SDK ships no public testing model)."""
    from importlib.metadata import version

    from agents import Agent, ModelResponse, Runner, Usage, function_tool
    from agents.models.interface import Model
    from openai.types.responses import (
        ResponseFunctionToolCall,
        ResponseOutputMessage,
        ResponseOutputText,
    )

    class Scripted(Model):
        async def get_response(self, system_instructions: Any, input: Any, *args: Any,
                               **kwargs: Any) -> ModelResponse:
            items = input if isinstance(input, list) else []
            seen = sum(1 for i in items if _item_type(i) == "function_call_output")
            step = script_step(seen)
            if isinstance(step, str):
                out: Any = ResponseOutputMessage(
                    id="msg_1", type="message", role="assistant", status="completed",
                    content=[ResponseOutputText(type="output_text", text=step,
                                                annotations=[])])
            else:
                name, args = step
                out = ResponseFunctionToolCall(id=f"fc_{name}", call_id=f"call_{name}",
                                               type="function_call", name=name,
                                               arguments=json.dumps(args))
            return ModelResponse(output=[out], usage=Usage(), response_id=None)

        def stream_response(self, *args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError

    agent = Agent(name="bench", model=Scripted(),
                  tools=[function_tool(add), function_tool(mul)])

    def check(out: Any) -> None:
        expect(out.final_output == FINAL, f"openai-agents: {out.final_output!r}")

    samples = asyncio.run(time_async(lambda: Runner.run(agent, TASK), check, runs, warmup))
    return {"version": version("openai-agents"), "samples_ns": samples,
            "note": "tracing disabled (it would export to OpenAI)"}


def _item_type(item: Any) -> str | None:
    return item.get("type") if isinstance(item, dict) else getattr(item, "type", None)


def agno_run(runs: int, warmup: int) -> dict[str, Any]:
    """``Agent.arun`` over Agno's ``OpenAIChat`` with the provider call mocked: ``ainvoke``
    returns the parsed ``ModelResponse`` (no client, no HTTP), as the other fakes do."""
    from importlib.metadata import version

    from agno.agent import Agent
    from agno.models.openai import OpenAIChat
    from agno.models.response import ModelResponse

    class Scripted(OpenAIChat):
        def _reply(self, messages: list[Any]) -> ModelResponse:
            step = script_step(sum(1 for m in messages if m.role == "tool"))
            if isinstance(step, str):
                return ModelResponse(role="assistant", content=step)
            name, args = step
            return ModelResponse(role="assistant", tool_calls=[{
                "id": f"call_{name}", "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)}}])

        async def ainvoke(self, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            return self._reply(messages)

        def invoke(self, messages: list[Any], *args: Any, **kwargs: Any) -> Any:
            return self._reply(messages)

    agent = Agent(model=Scripted(id="gpt-4o-mini", api_key="not-used"), tools=[add, mul],
                  telemetry=False)

    def check(out: Any) -> None:
        expect(out.content == FINAL, f"agno: {out.content!r}")

    samples = asyncio.run(time_async(lambda: agent.arun(TASK), check, runs, warmup))
    return {"version": version("agno"), "samples_ns": samples,
            "note": "telemetry off (it would post to Agno)"}


FRAMEWORKS: dict[str, Callable[[int, int], dict[str, Any]]] = {
    "ours": lambda r, w: ours(r, w, guard=True, door="arun"),
    "ours-guard-off": lambda r, w: ours(r, w, guard=False, door="arun"),
    "ours-sync": lambda r, w: ours(r, w, guard=True, door="run"),
    "ours-runner-loop": lambda r, w: ours(r, w, guard=True, door="arun-runner-loop"),
    "ours-off-inline": lambda r, w: ours(r, w, guard=False, door="arun", inline=True),
    "hops-floor": hops_floor,
    "smolagents": smolagents_run,
    "pydantic-ai": pydantic_ai_run,
    "langgraph": langgraph_run,
    "openai-agents": openai_agents_run,
    "agno": agno_run,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=sorted(FRAMEWORKS))
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    if args.framework == "openai-agents":
        import os

        os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")
    result = FRAMEWORKS[args.framework](args.runs, args.warmup)
    calls = dict(CALLS)
    expect(calls == {"add": args.runs, "mul": args.runs},
           f"{args.framework}: tool calls {calls} for {args.runs} runs")
    print(json.dumps({"framework": args.framework, "runs": args.runs, "warmup": args.warmup,
                      "steps_per_run": STEPS, "tool_calls": calls, "cpu_ns": CPU_NS[-1],
                      **result}))


if __name__ == "__main__":
    sys.exit(main())
