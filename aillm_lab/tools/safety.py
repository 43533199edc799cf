"""``SafetyGuard``: the one door every tool call goes through (ARCHITECTURE.md, invariant 8).

Pipeline: validate the arguments -> approval (``auto | ask | deny`` from the policy, by
tool name over risk level) -> run the tool (its own path/command/network/SQL/code checks
raise ``SafetyViolation``) -> render the result as text -> redact secrets -> scan for prompt
injection and fence suspicious output as data -> cap its size -> write an audit row.
Every outcome is audited: allowed, refused (a safety rule), denied (approval) and error.
The row is committed before the result is returned for the risk levels the policy lists in
``audit.durable`` (write, execute, network by default); other rows are group-committed
within 0.1 s (``AuditLog``), so a cheap read does not pay for a commit of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from pydantic import BaseModel, Field, ValidationError
from pydantic_core import to_json

from aillm_lab.errors import SafetyViolation, ToolError
from aillm_lab.tools.audit import AuditEntry, AuditLog
from aillm_lab.tools.audit import Decision as AuditDecision
from aillm_lab.tools.base import Tool, ToolResult
from aillm_lab.tools.policy import Decision, SafetyPolicy
from aillm_lab.tools.redact import Redactor
from aillm_lab.tools.scan import scan_injection, wrap_as_data

MAX_ERROR_CHARS = 2000
_MAX_CELL_CHARS = 500  # a table cell longer than this is shown cut, with "..."
# C0 and C1 control characters but tab, newline and carriage return, NUL and DEL: shown as
# \xNN, so output cannot clear a screen, set a clipboard (OSC 52) or hide text from a reader
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), 0x0b, 0x0c, *range(0x0e, 0x20),
                                        *range(0x7f, 0xa0))}
_EDGE = 4096  # chars past the cap still redacted, so no secret (or PEM block) is half-shown
_DENIAL_RULES = {"approval.denied", "approval.denied_by_policy", "approval.timeout",
                 "approval.failed"}


class ApprovalRequest(BaseModel):
    """What an approver sees: the call (arguments already redacted) and why it is asked."""

    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    risk: str
    reason: str
    call_id: str | None = None


Approver = Callable[[ApprovalRequest], bool | Awaitable[bool]]
# The approver of the task at hand (one chat session's agent run); it wins over the guard's
# own, so two sessions sharing one Lab each answer only their own agents' requests.
_task_approver: contextvars.ContextVar[Approver | None] = contextvars.ContextVar(
    "aillm_task_approver", default=None)


@contextlib.contextmanager
def approver_for_task(approver: Approver) -> Iterator[None]:
    """Answer the ``ask`` decisions of the tool calls started inside this block (and the
    tasks it starts, which copy the context) with ``approver`` instead of the guard's."""
    token = _task_approver.set(approver)
    try:
        yield
    finally:
        _task_approver.reset(token)


