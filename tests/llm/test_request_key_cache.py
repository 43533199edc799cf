"""The request hash reuses each message's and tool's canonical text between calls; its value
must stay exactly the one ``json.dumps`` of the whole body gives (cassettes replay by it),
and a message edited in place between two calls must hash as edited."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

from aillm_lab.llm.request_key import public_url, request_hash
from aillm_lab.llm.types import GenerationParams, ImagePart, Message, ToolCall, ToolSpec


class Answer(BaseModel):
    city: str
    score: float


def reference(provider: str, model: str, messages: list[Message], *, base_url: str | None = None,
              tools: list[ToolSpec] | None = None, output: Any = None,
              params: GenerationParams | None = None, sample: int = 0) -> str:
    """The formula the committed cassettes were recorded with: one dumps of the whole body."""
    schema = output.model_json_schema() if isinstance(output, type) else output
    body = {"provider": provider, "model": model, "base_url": public_url(base_url),
            "messages": [m.model_dump(mode="json") for m in messages],
            "tools": [t.model_dump(mode="json") for t in tools or ()], "output": schema,
            "params": (params or GenerationParams()).model_dump(mode="json"), "sample": sample}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


TOOLS = [ToolSpec(name="add", description="Add. «ü»", parameters={
    "type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "integer"}},
    "required": ["a", "b"]}), ToolSpec(name="zeta")]


def history() -> list[Message]:
    return [Message.system("Be brief — ünïcode ✓ \u2028 \"quotes\" \\ back"),
            Message.user("Add 2 and 3.", ImagePart(url="https://x.test/cat.png")),
            Message.assistant("", [ToolCall(id="c1", name="add",
                                            arguments={"b": 3, "a": 2.5e-07, "n": None})]),
            Message.tool("5", "c1", name="add"), Message.user("thanks")]


def test_the_hash_equals_one_dumps_of_the_whole_body_for_every_kind_of_request() -> None:
    messages = history()
    cases: list[dict[str, Any]] = [
        {}, {"tools": TOOLS}, {"output": Answer}, {"output": {"type": "object", "z": 1e16}},
        {"params": GenerationParams(temperature=0.7, max_tokens=99, stop=["\n"])},
        {"base_url": "https://user:key@api.example.com/v1?k=1"}, {"sample": 3}]
    for kwargs in cases:
        for n in range(len(messages) + 1):  # a history that grows, as an agent's does
            got = request_hash("openai", "gpt-x", messages[:n], **kwargs)
            assert got == reference("openai", "gpt-x", messages[:n], **kwargs), (kwargs, n)
            assert got == request_hash("openai", "gpt-x", messages[:n], **kwargs)  # reused


def test_a_message_or_tool_edited_in_place_hashes_as_edited() -> None:
    messages = history()
    tools = [t.model_copy(deep=True) for t in TOOLS]
    before = request_hash("scripted", "s", messages, tools=tools)
    messages[2].tool_calls[0].arguments["b"] = 4  # nested, in place
    edited = request_hash("scripted", "s", messages, tools=tools)
    assert edited != before
    assert edited == reference("scripted", "s", messages, tools=tools)
    tools[0].parameters["properties"]["a"]["type"] = "number"
    assert request_hash("scripted", "s", messages, tools=tools) == reference(
        "scripted", "s", messages, tools=tools) != edited
    messages[0].content = "another system text"
    assert request_hash("scripted", "s", messages, tools=tools) == reference(
        "scripted", "s", messages, tools=tools)


def test_long_messages_hash_the_same_without_being_kept() -> None:
    long = [Message.user("x" * 50_000), Message.user("é" * 20_000)]
    assert request_hash("p", "m", long) == reference("p", "m", long)
    assert request_hash("p", "m", long) == reference("p", "m", long)
