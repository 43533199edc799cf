"""Configuration errors that say where: the TOML file's line and column, and the fix.

Two moments fail loudly. Reading the file: ``read_toml`` raises ``ConfigFileError`` with the
path, line and column when the file cannot be read, is not UTF-8 or is not TOML, and keeps the
text so a later error can point at a line. Validating: ``config_error`` turns pydantic's
error list into one ``ConfigError`` that names every bad field, its value (never a secret's),
the allowed range and where to fix it (the call, the ``AILLM_*`` variable, the file's line),
with a did-you-mean for an unknown key. A UTF-8 byte order mark at the start of the file is
accepted and ignored: Windows editors write one, and refusing it would help no one.

``aillm_lab.config`` holds the settings themselves and re-exports what callers import from it.
"""

from __future__ import annotations

import codecs
import difflib
import re
import tomllib
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import annotated_types as at
from pydantic import AliasChoices, BaseModel, ValidationError

from aillm_lab.errors import ConfigError

_SECRET_FIELDS = {"openai_api_key", "anthropic_api_key", "openapi_auth"}


@dataclass(frozen=True)
class TomlFile:
    """A parsed TOML config file, kept with its text so errors can point at a line."""

    path: Path
    text: str
    data: dict[str, Any]


class ConfigFileError(ConfigError):
    """The TOML config file could not be read or parsed; ``path``, ``line`` and ``column``
    say where (``line``/``column`` are 1-based, None when unknown)."""

    def __init__(self, message: str, *, path: Path, line: int | None = None,
                 column: int | None = None) -> None:
        super().__init__(message, fields=("config_file",))
        self.path, self.line, self.column = path, line, column

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields survive pickling
        return (_rebuild_file_error, (str(self), self.path, self.line, self.column))


def _rebuild_file_error(message: str, path: Path, line: int | None,
                        column: int | None) -> ConfigFileError:
    return ConfigFileError(message, path=path, line=line, column=column)