class SafetyGuard:
    """Run tools under a ``SafetyPolicy``; ``call`` raises on refusal, ``invoke`` never does
    (the same doors as ``Toolbox.call`` and ``Toolbox.invoke``).

    ``approver`` answers ``ask`` decisions (sync functions run in a thread, so a slow human
    never blocks the loop); ``secrets`` are exact values to hide from output and the audit.
    """

    def __init__(self, policy: SafetyPolicy | None = None, *, audit: AuditLog | None = None,
                 approver: Approver | None = None, secrets: Iterable[str] = ()) -> None:
        self.policy = policy or SafetyPolicy()
        self.audit = audit
        self.approver = approver
        self.redactor = Redactor(secrets)

    def __repr__(self) -> str:
        return f"SafetyGuard(audit={self.audit!r}, approver={self.approver!r})"

    def decision(self, tool: Tool) -> Decision:
        """``auto``, ``ask`` or ``deny`` for this tool: by tool name first, then by risk."""
        approvals = self.policy.approvals
        if tool.name in approvals.by_tool:
            return approvals.by_tool[tool.name]
        return approvals.by_risk.get(tool.risk.value, "auto")

    async def call(self, tool: Tool, arguments: dict[str, Any],
                  call_id: str | None = None) -> ToolResult:
        """The checked, rendered result; raises ``SafetyViolation`` (redacted) on refusal.

        Bad arguments raise pydantic's ``ValidationError`` and a failing tool its own error,
        after the call is audited; if that error's text holds a secret, a ``ToolError`` with
        the redacted text is raised instead (keys never reach errors).
        """
        return await self._execute(tool, arguments, call_id, raise_errors=True)

    async def invoke(self, tool: Tool, arguments: dict[str, Any],
                     call_id: str | None = None) -> ToolResult:
        """Like ``call``, but refusals and errors come back as ``ToolResult(ok=False)``.

        This is the agents' door: the model reads ``content`` (the error) and can fix the
        call. Cancellation and ``KeyboardInterrupt`` still propagate.
        """
        return await self._execute(tool, arguments, call_id, raise_errors=False)

    # -- pipeline --------------------------------------------------------------------------
    async def _execute(self, tool: Tool, arguments: dict[str, Any], call_id: str | None,
                       *, raise_errors: bool) -> ToolResult:
        start = time.perf_counter()
        arguments = {} if arguments is None else arguments  # a model's "no arguments"
        shown_args = self._shown_arguments(arguments)
        try:
            check_text(arguments)
            kwargs = tool.validate(arguments)
            await self._approve(tool, shown_args, call_id)
            value = await tool.acall_validated(kwargs)
        except SafetyViolation as exc:
            detail = self._clean(exc.detail)
            result = self._failure(tool, call_id, f"Refused by the safety policy "
                                   f"[{exc.rule}]: {detail}", rule=exc.rule)
            decision: AuditDecision = "denied" if exc.rule in _DENIAL_RULES else "refused"
            await self._record(tool, shown_args, call_id, start, result, decision)
            if raise_errors:
                if result.injection:  # the detail quotes outside text: fenced, as shown
                    raise SafetyViolation(exc.rule, wrap_as_data(
                        detail, tool.name, result.injection, what="error")) from None
                if detail == exc.detail:
                    raise
                raise SafetyViolation(exc.rule, detail) from None  # the secret-free copy
            return result
        except Exception as exc:
            message = (validation_message(tool, exc) if isinstance(exc, ValidationError) else
                       f"Tool {tool.name!r} failed: {type(exc).__name__}: {exc}. Check the "
                       f"arguments, or try another approach.")
            result = self._failure(tool, call_id, self._clean(message))
            await self._record(tool, shown_args, call_id, start, result, "error")
            if not raise_errors:
                return result
            if not result.injection and self._clean(str(exc)) == str(exc):
                raise
            raise ToolError(result.content) from None  # the original names a secret or
            # quotes an injection: the caller gets the redacted, fenced text
        result, size = self._success(tool, call_id, value)
        await self._record(tool, shown_args, call_id, start, result, "allowed", size)
        return result

    async def _approve(self, tool: Tool, shown_args: dict[str, Any],
                       call_id: str | None) -> None:
        """Raise ``SafetyViolation`` unless the policy (or the approver) lets the call run."""
        decision = self.decision(tool)
        forced = None
        if decision == "auto" and tool.approval_reason is not None:
            forced = await tool.approval_reason()  # the tool cannot run safely unattended
            decision = "ask" if forced else decision
        if decision == "auto":
            return
        source = (f"approvals.by_tool[{tool.name!r}]" if tool.name in
                  self.policy.approvals.by_tool else f"approvals.by_risk[{tool.risk.value!r}]")
        if decision == "deny":
            raise SafetyViolation("approval.denied_by_policy", f"{source} is 'deny', so "
                                  f"{tool.name!r} never runs; use another tool or ask the user "
                                  f"to change the policy.")
        reason = forced or f"{source} is 'ask' for this {tool.risk.value} tool"
        approver = _task_approver.get() or self.approver
        if approver is None:
            raise SafetyViolation("approval.no_approver", f"{reason}, but no approver is set; "
                                  f"set toolbox.approver (a function taking an "
                                  f"ApprovalRequest and returning True/False).")
        request = ApprovalRequest(tool=tool.name, arguments=shown_args, risk=tool.risk.value,
                                  reason=reason, call_id=call_id)
        approved = await self._ask(request, approver)
        if not approved:
            raise SafetyViolation("approval.denied", f"the user did not approve this call to "
                                  f"{tool.name!r}; do not retry it unchanged, ask the user "
                                  f"what they want instead.")

    async def _ask(self, request: ApprovalRequest, approver: Approver) -> bool:
        """The approver's answer (only ``True`` approves); timeouts and errors deny."""
        timeout = self.policy.approvals.timeout_s
        try:
            async with asyncio.timeout(timeout):
                if _is_async(approver):
                    answer = await approver(request)  # type: ignore[misc]
                else:
                    loop = asyncio.get_running_loop()
                    answer = await loop.run_in_executor(None, approver, request)
                if inspect.isawaitable(answer):
                    answer = await answer
        except TimeoutError:
            raise SafetyViolation("approval.timeout", f"no answer from the approver within "
                                  f"{timeout:g} s (approvals.timeout_s), so the call was "
                                  f"not run.") from None
        except Exception as exc:
            raise SafetyViolation("approval.failed", f"the approver raised {type(exc).__name__}"
                                  f": {exc}; the call was not run.") from None
        return answer is True

    def _success(self, tool: Tool, call_id: str | None, value: Any) -> tuple[ToolResult, int]:
        """The model-ready result, and the rendered size before the cap (for the audit).

        Only the part that can be shown (plus a margin, so a secret cut at the edge is still
        recognised) is redacted and scanned: a 5 MB output costs what 20 kB costs.
        """
        out = self.policy.output
        text = render(value)
        limit = min(tool.max_result_chars, out.max_chars)
        size = len(text)
        if size > limit + _EDGE:
            text = text[:limit + _EDGE]
        text = text.translate(_CONTROLS)  # escapes a terminal or UI would act on
        if out.redact_secrets:
            text = self.redactor.redact(text)
        total = size if size > limit + _EDGE else len(text)
        truncated = len(text) > limit
        if truncated:
            text = text[:limit]
        markers = scan_injection(text) if out.scan_injection else []
        if truncated:
            text += (f"\n[truncated: {limit:,} of {total:,} chars shown; ask for a smaller "
                     f"part, e.g. a line range, a filter or a LIMIT]")
        if markers:
            text = wrap_as_data(text, tool.name, markers)
        return ToolResult(name=tool.name, call_id=call_id, content=text, truncated=truncated,
                          injection=markers, value=value), size

    def _failure(self, tool: Tool, call_id: str | None, message: str,
                 rule: str | None = None) -> ToolResult:
        """A refusal or error as the model reads it (``message`` is already redacted).

        An error can quote outside text (an HTTP reason phrase, a parser's view of a bad
        response, a row a query choked on), so it gets what output gets: control
        characters escaped, the injection scan, and the data fence when that finds any.
        """
        message = message if len(message) <= MAX_ERROR_CHARS else (
            message[:MAX_ERROR_CHARS] + " …[error truncated]")
        message = message.translate(_CONTROLS)
        markers = scan_injection(message) if self.policy.output.scan_injection else []
        if markers:
            message = wrap_as_data(message, tool.name, markers, what="error")
        return ToolResult(name=tool.name, call_id=call_id, ok=False, content=message,
                          error=message, rule=rule, injection=markers)

    async def _record(self, tool: Tool, shown_args: dict[str, Any], call_id: str | None,
                      start: float, result: ToolResult, decision: AuditDecision,
                      size: int | None = None) -> None:
        if self.audit is None:
            return
        durable = tool.risk.value in self.policy.audit.durable
        await self.audit.record(AuditEntry(
            tool=tool.name, call_id=call_id, arguments=shown_args, risk=tool.risk.value,
            decision=decision, rule=result.rule,
            duration_ms=(time.perf_counter() - start) * 1000,
            result_chars=len(result.content) if size is None else size,
            truncated=result.truncated, injection=result.injection, error=result.error),
            durable=durable)

    def _shown_arguments(self, arguments: Any) -> dict[str, Any]:
        """Arguments as the approver and the audit log may see them: secrets redacted,
        text that is not valid UTF-8 escaped (so the audit row can always be written)."""
        if not isinstance(arguments, dict):
            return {"__invalid__": self._clean(_printable(repr(arguments)))}
        shown = _map_text(arguments, _printable)
        if not self.policy.output.redact_secrets:
            return dict(shown)
        return self.redactor.redact_value(shown)

    def _clean(self, text: str) -> str:
        return self.redactor.redact(text) if self.policy.output.redact_secrets else text


