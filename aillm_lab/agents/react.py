"""``ReActAgent``: the general tool-using agent over any tools (yours, the built-ins, or both).

It is the loop of ``Agent`` with the ReAct instructions: think, call tools, read the
observations, answer. Everything else (limits, guard, trace, fork) is the shared base.
"""

from __future__ import annotations

from aillm_lab.agents import prompts
from aillm_lab.agents.base import Agent


class ReActAgent(Agent):
    """Reason and act with tools until a final answer: ``al.ReActAgent(tools=[add]).run(q)``."""

    system_prompt = prompts.REACT_SYSTEM


__all__ = ["ReActAgent"]
