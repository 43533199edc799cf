"""``IntegrationAgent``: a ReAct agent over the tools of OpenAPI documents and MCP servers.

    agent = al.IntegrationAgent(openapi=["notes.yaml"], mcp=[["python", "server.py"]])
    run = agent.run("create a note titled 'milk', then add 2 and 3")

OpenAPI documents become tools when the agent is made (a bad document or a host the policy
refuses fails here, not mid-run), with the Lab's settings: its network policy and its
``openapi_auth`` secrets, which are also added to the Lab's guard so an echo of one is
redacted wherever it appears. MCP servers are processes, so they live only as long as
they are needed: each run starts its own and stops them when it ends (completed, failed,
timed out or cancelled). ``with agent.open():`` starts them once and keeps them for every
run inside the block instead. Every call of either kind goes through the
Lab's Safety Guard and audit log, like any agent tool.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from aillm_lab.agents.base import Agent, ModelArg
from aillm_lab.agents.modes import FINAL_TOOL
from aillm_lab.agents.run import AgentEvent, AgentRun
from aillm_lab.agents.toolset import AgentTools, ToolItem
from aillm_lab.errors import ConfigError
from aillm_lab.llm.types import Message
from aillm_lab.runtime import Lifecycle, sync_twin
from aillm_lab.tools.base import Tool
from aillm_lab.tools.mcp import MCPServer
from aillm_lab.tools.openapi import openapi_tools
from aillm_lab.tools.toolbox import Toolbox

if TYPE_CHECKING:
    from aillm_lab import Lab
    from aillm_lab.memory.long_term import LongTermMemory

OpenAPIItem = str | Path | Mapping[str, Any]
MCPItem = Sequence[str] | Mapping[str, Any]

INTEGRATION_SYSTEM = (
    "You are an integration assistant. Your tools call web APIs (described by OpenAPI "
    "documents) and MCP servers on the user's behalf. Pick the operation that does what "
    "the task asks, fill in its parameters exactly as its schema says (path and query "
    "parameters by name, the request body as `body`), and read each result: an HTTP error "
    "or a tool error tells you what to fix. When the task is done, reply with the final "
    "answer as plain text and call no tool.")


class IntegrationAgent(Agent, Lifecycle):
    """ReAct over ``openapi=`` documents and ``mcp=`` servers, plus any ``tools=``.

    ``openapi``: paths or URLs of OpenAPI 3 documents, or dicts of ``openapi_tools``
    arguments (``{"spec": "notes.yaml", "base_url": "...", "auth": "notes"}``).
    ``mcp``: one command list per server (``[["python", "server.py"]]``), or dicts of
    ``mcp_tools`` arguments (``{"command": "python server.py", "prefix": "fs_"}``).
    The other arguments are every agent's (``model``, ``lab``, ``max_steps``, ...).
    """

    system_prompt = INTEGRATION_SYSTEM

    def __init__(self, openapi: Sequence[OpenAPIItem] | None = None,
                 mcp: Sequence[MCPItem] | None = None, tools: Sequence[ToolItem] | None = None,
                 model: ModelArg = None, lab: Lab | None = None, max_steps: int = 10,
                 max_cost_usd: float | None = None, max_seconds: float | None = None,
                 output: type[BaseModel] | None = None,
                 memory: LongTermMemory | bool | None = None, **options: Any) -> None:
        if isinstance(tools, Toolbox):
            raise ConfigError("tools=: an IntegrationAgent adds the tools of its documents "
                              "and servers, so give a list of tools, not a Toolbox",
                              fields=("tools",))
        self._lab = lab
        self._openapi = self._openapi_tools(_listed(openapi, "openapi"))
        self._mcp = [_mcp_arguments(item) for item in _listed(mcp, "mcp")]
        for arguments in self._mcp:  # a bad option fails now, not when a run starts
            try:
                MCPServer(**arguments)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"mcp=: {exc}", fields=("mcp",)) from None
        self._extra: list[ToolItem] = list(_listed(tools, "tools"))
        super().__init__([*self._openapi, *self._extra], model, lab, max_steps, max_cost_usd,
                         max_seconds, output, memory, **options)
        self._runs: dict[str, AgentTools] = {}
        self._shared: list[MCPServer] | None = None
        self._shared_tools: list[Tool] = []

    def __repr__(self) -> str:
        servers = [" ".join(a["command"]) for a in self._mcp]
        return (f"<IntegrationAgent openapi tools={[t.name for t in self._openapi]} "
                f"mcp={servers} max_steps={self.max_steps}>")

    # -- doors -----------------------------------------------------------------------------
    async def astream(self, task: str) -> AsyncIterator[AgentEvent]:
        """Events as they happen; the MCP servers run for as long as the stream does."""
        run = AgentRun(task=task)
        async for event in self.runner.aiterate(lambda: self._stream(run)):
            yield event

    stream = sync_twin(astream)

    async def aopen(self) -> IntegrationAgent:
        """Start the MCP servers now and keep them for every run until ``close``:
        ``with agent.open(): ...``. Returns the agent."""
        await self.runner.arun(self._open_shared())
        return self

    async def aclose(self) -> None:
        """Stop the servers ``open`` started (runs stop their own); idempotent."""
        await self.runner.arun(self._close_shared())

    open = sync_twin(aopen)

    # -- hooks -----------------------------------------------------------------------------
    def tools_for(self, run: AgentRun) -> AgentTools:
        return self._runs.get(run.id, self.tools)

    async def _launch(self, run: AgentRun, model: ModelArg = None,
                      history: list[Message] | None = None) -> AgentRun:
        """Every run (and fork) starts the servers it needs and stops them at its end."""
        return await self.runner.arun(self._run_with_servers(run, model, history))

    async def _run_with_servers(self, run: AgentRun, model: ModelArg,
                                history: list[Message] | None) -> AgentRun:
        async with self._servers(run):
            return await super()._launch(run, model, history)

    async def _stream(self, run: AgentRun) -> AsyncIterator[AgentEvent]:
        async with self._servers(run):
            async for event in self._events(self._start(run, self.model, None)):
                yield event

    @contextlib.asynccontextmanager
    async def _servers(self, run: AgentRun) -> AsyncIterator[None]:
        """The run's tools: the documents', the servers' (started here unless ``open``
        already did) and the user's, for as long as the run lasts."""
        async with contextlib.AsyncExitStack() as stack:
            if self._shared is not None or not self._mcp:
                served = list(self._shared_tools)
            else:
                served = []
                for arguments in self._mcp:
                    server = MCPServer(**arguments, runner=self.runner)
                    served += await server.aopen()
                    stack.push_async_callback(server.aclose)
            tools = AgentTools(self.lab, [*self._openapi, *served, *self._extra])
            for spec in self.tools.specs():
                if spec.name == FINAL_TOOL:
                    tools.add_spec(spec)
            self._runs[run.id] = tools
            try:
                yield
            finally:
                self._runs.pop(run.id, None)

    async def _open_shared(self) -> None:
        if self._shared is not None:
            return
        servers: list[MCPServer] = []
        tools: list[Tool] = []
        try:
            for arguments in self._mcp:
                server = MCPServer(**arguments, runner=self.runner)
                tools += await server.aopen()
                servers.append(server)
        except BaseException:
            for server in reversed(servers):
                await server.aclose()
            raise
        self._shared, self._shared_tools = servers, tools

    async def _close_shared(self) -> None:
        servers, self._shared, self._shared_tools = self._shared or [], None, []
        for server in reversed(servers):
            await server.aclose()

    # -- building --------------------------------------------------------------------------
    def _openapi_tools(self, items: Sequence[OpenAPIItem]) -> list[Tool]:
        lab = self.lab
        secrets = [s.get_secret_value() for s in lab.settings.openapi_auth.values()]
        lab.tools.guard.redactor.add(*secrets)  # an API that echoes a key is redacted too
        tools: list[Tool] = []
        for item in items:
            if isinstance(item, str | Path):
                tools += openapi_tools(item, lab=lab, runner=lab.runner)
            elif isinstance(item, Mapping) and "spec" in item:
                tools += openapi_tools(**{**item, "lab": lab, "runner": lab.runner})
            else:
                raise ConfigError(f"openapi= takes paths or URLs of OpenAPI documents, or "
                                  f"dicts like {{'spec': 'api.yaml', 'base_url': '...'}}; "
                                  f"got {item!r}", fields=("openapi",))
        return tools


