"""How an ``AgentRun`` looks in a notebook (collapsible steps) and as plain text.

Everything from the run (task, model text, tool arguments and results) is HTML-escaped
before markup is added: tool output can hold anything a web page or a file held.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aillm_lab.agents.run import AgentRun, AgentStep
    from aillm_lab.llm.types import Message
    from aillm_lab.tools.base import ToolResult

_LIMIT = 2_000  # characters of one message or result shown before it is cut


def render_html(run: AgentRun) -> str:
    colour = "#2e7d32" if run.status == "completed" else "#c62828"
    head = (f"<div><b>{html.escape(run.agent or 'Agent')}</b> run <code>{run.id}</code> · "
            f"<span style='color:{colour}'>{run.status}</span> · {_stats(run)}</div>"
            f"<div><b>Task:</b> {_esc(run.task)}</div>")
    if run.error:
        head += f"<div style='color:#c62828'><b>Error:</b> {_esc(run.error)}</div>"
    steps = "".join(_step_html(s) for s in run.steps)
    out = f"<div><b>Output:</b> <pre>{_esc(_output(run))}</pre></div>"
    return f"<div class='aillm-agent-run'>{head}{steps}{out}</div>"


def render_text(run: AgentRun) -> str:
    lines = [f"{run.agent or 'Agent'} run {run.id}: {run.status} ({_stats(run)})",
             f"task: {run.task}"]
    for s in run.steps:
        mark = " (replayed)" if s.replayed else ""
        lines.append(f"step {s.index}{mark}: {s.text[:200]!r}")
        for name, arguments, result in calls_of(s):
            ok = "ok" if result.ok else "failed"
            lines.append(f"  {name}({json.dumps(arguments, default=str)}) -> {ok}: "
                         f"{result.content[:200]!r}")
    if run.error:
        lines.append(f"error: {run.error}")
    lines.append(f"output: {_output(run)}")
    return "\n".join(lines)


def _step_html(step: AgentStep) -> str:
    mark = " · replayed" if step.replayed else ""
    cost = "?" if step.cost_usd is None else f"${step.cost_usd:.5f}"
    summary = (f"step {step.index}{mark} · {len(step.tool_calls)} tool calls · "
               f"{step.usage.input_tokens}→{step.usage.output_tokens} tokens · {cost} · "
               f"{step.latency_s:.2f} s")
    return (f"<details><summary>{html.escape(summary)}</summary>"
            f"{step_html(step, messages=True)}</details>")


def step_html(step: AgentStep, *, messages: bool = False) -> str:
    """One step's body: (the last messages sent,) the model's text, each tool call with its
    arguments and what came back, any error, then its tokens, cost and latency. The one
    rendering of a step, shared by this repr, the notebook's trace widget and the
    workbench's trace cards."""
    parts = [_message_html(m) for m in (step.messages[-3:] if messages else ())]
    if step.text:
        parts.append(f"<div><b>answer</b>: <pre>{_esc(step.text)}</pre></div>")
    for name, arguments, result in calls_of(step):
        ok = result.ok
        colour = "#2e7d32" if ok else "#c62828"
        outcome = "ok" if ok else "refused" if result.rule else "failed"
        parts.append(f"<div><code>{html.escape(name)}"
                     f"({_esc(json.dumps(arguments, default=str))})</code> → "
                     f"<span style='color:{colour}'>{outcome}</span>"
                     f"<pre>{_esc(result.content)}</pre></div>")
    if step.error:
        parts.append(f"<div style='color:#c62828'>{_esc(step.error)}</div>")
    cost = "?" if step.cost_usd is None else f"${step.cost_usd:.4f}"
    parts.append(f"<small>{step.usage.input_tokens} in / {step.usage.output_tokens} out "
                 f"tokens · {cost} · {step.latency_s:.2f} s</small>")
    return "".join(parts)


def _message_html(message: Message) -> str:
    """A message sent: its text, and the tool calls of an assistant turn (a turn that only
    called tools has no text, and would otherwise show as an empty block)."""
    name = f" ({html.escape(message.name)})" if message.name else ""
    body = f"<pre>{_esc(message.text)}</pre>" if message.text or not message.tool_calls else ""
    calls = "".join(f"<div>→ <code>{html.escape(c.name)}"
                    f"({_esc(json.dumps(c.arguments, default=str))})</code></div>"
                    for c in message.tool_calls)
    return f"<div><b>{html.escape(message.role)}</b>{name}: {body}{calls}</div>"


def calls_of(step: AgentStep) -> list[tuple[str, dict[str, Any], ToolResult]]:
    """Each result with the call it answers, matched by id: a tool mode may run calls the
    completion does not list (a fenced SQL block), which still show, by the result's name."""
    calls = {c.id: c for c in step.tool_calls}
    shown = []
    for result in step.tool_results:
        call = calls.get(result.call_id or "")
        shown.append((call.name, call.arguments, result) if call is not None
                     else (result.name, {}, result))
    return shown


def _stats(run: AgentRun) -> str:
    cost = "?" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    return (f"{len(run.steps)} steps · {run.usage.total_tokens} tokens · {cost} · "
            f"{run.latency_s:.2f} s")


def _output(run: AgentRun) -> str:
    value = run.output
    if hasattr(value, "model_dump_json"):
        return value.model_dump_json(indent=2)
    return value if isinstance(value, str) else json.dumps(value, default=str, indent=2)


def _esc(text: str) -> str:
    return html.escape(text if len(text) <= _LIMIT else text[:_LIMIT] + " …")
