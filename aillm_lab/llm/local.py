"""``local:`` models: SmolLM2 (or any GGUF / HF folder) on this machine's CPU.

Two engines run them: llama.cpp (``llamacpp.py``), the default when ``llama-cpp-python`` is
installed, and transformers (``local_weights.py``), the fallback and the engine for Hugging
Face folders. Both take the same chat, schema and stop event, so everything below is shared.

Generation runs in a worker thread that feeds an asyncio queue, so the loop never blocks and
tokens stream as they are made; cancelling the awaiting task stops generation at the next
token.

Structured and tool-call output use grammar-constrained decoding (llama.cpp's grammar
sampler, or xgrammar on transformers) rather than parse-and-retry: a 135M model slips on
JSON syntax often, and masking the logits makes every token legal by construction. The
reply is still validated with pydantic afterwards, because a reply cut off at
``max_tokens`` can be valid JSON only by accident.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from aillm_lab.errors import ModelNotAvailable, UnsupportedInput
from aillm_lab.llm.base import Model, OutputSpec, completion_events
from aillm_lab.llm.local_files import find_model
from aillm_lab.llm.local_weights import load_weights
from aillm_lab.llm.structured import json_schema
from aillm_lab.llm.types import (
    Completion,
    GenerationParams,
    Message,
    StreamEvent,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from aillm_lab.config import LabSettings

_END = object()
Backend = Literal["llama.cpp", "transformers"]


class LocalModel(Model):
    """A chat model on this machine's CPU; weights load once per process on first use."""

    provider = "local"
    native_structured = True

    def __init__(self, name: str, path: Path, *, backend: Backend = "transformers",
                 n_threads: int | None = None, why: str = "") -> None:
        super().__init__(name)
        self.path = path
        self.backend: Backend = backend
        self.n_threads = n_threads
        self.why = why or f"{backend} was asked for"
        self._live: set[tuple[threading.Thread, threading.Event]] = set()

    def __repr__(self) -> str:
        return f"<LocalModel {self.id} on {self.backend}>"

    async def load(self) -> Any:
        """Load (or reuse) the weights in a worker thread; ``aillm-lab serve`` calls this at
        start so the first reply does not wait for it."""
        return await asyncio.to_thread(self.load_sync)

    def load_sync(self) -> Any:
        """The loaded engine (``LlamaLoaded`` or ``Loaded``); blocking."""
        if self.backend == "llama.cpp":
            from aillm_lab.llm.llamacpp import load_gguf

            return load_gguf(self.path, self.n_threads)
        return load_weights(self.path)

    async def complete(self, messages: Sequence[Message], *,
                       tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                       params: GenerationParams | None = None) -> Completion:
        completion = None
        async for event in self.stream(messages, tools=tools, output=output, params=params):
            if event.type == "done":
                completion = event.completion
        assert completion is not None
        return completion

    async def stream(self, messages: Sequence[Message], *,
                     tools: Sequence[ToolSpec] | None = None, output: OutputSpec = None,
                     params: GenerationParams | None = None) -> AsyncIterator[StreamEvent]:
        params = params or GenerationParams()
        tools = list(tools or [])
        schema = _tool_schema(tools, params.tool_choice) if tools else (
            json_schema(output) if output is not None else None)
        chat = _to_chat(messages, tools, schema if output is not None else None)
        loaded = await self.load()
        started = time.perf_counter()
        ttft = None
        stops = _StopFilter(params.stop)
        text = ""
        result: dict[str, Any] = {}
        stop = threading.Event()
        async with aclosing(self._generate(loaded, chat, schema, params, result, stop)) as gen:
            async for piece in gen:
                if stops.hit:
                    continue  # drain until the worker notices, so usage counts are exact
                ttft = ttft if ttft is not None else time.perf_counter() - started
                visible = stops.feed(piece)
                text += visible
                if visible and not tools:
                    yield StreamEvent(type="text", text=visible)
                if stops.hit:
                    stop.set()
        tail = stops.flush()
        text += tail
        if tail and not tools:
            yield StreamEvent(type="text", text=tail)
        completion = self._finish(text, tools, result, params, stops.hit, started, ttft)
        # with tools the reply is JSON until parsed, so its text and calls come only now
        for event in completion_events(completion, text=bool(tools)):
            yield event

    async def aclose(self) -> None:
        for _thread, stop in list(self._live):
            stop.set()
        for thread, _stop in list(self._live):
            await asyncio.to_thread(thread.join, 30)
        self._live.clear()

    async def _generate(self, loaded: Any, chat: list[dict[str, str]],
                        schema: dict[str, Any] | None, params: GenerationParams,
                        result: dict[str, Any], stop: threading.Event) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def emit(item: Any) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                result.update(loaded.generate(chat, schema, params, emit, stop))
            except BaseException as exc:  # surfaced to the awaiting task below
                result["error"] = exc
            finally:
                emit(_END)

        thread = threading.Thread(target=work, name="aillm-local-generate", daemon=True)
        entry = (thread, stop)
        self._live.add(entry)
        thread.start()
        try:
            while (item := await queue.get()) is not _END:
                yield item
            if "error" in result:
                raise result["error"]
        finally:
            stop.set()
            self._live.discard(entry)

    def _finish(self, text: str, tools: list[ToolSpec], result: dict[str, Any],
                params: GenerationParams, stopped: bool, started: float,
                ttft: float | None) -> Completion:
        usage = Usage(input_tokens=result.get("input_tokens", 0),
                      output_tokens=result.get("output_tokens", 0))
        finish = "stop" if stopped or result.get("eos") else "length"
        calls: list[ToolCall] = []
        if tools:
            text, calls = _parse_tool_reply(text)
            finish = "tool_calls" if calls else finish
        return Completion(text=text, tool_calls=calls, usage=usage, model=self.id,
                          response_id=f"local-{uuid.uuid4().hex[:12]}", finish_reason=finish,
                          latency_s=time.perf_counter() - started, ttft_s=ttft)