def _listed(items: Any, name: str) -> list[Any]:
    if items is None:
        return []
    if isinstance(items, str | Path | Mapping | Tool) or callable(items):
        raise ConfigError(f"{name}= takes a list: wrap the one item in [...]", fields=(name,))
    return list(items)


def _mcp_arguments(item: MCPItem) -> dict[str, Any]:
    """``mcp_tools`` arguments for one ``mcp=`` item (a command or a dict)."""
    if isinstance(item, str):
        raise ConfigError(f"mcp= takes one command list per server, e.g. mcp=[['python', "
                          f"'server.py']]; got the string {item!r} (for a command line as "
                          f"one string use {{'command': {item!r}}})", fields=("mcp",))
    if isinstance(item, Mapping) and "command" in item:
        arguments = dict(item)
        command = arguments["command"]
        arguments["command"] = (shlex.split(command) if isinstance(command, str)
                                else [str(c) for c in command])
        return arguments
    if isinstance(item, Sequence) and item and all(isinstance(c, str | Path) for c in item):
        return {"command": [str(c) for c in item]}
    raise ConfigError(f"mcp= takes server commands like ['python', 'server.py'] (one list "
                      f"per server) or dicts like {{'command': [...], 'prefix': 'x_'}}; got "
                      f"{item!r}", fields=("mcp",))


__all__ = ["INTEGRATION_SYSTEM", "IntegrationAgent"]
