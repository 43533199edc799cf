"""Tools: ``@tool`` turns a typed function into a ``Tool`` the model can call.

A tool's arguments are one pydantic model, built by ``create_model`` from the signature
rather than by a home-made schema builder: every type pydantic knows works, and the JSON
Schema the model sees and the validation of its arguments come from that one model, so
they can never disagree. Its fields have safe internal names (``p0``, ``p1``, ...) and the
parameter's own name as their alias, so any legal Python name (``_class``, ``model_config``,
``json``, ``_``) is a property of the schema and reaches the function under that name.
Parameter descriptions come from the docstring's ``Args:`` section (Google style).

``tool_specs`` is the one door for ``tools=`` arguments: it takes ``Tool``s, ``ToolSpec``s
and plain typed functions and returns the ``ToolSpec`` list that models take.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import re
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Iterator
from enum import StrEnum
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from aillm_lab.display import Displayable, fields_table, pre
from aillm_lab.errors import ConfigError, RegistryError, ToolError
from aillm_lab.llm.types import ToolSpec

DEFAULT_MAX_RESULT_CHARS = 20_000
T = TypeVar("T")


class RiskLevel(StrEnum):
    """What a call can do; the approval policy is set per level (or per tool)."""

    READ = "read"
    WRITE = "write"
    EXECUTE = "execute"
    NETWORK = "network"


class ToolResult(BaseModel, Displayable):
    """What the model reads back: text ``content``, plus flags the guard set on the way."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    name: str
    call_id: str | None = None
    ok: bool = True
    content: str = ""
    error: str | None = None
    rule: str | None = Field(default=None, description="the safety rule that refused the call")
    truncated: bool = False
    injection: list[str] = Field(default_factory=list, description="markers found in output")
    value: Any = Field(default=None, exclude=True, repr=False,
                       description="the raw return value, unredacted: for your code only")

    def __str__(self) -> str:
        return self.content

    def _repr_html_(self) -> str:
        state = "ok" if self.ok else f"refused ({self.rule})" if self.rule else "error"
        return fields_table(f"{self.name}: {state}", [
            ("call", self.call_id), ("truncated", "yes" if self.truncated else None),
            ("injection markers", ", ".join(self.injection) or None)], pre(self.content))


class Tool:
    """A validated, schema-described callable; call it with ``await tool.acall(args)``.

    Sync functions run in an executor so they never block the runner loop, unless
    ``inline=True``: then they run on the loop itself. That is for functions that return in
    well under a millisecond (arithmetic, a lookup, a read capped by policy): on a small VM
    the thread hop alone costs more than 100 µs, more than such a function and the whole
    Safety Guard around it, and a thread adds no parallelism to Python work under the GIL.
    ``approval_reason``, if given, is awaited before each call: a reason string makes the
    guard ask for approval even where the policy says ``auto`` (a shell without OS
    confinement), None lets the policy decide.
    """

    def __init__(self, fn: Callable[..., Any], *, name: str | None = None,
                 description: str | None = None, risk: RiskLevel | str = RiskLevel.READ,
                 max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
                 approval_reason: Callable[[], Awaitable[str | None]] | None = None,
                 inline: bool = False) -> None:
        if not callable(fn):
            raise ToolError(f"@tool needs a function, got {type(fn).__name__}")
        fn_name = getattr(fn, "__name__", type(fn).__name__)
        self.fn = fn
        self.is_async = inspect.iscoroutinefunction(fn)
        self.inline = inline
        self.risk = RiskLevel(risk)
        self.max_result_chars = max_result_chars
        self.approval_reason = approval_reason
        doc_summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
        self._args, self._params, self._positional = _args_model(fn, fn_name, arg_docs)
        tool_name = name or fn_name
        if not _NAME.match(tool_name):
            raise ToolError(f"tool name {tool_name!r} is not valid for model APIs: use letters, "
                            f"digits, '_', '.' or '-' (at most 64, not starting with a digit), "
                            f"e.g. @tool(name='read_file')")
        self.spec = ToolSpec(name=tool_name,
                             description=description if description is not None else doc_summary,
                             parameters=_schema(self._args))
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"<Tool {self.name} risk={self.risk.value}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Calling the tool like the function still works (no guard: for your own code)."""
        return self.fn(*args, **kwargs)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Coerced keyword arguments, or pydantic's ``ValidationError`` naming each field."""
        if not isinstance(arguments, dict):
            arguments = {"__root__": arguments}  # fails validation with a readable message
        parsed = self._args.model_validate(arguments)
        return {param: getattr(parsed, field) for field, param in self._params.items()}

    async def acall(self, arguments: dict[str, Any]) -> Any:
        """Validate and run (sync functions in the default executor)."""
        return await self.acall_validated(self.validate(arguments))

    async def acall_validated(self, kwargs: dict[str, Any]) -> Any:
        """Run with keyword arguments that ``validate`` already returned."""
        kwargs = dict(kwargs)
        args = [kwargs.pop(p) for p in self._positional]  # ``def f(x, /)`` takes x by place
        if self.is_async:
            return await self.fn(*args, **kwargs)
        if self.inline:
            return self.fn(*args, **kwargs)
        return await in_worker(functools.partial(self.fn, *args, **kwargs))

    # -- vendor formats ----------------------------------------------------------------------
    def to_openai(self) -> dict[str, Any]:
        return {"type": "function", "function": {
            "name": self.name, "description": self.spec.description,
            "parameters": self.spec.parameters}}

    def to_anthropic(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.spec.description,
                "input_schema": self.spec.parameters}

    def to_ollama(self) -> dict[str, Any]:
        return self.to_openai()  # Ollama takes the OpenAI function shape


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...
@overload
def tool(*, name: str | None = None, description: str | None = None,
         risk: RiskLevel | str = RiskLevel.READ, max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
         inline: bool = False) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
         description: str | None = None, risk: RiskLevel | str = RiskLevel.READ,
         max_result_chars: int = DEFAULT_MAX_RESULT_CHARS, inline: bool = False) -> Any:
    """``@al.tool`` or ``@al.tool(risk="write")``: build a ``Tool`` from a typed function;
    ``inline=True`` runs a fast sync function on the loop instead of a worker thread."""
    def wrap(f: Callable[..., Any]) -> Tool:
        return Tool(f, name=name, description=description, risk=risk,
                    max_result_chars=max_result_chars, inline=inline)
    return wrap(fn) if fn is not None else wrap


