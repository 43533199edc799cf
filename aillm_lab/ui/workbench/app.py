"""The workbench: one Lab, several pages as ``pn.Tabs`` (Chat, Documents, Data, Runs and
calls, Memory, Monitor, Settings), built once per browser tab by ``create_app``.

The Chat page (``chat.ChatPage``) has a model picker, an agent picker and an image
attachment; its callback is an async generator, as Panel recommends, iterating
``Lab.astream`` or the agent's ``astream``: tokens are produced on the runner loop and handed
to the Bokeh server's loop, so a slow model never blocks other sessions. Agent answers carry
their trace, and tool calls that need approval ask inline in the tab whose agent asked. The
other pages' callbacks await the Lab's async doors the same way. Panel is imported here,
never at ``import aillm_lab``.

``aillm-lab serve`` loads the default model in the background at start (``Preload``); until
it is ready the chat page says so and its input is disabled.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.chat import ChatPage, history, plain_reply, reply_stats
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


def create_app(lab: Lab | None = None, *, max_tokens: int = 256,
               preload: Preload | None = None,
               models: list[str] | None = None) -> pn.viewable.Viewable:
    """Build one session's workbench; ``panel.serve`` calls this once per browser tab.
    ``models``: more model specs for the chat's picker (beside those found here)."""
    return Workbench(lab or Lab(), max_tokens=max_tokens, preload=preload, models=models).view


class Workbench:
    """One session's pages over a shared Lab; ``view`` is what the browser shows.

    Tests build it directly and await the pages' callbacks (``chat_page.respond(...)``,
    ``runs.refresh()``, ``data.run_sql(...)``, ``memory.add(...)``) without a browser.
    """

    def __init__(self, lab: Lab, *, max_tokens: int = 256,
                 preload: Preload | None = None, models: list[str] | None = None) -> None:
        import panel as pn

        pn.extension("tabulator", notifications=True)
        self.lab = lab
        # the data agent in the chat queries this session's Data page uploads
        self.chat_page = ChatPage(lab, max_tokens=max_tokens, models=models,
                                  tables=lambda: dict(self.data.frames))
        self.chat, self.header = self.chat_page.chat, self.chat_page.header
        self.preload = preload
        self.model_status = pn.pane.Markdown(
            preload.status() if preload else "", name="model-status",
            visible=preload is not None, sizing_mode="stretch_width")
        if preload is not None and not preload.ready.is_set():
            self._open_chat(False)
            if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
                pn.state.onload(self.when_ready)  # served; otherwise await when_ready()
        self.documents = DocumentsPage(lab)
        self.runs = RunsPage(lab)
        self.data = DataPage(lab)
        self.memory = MemoryPage(lab)
        self.monitor = MonitorPage(lab)
        self.settings = SettingsPage(lab)
        chat_page = pn.Column(self.header, self.model_status, self.chat_page.controls,
                              self.chat_page.notice.alert, self.chat,
                              sizing_mode="stretch_width", name="Chat")
        self.tabs = pn.Tabs(chat_page, self.documents.view, self.data.view, self.runs.view,
                            self.memory.view, self.monitor.view, self.settings.view,
                            # only the open tab is in the browser's document: with all seven
                            # the first chat reply took 1.8 s to show, with one 0.9 s
                            sizing_mode="stretch_width", dynamic=True,
                            name=TITLE)
        self.tabs.param.watch(self._on_tab, "active")
        self.view = self.tabs

    async def when_ready(self) -> None:
        """Wait (off the server loop) for the preload, then open the chat."""
        import asyncio

        if self.preload is not None:
            await asyncio.to_thread(self.preload.wait)
            self.model_status.object = self.preload.status()
        self._open_chat(True)

    def _open_chat(self, open_: bool) -> None:
        """Enable or disable the chat, its text box included (``ChatInterface.disabled``
        leaves the box typeable, and Enter there then sends nothing)."""
        self.chat.disabled = not open_
        self.chat.active_widget.disabled = not open_

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
    """A plain-chat callback on the Lab's default model (the Chat page's, without pickers)."""
    async def respond(contents: Any, user: str, instance: Any) -> AsyncIterator[Any]:
        async for item in plain_reply(lab, history(instance, str(contents)), None,
                                      max_tokens):
            yield item

    return respond


__all__ = ["TITLE", "Workbench", "create_app", "reply_stats"]


if __name__.startswith("bokeh"):  # `panel serve aillm_lab/ui/workbench/app.py`
    create_app().servable(title=TITLE)