def create(name: str, settings: LabSettings) -> Model:
    """Factory for ``local:NAME`` (a known model) or ``local:/path/to/model.gguf``."""
    path = find_model(name, settings.model_path)
    backend, why = choose_backend(path, settings)
    return LocalModel(name, path, backend=backend, n_threads=settings.local.n_threads, why=why)


def choose_backend(path: Path, settings: LabSettings) -> tuple[Backend, str]:
    """The engine for ``path`` and why: what ``aillm-lab doctor`` prints."""
    from aillm_lab.llm.llamacpp import available

    asked = settings.local.backend
    if path.is_dir():
        return "transformers", "a Hugging Face folder runs on transformers"
    if asked == "transformers":
        return "transformers", "local.backend = 'transformers' in the settings"
    ok, detail = available()
    if asked == "llama.cpp":
        if not ok:
            raise ModelNotAvailable(f"local.backend = 'llama.cpp', but {detail}. Run `make "
                                    "install` (it builds llama-cpp-python), or set "
                                    "local.backend = 'auto' to fall back to transformers.")
        return "llama.cpp", f"local.backend = 'llama.cpp' in the settings ({detail})"
    if ok:
        return "llama.cpp", f"{detail} is installed (local.backend = 'auto')"
    return "transformers", (f"{detail}, so transformers runs it (slower; `make install` "
                            "builds llama-cpp-python)")


class _StopFilter:
    """Holds back text that might start a stop string, so streams never show one."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.keep = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.hit = False

    def feed(self, piece: str) -> str:
        self.buffer += piece
        for stop in self.stops:
            if stop in self.buffer:
                out = self.buffer[:self.buffer.index(stop)]
                self.buffer, self.hit = "", True
                return out
        cut = len(self.buffer) - self.keep
        out, self.buffer = self.buffer[:max(cut, 0)], self.buffer[max(cut, 0):]
        return out

    def flush(self) -> str:
        out, self.buffer = self.buffer, ""
        return out


def _to_chat(messages: Sequence[Message], tools: list[ToolSpec],
             output_schema: dict[str, Any] | None) -> list[dict[str, str]]:
    """Render messages for SmolLM2's template, which knows only system/user/assistant."""
    chat: list[dict[str, str]] = []
    calls_by_id = {c.id: c for m in messages for c in m.tool_calls}
    for m in messages:
        if m.images:
            raise UnsupportedInput(f"the local model {m.role!r} message has images, but local "
                                   "models are text-only; use a vision model such as "
                                   "'openai:gpt-4o-mini'")
        if m.role == "tool":
            call = calls_by_id.get(m.tool_call_id or "")
            said = (f"{call.name}({_arguments(call.arguments)})" if call is not None
                    else f"tool {m.name or ''}")
            chat.append({"role": "user", "content": f"{said} returned: {m.text}"})
        elif m.role == "assistant" and m.tool_calls:
            calls = [{"tool": c.name, "arguments": c.arguments} for c in m.tool_calls]
            chat.append({"role": "assistant", "content": json.dumps(calls[0])})
        else:
            chat.append({"role": m.role, "content": m.text})
    extra = []
    if tools:
        listing = "\n".join(f"- {_signature(t)}: {t.description}" for t in tools)
        extra.append(f"Tools:\n{listing}\nReply with JSON "
                     '{"tool": NAME, "arguments": {...}} to call a tool, or '
                     '{"answer": TEXT} when you know the answer.')
    if output_schema is not None:
        extra.append(f"Reply only with JSON that matches this schema: {json.dumps(output_schema)}")
    if extra:
        if chat and chat[0]["role"] == "system":
            chat[0] = {"role": "system", "content": chat[0]["content"] + "\n\n" + "\n".join(extra)}
        else:
            chat.insert(0, {"role": "system", "content": "\n".join(extra)})
    return chat


