"""``AgentTools``: the tools one agent may call, every call through the Lab's Safety Guard.

Why the Lab's own guard rather than a Toolbox per agent: the guard holds the safety policy,
the approver and the audit log on ``lab.db``; using ``lab.tools.guard`` for the agent's own
``@al.tool`` functions means one policy, one approval function and one audit table for every
tool call of the Lab, and nothing extra to open or close per agent. Built-in names
(``"read_file"``) are looked up in ``lab.tools``; a ``Toolbox`` given as ``tools=`` keeps its
own guard (its policy is the caller's choice).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import ConfigError, RegistryError
from aillm_lab.llm.types import ToolCall, ToolSpec
from aillm_lab.runtime import LoopRunner, sync_twin
from aillm_lab.tools.base import Tool, ToolResult
from aillm_lab.tools.toolbox import Toolbox

if TYPE_CHECKING:
    from aillm_lab import Lab

ToolItem = Tool | Callable[..., Any] | str
ToolsArg = Toolbox | Sequence[ToolItem] | None


class AgentTools:
    """Named tools resolved once; ``ainvoke`` turns every failure into a ``ToolResult``."""

    def __init__(self, lab: Lab, tools: ToolsArg) -> None:
        self._lab = lab
        self._toolbox: Toolbox | None = tools if isinstance(tools, Toolbox) else None
        self._tools: dict[str, Tool] = {}
        self._extra: dict[str, ToolSpec] = {}  # answered by the agent itself (final_answer)
        if self._toolbox is None:
            for item in _items(tools):
                tool = self._resolve(item)
                if tool.name in self._tools:
                    raise ConfigError(f"tools= names {tool.name!r} twice; rename one with "
                                      f"@al.tool(name=...)", fields=("tools",))
                self._tools[tool.name] = tool

    @property
    def runner(self) -> LoopRunner:
        return self._lab.runner

    def add_spec(self, spec: ToolSpec) -> None:
        """A tool the agent answers itself (it is shown to the model, never run)."""
        self._extra[spec.name] = spec

    def names(self) -> list[str]:
        own = self._toolbox.names() if self._toolbox is not None else list(self._tools)
        return [*own, *self._extra]

    def specs(self) -> list[ToolSpec]:
        own = (self._toolbox.specs() if self._toolbox is not None
               else [t.spec for t in self._tools.values()])
        return [*own, *self._extra.values()]

    async def ainvoke(self, call: ToolCall) -> ToolResult:
        """Run one call through the guard (audited); never raises but for cancellation."""
        args = call.arguments
        if len(args) == 1 and "_raw" in args:  # the provider could not parse the JSON
            return _failed(call, f"The arguments for {call.name!r} were not valid JSON: "
                                 f"{str(call.arguments['_raw'])[:200]!r}. Call the tool again "
                                 f"with a JSON object of its parameters.")
        if self._toolbox is not None:
            return await self._toolbox.ainvoke(call.name, call.arguments, call.id)
        tool = self._tools.get(call.name)
        if tool is None:
            known = ", ".join(self.names()) or "none"
            return _failed(call, f"Unknown tool {call.name!r}. Available tools: {known}.")
        guard = self._lab.tools.guard
        return await self._lab.runner.arun(guard.invoke(tool, call.arguments, call.id))

    async def ainvoke_all(self, calls: Sequence[ToolCall]) -> list[ToolResult]:
        """The calls of one turn, concurrently; results in the calls' order."""
        if len(calls) == 1:
            return [await self.ainvoke(calls[0])]
        return list(await asyncio.gather(*(self.ainvoke(c) for c in calls)))

    invoke = sync_twin(ainvoke)
    invoke_all = sync_twin(ainvoke_all)

    def _resolve(self, item: ToolItem) -> Tool:
        if isinstance(item, Tool):
            return item
        if isinstance(item, str):
            try:
                return self._lab.tools.get(item)
            except RegistryError as exc:
                raise ConfigError(f"tools=: {exc}", fields=("tools",)) from None
        if isinstance(item, ToolSpec):
            raise ConfigError(f"tools=: a ToolSpec ({item.name!r}) only describes a tool and "
                              f"cannot run; pass the @al.tool function", fields=("tools",))
        if callable(item) and not isinstance(item, type):
            return Tool(item)
        raise ConfigError(f"tools= takes @al.tool tools, plain typed functions, names of "
                          f"built-in tools (e.g. 'read_file') or a Toolbox; got "
                          f"{type(item).__name__}", fields=("tools",))


def _items(tools: Iterable[ToolItem] | None) -> list[ToolItem]:
    if tools is None:
        return []
    if isinstance(tools, str | Tool) or callable(tools):
        raise ConfigError("tools= takes a list: wrap the one tool in [...]", fields=("tools",))
    return list(tools)


def _failed(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(name=call.name, call_id=call.id, ok=False, content=message,
                      error=message)
