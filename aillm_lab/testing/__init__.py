"""Testing aids that ship with the product, for our tests and for users' own.

``ScriptedModel`` answers from a queue or a function; pass it as ``model=`` anywhere a model
string is accepted. The fake vendor servers (``FakeOpenAI``, ``FakeAnthropic``, ``FakeOllama``) are
real HTTP servers on 127.0.0.1 for the official SDKs, with scripted replies and injected faults.
``HashingEmbedder`` gives deterministic vectors with no model, for fast RAG and memory tests.
The pytest fixtures live in ``aillm_lab.testing.fixtures`` and ``.server_fixtures``; enable them
with ``pytest_plugins = ["aillm_lab.testing.fixtures", "aillm_lab.testing.server_fixtures"]``.
"""

from aillm_lab.llm.scripted import ScriptedModel, ScriptedRequest, ScriptExhausted, echo

__all__ = ["ScriptedModel", "ScriptedRequest", "ScriptExhausted", "echo"]

# The fake vendor servers need aiohttp, so they load on first use.
_SERVERS = ("FakeOpenAI", "FakeAnthropic", "FakeOllama", "FakeServer", "Fault",
            "RecordedRequest")
__all__ += list(_SERVERS)


__all__ += ["HashingEmbedder"]


def __getattr__(name: str) -> object:
    if name == "HashingEmbedder":  # numpy loads with it, so on first use too
        from aillm_lab.rag.embeddings import HashingEmbedder

        return HashingEmbedder
    if name in _SERVERS:
        from aillm_lab.testing import fake_servers

        return getattr(fake_servers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