def _signature(tool: ToolSpec) -> str:
    """``name(a: integer, b?: string)``: a 135M model picks tools far better from a short
    signature than from a JSON Schema dump (measured on the two-tool agent task); the
    grammar still enforces the whole schema."""
    props = tool.parameters.get("properties", {})
    required = set(tool.parameters.get("required", []))

    def kind(schema: dict[str, Any]) -> str:
        if "enum" in schema:
            return "|".join(json.dumps(v) for v in schema["enum"])
        if schema.get("type") == "array":
            return f"list[{kind(schema.get('items', {}))}]"
        kinds = schema.get("type") or [kind(s) for s in schema.get("anyOf", [])] or "any"
        return kinds if isinstance(kinds, str) else " | ".join(map(str, kinds))

    params = ", ".join(f"{name}{'' if name in required else '?'}: {kind(schema)}"
                       for name, schema in props.items())
    return f"{tool.name}({params})"


def _arguments(arguments: dict[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in arguments.items())


def _tool_schema(tools: list[ToolSpec], choice: str) -> dict[str, Any]:
    """One JSON Schema whose instances are exactly the legal tool calls (or an answer);
    ``"none"`` leaves only the answer, in the same JSON shape the history shows."""
    chosen = [] if choice == "none" else [
        t for t in tools if choice in ("auto", "required") or t.name == choice]
    defs: dict[str, Any] = {}
    options: list[dict[str, Any]] = [
        {"type": "object",
         "properties": {"tool": {"const": t.name},
                        "arguments": _hoist(t.parameters, f"t{i}_", defs)},
         "required": ["tool", "arguments"], "additionalProperties": False}
        for i, t in enumerate(chosen)]
    if choice in ("auto", "none"):
        options.append({"type": "object", "properties": {"answer": {"type": "string"}},
                        "required": ["answer"], "additionalProperties": False})
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def _hoist(schema: dict[str, Any], prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """A tool's parameters with their ``$defs`` moved into ``defs`` under ``prefix``, refs
    rewritten: nested under ``arguments``, ``#/$defs/Address`` would point at the root of
    the union, where the grammar compilers (and JSON Schema) resolve it, and two tools may
    both name a definition ``Address``."""
    local = {**schema.get("definitions", {}), **schema.get("$defs", {})}

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for key, value in node.items():
            if key in ("$defs", "definitions"):
                continue
            if key == "$ref" and isinstance(value, str):
                for base in ("#/$defs/", "#/definitions/"):
                    if value.startswith(base):
                        value = f"#/$defs/{prefix}{value[len(base):]}"
            out[key] = walk(value)
        return out

    for name, sub in local.items():
        defs[prefix + name] = walk(sub)
    return walk(schema)


def _parse_tool_reply(text: str) -> tuple[str, list[ToolCall]]:
    try:
        data = json.loads(text)
    except ValueError:  # cut off by max_tokens: the grammar held until then, so repair it
        from json_repair import repair_json

        data = repair_json(text, return_objects=True)
    if isinstance(data, dict) and "tool" in data:
        call = ToolCall(id=f"call_{uuid.uuid4().hex[:12]}", name=data["tool"],
                        arguments=data.get("arguments") or {})
        return "", [call]
    if isinstance(data, dict) and "answer" in data:
        return str(data["answer"]), []
    return text, []
