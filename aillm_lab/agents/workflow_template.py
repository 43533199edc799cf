"""The workflow's template language: ``{{ inputs.x }}`` and ``{{ steps.fetch.output.text }}``.

Why a language this small: a workflow file is data someone else may have written, so its
templates must not run code. A template is text with ``{{ path }}`` tags; a path is a root
(``inputs`` or ``steps``) and dotted keys or list indexes, walked over JSON data only (dict
keys and list positions, never attributes), found by a regular expression. A string that is
exactly one tag keeps the value's type (a dict stays a dict); otherwise values are written
into the text (dicts and lists as JSON). A ``when:`` condition is one tag, optionally with
``not`` in front or one comparison with a Python literal after it (read by
``ast.literal_eval``, which reads literals and nothing else)::

    when: "{{ steps.classify.output.text }} == 'spam'"
    when: "not {{ inputs.dry_run }}"
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TAG = re.compile(r"\{\{(.*?)\}\}", re.S)
_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[\w-]+)*")
_CONDITION = re.compile(
    r"\s*(not\s+)?(\{\{.*?\}\})\s*(?:(==|!=|<=|>=|<|>|not\s+in|in)\s*(.+?))?\s*", re.S)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
    ">": operator.gt, ">=": operator.ge, "in": lambda a, b: a in b,
    "not in": lambda a, b: a not in b}
ROOTS = ("inputs", "steps")


class TemplateError(ValueError):
    """A template that cannot be read, or a path that is not in the data; the workflow turns
    it into a ``ConfigError`` naming the step and the field."""


@dataclass(frozen=True)
class Ref:
    """One ``{{ path }}`` tag: the path's parts and the tag as written."""

    path: tuple[str, ...]
    text: str

    @property
    def step(self) -> str | None:
        """The step this refers to (``steps.<id>...``), None for ``inputs``."""
        return self.path[1] if self.path[0] == "steps" and len(self.path) > 1 else None


@dataclass(frozen=True)
class Template:
    """A string compiled once at load: literal text and ``Ref``s, in order."""

    source: str
    parts: tuple[str | Ref, ...]

    @property
    def refs(self) -> list[Ref]:
        return [p for p in self.parts if isinstance(p, Ref)]

    def render(self, context: Mapping[str, Any]) -> Any:
        if len(self.parts) == 1 and isinstance(self.parts[0], Ref):
            return lookup(context, self.parts[0])
        return "".join(p if isinstance(p, str) else _text(lookup(context, p))
                       for p in self.parts)


@dataclass(frozen=True)
class Condition:
    """A compiled ``when:``: a tag, maybe negated, maybe compared with a literal."""

    source: str
    ref: Template
    negate: bool = False
    op: str | None = None
    literal: Any = None

    @property
    def refs(self) -> list[Ref]:
        return self.ref.refs

    def holds(self, context: Mapping[str, Any]) -> bool:
        value = self.ref.render(context)
        if self.op is not None:
            try:
                value = _OPS[self.op](value, self.literal)
            except TypeError as exc:
                raise TemplateError(f"when {self.source!r}: cannot compare {value!r} "
                                    f"{self.op} {self.literal!r} ({exc})") from None
        return not value if self.negate else bool(value)


def compile_template(text: str) -> Template:
    """``text`` as literal parts and references; a tag that is not a path raises."""
    parts: list[str | Ref] = []
    at = 0
    for match in _TAG.finditer(text):
        if match.start() > at:
            parts.append(text[at:match.start()])
        inner = match.group(1).strip()
        if not _PATH.fullmatch(inner):
            raise TemplateError(f"{match.group(0)!r} is not a reference: write "
                                "{{ inputs.name }} or {{ steps.<id>.output.key }} (dotted keys "
                                "and list indexes only, no expressions)")
        path = tuple(inner.split("."))
        if path[0] not in ROOTS:
            raise TemplateError(f"{match.group(0)!r}: unknown root {path[0]!r}; a reference "
                                "starts with inputs. or steps.")
        if path[0] == "steps" and (len(path) < 3 or path[2] not in ("output", "status")):
            raise TemplateError(f"{match.group(0)!r}: write steps.<id>.output (then keys) or "
                                "steps.<id>.status")
        parts.append(Ref(path, match.group(0)))
        at = match.end()
    if at < len(text):
        parts.append(text[at:])
    rest = "".join(p for p in parts if isinstance(p, str))
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"{text!r} has an unclosed {{{{ or a stray }}}}")
    return Template(text, tuple(parts))


