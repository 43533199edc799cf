"""Typed errors: each message says what went wrong and what to do next."""

from __future__ import annotations


class AillmError(Exception):
    """Base class, so callers can catch everything the lab raises on purpose."""


class ConfigError(AillmError, ValueError):
    """A setting failed validation; the message names the field, the value and the range."""

    def __init__(self, message: str, *, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


class RegistryError(AillmError, KeyError):
    """A name was registered twice or could not be found."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelNotAvailable(AillmError, RuntimeError):
    """The model cannot be used here; the message gives the command that fixes it."""


class RunnerError(AillmError, RuntimeError):
    """A sync facade was misused, e.g. called from the runner's own thread."""


class StructuredOutputError(AillmError, ValueError):
    """The model did not produce output matching the requested schema."""

    def __init__(self, message: str, *, raw: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.raw = raw
        self.attempts = attempts


class UnsupportedInput(AillmError, ValueError):
    """The chosen model cannot take this input (for example images on a text-only model)."""
