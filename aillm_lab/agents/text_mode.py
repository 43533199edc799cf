"""``TextTools``: tool calling as plain text, for models that have no native tool calls.

Why: a small local or older chat model cannot take ``tools=`` nor a ``role="tool"`` message,
but it can read a tool list in its system text and write a JSON object. So the request
describes each tool (name, description, JSON Schema) and the reply format, tool results come
back as user messages ("Result of tool add: 5"), and the calls are parsed out of the reply:
fenced or bare JSON, prose around it, several calls, slightly malformed JSON repaired with
``json_repair``. A shape that names no tool is no call (the reply is the final answer); a
call whose arguments are not an object becomes a call the toolset refuses as unparseable, so
the loop feeds the error back and the model can fix it.

Use it with ``al.ReActAgent(tools=[...], model=..., tool_mode=TextTools())``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import json_repair

from aillm_lab.llm.types import Completion, Message, ToolCall, ToolSpec

if TYPE_CHECKING:
    from aillm_lab.llm.base import Model

# The reply format, said once in the system text. One JSON object per call, in a ```json
# fence, because that is what instruction-tuned models write when asked for JSON; the
# "no JSON means final answer" rule is what lets the parser tell a call from an answer.
TEXT_TOOLS_NOTE = (
    "You can use these tools:\n{listing}\n\n"
    "To call a tool, reply with a JSON object in a ```json block:\n"
    '```json\n{{"tool": "TOOL_NAME", "arguments": {{...}}}}\n```\n'
    "The arguments must match the tool's schema. Write one block per call. You will get "
    "the results in the next message. When you have the final answer, reply with it as "
    "plain text, without any JSON.")

# One line per tool: small models follow a compact listing better than a nested document.
TOOL_LINE = "- {name}: {description} Arguments (JSON Schema): {schema}"

# A tool result as the model reads it: a user message, since these models have no tool role.
TOOL_RESULT = "Result of tool {name}: {result}"

CALL_ID_PREFIX = "text-"  # marks the calls this mode parsed out of a reply
_NAME_KEYS = ("tool", "name", "tool_name", "function")
_ARGUMENT_KEYS = ("arguments", "args", "parameters", "input")
_FENCE = re.compile(r"```[ \t]*(?:json|JSON|tool_call)?[ \t]*\n(.*?)(?:```|$)", re.DOTALL)


class TextTools:
    """A ``ToolMode`` for models without native tool calls: tools described in the system
    text, calls parsed from the reply, results sent back as user messages."""

    def request(self, messages: Sequence[Message], tools: Sequence[ToolSpec]
                ) -> tuple[list[Message], None]:
        """The history as a text-only model can read it, and never ``tools=``."""
        shown = [_as_text(m) for m in messages]
        if tools:
            note = TEXT_TOOLS_NOTE.format(listing="\n".join(
                TOOL_LINE.format(name=t.name, description=t.description.strip() or t.name,
                                 schema=json.dumps(t.parameters, separators=(",", ":")))
                for t in tools))
            if shown and shown[0].role == "system":
                shown[0] = Message.system(f"{shown[0].text}\n\n{note}")
            else:
                shown.insert(0, Message.system(note))
        return _merge_results(shown), None

    def for_model(self, model: Model) -> TextTools:
        return self  # asked for by name: every model gets the text protocol

    def calls(self, completion: Completion) -> list[ToolCall]:
        """The tool calls written in the reply, in order; none when it is a final answer."""
        if completion.tool_calls:  # a model that did call natively: take its calls as they are
            return list(completion.tool_calls)
        return parse_tool_calls(completion.text)


def parse_tool_calls(text: str) -> list[ToolCall]:
    """Every ``{"tool": NAME, "arguments": {...}}`` written in ``text`` (fenced or not, a
    list of them, or repaired when slightly malformed), as ``ToolCall``s."""
    found: list[ToolCall] = []
    for chunk in _json_chunks(text or ""):
        for item in _load(chunk):
            call = _as_call(item)
            if call is not None:
                found.append(call)
    return found


def render_call(call: ToolCall) -> str:
    """A call as the JSON this mode asks a model to write (for histories made natively)."""
    body = json.dumps({"tool": call.name, "arguments": call.arguments})
    return f"```json\n{body}\n```"


# -- helpers ---------------------------------------------------------------------------------
def _as_text(message: Message) -> Message:
    """A message with no tool role and no native calls: what a text-only model can take."""
    if message.role == "tool":
        return Message.user(TOOL_RESULT.format(name=message.name or "?", result=message.text))
    if message.role == "assistant" and message.tool_calls:
        written = "\n".join(render_call(c) for c in message.tool_calls)
        return Message.assistant("\n".join(p for p in (message.text.strip(), written) if p))
    return message


def _merge_results(messages: list[Message]) -> list[Message]:
    """Join the results of one turn into one user message, so roles keep alternating."""
    merged: list[Message] = []
    for m in messages:
        previous = merged[-1] if merged else None
        if (previous is not None and m.role == previous.role == "user"
                and m.text.startswith("Result of tool ")
                and previous.text.startswith("Result of tool ")):
            merged[-1] = Message.user(f"{previous.text}\n{m.text}")
        else:
            merged.append(m)
    return merged


def _json_chunks(text: str) -> Iterator[str]:
    """The fenced blocks if there are any, else each top-level ``{...}`` or ``[...]`` span
    (an unclosed one, cut off by ``max_tokens``, runs to the end of the text)."""
    fenced = [m.group(1).strip() for m in _FENCE.finditer(text)]
    if any(fenced):
        yield from (f for f in fenced if f)
        return
    yield from _spans(text)


def _spans(text: str) -> Iterator[str]:
    """Top-level JSON-looking spans, found by bracket depth outside strings."""
    depth, start, quote, escaped = 0, -1, False, False
    for i, ch in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quote = False
        elif ch == '"' and depth:
            quote = True
        elif ch in "{[":
            if depth == 0:
                if ch == "[" and not text[i + 1:].lstrip().startswith("{"):
                    continue  # "[1]" or "[note]" in prose is no call list
                start = i
            depth += 1
        elif ch in "}]" and depth:
            depth -= 1
            if depth == 0:
                yield text[start:i + 1]
    if depth and start >= 0:
        yield text[start:]


def _load(chunk: str) -> list[Any]:
    """The JSON value(s) in a chunk, repaired if need be; a list is its items."""
    try:
        value = json.loads(chunk)
    except ValueError:
        try:
            value = json_repair.loads(chunk)
        except Exception:  # json_repair gives up on some inputs with its own errors
            return []
    return value if isinstance(value, list) else [value]


def _as_call(item: Any) -> ToolCall | None:
    """A dict that names a tool, as a call; anything else is not a call."""
    if not isinstance(item, dict):
        return None
    if "function" in item and isinstance(item["function"], dict):  # OpenAI's own shape
        item = item["function"]
    name = next((item[k] for k in _NAME_KEYS if isinstance(item.get(k), str)), None)
    if not name or not ("tool" in item or any(k in item for k in _ARGUMENT_KEYS)):
        return None  # {"name": "Ada"} in an answer is data, not a call
    raw = next((item[k] for k in _ARGUMENT_KEYS if k in item), {})
    if isinstance(raw, str):  # arguments written as a JSON string, as OpenAI sends them
        loaded = _load(raw) if raw.strip() else [{}]
        raw = loaded[0] if len(loaded) == 1 and isinstance(loaded[0], dict) else raw
    arguments = raw if isinstance(raw, dict) else {"_raw": raw if isinstance(raw, str)
                                                   else json.dumps(raw)}
    return ToolCall(id=f"{CALL_ID_PREFIX}{uuid.uuid4().hex[:10]}", name=name.strip(),
                    arguments=arguments)


__all__ = ["TextTools", "parse_tool_calls", "render_call"]
