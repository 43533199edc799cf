"""The vocabulary every model speaks: messages in, completions and stream events out."""

from __future__ import annotations

import base64
import difflib
import html
import json
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from aillm_lab.display import Displayable, fields_table, pre
from aillm_lab.errors import ConfigError

Role = Literal["system", "user", "assistant", "tool"]


class TextPart(BaseModel):
    model_config = ConfigDict(frozen=True)
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image given by URL or inline bytes (raw bytes, or their base64 text); providers
    convert it to their own shape."""

    model_config = ConfigDict(frozen=True)
    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = Field(default=None, description="base64 without the data: prefix "
                                "(bytes given here are encoded)")
    media_type: str = "image/png"

    @field_validator("data", mode="before")
    @classmethod
    def _base64_bytes(cls, value: Any) -> Any:
        """Inline bytes (``path.read_bytes()``) are base64-encoded; text is kept as base64."""
        if isinstance(value, bytes | bytearray | memoryview):
            return base64.b64encode(value).decode()
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if (self.url is None) == (self.data is None):
            raise ValueError("give exactly one of url= or data= (base64), e.g. "
                             "ImagePart.from_path('cat.png')")
        return self

    @classmethod
    def from_path(cls, path: str | Path, media_type: str | None = None) -> ImagePart:
        p = Path(path)
        kind = media_type or mimetypes.guess_type(p.name)[0]
        if kind is None or not kind.startswith("image/"):
            raise ValueError(f"{p.name}: unknown image type; pass media_type='image/png' etc.")
        return cls(data=p.read_bytes(), media_type=kind)

    @property
    def data_url(self) -> str:
        return self.url or f"data:{self.media_type};base64,{self.data}"


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolCall(BaseModel):
    """A request from the model to run one tool with parsed arguments."""

    id: str
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolSpec(BaseModel):
    """A tool as the model sees it: name, description and a JSON Schema for arguments."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    parameters: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object", "properties": {}})


class Message(BaseModel):
    role: Role
    content: str | list[Part] = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def system(cls, text: str) -> Message:
        return cls(role="system", content=text)

    @classmethod
    def user(cls, *parts: str | ImagePart) -> Message:
        if len(parts) == 1 and isinstance(parts[0], str):
            return cls(role="user", content=parts[0])
        return cls(role="user", content=[TextPart(text=p) if isinstance(p, str) else p
                                         for p in parts])

    @classmethod
    def assistant(cls, text: str = "", tool_calls: list[ToolCall] | None = None) -> Message:
        return cls(role="assistant", content=text, tool_calls=tool_calls or [])

    @classmethod
    def tool(cls, result: Any, call_id: str, name: str | None = None) -> Message:
        text = result if isinstance(result, str) else json.dumps(result, default=str)
        return cls(role="tool", content=text, tool_call_id=call_id, name=name)

    @property
    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text for p in self.content if isinstance(p, TextPart))

    @property
    def images(self) -> list[ImagePart]:
        if isinstance(self.content, str):
            return []
        return [p for p in self.content if isinstance(p, ImagePart)]


class Usage(BaseModel):
    """Token counts, normalised across vendors; ``None`` cost means unknown, never free."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{k: getattr(self, k) + getattr(other, k)
                        for k in Usage.model_fields})


FinishReason = Literal["stop", "length", "tool_calls", "cancelled", "error"]


class Completion(BaseModel, Displayable):
    """One model answer; ``str()`` is the reply text so it prints naturally in a cell."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    text: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    output: Any = None
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    response_id: str | None = None
    finish_reason: FinishReason = "stop"
    latency_s: float | None = None
    ttft_s: float | None = None

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        stats = f"{self.usage.input_tokens}→{self.usage.output_tokens} tokens"
        if self.latency_s is not None:
            stats += f" · {self.latency_s:.2f} s"
        calls = "".join(f"\n- tool call `{c.name}({json.dumps(c.arguments)})`"
                        for c in self.tool_calls)
        return f"{self.text}{calls}\n\n<sub>{self.model} · {stats}</sub>"

    def _repr_html_(self) -> str:
        calls = "".join(f"<li><code>{html.escape(c.name)}("
                        f"{html.escape(json.dumps(c.arguments, default=str))})</code></li>"
                        for c in self.tool_calls)
        return fields_table("Completion", [
            ("model", self.model), ("finish", self.finish_reason),
            ("tokens", f"{self.usage.input_tokens} in, {self.usage.output_tokens} out"),
            ("latency", None if self.latency_s is None else f"{self.latency_s:.2f} s")],
            pre(self.text) + (f"<ul>{calls}</ul>" if calls else ""))

    def to_message(self) -> Message:
        return Message.assistant(self.text, self.tool_calls)


