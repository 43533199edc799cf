"""AILLM Lab: agent research that just works inside Jupyter, offline by default.

    import aillm_lab as al
    al.chat("What is the capital of France?")      # sync, even inside a running loop
    await al.achat("And of Italy?")                 # async twin
    for event in al.stream("Tell me a story"):      # streaming
        print(event, end="")
    al.complete("Paris facts", output=City)         # a validated pydantic instance
    with al.Lab(model="scripted:echo") as lab: ...  # settings, models and runner in one place

Names load on first use, so ``import aillm_lab`` stays light (no torch, panel or network).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # the workbench
    "Lab": "aillm_lab.core.lab",
    "chat": "aillm_lab.core.lab",
    "achat": "aillm_lab.core.lab",
    "complete": "aillm_lab.core.lab",
    "acomplete": "aillm_lab.core.lab",
    "stream": "aillm_lab.core.lab",
    "astream": "aillm_lab.core.lab",
    "default_lab": "aillm_lab.core.lab",
    "embed": "aillm_lab.core.lab",
    "aembed": "aillm_lab.core.lab",
    # agents
    "Agent": "aillm_lab.agents.base",
    "ReActAgent": "aillm_lab.agents.react",
    "AgentRun": "aillm_lab.agents.run",
    "AgentStep": "aillm_lab.agents.run",
    "AgentEvent": "aillm_lab.agents.run",
    "SavedRunError": "aillm_lab.agents.store",
    "CodeWriterAgent": "aillm_lab.agents.code_writer",
    "CodeResult": "aillm_lab.agents.code_writer",
    "CodeIteration": "aillm_lab.agents.code_writer",
    "DataAnalysisAgent": "aillm_lab.agents.data_analysis",
    "AnalysisResult": "aillm_lab.agents.data_analysis",
    "ResearchAgent": "aillm_lab.agents.research",
    "ResearchAnswer": "aillm_lab.agents.research",
    "ResearchSource": "aillm_lab.agents.research",
    "Workflow": "aillm_lab.agents.workflow",
    "WorkflowAgent": "aillm_lab.agents.workflow",
    "WorkflowRun": "aillm_lab.agents.workflow",
    "IntegrationAgent": "aillm_lab.agents.integration",
    "MonitoringAgent": "aillm_lab.agents.monitoring",
    "Alert": "aillm_lab.agents.monitoring",
    "openapi_tools": "aillm_lab.tools.openapi",
    "mcp_tools": "aillm_lab.tools.mcp",
    # the core: routing, model selection, orchestration
    "TaskRouter": "aillm_lab.core.router",
    "Route": "aillm_lab.core.router",
    "ModelSelector": "aillm_lab.core.selector",
    "Selection": "aillm_lab.core.selector",
    "Orchestrator": "aillm_lab.core.orchestrator",
    # experiments and evals
    "Experiment": "aillm_lab.experiments",
    "ExperimentRun": "aillm_lab.experiments",
    "compare": "aillm_lab.experiments",
    "plot_comparison": "aillm_lab.experiments",
    "scorers": "aillm_lab.experiments",
    "suites": "aillm_lab.experiments",
    # settings and runtime
    "LabSettings": "aillm_lab.config",
    "ModelLimits": "aillm_lab.config",
    "LoopRunner": "aillm_lab.runtime",
    "get_runner": "aillm_lab.runtime",
    "run_sync": "aillm_lab.runtime",
    # models
    "Model": "aillm_lab.llm.base",
    "resolve": "aillm_lab.llm.registry",
    "registry": "aillm_lab.llm.registry",
    "Message": "aillm_lab.llm.types",
    "TextPart": "aillm_lab.llm.types",
    "ImagePart": "aillm_lab.llm.types",
    "ToolSpec": "aillm_lab.llm.types",
    "ToolCall": "aillm_lab.llm.types",
    "Completion": "aillm_lab.llm.types",
    "Usage": "aillm_lab.llm.types",
    "StreamEvent": "aillm_lab.llm.types",
    "GenerationParams": "aillm_lab.llm.types",
    # tools and the Safety Guard
    "tool": "aillm_lab.tools.base",
    "tool_specs": "aillm_lab.tools.base",
    "Tool": "aillm_lab.tools.base",
    "ToolResult": "aillm_lab.tools.base",
    "RiskLevel": "aillm_lab.tools.base",
    "Toolbox": "aillm_lab.tools.toolbox",
    "SafetyGuard": "aillm_lab.tools.safety",
    "ApprovalRequest": "aillm_lab.tools.safety",
    "SafetyPolicy": "aillm_lab.tools.policy",
    # RAG and memory
    "Knowledge": "aillm_lab.rag.retriever",
    "SearchResults": "aillm_lab.rag.results",
    "ContextManager": "aillm_lab.rag.context",
    "LongTermMemory": "aillm_lab.memory.long_term",
    "Memory": "aillm_lab.memory.long_term",
    "ScoringWeights": "aillm_lab.memory.long_term",
    # errors
    "AillmError": "aillm_lab.errors",
    "ConfigError": "aillm_lab.errors",
    "LabDBError": "aillm_lab.errors",
    "LabDBIdentityError": "aillm_lab.errors",
    "ModelNotAvailable": "aillm_lab.errors",
    "RegistryError": "aillm_lab.errors",
    "RunnerError": "aillm_lab.errors",
    "StructuredOutputError": "aillm_lab.errors",
    "UnsupportedInput": "aillm_lab.errors",
    "ProviderError": "aillm_lab.errors",
    "RateLimited": "aillm_lab.errors",
    "AuthenticationError": "aillm_lab.errors",
    "MissingKey": "aillm_lab.errors",
    "BadRequest": "aillm_lab.errors",
    "BudgetExceeded": "aillm_lab.errors",
    "ReplayMiss": "aillm_lab.errors",
    "SafetyViolation": "aillm_lab.errors",
    "ToolError": "aillm_lab.errors",
    "CallLogError": "aillm_lab.errors",
    "LabDBBusy": "aillm_lab.errors",
    "ProviderConnectionError": "aillm_lab.errors",
    "ProviderUnavailable": "aillm_lab.errors",
    "StreamInterrupted": "aillm_lab.errors",
    "SqliteVersionWarning": "aillm_lab.db",
    "MemoryNotFound": "aillm_lab.memory.long_term",
    "MemoryBusy": "aillm_lab.memory.long_term",
    "MemoryInputError": "aillm_lab.memory.long_term",
    "RagError": "aillm_lab.rag.sparse",
    "LoaderError": "aillm_lab.rag.loaders",
    "UnsupportedFile": "aillm_lab.rag.loaders",
    "ContextOverflow": "aillm_lab.rag.context",
    "CommandError": "aillm_lab.tools.process",
    "FileToolError": "aillm_lab.tools.files",
    "FetchError": "aillm_lab.tools.netguard",
    "SandboxUnavailable": "aillm_lab.tools.python",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from aillm_lab.agents.base import Agent
    from aillm_lab.agents.code_writer import CodeIteration, CodeResult, CodeWriterAgent
    from aillm_lab.agents.data_analysis import AnalysisResult, DataAnalysisAgent
    from aillm_lab.agents.integration import IntegrationAgent
    from aillm_lab.agents.monitoring import Alert, MonitoringAgent
    from aillm_lab.agents.react import ReActAgent
    from aillm_lab.agents.research import ResearchAgent, ResearchAnswer, ResearchSource
    from aillm_lab.agents.run import AgentEvent, AgentRun, AgentStep
    from aillm_lab.agents.store import SavedRunError
    from aillm_lab.agents.workflow import Workflow, WorkflowAgent, WorkflowRun
    from aillm_lab.config import LabSettings, ModelLimits
    from aillm_lab.core.lab import (
        Lab,
        achat,
        acomplete,
        aembed,
        astream,
        chat,
        complete,
        default_lab,
        embed,
        stream,
    )
    from aillm_lab.core.orchestrator import Orchestrator
    from aillm_lab.core.router import Route, TaskRouter
    from aillm_lab.core.selector import ModelSelector, Selection
    from aillm_lab.db import SqliteVersionWarning
    from aillm_lab.errors import (
        AillmError,
        AuthenticationError,
        BadRequest,
        BudgetExceeded,
        CallLogError,
        ConfigError,
        LabDBBusy,
        LabDBError,
        LabDBIdentityError,
        MissingKey,
        ModelNotAvailable,
        ProviderConnectionError,
        ProviderError,
        ProviderUnavailable,
        RateLimited,
        RegistryError,
        ReplayMiss,
        RunnerError,
        SafetyViolation,
        StreamInterrupted,
        StructuredOutputError,
        ToolError,
        UnsupportedInput,
    )
    from aillm_lab.experiments import (
        Experiment,
        ExperimentRun,
        compare,
        plot_comparison,
        scorers,
        suites,
    )
    from aillm_lab.llm.base import Model
    from aillm_lab.llm.registry import registry, resolve
    from aillm_lab.llm.types import (
        Completion,
        GenerationParams,
        ImagePart,
        Message,
        StreamEvent,
        TextPart,
        ToolCall,
        ToolSpec,
        Usage,
    )
    from aillm_lab.memory.long_term import (
        LongTermMemory,
        Memory,
        MemoryBusy,
        MemoryInputError,
        MemoryNotFound,
        ScoringWeights,
    )
    from aillm_lab.rag.context import ContextManager, ContextOverflow
    from aillm_lab.rag.loaders import LoaderError, UnsupportedFile
    from aillm_lab.rag.results import SearchResults
    from aillm_lab.rag.retriever import Knowledge
    from aillm_lab.rag.sparse import RagError
    from aillm_lab.runtime import LoopRunner, get_runner, run_sync
    from aillm_lab.tools.base import RiskLevel, Tool, ToolResult, tool, tool_specs
    from aillm_lab.tools.files import FileToolError
    from aillm_lab.tools.mcp import mcp_tools
    from aillm_lab.tools.netguard import FetchError
    from aillm_lab.tools.openapi import openapi_tools
    from aillm_lab.tools.policy import SafetyPolicy
    from aillm_lab.tools.process import CommandError
    from aillm_lab.tools.python import SandboxUnavailable
    from aillm_lab.tools.safety import ApprovalRequest, SafetyGuard
    from aillm_lab.tools.toolbox import Toolbox


def __getattr__(name: str) -> Any:
    if name == "ui":  # the faces' subpackage: al.ui.chat(), al.ui.trace(run), ...
        return importlib.import_module("aillm_lab.ui")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'aillm_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext aillm_lab``: the ``%%llm``, ``%%agent``, ``%%sql`` and ``%lab`` magics."""
    from aillm_lab.ui.magics import load

    load(ipython)