def check_text(value: Any, where: str = "arguments") -> None:
    """Refuse text that is not valid UTF-8 (a lone surrogate) anywhere in the arguments.

    Why: such a string cannot be encoded for a program, a file name, SQLite or a vendor
    API, so it would fail deep inside a tool (or the audit writer) instead of here.
    """
    if isinstance(value, str):
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise SafetyViolation("arguments.invalid_text", f"{where} holds text that is "
                                      f"not valid UTF-8 (a lone surrogate "
                                      f"{value[exc.start]!r} at position {exc.start}); send "
                                      f"plain Unicode text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_text(key, f"{where} (a key)")
            check_text(item, f"{where}.{key}" if isinstance(key, str) else where)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_text(item, f"{where}[{i}]")


def _printable(text: str) -> str:
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _map_text(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {_map_text(k, fn): _map_text(v, fn) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_map_text(v, fn) for v in value)
    return value


def render(value: Any) -> str:
    """Tool output as text: str as is, models and containers as JSON, frames as tables."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    module = type(value).__module__
    if module.startswith("pandas") and hasattr(value, "to_string"):
        return _frame_text(value)
    if isinstance(value, dict | list | tuple | int | float | bool) or (
            dataclasses.is_dataclass(value) and not isinstance(value, type)):
        return to_json(value, fallback=str).decode()
    return repr(value)


def validation_message(tool: Tool, exc: ValidationError) -> str:
    """One line per bad field, then the expected parameters, so the model can fix the call."""
    lines = []
    for err in exc.errors(include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "arguments"
        if err["type"] == "extra_forbidden":
            lines.append(f"- {field}: unknown argument (remove it)")
        elif err["type"] == "missing":
            lines.append(f"- {field}: required argument is missing")
        else:
            got = repr(err.get("input"))
            got = got if len(got) <= 80 else got[:77] + "..."
            lines.append(f"- {field}: {err['msg']} (got {got})")
    props = tool.spec.parameters.get("properties", {})
    required = set(tool.spec.parameters.get("required", []))
    expected = ", ".join(f"{name} ({_type_name(prop)}{', required' if name in required else ''})"
                         for name, prop in props.items()) or "none"
    return (f"Invalid arguments for tool {tool.name!r}:\n" + "\n".join(lines)
            + f"\nExpected parameters: {expected}. Fix the arguments and call again.")


def _type_name(prop: dict[str, Any]) -> str:
    if "type" in prop:
        return str(prop["type"])
    if "enum" in prop:
        return "one of " + "/".join(map(str, prop["enum"]))
    options = prop.get("anyOf") or prop.get("oneOf")
    if options:
        return " or ".join(_type_name(o) for o in options)
    return "object" if "$ref" in prop else "any"


def _frame_text(value: Any, max_rows: int = 60) -> str:
    """A tool's own note first (``attrs["note"]``, e.g. SQL caps: the output cap must not cut
    it off), then the table with long cells shortened, then its size when cut."""
    shape = getattr(value, "shape", None)
    text = value.to_string(max_rows=max_rows, max_cols=30, max_colwidth=_MAX_CELL_CHARS)
    rows = shape[0] if shape else 0
    if rows > max_rows:
        text = f"{text}\n[{rows:,} rows in all]"
    note = getattr(value, "attrs", {}).get("note")
    return f"{note}\n{text}" if note else text


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None))  # noqa: B004 - an async callable object


__all__ = ["ApprovalRequest", "Approver", "SafetyGuard", "approver_for_task", "check_text",
           "render", "validation_message"]
