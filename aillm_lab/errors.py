"""Typed errors: each message says what went wrong and what to do next.

Every error the lab raises on purpose is an ``AillmError`` and also the builtin a caller
would expect (``ValueError``, ``KeyError`` …), so ``except ValueError`` keeps working.
The tree (``*`` marks errors defined beside their concept and exported from ``aillm_lab``)::

    AillmError
    ├── ConfigError (ValueError)            ── ConfigFileError*
    ├── RegistryError (KeyError)
    ├── ModelNotAvailable (RuntimeError)
    ├── RunnerError (RuntimeError)
    ├── StructuredOutputError (ValueError)
    ├── UnsupportedInput (ValueError)
    ├── ProviderError (RuntimeError)
    │   ├── ProviderConnectionError         ── ProviderTimeout*
    │   ├── RateLimited, ProviderUnavailable, AuthenticationError, BadRequest
    │   └── StreamInterrupted
    ├── BudgetExceeded (RuntimeError)
    ├── ReplayMiss (LookupError)
    ├── SafetyViolation (PermissionError)   ── QueryTimeout* (also TimeoutError)
    ├── ToolError (RuntimeError)
    ├── CallLogError (RuntimeError)
    ├── LabDBError (sqlite3.DatabaseError)
    │   └── LabDBOperationalError           ── LabDBBusy
    │   LabDBIdentityError
    └── near their concept: RagError, EmbeddingError, LoaderError, UnsupportedFile,
        ChunkingError, ContextOverflow, ScriptExhausted, DatabaseError, CommandError,
        FileToolError, FetchError, SandboxUnavailable, MemoryNotFound, MemoryInputError,
        MemoryBusy
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any


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
    """The model cannot be used here; the message gives the command that fixes it.

    ``missing`` maps each model considered to what it lacked (``lab.select_model``), so a
    caller can read the reasons without parsing the message.
    """

    def __init__(self, message: str, *, missing: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.missing = dict(missing or {})


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


class ProviderError(AillmError, RuntimeError):
    """A model provider failed a call; ``retryable`` tells the gateway whether to try again.

    Providers translate their SDK's exceptions into this family, so the gateway's single
    retry loop never needs to know a vendor. ``vendor_message`` is the provider's own text.
    """

    retryable_by_default = False

    def __init__(self, message: str, *, provider: str = "", model: str = "",
                 status: int | None = None, vendor_message: str = "",
                 retry_after_s: float | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.provider, self.model, self.status = provider, model, status
        self.vendor_message = vendor_message
        self.retry_after_s = retry_after_s
        self.retryable = self.retryable_by_default if retryable is None else retryable


class ProviderConnectionError(ProviderError):
    """The server could not be reached, reset the connection or timed out; retryable."""

    retryable_by_default = True


class RateLimited(ProviderError):
    """HTTP 429; ``retry_after_s`` comes from ``Retry-After`` or ``retry-after-ms``."""

    retryable_by_default = True


class ProviderUnavailable(ProviderError):
    """HTTP 408, 409, 5xx or Anthropic's 529 overloaded; retryable."""

    retryable_by_default = True


class AuthenticationError(ProviderError):
    """HTTP 401/403: the key is missing, wrong or lacks access; never retried."""


class MissingKey(AuthenticationError, ModelNotAvailable):
    """No API key is set for a hosted model, so it cannot be used here: the gateway falls
    back to the next model as for any unavailable one, and code that catches
    ``AuthenticationError`` still catches it. A key the server rejects is a plain
    ``AuthenticationError`` (raised, never hidden behind a fallback)."""

    def __init__(self, message: str, *, provider: str = "", model: str = "") -> None:
        ProviderError.__init__(self, message, provider=provider, model=model)
        self.missing = {model: ["an API key"]} if model else {}


class BadRequest(ProviderError):
    """HTTP 400/404/422: the request itself is wrong (unknown model, bad schema); not retried."""


class StreamInterrupted(ProviderError):
    """A stream broke after its first byte; never retried, since tokens were already shown."""


class BudgetExceeded(AillmError, RuntimeError):
    """A call could overshoot a USD budget, so it was refused before any request was sent."""


class ReplayMiss(AillmError, LookupError):
    """Replay mode found no recording for a request; the message names the request."""


class SafetyViolation(AillmError, PermissionError):
    """The Safety Guard refused a tool call; ``rule`` names the policy, ``detail`` says why.

    Agents turn it into a tool result, so the message is written for the model as much as
    for the user: what was refused and what would be allowed instead.
    """

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(f"{rule}: {detail}")
        self.rule, self.detail = rule, detail

    def __reduce__(self) -> tuple[Any, ...]:  # survive pickling across processes
        return (type(self), (self.rule, self.detail))


class ToolError(AillmError, RuntimeError):
    """A tool was misdefined or misused by the caller (not by the model): fix the code."""


class CallLogError(AillmError, RuntimeError):
    """A call-log file cannot be read; ``path`` names it and the message says what to do."""

    def __init__(self, message: str, *, path: str | Path = "") -> None:
        super().__init__(message)
        self.path = Path(path) if path else None


class LabDBError(AillmError, sqlite3.DatabaseError):
    """``lab.db`` cannot be used as it is; ``path`` names the file, the message the fix.

    Also a ``sqlite3.DatabaseError``, so code that caught SQLite's own errors still does;
    the original error, when there is one, is the ``__cause__``.
    """

    def __init__(self, message: str, *, path: str | Path = "") -> None:
        super().__init__(message)
        self.path = Path(path) if path else None


class LabDBOperationalError(LabDBError, sqlite3.OperationalError):
    """SQLite refused an operation on ``lab.db`` (no such table, disk full, read-only …)."""


class LabDBBusy(LabDBOperationalError):
    """Another connection held ``lab.db``'s lock past ``busy_timeout_ms``; retry later."""


class LabDBIdentityError(LabDBError):
    """``lab.db`` is missing, empty or another home's, while ``lab.db.id`` names the one
    this home had: restore it from a backup, or ``aillm-lab reset --confirm``."""

    def __init__(self, message: str, *, path: str | Path = "", expected_id: str = "",
                 found_id: str | None = None) -> None:
        super().__init__(message, path=path)
        self.expected_id, self.found_id = expected_id, found_id
