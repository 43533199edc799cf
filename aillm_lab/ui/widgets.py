"""Notebook widgets (ipywidgets): ``al.ui.chat()``, ``al.ui.trace(run)`` and
``al.ui.approvals(lab)``.

Each widget starts its work on the Lab's runner loop and returns at once, so the kernel stays
responsive while a reply streams or an agent waits for a human: widget callbacks run on the
kernel's thread, model and tool calls on the runner's, and the two meet only through futures
(``run_coroutine_threadsafe`` one way, ``call_soon_threadsafe`` the other).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import html
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from aillm_lab.agents.display import step_html
from aillm_lab.display import pre
from aillm_lab.ui.workbench.approvals_inline import describe

if TYPE_CHECKING:
    from aillm_lab import AgentRun, ApprovalRequest, Lab


def _lab(lab: Lab | None) -> Lab:
    import aillm_lab

    return lab if lab is not None else aillm_lab.default_lab()


class ChatWidget(w.VBox):
    """A prompt box, Send and Stop, model and agent pickers, and the reply streaming into
    ``reply``; an agent's answer is followed by its trace (``trace_box``, ``run``).

    ``updates`` counts the times the reply was redrawn (one per streamed piece); ``stop()``
    cancels the call or run in flight on the runner loop, which ends it within a second.
    ``data`` are the tables the data analysis agent queries (name -> DataFrame or path)."""

    def __init__(self, lab: Lab | None = None, models: list[str] | None = None,
                 data: dict[str, Any] | None = None) -> None:
        from aillm_lab.ui.agent_choices import AGENT_CHOICES

        self.lab = _lab(lab)
        if data is not None and (data or not isinstance(data, Mapping)):
            _check_tables(self.lab, data)
        self.data = dict(data or {})
        self.run: AgentRun | None = None
        # None is the Lab's own default model (it may be an object, not a name)
        choices: list[tuple[str, str | None]] = [
            (f"{self.lab.default_model_id} (default)", None),
            *((m, m) for m in models or () if m != self.lab.default_model_id)]
        self.model = w.Dropdown(options=choices, value=None, description="model")
        self.agent = w.Dropdown(options=[(c.label, key) for key, c in AGENT_CHOICES.items()],
                                value="chat", description="agent")
        self.prompt = w.Textarea(placeholder="Ask something…", layout=w.Layout(width="100%"))
        self.send_button = w.Button(description="Send", button_style="primary")
        self.stop_button = w.Button(description="Stop", disabled=True)
        self.reply = w.HTML()
        self.status = w.HTML()
        self.trace_box = w.VBox()
        self.updates = 0
        self._future: concurrent.futures.Future[str] | None = None
        self.send_button.on_click(lambda _: self.send())
        self.stop_button.on_click(lambda _: self.stop())
        super().__init__([w.HBox([self.model, self.agent]), self.prompt,
                          w.HBox([self.send_button, self.stop_button]), self.reply, self.status,
                          self.trace_box])

    def send(self, text: str | None = None) -> concurrent.futures.Future[str]:
        """Start a streamed reply to ``text`` (default: the prompt box); returns its future."""
        prompt = (text if text is not None else self.prompt.value).strip()
        if not prompt:
            self.status.value = "<i>Write a prompt first.</i>"
            raise ValueError("the prompt is empty: write a prompt first")
        self.stop()
        self.reply.value, self.status.value, self.updates = "", "<i>…</i>", 0
        self.run, self.trace_box.children = None, ()
        self.send_button.disabled, self.stop_button.disabled = True, False
        work = self._stream(prompt, self.model.value) if self.agent.value == "chat" else \
            self._agent(prompt, self.model.value, self.agent.value)
        future = asyncio.run_coroutine_threadsafe(work, self.lab.runner.loop)
        future.add_done_callback(self._done)
        self._future = future
        return future

    def stop(self) -> None:
        """Cancel the reply in flight, if any (from any thread)."""
        if self._future is not None and not self._future.done():
            self._future.cancel()

    async def _stream(self, prompt: str, model: str | None) -> str:
        text = ""
        async for event in self.lab.astream(prompt, model):
            if event.type == "text" and event.text:
                text += event.text
                self.reply.value = pre(text)
                self.updates += 1
        return text

    async def _agent(self, prompt: str, model: str | None, key: str) -> str:
        """Run the picked agent: its tokens and a line per tool call stream into ``reply``,
        then its answer, and its trace below."""
        from aillm_lab.core.orchestrator import output_text
        from aillm_lab.errors import BadRequest
        from aillm_lab.ui.agent_choices import AGENT_CHOICES, agent_events

        choice = AGENT_CHOICES[key]
        assert choice.make is not None
        inputs: dict[str, Any] = {}
        if choice.tables:
            if not self.data:
                raise BadRequest("the data analysis agent needs tables: pass "
                                 "al.ui.chat(data={'name': df_or_path})")
            inputs["data"] = self.data
        agent = choice.make(self.lab, model)
        text, lines = "", []
        try:
            async for event in agent_events(agent, prompt, inputs):
                if event.type == "token":
                    text += event.text
                elif event.type == "tool_call" and event.tool_call is not None:
                    lines.append(f"calling {event.tool_call.name}…")
                elif event.type == "final" and event.run is not None:
                    self.run = event.run
                    continue
                else:
                    continue
                self.reply.value = pre("\n".join([*lines, text]))
                self.updates += 1
        finally:
            if hasattr(agent, "aclose"):
                await agent.aclose()
        if self.run is None:
            return text
        answer = output_text(self.run)
        self.reply.value = pre(answer)
        self.updates += 1
        self.trace_box.children = (TraceWidget(self.run),)
        if self.run.status != "completed":
            self.status.value = (f"<b>{html.escape(self.run.status)}</b>: "
                                 f"{html.escape(self.run.error or 'no answer')}")
        return answer

    def _done(self, future: concurrent.futures.Future[str]) -> None:
        self.send_button.disabled, self.stop_button.disabled = False, True
        if future.cancelled():
            self.status.value = "<i>stopped</i>"
        elif (exc := future.exception()) is not None:
            self.status.value = f"<b>{html.escape(type(exc).__name__)}</b>: " \
                                f"{html.escape(str(exc))}"
        elif self.run is None or self.run.status == "completed":
            self.status.value = ""


def _check_tables(lab: Lab, data: Any) -> None:
    """Refuse bad ``data=`` when the widget is made, with the error the data analysis agent
    itself gives (its own check, so the two never disagree), not at the first Send."""
    from aillm_lab.agents.data_analysis import check_data

    check_data(data, lab.tools.workspace)


class ApprovalsWidget(w.VBox):
    """The Safety Guard's approver as Approve/Deny buttons: each ``ask`` call shows its tool,
    reason and arguments (a file write shows the text it would write) and waits on the
    runner loop for a click; the kernel stays free meanwhile. Set as ``lab.tools.approver``."""

    def __init__(self, lab: Lab | None = None) -> None:
        self.lab = _lab(lab)
        self.pending: list[tuple[ApprovalRequest, w.Button, w.Button]] = []
        self._lock = threading.Lock()
        self.header = w.HTML("<b>Approvals</b>: none waiting")
        super().__init__([self.header])
        self.lab.tools.approver = self.approve

    async def approve(self, request: ApprovalRequest) -> bool:
        """The approver the guard awaits: True only when Approve is clicked."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()

        def decide(value: bool) -> None:
            if not answer.done():
                answer.set_result(value)

        yes = w.Button(description="Approve", button_style="success")
        no = w.Button(description="Deny", button_style="danger")
        yes.on_click(lambda _: loop.call_soon_threadsafe(decide, True))
        no.on_click(lambda _: loop.call_soon_threadsafe(decide, False))
        card = w.VBox([w.HTML(describe(request)), w.HBox([yes, no])])
        entry = (request, yes, no)
        self._show(entry, card, add=True)
        try:
            return await answer
        finally:
            self._show(entry, card, add=False)

    def _show(self, entry: tuple[ApprovalRequest, w.Button, w.Button], card: w.VBox, *,
              add: bool) -> None:
        with self._lock:
            if add:
                self.pending.append(entry)
                self.children = (*self.children, card)
            else:
                self.pending = [e for e in self.pending if e is not entry]
                self.children = tuple(c for c in self.children if c is not card)
            waiting = len(self.pending)
        self.header.value = f"<b>Approvals</b>: {waiting or 'none'} waiting"


