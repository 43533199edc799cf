"""``@tool``: schemas from type hints and docstrings, validation, vendor shapes, registry."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from aillm_lab.errors import ConfigError, RegistryError, ToolError
from aillm_lab.llm.types import ToolSpec
from aillm_lab.tools.base import (
    DEFAULT_MAX_RESULT_CHARS,
    RiskLevel,
    Tool,
    ToolRegistry,
    ToolResult,
    parse_docstring,
    tool,
    tool_specs,
)
from aillm_lab.tools.safety import SafetyGuard


class Filter(BaseModel):
    column: str
    minimum: float | None = None


@tool(risk="read")
def search(query: str, mode: Literal["fast", "exact"] = "fast", limit: int | None = None,
           where: Filter | None = None) -> str:
    """Search the notes for a phrase.

    Args:
        query: what to look for
        mode: how to match;
            fast is fuzzy
        limit: at most this many hits
    Returns:
        the hits, one per line
    Raises:
        ValueError: never
    """
    return f"{query}|{mode}|{limit}|{where.column if where else None}"


def test_schema_comes_from_type_hints_and_docstring() -> None:
    params = search.spec.parameters
    assert search.spec.description == "Search the notes for a phrase."
    assert params["type"] == "object" and params["additionalProperties"] is False
    assert params["required"] == ["query"]
    props = params["properties"]
    assert props["query"] == {"type": "string", "description": "what to look for"}
    assert props["mode"]["enum"] == ["fast", "exact"] and props["mode"]["default"] == "fast"
    assert props["mode"]["description"] == "how to match; fast is fuzzy"
    assert {"type": "integer"} in props["limit"]["anyOf"]
    assert {"type": "null"} in props["limit"]["anyOf"]
    assert props["limit"]["description"] == "at most this many hits"
    assert {"$ref": "#/$defs/Filter"} in props["where"]["anyOf"]
    assert params["$defs"]["Filter"]["required"] == ["column"]
    assert "title" not in params and all("title" not in p for p in props.values())


def test_returns_and_raises_sections_stay_out_of_the_description() -> None:
    summary, args = parse_docstring(search.fn.__doc__ or "")
    assert "hits, one per line" not in search.spec.description
    assert "ValueError" not in summary and set(args) == {"query", "mode", "limit"}


def test_validate_coerces_and_fills_defaults() -> None:
    kwargs = search.validate({"query": "x", "limit": "3", "where": {"column": "a"}})
    assert kwargs["limit"] == 3 and kwargs["mode"] == "fast"
    assert kwargs["where"] == Filter(column="a")


@pytest.mark.parametrize("bad", [{"mode": "slow", "query": "x"}, {}, {"query": "x", "zzz": 1},
                                 {"query": "x", "where": {"minimum": 1}}])
def test_validate_rejects_bad_arguments(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        search.validate(bad)


def test_annotated_constraints_reach_the_schema_and_validation() -> None:
    @tool
    def top(n: Annotated[int, Field(ge=1, le=5)] = 2) -> int:
        """Pick.

        Args:
            n: how many
        """
        return n

    prop = top.spec.parameters["properties"]["n"]
    assert (prop["minimum"], prop["maximum"], prop["description"]) == (1, 5, "how many")
    with pytest.raises(ValidationError, match="less than or equal to 5"):
        top.validate({"n": 9})


def test_validation_error_becomes_a_readable_result_via_the_guard() -> None:
    result = asyncio.run(SafetyGuard().invoke(search, {"mode": "slow", "limit": "x"}))
    assert isinstance(result, ToolResult) and result.ok is False
    assert "- query: required argument is missing" in result.content
    assert "- mode: Input should be 'fast' or 'exact' (got 'slow')" in result.content
    assert "- limit: Input should be a valid integer" in result.content
    assert "Expected parameters: query (string, required), mode (string)" in result.content


def test_vendor_shapes() -> None:
    assert search.to_openai() == {"type": "function", "function": {
        "name": "search", "description": search.spec.description,
        "parameters": search.spec.parameters}}
    assert search.to_anthropic() == {"name": "search", "description": search.spec.description,
                                     "input_schema": search.spec.parameters}
    assert search.to_ollama() == search.to_openai()


def test_name_description_risk_and_cap_can_be_overridden() -> None:
    @tool(name="lookup", description="Find a row.", risk=RiskLevel.NETWORK, max_result_chars=50)
    def f(x: int) -> int:
        """Ignored docstring."""
        return x

    assert (f.name, f.spec.description, f.risk, f.max_result_chars) == (
        "lookup", "Find a row.", RiskLevel.NETWORK, 50)
    assert repr(f) == "<Tool lookup risk=network>"
    assert search.max_result_chars == DEFAULT_MAX_RESULT_CHARS


def test_a_tool_is_still_callable_like_its_function() -> None:
    assert search("q", limit=2) == "q|fast|2|None"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Tool(42), "needs a function"),  # type: ignore[arg-type]
    (lambda: tool(lambda *args: None), r"\*args/\*\*kwargs"),
    (lambda: tool(name="bad name")(lambda x: x), "not valid for model APIs"),
    (lambda: tool(risk="dangerous")(lambda x: x), "dangerous"),
])
def test_misdefined_tools_raise_with_a_fix(make: object, message: str) -> None:
    with pytest.raises((ToolError, ValueError), match=message):
        make()  # type: ignore[operator]


def test_unresolvable_type_hint_is_a_tool_error() -> None:
    def f(x: NotImported) -> None:  # type: ignore[name-defined]  # noqa: F821
        return None

    with pytest.raises(ToolError, match="type hints"):
        tool(f)


def test_duplicate_registration_raises_registry_error() -> None:
    registry = ToolRegistry([search])
    with pytest.raises(RegistryError, match="already registered"):
        registry.add(search)

    @tool(name="search")
    def other(q: str) -> str:
        return q

    with pytest.raises(RegistryError, match="search"):
        registry.add(other)
    assert len(registry) == 1


def test_registry_lookup_lists_known_names_and_supports_removal() -> None:
    def plain(a: int) -> int:
        """Plain function."""
        return a

    registry = ToolRegistry()
    added = registry.add(plain)
    assert isinstance(added, Tool) and registry.names() == ["plain"] and "plain" in registry
    assert [s.name for s in registry.specs()] == ["plain"] and list(registry) == [added]
    with pytest.raises(RegistryError, match="registered: plain"):
        registry.get("missing")
    registry.remove("plain")
    assert len(registry) == 0


def test_sync_tools_run_off_the_loop_thread_and_async_tools_on_it() -> None:
    seen: dict[str, int] = {}

    @tool
    def sync_tool() -> str:
        seen["sync"] = threading.get_ident()
        return "s"

    @tool
    async def async_tool() -> str:
        seen["async"] = threading.get_ident()
        return "a"

    async def main() -> int:
        assert await sync_tool.acall({}) == "s"
        assert await async_tool.acall({}) == "a"
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert seen["sync"] != loop_thread and seen["async"] == loop_thread


def test_result_cap_states_the_truncation() -> None:
    @tool(max_result_chars=100)
    def long() -> str:
        return "x" * 5000

    result = asyncio.run(SafetyGuard().invoke(long, {}))
    assert result.truncated and result.content.count("x") == 100
    assert "[truncated: 100 of 5,000 chars shown" in result.content


def test_tool_result_hides_the_raw_value_from_dumps_and_repr() -> None:
    result = ToolResult(name="t", content="shown", value={"raw": "secret-raw-value"})
    assert str(result) == "shown"
    assert "secret-raw-value" not in repr(result)
    assert "value" not in result.model_dump()


@pytest.mark.parametrize("name", ["_class", "_", "model_config", "model_fields", "json",
                                  "schema", "validate", "copy", "dict", "construct"])
def test_pydantic_reserved_and_underscore_names_are_ordinary_parameters(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"def f({name}: int) -> int:\n    '''F.\n\n    Args:\n        {name}: a number\n    '''"
         f"\n    return {name} * 2", namespace)
    t = tool(namespace["f"])  # type: ignore[arg-type]
    assert t.spec.parameters["properties"] == {name: {"type": "integer",
                                                      "description": "a number"}}
    assert t.spec.parameters["required"] == [name]
    assert asyncio.run(t.acall({name: "21"})) == 42
    with pytest.raises(ValidationError, match="p0"):  # the internal field is no argument
        t.validate({name: 1, "p0": 1})


def test_positional_only_parameters_are_passed_by_place() -> None:
    @tool
    def scale(value: float, /, factor: float = 2.0, *, offset: float = 0.0) -> float:
        return value * factor + offset

    assert list(scale.spec.parameters["properties"]) == ["value", "factor", "offset"]
    assert asyncio.run(scale.acall({"value": 3, "offset": 1})) == 7.0


def test_docstring_names_are_matched_as_python_spells_parameters() -> None:
    namespace: dict[str, object] = {}  # the parser reads "\ufb01le" as "file" (NFKC)
    exec("def f(\ufb01le: str, na\u0308\u0301me: str) -> str:\n    return \ufb01le", namespace)
    fn = namespace["f"]
    fn.__doc__ = "Read.\n\nArgs:\n    \ufb01le: which one\n    na\u0308\u0301me: what to call it\n"  # type: ignore[attr-defined]
    props = tool(fn).spec.parameters["properties"]  # type: ignore[arg-type]
    assert props["file"]["description"] == "which one"
    assert props["n\u00e4\u0301me"]["description"] == "what to call it"


def test_tool_specs_takes_tools_specs_and_plain_functions() -> None:
    def plain(a: int) -> int:
        """Plain function."""
        return a

    spec = ToolSpec(name="raw", description="A raw spec.")
    specs = tool_specs([search, spec, plain])
    assert specs[0] is search.spec and specs[1] is spec
    assert specs[2] == Tool(plain).spec and specs[2].description == "Plain function."
    assert tool_specs(ToolRegistry([search])) == [search.spec]  # any iterable of tools
    assert tool_specs(None) == [] and tool_specs(()) == []


@pytest.mark.parametrize(("tools", "message"), [
    ([search, 42], r"item 1 is 42 \(int\)"),
    ([Filter], r"item 0 is <class '.*Filter'> \(a class\)"),
    (search, "got one Tool: wrap it in a list"),
    (ToolSpec(name="x"), "got one ToolSpec: wrap it in a list"),
    ("search", "got one str"),
    ([search, search.spec], "'search' more than once"),
])
def test_tool_specs_refuses_what_it_cannot_send_and_says_what_it_takes(
        tools: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        tool_specs(tools)  # type: ignore[arg-type]
    assert info.value.fields == ("tools",)
    assert "ToolSpec" in str(info.value) or "more than once" in str(info.value)


def test_a_spec_cannot_be_registered_since_it_has_nothing_to_run() -> None:
    with pytest.raises(ToolError, match="register the function"):
        ToolRegistry().add(search.spec)  # type: ignore[arg-type]


def test_an_inline_tool_runs_on_the_loop_and_a_plain_sync_tool_in_a_worker_thread() -> None:
    def where() -> str:
        """Name the thread this runs on."""
        return threading.current_thread().name

    async def main() -> tuple[str, str, str]:
        loop_thread = threading.current_thread().name
        inline = await tool(inline=True)(where).acall({})
        threaded = await tool(where).acall({})
        return loop_thread, inline, threaded

    loop_thread, inline, threaded = asyncio.run(main())
    assert inline == loop_thread and threaded != loop_thread


def test_the_built_in_read_file_is_inline_and_the_tree_walkers_are_not(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from aillm_lab.tools.files import file_tools
    from aillm_lab.tools.paths import Workspace

    inline = {t.name: t.inline for t in file_tools(Workspace(tmp_path))}
    assert inline["read_file"] is True
    assert not any(inline[n] for n in ("write_file", "glob_files", "search_text", "list_dir"))
