"""The workbench: one Lab, several pages as ``pn.Tabs`` (Chat, Documents, Data, Runs and
calls, Memory, Monitor, Settings), built once per browser tab by ``create_app``.

The chat callback is an async generator, as Panel recommends, and it iterates
``Lab.astream``: tokens are produced on the runner loop and handed to the Bokeh server's
loop, so a slow model never blocks other sessions. The other pages' callbacks await the
Lab's async doors the same way. Panel is imported here, never at ``import aillm_lab``.

``aillm-lab serve`` loads the default model in the background at start (``Preload``); until
it is ready the chat page says so and its input is disabled.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aillm_lab.core.lab import Lab
from aillm_lab.errors import AillmError
from aillm_lab.llm.types import Completion
from aillm_lab.ui.workbench.data import DataPage
from aillm_lab.ui.workbench.documents import DocumentsPage
from aillm_lab.ui.workbench.memory import MemoryPage
from aillm_lab.ui.workbench.monitor import MonitorPage
from aillm_lab.ui.workbench.preload import Preload
from aillm_lab.ui.workbench.runs import RunsPage
from aillm_lab.ui.workbench.settings import SettingsPage

if TYPE_CHECKING:
    import panel as pn

TITLE = "AILLM Lab"
HISTORY_TURNS = 6  # earlier user/assistant turns sent along with each prompt


def create_app(lab: Lab | None = None, *, max_tokens: int = 256,
               preload: Preload | None = None) -> pn.viewable.Viewable:
    """Build one session's workbench; ``panel.serve`` calls this once per browser tab."""
    return Workbench(lab or Lab(), max_tokens=max_tokens, preload=preload).view


class Workbench:
    """One session's pages over a shared Lab; ``view`` is what the browser shows.

    Tests build it directly and await the pages' callbacks (``runs.refresh()``,
    ``data.run_sql(...)``, ``memory.add(...)``) without a browser.
    """

    def __init__(self, lab: Lab, *, max_tokens: int = 256,
                 preload: Preload | None = None) -> None:
        import panel as pn

        pn.extension("tabulator", notifications=True)
        self.lab = lab
        model_id, reason = lab.default_model_reason()
        self.chat = pn.chat.ChatInterface(
            callback=_responder(lab, max_tokens), callback_user=model_id,
            callback_exception="verbose", show_rerun=False, show_undo=False,
            placeholder_text="Thinking…", sizing_mode="stretch_width", height=640)
        self.header = pn.pane.Markdown(
            f"### {TITLE}\n**Model:** `{model_id}` — {reason}", name="model-info",
            sizing_mode="stretch_width")
        self.preload = preload
        self.model_status = pn.pane.Markdown(
            preload.status() if preload else "", name="model-status",
            visible=preload is not None, sizing_mode="stretch_width")
        if preload is not None and not preload.ready.is_set():
            self.chat.disabled = True
            if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
                pn.state.onload(self.when_ready)  # served; otherwise await when_ready()
        self.documents = DocumentsPage(lab)
        self.runs = RunsPage(lab)
        self.data = DataPage(lab)
        self.memory = MemoryPage(lab)
        self.monitor = MonitorPage(lab)
        self.settings = SettingsPage(lab)
        chat_page = pn.Column(self.header, self.model_status, self.chat,
                              sizing_mode="stretch_width", name="Chat")
        self.tabs = pn.Tabs(chat_page, self.documents.view, self.data.view, self.runs.view,
                            self.memory.view, self.monitor.view, self.settings.view,
                            sizing_mode="stretch_width",
                            name=TITLE)
        self.tabs.param.watch(self._on_tab, "active")
        self.view = self.tabs

    async def when_ready(self) -> None:
        """Wait (off the server loop) for the preload, then open the chat."""
        import asyncio

        if self.preload is not None:
            await asyncio.to_thread(self.preload.wait)
            self.model_status.object = self.preload.status()
        self.chat.disabled = False

    async def _on_tab(self, event: Any) -> None:
        await self.load(self.tabs[event.new].name)

    async def load(self, title: str) -> None:
        """Fill the page named ``title`` (the browser does this when the tab opens); the
        Monitor page refreshes itself only while it is the open one."""
        self.monitor.watch(title == self.monitor.title)
        if title == self.runs.title:
            await self.runs.refresh()
        elif title == self.memory.title:
            await self.memory.browse()
        elif title == self.data.title:
            self.data.refresh_tables()
        elif title == self.monitor.title:
            await self.monitor.refresh()


def _responder(lab: Lab, max_tokens: int) -> Any:
    async def respond(contents: Any, user: str, instance: Any) -> AsyncIterator[Any]:
        """Stream the reply; finish with a footer of token and latency figures."""
        import panel as pn

        messages = _history(instance, str(contents))
        text, completion, start, first = "", None, time.perf_counter(), None
        try:
            async for event in lab.astream(messages, max_tokens=max_tokens):
                if event.text:
                    first = first or time.perf_counter()
                    text += event.text
                    yield text
                if event.completion is not None:
                    completion = event.completion
        except AillmError as exc:
            yield {"object": f"⚠️ {type(exc).__name__}: {exc}", "user": "error"}
            return
        stats = reply_stats(completion, time.perf_counter() - start,
                            None if first is None else first - start)
        yield {"object": text or "(empty reply)",
               "footer_objects": [pn.pane.Str(stats, name="reply-stats")]}

    return respond


def _history(instance: Any, prompt: str) -> list[dict[str, str]]:
    """The last few turns as messages, so the model sees the conversation."""
    turns = []
    for message in instance.objects[:-1][-2 * HISTORY_TURNS:]:
        if message.user == "error" or not isinstance(message.object, str):
            continue
        role = "user" if message.user == "User" else "assistant"
        turns.append({"role": role, "content": message.object})
    return [*turns, {"role": "user", "content": prompt}]


def reply_stats(completion: Completion | None, latency_s: float,
                ttft_s: float | None) -> str:
    """One line of figures for a reply: tokens in/out, latency, first token and speed."""
    if completion is None:
        return f"latency {latency_s:.2f} s"
    usage = completion.usage
    parts = [completion.model, f"{usage.input_tokens} in / {usage.output_tokens} out tokens",
             f"latency {latency_s:.2f} s"]
    if ttft_s is not None:
        parts.append(f"first token {ttft_s:.2f} s")
        decode = latency_s - ttft_s
        if usage.output_tokens > 1 and decode > 0:
            parts.append(f"{(usage.output_tokens - 1) / decode:.1f} tok/s")
    return " · ".join(parts)


if __name__.startswith("bokeh"):  # `panel serve aillm_lab/ui/workbench/app.py`
    create_app().servable(title=TITLE)
