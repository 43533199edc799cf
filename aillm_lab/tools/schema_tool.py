"""``SchemaTool``: a ``Tool`` described by a JSON Schema someone else wrote.

Why a subclass: ``Tool`` builds its schema and its validation from a Python signature, but
an OpenAPI operation or an MCP server's tool arrives with a JSON Schema and nothing to
introspect. ``SchemaTool`` keeps that schema as the spec the model sees and validates the
model's arguments against the very same schema (``jsonschema``), so, as with ``@tool``, what
the model is shown and what is accepted can never disagree. A failed validation raises
pydantic's ``ValidationError`` with one line per problem, so the Safety Guard reports it to
the model exactly like a bad ``@tool`` call ("unknown argument (remove it)", "required
argument is missing").
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic_core import InitErrorDetails, PydanticCustomError, ValidationError

from aillm_lab.errors import ToolError
from aillm_lab.llm.types import ToolSpec
from aillm_lab.tools.base import DEFAULT_MAX_RESULT_CHARS, RiskLevel, Tool

Runner = Callable[[dict[str, Any]], Awaitable[Any]]
_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class SchemaTool(Tool):
    """A tool whose arguments are one JSON object checked against ``parameters``.

    ``run`` is awaited with the validated arguments (a dict); it is the whole behaviour.
    Unknown arguments are refused when the schema says ``additionalProperties: false``.
    """

    def __init__(self, run: Runner, *, name: str, description: str,
                 parameters: dict[str, Any], risk: RiskLevel | str = RiskLevel.NETWORK,
                 max_result_chars: int = DEFAULT_MAX_RESULT_CHARS) -> None:
        from jsonschema import Draft202012Validator
        from jsonschema.exceptions import SchemaError

        # no super().__init__: there is no signature to read; set what Tool's users read
        self.fn = run
        self.is_async, self.inline = True, False
        self.risk = RiskLevel(risk)
        self.max_result_chars = max_result_chars
        self.approval_reason = None
        self.__name__ = self.__qualname__ = name
        self.__doc__ = description
        try:
            Draft202012Validator.check_schema(parameters)
        except SchemaError as exc:
            raise ToolError(f"tool {name!r}: its parameter schema is not valid JSON Schema "
                            f"({exc.message}); fix the document that describes it") from None
        self._validator = Draft202012Validator(parameters)
        self.spec = ToolSpec(name=name, description=description, parameters=parameters)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """``await tool(a=1)``: run without the guard, for your own code."""
        return self.acall(kwargs)

    def validate(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """The arguments unchanged, or ``ValidationError`` naming each bad field."""
        if not isinstance(arguments, dict):
            raise ValidationError.from_exception_data(f"{self.name}_args", [{
                "type": PydanticCustomError("object_type", "arguments must be a JSON object"),
                "loc": (), "input": arguments}])
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: list(e.path))
        if errors:
            lines = {(str(line["type"]), line["loc"]): line for e in errors for line in _lines(e)}
            raise ValidationError.from_exception_data(f"{self.name}_args", list(lines.values()))
        return dict(arguments)

    async def acall_validated(self, kwargs: dict[str, Any]) -> Any:
        return await self.fn(dict(kwargs))


def tool_name(raw: str, prefix: str = "") -> str:
    """A name model APIs accept: letters, digits, ``_.-``, at most 64, no leading digit."""
    name = _BAD_NAME_CHARS.sub("_", f"{prefix}{raw}").strip("_") or "tool"
    if name[0].isdigit() or name[0] in ".-":
        name = f"t_{name}"
    return name[:64]


def _lines(error: Any) -> list[InitErrorDetails]:
    """One jsonschema error as pydantic error lines the guard knows how to word."""
    loc = tuple(error.absolute_path)
    instance = error.instance
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        return [{"type": "extra_forbidden", "loc": (*loc, key), "input": instance[key]}
                for key in sorted(instance) if key not in allowed]
    if error.validator == "required" and isinstance(instance, dict):
        return [{"type": "missing", "loc": (*loc, key), "input": instance}
                for key in error.validator_value if key not in instance]
    return [{"type": PydanticCustomError("schema", "{message}", {"message": error.message}),
             "loc": loc, "input": instance}]


__all__ = ["SchemaTool", "tool_name"]
