"""Testing aids that ship with the product, for our tests and for users' own.

``ScriptedModel`` answers from a queue or a function; pass it as ``model=`` anywhere a model
string is accepted. The pytest fixtures live in ``aillm_lab.testing.fixtures``; enable them
with ``pytest_plugins = ["aillm_lab.testing.fixtures"]``.
"""

from aillm_lab.llm.scripted import ScriptedModel, ScriptedRequest, ScriptExhausted, echo

__all__ = ["ScriptedModel", "ScriptedRequest", "ScriptExhausted", "echo"]
