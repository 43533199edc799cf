"""Agents: the shared loop (``base.Agent``), its trace (``run.AgentRun``) and the agents.

``run.py`` holds the trace models, ``base.py`` the loop and its limits, ``toolset.py`` how an
agent's tools reach the Safety Guard, ``modes.py`` how tool calls travel (native today),
``prompts.py`` every text sent to a model, ``display.py`` the notebook views and ``store.py``
the runs saved under the Lab's home.
"""

from aillm_lab.agents.base import Agent
from aillm_lab.agents.react import ReActAgent
from aillm_lab.agents.run import AgentEvent, AgentRun, AgentStep
from aillm_lab.agents.store import list_runs, load_run

__all__ = ["Agent", "AgentEvent", "AgentRun", "AgentStep", "ReActAgent", "list_runs",
           "load_run"]
