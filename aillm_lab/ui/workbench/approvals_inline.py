"""Approvals inside the chat: the Safety Guard's ``ask`` decision as Approve/Deny buttons in
the conversation of the session whose agent asked.

Why per session and not ``lab.tools.approver``: browser tabs share one Lab, so a Lab-wide
approver would show every tab's requests in whichever tab set it last. Each reply runs its
agent under ``approver_for_task(InlineApprovals.approve)`` (a context variable the guard
reads), so a request reaches only the chat that started the run. The guard awaits
``approve`` on the runner loop; the buttons live on the server's loop, so the request hops
there and the answer comes back through a future. An unanswered request is still a denial
after ``approvals.timeout_s``: the guard's timeout cancels the wait and the card says so.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

from aillm_lab.display import pre
from aillm_lab.tools.safety import ApprovalRequest

APPROVAL_USER = "Approval"


class InlineApprovals:
    """One chat's approver: ``pending`` lists the requests waiting for a click."""

    def __init__(self, chat: Any) -> None:
        self.chat = chat
        self.loop: asyncio.AbstractEventLoop | None = None  # where the chat's callback runs
        self.pending: list[ApprovalCard] = []

    async def approve(self, request: ApprovalRequest) -> bool:
        """The approver the guard awaits (on the runner loop): True only on Approve."""
        if self.loop is None:
            raise RuntimeError("the chat has not started a reply, so nobody can answer")
        future = asyncio.run_coroutine_threadsafe(self._ask(request), self.loop)
        try:
            return await asyncio.wrap_future(future)
        finally:
            future.cancel()  # the guard timed out or the run was cancelled: stop waiting

    async def _ask(self, request: ApprovalRequest) -> bool:
        card = ApprovalCard(request, asyncio.get_running_loop())
        self.pending.append(card)
        self.chat.send(card.view, user=APPROVAL_USER, respond=False)
        try:
            answer = await card.answer
        except asyncio.CancelledError:
            card.settle("No answer in time: denied (approvals.timeout_s).")
            raise
        finally:
            self.pending.remove(card)
        card.settle("**Approved.**" if answer else "**Denied.**")
        return answer


class ApprovalCard:
    """What the tool would do, why it asks, and the two buttons; a click settles ``answer``
    (clicks may arrive on a server thread, so they reach the loop thread-safely)."""

    def __init__(self, request: ApprovalRequest, loop: asyncio.AbstractEventLoop) -> None:
        import panel as pn

        self.request = request
        self.answer: asyncio.Future[bool] = loop.create_future()
        self.approve_button = pn.widgets.Button(label="Approve", color="success")
        self.deny_button = pn.widgets.Button(label="Deny", color="danger")
        self.approve_button.on_click(lambda _: loop.call_soon_threadsafe(self._decide, True))
        self.deny_button.on_click(lambda _: loop.call_soon_threadsafe(self._decide, False))
        self.status = pn.pane.Markdown("Waiting for your answer…", name="approval-status")
        self.view = pn.Column(pn.pane.HTML(describe(request), sizing_mode="stretch_width"),
                              pn.Row(self.approve_button, self.deny_button), self.status,
                              name="approval", sizing_mode="stretch_width")

    def click(self, approve: bool) -> None:
        """What a click on a button does (tests call it from any thread)."""
        (self.approve_button if approve else self.deny_button).clicks += 1

    def _decide(self, value: bool) -> None:
        if not self.answer.done():
            self.answer.set_result(value)

    def settle(self, text: str) -> None:
        self.approve_button.disabled = self.deny_button.disabled = True
        self.status.object = text


def describe(request: ApprovalRequest) -> str:
    """The request for a human: tool, risk, why, then the arguments (long text as a preview,
    so a file write shows what it would write)."""
    args = dict(request.arguments)
    body = ""
    for key in ("content", "text", "code", "command"):
        if isinstance(args.get(key), str) and len(args[key]) > 60:
            body += f"<div>{html.escape(key)}:</div>{pre(args.pop(key), 2000)}"
    return (f"<div>Approval needed: <b>{html.escape(request.tool)}</b> "
            f"({html.escape(request.risk)}) wants to run: {html.escape(request.reason)}</div>"
            f"<code>{html.escape(json.dumps(args, default=str))}</code>{body}")
