"""The Model interface's shared pieces: how a completion ends a stream."""

from __future__ import annotations

from collections.abc import Sequence

from aillm_lab.llm.base import Model, OutputSpec, completion_events
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)
from aillm_lab.runtime import LoopRunner

CALL = ToolCall(id="c1", name="add", arguments={"a": 1})
DONE = Completion(text="four", tool_calls=[CALL], usage=Usage(input_tokens=3, output_tokens=1))


def test_completion_events_are_text_tool_calls_usage_then_done() -> None:
    events = completion_events(DONE)
    assert [e.type for e in events] == ["text", "tool_call", "usage", "done"]
    assert events[0].text == "four" and events[1].tool_call == CALL
    assert events[2].usage == DONE.usage and events[3].completion is DONE


def test_completion_events_leave_out_what_the_stream_already_sent() -> None:
    assert [e.type for e in completion_events(DONE, text=False)] == [
        "tool_call", "usage", "done"]
    assert [e.type for e in completion_events(DONE, text=False, tool_calls=False)] == [
        "usage", "done"]
    assert [e.type for e in completion_events(Completion(text=""))] == ["usage", "done"]


class CompleteOnly(Model):
    provider = "plain"

    async def complete(self, messages: Sequence[Message], *,
                       tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                       params: GenerationParams | None = None) -> Completion:
        return DONE


def test_a_model_without_its_own_stream_streams_its_completion(runner: LoopRunner) -> None:
    async def collect() -> list[StreamEvent]:
        return [e async for e in CompleteOnly("m").stream([Message.user("2+2?")])]

    assert runner.run(collect()) == completion_events(DONE)
