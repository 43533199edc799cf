"""What code a workflow may run: the caller's trusted functions, the built-in agents, and
"module:attr" imports only when the caller allows them.

Why a policy of its own: a workflow read from text (``Workflow.from_yaml``/``from_dict``) is
data someone else may have written, and importing what it names runs code on this machine.
So while such a workflow is built (``names_from_text``), a ``call:`` name resolves only
through the ``functions={"name": fn}`` its caller passed, and a ``"module:function"`` call or
an ``agent: "module:Class"`` is a ``ConfigError`` naming the step unless the caller passed
``allow_imports=True``. A workflow built in Python is the caller's own code and may import.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from aillm_lab.errors import ConfigError

AGENTS = {"react": "aillm_lab.agents.react:ReActAgent",
          "research": "aillm_lab.agents.research:ResearchAgent",
          "code_writer": "aillm_lab.agents.code_writer:CodeWriterAgent",
          "data_analysis": "aillm_lab.agents.data_analysis:DataAnalysisAgent"}


class _FromText:
    """How a workflow read from text may resolve names: the caller's trusted ``functions``,
    and whether it may import "module:attr" (``allow_imports``)."""

    def __init__(self, functions: Mapping[str, Callable[..., Any]] | None,
                 allow_imports: bool) -> None:
        functions = dict(functions or {})
        for name, fn in functions.items():
            if not isinstance(name, str) or not callable(fn):
                raise ConfigError(f"functions={{{name!r}: {fn!r}}}: give names (as used in "
                                  "call:) mapped to callables.", fields=("functions",))
        if not isinstance(allow_imports, bool):
            raise ConfigError(f"allow_imports={allow_imports!r}: give True or False.",
                              fields=("allow_imports",))
        self.functions, self.allow_imports = functions, allow_imports


_FROM_TEXT: contextvars.ContextVar[_FromText | None] = contextvars.ContextVar(
    "aillm_workflow_from_text", default=None)


@contextlib.contextmanager
def names_from_text(functions: Mapping[str, Callable[..., Any]] | None,
                    allow_imports: bool) -> Iterator[None]:
    """While a workflow read from text is built: its names resolve through ``functions``,
    and "module:attr" imports only with ``allow_imports`` (bad arguments: ConfigError)."""
    token = _FROM_TEXT.set(_FromText(functions, allow_imports))
    try:
        yield
    finally:
        _FROM_TEXT.reset(token)


def import_object(ref: str) -> Any:
    """``"package.module:name.attr"`` → the object (ValueError for a bad spelling)."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        raise ValueError(f"{ref!r} is not 'module:function'")
    module, _, name = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def trusted_call(step_id: str, call: Any) -> Callable[..., Any] | None:
    """In a workflow read from text, the caller's function a named ``call`` binds to (None:
    nothing to bind, the step imports it as usual), or a ConfigError for the import a
    "module:function" would be (the file must not choose what code runs)."""
    source = _FROM_TEXT.get()
    if source is None or not isinstance(call, str):
        return None
    if call in source.functions:
        return source.functions[call]
    if source.allow_imports and call.count(":") == 1:
        return None
    known = f" (functions given: {sorted(source.functions)})" if source.functions else ""
    raise ConfigError(
        f"step {step_id!r}: call {call!r} is not one of the functions passed to the "
        f"workflow{known}. A workflow read from a file imports nothing by itself: pass "
        f"functions={{{call!r}: <the function>}} to from_yaml/from_dict, or "
        "allow_imports=True if you wrote the file and trust every 'module:function' it names "
        "(that runs them on this machine).", fields=(f"steps.{step_id}.call",))


def check_agent(step_id: str, agent: Any) -> None:
    """A step's ``agent:``: a built-in name, an agent object, or (only where imports are
    allowed) an importable "module:AgentClass"; else a ConfigError naming the step."""
    if isinstance(agent, str):
        if agent in AGENTS:
            return
        source = _FROM_TEXT.get()
        if source is not None and not source.allow_imports:
            raise ConfigError(
                f"step {step_id!r}: agent {agent!r} is not one of {sorted(AGENTS)}. A workflow "
                "read from a file imports nothing by itself: build this step in Python with "
                "an agent object, or pass allow_imports=True if you wrote the file and trust "
                "every 'module:Class' it names.", fields=(f"steps.{step_id}.agent",))
        if agent.count(":") == 1:
            try:
                found = import_object(agent)
            except (ImportError, AttributeError, ValueError) as exc:
                raise ConfigError(f"step {step_id!r}: agent {agent!r} cannot be imported: "
                                  f"{exc}.", fields=(f"steps.{step_id}.agent",)) from None
            if inspect.isclass(found) and hasattr(found, "arun"):
                return
        raise ConfigError(f"step {step_id!r}: agent {agent!r} is not one of "
                          f"{sorted(AGENTS)} or an importable 'module:AgentClass'.",
                          fields=(f"steps.{step_id}.agent",))
    if not callable(getattr(agent, "arun", None)):
        raise ConfigError(f"step {step_id!r}: agent= takes a name or an agent object with "
                          f"arun(), not {type(agent).__name__}.",
                          fields=(f"steps.{step_id}.agent",))


__all__ = ["AGENTS", "check_agent", "import_object", "names_from_text", "trusted_call"]
