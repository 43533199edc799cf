"""``Toolbox``: the built-in tools plus yours, each call going through the Safety Guard.

Why one object: the workspace, the registry, the guard and the audit log must agree (same
policy, same secrets, same ``lab.db``), and the Database/Python sandbox resources must be
closed on the runner loop that opened them. Built-ins are imported on first use, so making a
``Lab`` never imports aiohttp, DuckDB or subprocess machinery it will not need.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aillm_lab.config import LabSettings
from aillm_lab.errors import RegistryError
from aillm_lab.runtime import Lifecycle, LoopRunner, get_runner, sync_twin
from aillm_lab.tools.audit import AuditLog
from aillm_lab.tools.base import Tool, ToolRegistry, ToolResult
from aillm_lab.tools.paths import Workspace
from aillm_lab.tools.redact import env_secrets
from aillm_lab.tools.safety import Approver, SafetyGuard

if TYPE_CHECKING:
    import pandas as pd

    from aillm_lab.llm.types import ToolSpec
    from aillm_lab.tools.database import Database
    from aillm_lab.tools.python import PythonSandbox

class Toolbox(Lifecycle):
    """Registered tools behind one ``SafetyGuard``; ``call`` raises, ``invoke`` reports.

    ``builtins=False`` starts empty (only the tools you ``add``).
    """

    def __init__(self, settings: LabSettings | None = None, runner: LoopRunner | None = None,
                 *, approver: Approver | None = None, builtins: bool = True) -> None:
        self.settings = settings if settings is not None else LabSettings.load()
        self.runner = runner if runner is not None else get_runner()
        root = self.settings.workspace_path
        root.mkdir(parents=True, exist_ok=True)
        self.workspace = Workspace(root, self.settings.safety.paths)
        self.registry = ToolRegistry()
        self.audit_log = AuditLog(self.settings.db_path, runner=self.runner)
        self.guard = SafetyGuard(self.settings.safety, audit=self.audit_log, approver=approver,
                                 secrets=lab_secrets(self.settings))
        self._builtins_pending = builtins
        self._resources: list[Any] = []
        self._closed = False

    def __repr__(self) -> str:
        return f"<Toolbox {len(self)} tools, workspace={str(self.workspace.root)!r}>"

    # -- registry --------------------------------------------------------------------------
    @property
    def approver(self) -> Approver | None:
        """Answers ``ask`` decisions; set it to a function of ``ApprovalRequest`` -> bool."""
        return self.guard.approver

    @approver.setter
    def approver(self, value: Approver | None) -> None:
        self.guard.approver = value

    @property
    def database(self) -> Database:
        """The DuckDB behind ``sql_query``: ``register(name, df)`` or ``register_file``."""
        return self._resource("Database")

    @property
    def sandbox(self) -> PythonSandbox:
        """The Python sandbox behind ``run_python`` (``reset()`` forgets its state)."""
        return self._resource("PythonSandbox")

    def _resource(self, kind: str) -> Any:
        self._load_builtins()
        for resource in self._resources:
            if type(resource).__name__ == kind:
                return resource
        raise RegistryError(f"the {kind} tools are not available on this platform "
                            f"(see aillm_lab.tools.python for what each platform gets)")

    def add(self, fn_or_tool: Tool | Callable[..., Any]) -> Tool:
        """Register a ``Tool`` (or a plain typed function); a taken name raises."""
        self._load_builtins()
        return self.registry.add(fn_or_tool)

    def get(self, name: str) -> Tool:
        self._load_builtins()
        return self.registry.get(name)

    def names(self) -> list[str]:
        self._load_builtins()
        return self.registry.names()

    def specs(self) -> list[ToolSpec]:
        """What a model is shown: name, description and JSON Schema of every tool."""
        self._load_builtins()
        return self.registry.specs()

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self.registry

    def __iter__(self) -> Iterator[Tool]:
        self._load_builtins()
        return iter(self.registry)

    def __len__(self) -> int:
        self._load_builtins()
        return len(self.registry)

    # -- calls -----------------------------------------------------------------------------
    async def acall(self, name: str, /, **arguments: Any) -> ToolResult:
        """Run a tool through the guard; ``SafetyViolation`` or the tool's error propagates."""
        return await self.runner.arun(self.guard.call(self.get(name), arguments))

    async def ainvoke(self, name: str, arguments: dict[str, Any],
                      call_id: str | None = None) -> ToolResult:
        """The agents' door: refusals, bad arguments and failures come back as results."""
        try:
            tool = self.get(name)
        except RegistryError as exc:
            return ToolResult(name=name, call_id=call_id, ok=False, content=str(exc),
                              error=str(exc), rule=None)
        return await self.runner.arun(self.guard.invoke(tool, arguments, call_id))

    async def aaudit(self, limit: int | None = None, *, tool: str | None = None
                     ) -> pd.DataFrame:
        """The audit log (oldest first); ``limit`` keeps the most recent rows."""
        return await self.runner.arun(self.audit_log.frame(limit, tool=tool))

    call = sync_twin(acall)
    invoke = sync_twin(ainvoke)
    audit = sync_twin(aaudit)

    # -- lifecycle (close, with and async with come from Lifecycle) ------------------------
    async def aclose(self) -> None:
        """Close the Database and sandbox (if they were made) and the audit log; idempotent."""
        await self.runner.arun(self._aclose())

    async def _aclose(self) -> None:
        resources, self._resources = self._resources, []
        for resource in reversed(resources):
            await resource.aclose()
        await self.audit_log.aclose()

    def _load_builtins(self) -> None:
        """Register the built-in tools once, on first use (their modules import lazily)."""
        if not self._builtins_pending:
            return
        self._builtins_pending = False
        for t in self._builtin_tools():
            self.registry.add(t)

    def _builtin_tools(self) -> list[Tool]:
        from aillm_lab.tools.database import Database
        from aillm_lab.tools.files import file_tools
        from aillm_lab.tools.git import git_tools
        from aillm_lab.tools.python import PythonSandbox, SandboxUnavailable
        from aillm_lab.tools.shell import shell_jail, shell_tools
        from aillm_lab.tools.web import web_tools

        safety, ws = self.settings.safety, self.workspace
        jail = shell_jail(ws, safety.commands, self.runner)  # shared by shell and git tools
        self._resources.append(jail)
        tools = [*file_tools(ws), *shell_tools(ws, safety.commands, jail),
                 *git_tools(ws, safety.commands, jail=jail), *web_tools(safety.network)]
        database = Database(ws, safety.sql, runner=self.runner)
        self._resources.append(database)
        tools.extend(database.tools())
        try:
            sandbox = PythonSandbox(safety.code, runner=self.runner)
        except SandboxUnavailable:  # Windows: the other tools still work
            return tools
        self._resources.append(sandbox)
        return [*tools, *sandbox.tools()]


def lab_secrets(settings: LabSettings) -> list[str]:
    """The values the guard hides: the Lab's API keys, its OpenAPI secrets and
    secret-looking env vars."""
    keys = [settings.openai_api_key, settings.anthropic_api_key,
            *settings.openapi_auth.values()]
    return [k.get_secret_value() for k in keys if k is not None] + env_secrets()


__all__ = ["Toolbox", "lab_secrets"]
