"""An agent answer's step trace as a collapsible ``pn.Card`` under the reply, and its footer.

Each step shows the model's text, every tool call with its arguments and what came back
(ok, refused by a rule, or an error), and the step's tokens, cost and latency; the card's
title sums the run, so a collapsed card still says what the answer cost.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

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
    """One step under a title naming its calls (the body is ``agents.display.step_html``)."""
    from aillm_lab.agents.display import step_html as body

    calls = ", ".join(c.name for c in step.tool_calls) or "answer"
    return f"<div><b>step {step.index}</b>: {html.escape(calls)}</div>{body(step)}"


def run_figures(run: AgentRun) -> str:
    """Tokens, cost and latency of a whole run, in one line."""
    usage = run.usage
    cost = "cost ?" if run.cost_usd is None else f"${run.cost_usd:.4f}"
    return (f"{usage.input_tokens} in / {usage.output_tokens} out tokens · {cost} · "
            f"latency {run.latency_s:.2f} s")


def run_footer(run: AgentRun) -> str:
    """The reply's footer: which model and agent answered, how it ended, and its figures."""
    return f"{run.model} · {run.agent} · {run.status} · {run_figures(run)}"
