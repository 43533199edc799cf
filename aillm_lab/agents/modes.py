"""How tool calls travel between the loop and a model: a ``ToolMode`` strategy.

Why a strategy: models with native tool calling take ``tools=`` and answer with structured
``ToolCall``s; small local models need a text protocol (the tools described in the prompt,
calls parsed, or constrained, out of the reply). The loop asks the mode for the request and
for the calls, so a text mode plugs in without touching the loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aillm_lab.llm.types import Completion, Message, ToolCall, ToolSpec

if TYPE_CHECKING:
    from aillm_lab.llm.base import Model

FINAL_TOOL = "final_answer"  # the tool a model calls to submit a structured answer


class ToolMode(Protocol):
    """Builds a request from the history and tools; reads the tool calls from an answer."""

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]
                ) -> tuple[list[Message], list[ToolSpec] | None]: ...

    def calls(self, completion: Completion) -> list[ToolCall]: ...

    def for_model(self, model: Model) -> ToolMode:
        """The mode to use with ``model`` (each run picks once, at its start)."""
        ...


class NativeTools:
    """The model's own tool calling: tools go in ``tools=``, calls come back parsed.

    The default mode; for a model that says it has no tool calling (``supports_tools`` is
    False) a run falls back to ``TextTools``, the text protocol."""

    def for_model(self, model: Model) -> ToolMode:
        if model.supports_tools:
            return self
        from aillm_lab.agents.text_mode import TextTools  # text_mode imports this module

        return TextTools()

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]
                ) -> tuple[list[Message], list[ToolSpec] | None]:
        return list(messages), list(tools) or None

    def calls(self, completion: Completion) -> list[ToolCall]:
        return list(completion.tool_calls)


@dataclass(frozen=True)
class Verdict:
    """A judged answer: the run's ``output``, or the ``repair`` hint sent back instead.

    ``failed=False`` marks a hint that is progress, not a mistake (the tests a CodeWriter
    asked for, the next failing iteration): it goes back to the model without counting
    towards ``max_repairs``.
    """

    output: Any = None
    repair: str | None = None
    failed: bool = True