def read_toml(path: Path) -> TomlFile:
    """Parse a TOML config file, or raise ``ConfigFileError`` naming it, the line and column.

    A UTF-8 BOM is dropped (the TOML spec has none, but Windows editors write one).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigFileError(f"config file {path}: cannot be read ({exc.strerror or exc}); "
                              "check that it is a readable file.", path=path) from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigFileError(f"config file {path}: is UTF-16 text; TOML must be UTF-8. "
                              "Save it again as UTF-8.", path=path, line=1, column=1)
    raw = raw.removeprefix(codecs.BOM_UTF8)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - raw.rfind(b"\n", 0, exc.start)
        raise ConfigFileError(
            f"config file {path}, line {line}, column {column}: byte "
            f"0x{raw[exc.start]:02x} is not UTF-8 text. A config file must be UTF-8 TOML; "
            "check that this is the right file.", path=path, line=line, column=column) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        line, column = (int(found[1]), int(found[2])) if found else (None, None)
        reason = re.sub(r"\s*\(at .*\)$", "", str(exc))
        if "overwrite" in reason or "declare" in reason:
            reason += " (a key or table is defined twice)"
        where = f", line {line}, column {column}" if line else ""
        raise ConfigFileError(f"config file {path}{where}: invalid TOML: {reason}. Fix the "
                              "syntax there.", path=path, line=line, column=column) from None
    return TomlFile(path=path, text=text, data=data)


def config_error(exc: ValidationError, model: type[BaseModel],
                 toml: TomlFile | None = None) -> ConfigError:
    """Turn pydantic's error list for ``model`` into one readable message that never echoes
    a secret.

    ``toml`` is the file being loaded, if any: a value that came from it is shown with its
    line.
    """
    lines, fields = [], []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        if loc:
            loc[0] = field_name_of(model, loc[0])
        field = ".".join(loc) or "settings"
        fields.append(field)
        secret = bool(loc) and loc[0] in _SECRET_FIELDS
        value = "'***'" if secret else repr(err.get("input"))
        env = f"AILLM_{loc[0].upper()}" if loc else "AILLM_*"
        where = "the TOML file" if toml is None else str(toml.path)
        if toml is not None and (line := _toml_line(toml, err["loc"], err.get("input"))):
            where = f"{toml.path} line {line}"
        if err["type"] == "extra_forbidden":  # from the call or the file: no variable
            close = difflib.get_close_matches(loc[-1], _names_at(model, loc[:-1]), n=1)
            fix = ("the call" if toml is None else where if " line " in where
                   else f"the call or in {where}")
            lines.append(f"unknown setting {field!r}"
                         + (f"; did you mean {close[0]!r}?" if close else "")
                         + f" Fix it in {fix}; the settings are listed in the LabSettings "
                         "docs.")
            continue
        lines.append(f"{field} = {value}: {err['msg']}. Allowed: {_allowed(model, loc, err)}. "
                     f"Fix it in the call, in ${env}, or in {where}.")
    return ConfigError("Invalid settings:\n  " + "\n  ".join(lines), fields=tuple(fields))


def is_bool(annotation: Any) -> bool:
    """``bool`` or ``bool | None``: the fields that must be given a real boolean (also
    ``aillm_lab.config``'s strict-boolean checks)."""
    if annotation is bool:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        return {a for a in get_args(annotation) if a is not type(None)} == {bool}
    return False


def field_name_of(model: type[BaseModel], name: str) -> str:
    """Map an alias (``OPENAI_API_KEY``) back to its field, so masking and hints apply."""
    for field, info in model.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        if name == field or name in choices:
            return field
    return name


def _names_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the settings table at ``loc`` (``[]``: the top level, ``["limits",
    "openai:x"]``: a ``ModelLimits``), for a did-you-mean on an unknown key."""
    annotation: Any = _unwrap(model)
    for part in loc:
        if _is_model(annotation) and part in annotation.model_fields:
            annotation = annotation.model_fields[part].annotation
        elif get_origin(annotation) in (dict, list):  # a table's key or a list's index
            annotation = get_args(annotation)[-1]
        else:
            return []
        annotation = _unwrap(annotation)
    return list(annotation.model_fields) if _is_model(annotation) else []


def _unwrap(annotation: Any) -> Any:
    """``X | None`` → ``X``, so optional tables are walked like required ones."""
    if get_origin(annotation) in (Union, types.UnionType):
        return next((a for a in get_args(annotation) if a is not type(None)), annotation)
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _toml_line(toml: TomlFile, loc: tuple[Any, ...], value: Any) -> int | None:
    """The line that sets ``loc`` in the file, if the failing ``value`` is the file's own."""
    data: Any = toml.data
    for part in loc:
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    if data != value or type(data) is not type(value):
        return None  # an override or the environment supplied it, not this file
    want = [str(p) for p in loc]
    table: list[str] = []
    for number, line in enumerate(toml.text.splitlines(), 1):
        header = re.match(r"\s*\[\[?([^\]]+)\]", line)
        if header:
            table = _toml_key(header[1])
            continue
        key = re.match(r"\s*([^=#\[]+?)\s*=", line)
        if key and table + _toml_key(key[1]) == want:
            return number
    return None


def _toml_key(text: str) -> list[str]:
    """The parts of a (dotted, maybe quoted) TOML key: ``limits."openai:x"`` → 2 parts."""
    return [a or b or c.strip() for a, b, c in
            re.findall(r'"([^"]*)"|\'([^\']*)\'|([^."\']+)', text) if (a or b or c.strip())]


def _allowed(model: type[BaseModel], loc: list[str], err: Any) -> str:
    field = model.model_fields.get(loc[0]) if loc else None
    if field is not None and loc[0] in ("limits", "prices") and len(loc) >= 3:
        inner = get_args(field.annotation)[-1]  # ModelLimits or ModelPrice, by key
        field = inner.model_fields.get(loc[2])
    elif field is not None and len(loc) >= 2:  # nested models such as safety.commands.x
        for part in loc[1:]:
            sub = field.annotation if isinstance(field.annotation, type) else None
            if sub is None or not issubclass(sub, BaseModel) or part not in sub.model_fields:
                break
            field = sub.model_fields[part]
    if field is None:
        return str(err.get("ctx") or "see the LabSettings docs")
    if is_bool(field.annotation):
        return "true or false (unquoted in TOML and JSON)"
    bounds = {type(m).__name__: m for m in field.metadata}
    low = bounds.get("Ge") or bounds.get("Gt")
    high = bounds.get("Le") or bounds.get("Lt")
    parts = []
    if low is not None:
        parts.append(f"{'>=' if isinstance(low, at.Ge) else '>'} {_bound(low)}")
    if high is not None:
        parts.append(f"{'<=' if isinstance(high, at.Le) else '<'} {_bound(high)}")
    if parts:
        return " and ".join(parts)
    if loc and loc[0] in ("model", "fallbacks", "embedding_model"):
        return "'provider:model', e.g. 'local:smollm2' or 'openai:gpt-4o-mini'"
    return str(field.annotation).replace("typing.", "")


def _bound(constraint: Any) -> Any:
    for name in ("ge", "gt", "le", "lt"):
        if hasattr(constraint, name):
            return getattr(constraint, name)
    return constraint
