"""The public API is pinned: adding, removing or renaming a top-level name is a visible change.

``aillm_lab`` loads its names lazily from the ``_EXPORTS`` table, and repeats them in an
``if TYPE_CHECKING:`` block so type checkers and IDEs see them; the last test keeps the two
lists in step by reading ``__init__.py`` with ``ast``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import aillm_lab

EXPECTED = [
    "Agent",
    "AgentEvent",
    "AgentRun",
    "AgentStep",
    "AillmError",
    "Alert",
    "AnalysisResult",
    "ApprovalRequest",
    "AuthenticationError",
    "BadRequest",
    "BudgetExceeded",
    "CallLogError",
    "CodeIteration",
    "CodeResult",
    "CodeWriterAgent",
    "CommandError",
    "Completion",
    "ConfigError",
    "ContextManager",
    "ContextOverflow",
    "DataAnalysisAgent",
    "Experiment",
    "ExperimentRun",
    "FetchError",
    "FileToolError",
    "GenerationParams",
    "ImagePart",
    "IntegrationAgent",
    "Knowledge",
    "Lab",
    "LabDBBusy",
    "LabDBError",
    "LabDBIdentityError",
    "LabSettings",
    "LoaderError",
    "LongTermMemory",
    "LoopRunner",
    "Memory",
    "MemoryBusy",
    "MemoryInputError",
    "MemoryNotFound",
    "Message",
    "MissingKey",
    "Model",
    "ModelLimits",
    "ModelNotAvailable",
    "ModelSelector",
    "MonitoringAgent",
    "Orchestrator",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderUnavailable",
    "RagError",
    "RateLimited",
    "ReActAgent",
    "RegistryError",
    "ReplayMiss",
    "ResearchAgent",
    "ResearchAnswer",
    "ResearchSource",
    "RiskLevel",
    "Route",
    "RunnerError",
    "SafetyGuard",
    "SafetyPolicy",
    "SafetyViolation",
    "SandboxUnavailable",
    "SavedRunError",
    "ScoringWeights",
    "SearchResults",
    "Selection",
    "SqliteVersionWarning",
    "StreamEvent",
    "StreamInterrupted",
    "StructuredOutputError",
    "TaskRouter",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "ToolSpec",
    "Toolbox",
    "UnsupportedFile",
    "UnsupportedInput",
    "Usage",
    "Workflow",
    "WorkflowAgent",
    "WorkflowRun",
    "achat",
    "acomplete",
    "aembed",
    "astream",
    "chat",
    "compare",
    "complete",
    "default_lab",
    "embed",
    "get_runner",
    "mcp_tools",
    "openapi_tools",
    "plot_comparison",
    "registry",
    "resolve",
    "run_sync",
    "scorers",
    "stream",
    "suites",
    "tool",
    "tool_specs",
]

INIT = Path(aillm_lab.__file__)


def test_all_is_exactly_the_pinned_list() -> None:
    assert EXPECTED == sorted(EXPECTED), "keep the pinned list sorted"
    assert list(aillm_lab.__all__) == EXPECTED


def test_every_exported_name_resolves_and_is_listed_by_dir() -> None:
    listed = dir(aillm_lab)
    missing = [name for name in aillm_lab.__all__ if name not in listed]
    assert missing == []
    for name in aillm_lab.__all__:
        assert getattr(aillm_lab, name) is not None, name


def _exports_table(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        target = (node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1
                  else node.target if isinstance(node, ast.AnnAssign) else None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS":
            assert isinstance(node.value, ast.Dict), "_EXPORTS must be a literal dict"
            return {ast.literal_eval(k): ast.literal_eval(v)  # type: ignore[arg-type]
                    for k, v in zip(node.value.keys, node.value.values, strict=True)}
    raise AssertionError("no _EXPORTS table in aillm_lab/__init__.py")


def _type_checking_imports(tree: ast.Module) -> dict[str, str]:
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            found: dict[str, str] = {}
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, (
                    f"line {stmt.lineno}: only 'from module import name' belongs here")
                for alias in stmt.names:
                    found[alias.asname or alias.name] = stmt.module
            return found
    raise AssertionError("no 'if TYPE_CHECKING:' block in aillm_lab/__init__.py")


def test_the_exports_table_and_the_type_checking_imports_agree() -> None:
    tree = ast.parse(INIT.read_text(encoding="utf-8"), str(INIT))
    exports = _exports_table(tree)
    imported = _type_checking_imports(tree)
    assert sorted(set(exports) - set(imported)) == [], "exported but not in TYPE_CHECKING"
    assert sorted(set(imported) - set(exports)) == [], "in TYPE_CHECKING but not exported"
    moved = {name: (module, imported[name]) for name, module in exports.items()
             if imported[name] != module}
    assert moved == {}, "the two lists import these names from different modules"
