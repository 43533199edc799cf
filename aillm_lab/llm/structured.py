"""Structured output: schemas in, validated Python objects out, with repair and retries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import json_repair
from pydantic import BaseModel, TypeAdapter, ValidationError

from aillm_lab.errors import StructuredOutputError
from aillm_lab.llm.base import Model, OutputSpec
from aillm_lab.llm.types import Completion, GenerationParams, Message


def json_schema(output: OutputSpec) -> dict[str, Any]:
    """The JSON Schema a model is asked to follow for ``output``."""
    if output is None:
        raise TypeError("json_schema() needs a pydantic model class or a JSON Schema dict")
    if isinstance(output, dict):
        return output
    if isinstance(output, type) and issubclass(output, BaseModel):
        return output.model_json_schema()
    return TypeAdapter(output).json_schema()


def parse_output(text: str, output: OutputSpec) -> Any:
    """Parse model text into ``output``; json-repair fixes the usual small slips first."""
    try:
        data = json.loads(text)
    except ValueError:
        data = json_repair.loads(text)
        if data == "" and text.strip():
            raise StructuredOutputError(f"reply is not JSON: {text[:200]!r}", raw=text) from None
    if output is None:
        return data
    if isinstance(output, dict):
        return _check_schema(data, output, text)
    try:
        if isinstance(output, type) and issubclass(output, BaseModel):
            return output.model_validate(data)
        return TypeAdapter(output).validate_python(data)
    except ValidationError as exc:
        raise StructuredOutputError(
            f"reply does not match {getattr(output, '__name__', 'the schema')}: "
            f"{exc.errors(include_url=False)}", raw=text) from exc


def _check_schema(data: Any, schema: dict[str, Any], text: str) -> Any:
    from jsonschema import Draft202012Validator

    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                for e in Draft202012Validator(schema).iter_errors(data)]
    if problems:
        raise StructuredOutputError("reply does not match the JSON schema: "
                                    + "; ".join(problems[:5]), raw=text)
    return data


async def complete_structured(model: Model, messages: Sequence[Message], output: OutputSpec,
                              params: GenerationParams, retries: int = 2) -> Completion:
    """Ask for ``output`` and validate; on failure, show the model its error and retry.

    Models with grammar-constrained decoding (``native_structured``) are still validated,
    because a reply cut off at ``max_tokens`` is valid JSON only by accident.
    """
    history = list(messages)
    last = ""
    for attempt in range(1, retries + 2):
        seeded = params if params.seed is None else params.model_copy(
            update={"seed": params.seed + attempt - 1})
        completion = await model.complete(history, output=output, params=seeded)
        last = completion.text
        try:
            completion.output = parse_output(completion.text, output)
            return completion
        except StructuredOutputError as exc:
            error = str(exc)
        history = [*history, Message.assistant(completion.text),
                   Message.user(f"That reply was invalid: {error}. Reply again with only JSON "
                                f"matching this schema: {json.dumps(json_schema(output))}")]
    raise StructuredOutputError(
        f"{model.id} gave no valid {getattr(output, '__name__', 'output')} in "
        f"{retries + 1} attempts; last reply: {last[:200]!r}. Try a larger model, a simpler "
        "schema, or a higher max_tokens.", raw=last, attempts=retries + 1)
