"""An agent answer's step trace as a collapsible ``pn.Card`` under the reply, and its footer.

Each step shows the model's text, every tool call with its arguments and what came back
(ok, refused by a rule, or an error), and the step's tokens, cost and latency; the card's
title sums the run, so a collapsed card still says what the answer cost.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from aillm_lab.display import pre

if TYPE_CHECKING:
    from aillm_lab.agents.run import AgentRun, AgentStep


def trace_card(run: AgentRun) -> Any:
    """The run's steps in one collapsed card named ``trace`` (opened by a click)."""
    import panel as pn

    steps = [pn.pane.HTML(step_html(step), name=f"step-{step.index}",
                          sizing_mode="stretch_width") for step in run.steps]
    if not steps:
        steps = [pn.pane.Markdown("No steps: the run ended before its first model call.")]
    return pn.Card(*steps, title=f"Trace: {len(run.steps)} step(s) · {run_figures(run)}",
                   collapsed=True, name="trace", sizing_mode="stretch_width")


def step_html(step: AgentStep) -> str:
    """One step: text, calls with arguments and results, then tokens · cost · latency."""
    calls = ", ".join(c.name for c in step.tool_calls) or "answer"
    parts = [f"<div><b>step {step.index}</b>: {html.escape(calls)}</div>"]
    if step.text:
        parts.append(pre(step.text, 2000))
    for call, result in zip(step.tool_calls, step.tool_results, strict=False):
        outcome = "ok" if result.ok else "refused" if result.rule else "error"
        parts.append(f"<div><code>{html.escape(call.name)}("
                     f"{html.escape(json.dumps(call.arguments, default=str))})</code> → "
                     f"{outcome}</div>{pre(result.content, 2000)}")
    usage = step.usage
    cost = "?" if step.cost_usd is None else f"${step.cost_usd:.4f}"
    parts.append(f"<small>{usage.input_tokens} in / {usage.output_tokens} out tokens · {cost}"
                 f" · {step.latency_s:.2f} s"
                 + (f" · <b>{html.escape(step.error)}</b>" if step.error else "")
                 + "</small>")
    return "".join(parts)


def run_figures(run: AgentRun) -> str:
    """Tokens, cost and latency of a whole run, in one line."""
    usage = run.usage
    cost = "cost ?" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    return (f"{usage.input_tokens} in / {usage.output_tokens} out tokens · {cost} · "
            f"latency {run.latency_s:.2f} s")


def run_footer(run: AgentRun) -> str:
    """The reply's footer: which model and agent answered, how it ended, and its figures."""
    return f"{run.model} · {run.agent} · {run.status} · {run_figures(run)}"
