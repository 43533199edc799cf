"""Valid by construction on llama.cpp: structured output and forced tool calls on 50 schemas
derived from varied function signatures (nested objects, arrays, enums, optional fields).

Each signature is a real Python function turned into a tool by ``al.tool``, the way users
make tools; its argument schema is asked for once as structured output and once as a
forced tool call (``tool_choice="required"`` or the tool by name). Every reply must
validate against the schema: 100%, not "most".
"""

from __future__ import annotations

import random
import textwrap
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel

import aillm_lab as al
from aillm_lab.llm.llamacpp import available

N_SCHEMAS = 50
MAX_TOKENS = 400  # room for the longest reply; a reply cut short would not be valid


class Address(BaseModel):
    street: str
    city: str
    postcode: str | None = None


class Item(BaseModel):
    name: str
    quantity: int
    unit: Literal["kg", "g", "piece"] = "piece"


class Customer(BaseModel):
    name: str
    address: Address
    tags: list[str] = []


# (annotation, default or None for required) -- the kinds a signature is drawn from
KINDS: dict[str, tuple[str, str | None]] = {
    "text": ("str", None), "count": ("int", None), "ratio": ("float", None),
    "flag": ("bool", None), "level": ('Literal["low", "medium", "high"]', None),
    "names": ("list[str]", None), "ids": ("list[int]", None),
    "limit": ("int | None", "None"), "note": ("str", '"none"'),
    "address": ("Address", None), "items": ("list[Item]", None),
    "colours": ('list[Literal["red", "green", "blue"]]', None),
    "customer": ("Customer", None), "fallback": ("Address | None", "None"),
    "unit": ('Literal["kg", "g", "piece"]', '"kg"'),
}
TOPICS = ["an order", "a delivery", "a booking", "a report", "a reminder", "a search",
          "an invoice", "a survey", "a shipment", "a ticket"]


def _signatures() -> list[al.Tool]:
    """50 distinct functions, drawn with a fixed seed: 1 to 4 parameters each, required
    ones first, every kind used many times over."""
    rng = random.Random(13)
    tools, seen = [], set()
    while len(tools) < N_SCHEMAS:
        names = rng.sample(sorted(KINDS), rng.randint(1, 4))
        names.sort(key=lambda n: KINDS[n][1] is not None)
        if tuple(names) in seen:
            continue
        seen.add(tuple(names))
        i = len(tools)
        params = ", ".join(f"{n}: {KINDS[n][0]}" + ("" if KINDS[n][1] is None
                                                    else f" = {KINDS[n][1]}") for n in names)
        topic = TOPICS[i % len(TOPICS)]
        source = textwrap.dedent(f'''
            def record_{i}({params}) -> str:
                """Record {topic}."""
                return "ok"
        ''')
        namespace: dict[str, Any] = {"Literal": Literal, "Address": Address, "Item": Item,
                                     "Customer": Customer}
        exec(source, namespace)  # a real function with a real signature, as users write
        tools.append(al.tool(namespace[f"record_{i}"]))
    return tools


TOOLS = _signatures()


@pytest.fixture(scope="module")
def lab(module_runner):
    ok, detail = available()
    if not ok:
        pytest.skip(f"{detail}: `make install` builds it")
    with al.Lab(model="local:smollm2", runner=module_runner,
                local={"backend": "llama.cpp"}) as lab:
        assert lab.model().inner.backend == "llama.cpp"
        yield lab


def test_the_signatures_cover_nesting_arrays_enums_and_optional_fields():
    schemas = [t.spec.parameters for t in TOOLS]
    text = [str(s) for s in schemas]
    assert len({str(s) for s in schemas}) == N_SCHEMAS
    assert sum("$defs" in s for s in text) >= 15  # nested objects
    assert sum("'array'" in s for s in text) >= 15
    assert sum("'enum'" in s for s in text) >= 10
    assert sum(len(s.get("required", [])) < len(s["properties"]) for s in schemas) >= 15


def test_structured_output_is_schema_valid_for_every_signature(lab):
    failures = []
    for t in TOOLS:
        schema = t.spec.parameters
        prompt = f"Fill in the fields to {t.spec.description.lower()} for a customer in Paris."
        try:
            data = lab.complete(prompt, output=schema, max_tokens=MAX_TOKENS, retries=0)
        except al.StructuredOutputError as exc:
            failures.append((t.name, str(exc)[:300]))
            continue
        errors = list(Draft202012Validator(schema).iter_errors(data))
        if errors:
            failures.append((t.name, errors[0].message))
    assert not failures, f"{len(failures)}/{N_SCHEMAS} invalid: {failures}"


def test_forced_tool_calls_are_schema_valid_for_every_signature(lab):
    failures = []
    for i, t in enumerate(TOOLS):
        other = TOOLS[(i + 1) % N_SCHEMAS]
        # half forced with "required" among two tools, half by the tool's name
        choice = "required" if i % 2 == 0 else t.name
        reply = lab.chat(f"Please {t.spec.description.lower()} for Ana in Lyon.",
                         tools=[t, other], tool_choice=choice, max_tokens=MAX_TOKENS)
        if reply.finish_reason != "tool_calls" or len(reply.tool_calls) != 1:
            failures.append((t.name, f"no call: {reply.finish_reason} {reply.text[:200]!r}"))
            continue
        call = reply.tool_calls[0]
        spec = {t.name: t.spec, other.name: other.spec}.get(call.name)
        if spec is None or (choice != "required" and call.name != t.name):
            failures.append((t.name, f"called {call.name}"))
            continue
        errors = list(Draft202012Validator(spec.parameters).iter_errors(call.arguments))
        if errors:
            failures.append((t.name, errors[0].message))
    assert not failures, f"{len(failures)}/{N_SCHEMAS} invalid: {failures}"