class TraceWidget(w.Accordion):
    """An ``AgentRun`` as one collapsible section per step: the model's reply, each tool call
    with its arguments and result, tokens, cost and latency."""

    def __init__(self, run: AgentRun) -> None:
        from aillm_lab.agents.run import AgentRun

        if not isinstance(run, AgentRun):
            raise TypeError(f"al.ui.trace() takes an AgentRun (what agent.run(...) returns, "
                            f"or lab.load_run(run_id)), not {type(run).__name__} {run!r:.60}")
        self.run = run
        sections = [w.HTML(step_html(step)) for step in run.steps]
        super().__init__(sections)
        for i, step in enumerate(run.steps):
            calls = ", ".join(c.name for c in step.tool_calls) or "answer"
            self.set_title(i, f"step {step.index}: {calls}")


def chat(lab: Lab | None = None, models: list[str] | None = None,
         data: dict[str, Any] | None = None) -> ChatWidget:
    """A streaming chat widget on ``lab`` (default: ``al.default_lab()``) with model and
    agent pickers; ``data`` are the tables its data analysis agent may query."""
    return ChatWidget(lab, models, data)


def trace(run: AgentRun) -> TraceWidget:
    """Browse an ``AgentRun`` step by step."""
    return TraceWidget(run)


def dashboard(lab: Lab | None = None, *, max_tokens: int = 256) -> Any:
    """The workbench's tabs (Chat, Documents, Data, Runs and calls, Memory, Settings) inline
    in the notebook, over ``lab`` (default: ``al.default_lab()``); Panel renders in Jupyter."""
    import panel as pn

    from aillm_lab.ui.workbench.app import create_app

    pn.extension()
    return create_app(_lab(lab), max_tokens=max_tokens)


def approvals(lab: Lab | None = None) -> ApprovalsWidget:
    """Answer the Safety Guard's ``ask`` decisions with buttons (sets the Lab's approver)."""
    return ApprovalsWidget(lab)


__all__ = ["ApprovalsWidget", "ChatWidget", "TraceWidget", "approvals", "chat", "dashboard",
           "trace"]