class StreamEvent(BaseModel):
    """One piece of a stream; ``str()`` is its text delta, so ``"".join(map(str, …))`` works."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    type: Literal["text", "tool_call", "usage", "done"]
    text: str = ""
    tool_call: ToolCall | None = None
    usage: Usage | None = None
    completion: Completion | None = None

    def __str__(self) -> str:
        return self.text


class GenerationParams(BaseModel):
    """Sampling parameters shared by every provider; unknown ones are rejected by name.

    Frozen, so one default instance can serve every call that sets none (``DEFAULT_PARAMS``);
    derive a variant with ``model_copy(update=...)``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(default=256, ge=1, le=1_000_000)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    tool_choice: Literal["auto", "required", "none"] | str = "auto"

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


DEFAULT_PARAMS = GenerationParams()


def generation_params(params: Mapping[str, Any],
                      keywords: Sequence[str] = ()) -> GenerationParams:
    """``params`` as ``GenerationParams``, or a ``ConfigError`` naming each bad one: an
    unknown name gets a did-you-mean over the generation parameters *and* ``keywords``, the
    calling function's own keyword arguments (``model=``, ``output=`` …), since a typo in
    one of those lands among the parameters too."""
    if not params:
        return DEFAULT_PARAMS
    try:
        return GenerationParams(**params)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    allowed = list(GenerationParams.model_fields)
    problems = []
    for err in errors:
        name = ".".join(map(str, err["loc"]))
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(name, [*allowed, *keywords], n=1)
            problems.append(f"unknown parameter {name!r}"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
        else:
            problems.append(f"{name}={err.get('input')!r}: {err['msg']}")
    own = f"; this call also takes: {', '.join(keywords)}" if keywords else ""
    raise ConfigError(f"bad generation parameter ({'; '.join(problems)}). Generation "
                      f"parameters: {', '.join(allowed)}{own}.",
                      fields=tuple(str(e["loc"][0]) for e in errors))


PROMPT_SHAPES = ("a str, an al.Message, or a list of al.Message or of message dicts "
                 "such as {'role': 'user', 'content': 'hi'}")


def as_messages(prompt: str | Message | list[Message] | list[dict[str, Any]],
                system: str | None = None) -> list[Message]:
    """Accept the shapes people type in notebooks and return a message list.

    The one place every prompt (``al.chat``, ``Lab.chat``/``complete``/``stream``, agents)
    is normalised, so a wrong shape is refused here with what a prompt may be."""
    if isinstance(prompt, str):
        messages = [Message.user(prompt)]
    elif isinstance(prompt, Message):
        messages = [prompt]
    elif isinstance(prompt, list | tuple):
        messages = [_as_message(m, i) for i, m in enumerate(prompt)]
    else:
        hint = (" (one message dict: put it in a list)" if isinstance(prompt, Mapping) else
                " (bytes: decode them to a str)" if isinstance(prompt, bytes | bytearray)
                else "")
        raise ConfigError(f"prompt = {_short(prompt)} ({type(prompt).__name__}){hint}: a "
                          f"prompt is {PROMPT_SHAPES}.", fields=("prompt",))
    if system is not None:
        messages = [Message.system(system), *[m for m in messages if m.role != "system"]]
    return messages


def _as_message(item: Any, index: int) -> Message:
    if isinstance(item, Message):
        return item
    if not isinstance(item, Mapping):
        raise ConfigError(f"prompt[{index}] = {_short(item)} ({type(item).__name__}): a "
                          f"message list holds al.Message or dicts with 'role' and 'content'; "
                          f"a prompt is {PROMPT_SHAPES}.", fields=("prompt",))
    return Message.model_validate(item)  # pydantic names a bad role or content itself


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"