ToolLike = Tool | ToolSpec | Callable[..., Any]
_ACCEPTED = ("a list of tools: @al.tool functions, ToolSpec objects or plain typed "
             "functions (a Toolbox works too), e.g. tools=[search]")


def tool_specs(items: Iterable[ToolLike] | None) -> list[ToolSpec]:
    """What a ``tools=`` argument names, as the ``ToolSpec`` list models take.

    A ``Tool`` gives its ``spec``, a ``ToolSpec`` is kept, and a plain typed function is
    described as ``@tool`` would describe it. Anything else, or a name used twice, raises
    ``ConfigError`` (``fields=("tools",)``) saying what is accepted.
    """
    if items is None:
        return []
    if isinstance(items, str | bytes | dict | ToolSpec | Tool) or callable(items):
        raise ConfigError(f"tools= takes {_ACCEPTED}; got one {type(items).__name__}: "
                          f"wrap it in a list", fields=("tools",))
    specs: list[ToolSpec] = []
    for i, item in enumerate(items):
        if isinstance(item, Tool):
            specs.append(item.spec)
        elif isinstance(item, ToolSpec):
            specs.append(item)
        elif callable(item) and not isinstance(item, type):
            specs.append(Tool(item).spec)
        else:
            shown = repr(item) if len(repr(item)) <= 60 else repr(item)[:57] + "..."
            kind = "a class" if isinstance(item, type) else type(item).__name__
            raise ConfigError(f"tools= takes {_ACCEPTED}; item {i} is {shown} ({kind})",
                              fields=("tools",))
    names = [s.name for s in specs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"tools= names {', '.join(map(repr, twice))} more than once; a "
                          f"model tells tools apart by name: rename one with "
                          f"@al.tool(name=...)", fields=("tools",))
    return specs