def compile_condition(text: str | bool) -> Condition | bool:
    """A ``when:`` value: a bool stays a bool; a string must be one tag (see module)."""
    if isinstance(text, bool):
        return text
    match = _CONDITION.fullmatch(text)
    if match is None:
        raise TemplateError(f"when {text!r}: write one reference, optionally with 'not' "
                            "before it or a comparison (== != < <= > >= in, not in) and a "
                            "literal after it, e.g. \"{{ steps.check.output.ok }} == true\"")
    negate, tag, op, literal = match.groups()
    ref = compile_template(tag)
    value = None
    if op is not None:
        op = " ".join(op.split())
        try:
            value = ast.literal_eval(_json_words(literal.strip()))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            raise TemplateError(f"when {text!r}: {literal.strip()!r} is not a literal "
                                "(a quoted string, a number, true/false/null, a list)"
                                ) from None
    return Condition(text, ref, negate=bool(negate), op=op, literal=value)


def compile_tree(value: Any) -> Any:
    """``value`` with every string that holds a tag compiled (dicts and lists walked)."""
    if isinstance(value, str):
        return compile_template(value) if "{{" in value or "}}" in value else value
    if isinstance(value, Mapping):
        return {k: compile_tree(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [compile_tree(v) for v in value]
    return value


def render_tree(tree: Any, context: Mapping[str, Any]) -> Any:
    """``compile_tree``'s result with every template rendered against ``context``."""
    if isinstance(tree, Template):
        return tree.render(context)
    if isinstance(tree, dict):
        return {k: render_tree(v, context) for k, v in tree.items()}
    if isinstance(tree, list):
        return [render_tree(v, context) for v in tree]
    return tree


def tree_refs(tree: Any) -> list[Ref]:
    """Every reference in a compiled tree, in order."""
    if isinstance(tree, Template | Condition):
        return tree.refs
    if isinstance(tree, dict):
        return [r for v in tree.values() for r in tree_refs(v)]
    if isinstance(tree, list):
        return [r for v in tree for r in tree_refs(v)]
    return []


def lookup(context: Mapping[str, Any], ref: Ref) -> Any:
    """Walk ``ref.path`` over JSON data: dict keys and list indexes, nothing else."""
    value: Any = context
    for depth, key in enumerate(ref.path):
        where = ".".join(ref.path[:depth]) or "the context"
        if isinstance(value, Mapping):
            if key not in value:
                known = ", ".join(map(str, list(value)[:20])) or "none"
                raise TemplateError(f"{ref.text}: {where} has no key {key!r} (keys: {known})")
            value = value[key]
        elif isinstance(value, list):
            if not key.isdigit() or int(key) >= len(value):
                raise TemplateError(f"{ref.text}: {where} is a list of {len(value)}; "
                                    f"{key!r} is not an index in it")
            value = value[int(key)]
        else:
            raise TemplateError(f"{ref.text}: {where} is {_kind(value)}, which has no "
                                f"key {key!r}")
    return value


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list | bool) or value is None:
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _kind(value: Any) -> str:
    return "null" if value is None else f"a {type(value).__name__} ({_text(value)[:40]!r})"


def _json_words(literal: str) -> str:
    """YAML/JSON spellings of constants as Python's, outside quotes."""
    words = {"true": "True", "false": "False", "null": "None"}
    return re.sub(r"""("[^"]*"|'[^']*')|\b(true|false|null)\b""",
                  lambda m: m.group(1) or words[m.group(2)], literal)