class ToolRegistry:
    """Named tools; registering a name twice raises."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools or []:
            self.add(t)

    def add(self, t: Tool | Callable[..., Any]) -> Tool:
        if isinstance(t, ToolSpec):
            raise ToolError(f"a ToolSpec ({t.name!r}) only describes a tool, it cannot run: "
                            f"register the function, or the @al.tool tool, that does the work")
        t = t if isinstance(t, Tool) else Tool(t)
        if t.name in self._tools:
            raise RegistryError(f"a tool named {t.name!r} is already registered; rename one "
                                f"with @tool(name=...) or remove the old one first")
        self._tools[t.name] = t
        return t

    def remove(self, name: str) -> None:
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool:
        try:
            return self._tools[name]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise RegistryError(f"no tool named {name!r}; registered: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        return [t.spec for t in self._tools.values()]


# -- helpers --------------------------------------------------------------------------------
async def in_worker(fn: Callable[[], T]) -> T:
    """``fn()`` in the loop's default executor, as ``run_in_executor(None, fn)`` runs it.

    Why not that call itself: it chains a concurrent future to an asyncio one (two futures,
    a lock and a condition, three callbacks); here the worker hands the outcome straight
    to one loop future. Every sync tool call of an agent pays this hop. Where the loop has
    no default executor yet (or Python renames the attribute), the plain call makes one.
    A cancelled caller cancels the work if it has not started, as ``run_in_executor`` does.
    """
    loop = asyncio.get_running_loop()
    executor = getattr(loop, "_default_executor", None)
    if not isinstance(executor, concurrent.futures.Executor):
        return await loop.run_in_executor(None, fn)
    done: asyncio.Future[T] = loop.create_future()

    def work() -> None:  # on the worker thread
        try:
            value: Any = fn()
        except BaseException as exc:
            _hand_over(loop, done, False, exc)
        else:
            _hand_over(loop, done, True, value)

    job = executor.submit(work)
    try:
        return await done
    except asyncio.CancelledError:
        job.cancel()
        raise


def _hand_over(loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any], ok: bool,
               value: Any) -> None:
    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(_settle, done, ok, value)


def _settle(done: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if not done.done():  # a cancelled caller's future stays cancelled
        if ok:
            done.set_result(value)
        else:
            done.set_exception(value)


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")  # the same rule as ToolSpec.name
_ARGS_HEADER = re.compile(r"^\s*(Args|Arguments|Parameters)\s*:\s*$")
# a name (checked with str.isidentifier, which knows more letters than \w), "(type)", ":"
_ARG_LINE = re.compile(r"^\s*\*{0,2}([^\s:()*]+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_SECTION = re.compile(r"^\s*(Returns|Raises|Yields|Examples?|Notes?)\s*:\s*$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The text before ``Args:``, and each argument's description (Google style)."""
    summary: list[str] = []
    args: dict[str, str] = {}
    current: str | None = None
    section = "summary"  # then "args", or "other" for Returns:/Raises:/... (not shown)
    for line in inspect.cleandoc(doc).splitlines():  # raw __doc__ works too
        if _ARGS_HEADER.match(line):
            section, current = "args", None
            continue
        if _SECTION.match(line):
            section, current = "other", None
            continue
        if section == "args":
            m = _ARG_LINE.match(line)
            if (m and m.group(1).isidentifier()
                    and (not line.startswith(" " * 8) or current is None)):
                current = m.group(1)
                args[current] = m.group(3).strip()
            elif current and line.strip():
                args[current] = f"{args[current]} {line.strip()}".strip()
        elif section == "summary":
            summary.append(line)
    return "\n".join(summary).strip(), args


def _args_model(fn: Callable[..., Any], fn_name: str, arg_docs: dict[str, str]
                ) -> tuple[type[BaseModel], dict[str, str], list[str]]:
    """A pydantic model of the signature (it validates arguments and gives the schema), its
    field -> parameter names, and the positional-only parameters.

    Fields are ``p0``, ``p1``, ... with the parameter's name as alias: a field may not be
    called ``_class`` or ``model_config``, or shadow ``BaseModel.json``, but an alias may
    be any string. Validation goes by alias only, so ``p0`` is an unknown argument.
    """
    sig = inspect.signature(fn)
    hints = _hints(fn, fn_name)
    docs = {unicodedata.normalize("NFKC", k): v for k, v in arg_docs.items()}  # as Python does
    fields: dict[str, Any] = {}
    params: dict[str, str] = {}
    positional: list[str] = []
    for i, (pname, param) in enumerate(sig.parameters.items()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ToolError(f"tool {fn_name!r}: *args/**kwargs cannot be described to a "
                            f"model; give each parameter a name and a type")
        if param.kind is param.POSITIONAL_ONLY:
            positional.append(pname)
        default = ... if param.default is param.empty else param.default
        described = {"description": docs[pname]} if pname in docs else {}
        fields[f"p{i}"] = (hints.get(pname, Any), Field(default, alias=pname, **described))
        params[f"p{i}"] = pname
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{fn_name}_args", __config__=config, **fields), params, positional


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        prop.pop("title", None)
    schema.setdefault("properties", {})
    schema["additionalProperties"] = False
    return schema


def _hints(fn: Callable[..., Any], fn_name: str) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn, include_extras=True)  # keep Annotated constraints
    except Exception as exc:  # a forward reference that does not resolve
        raise ToolError(f"tool {fn_name!r}: cannot read its type hints ({exc}); "
                        f"import the types at module level") from exc


__all__ = ["DEFAULT_MAX_RESULT_CHARS", "RiskLevel", "Tool", "ToolLike", "ToolRegistry",
           "ToolResult", "ValidationError", "parse_docstring", "tool", "tool_specs"]
