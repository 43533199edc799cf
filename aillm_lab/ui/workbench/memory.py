"""The Memory page: browse, search, add and forget long-term memories by namespace.

Add, Search and Show all send their boxes' values with the click (``submit.submit_fields``),
so under ``panel serve --num-threads 2`` a click never acts on the text typed before.
"""

from __future__ import annotations

from typing import Any

from aillm_lab.core.lab import Lab
from aillm_lab.ui.workbench.notices import Notice
from aillm_lab.ui.workbench.submit import submit_fields

COLUMNS = ["id", "namespace", "text", "importance", "strength", "state"]


class MemoryPage:
    """Every action goes through ``lab.memory``'s async doors (``aadd``, ``asearch``,
    ``alist``, ``aforget``)."""

    title = "Memory"

    def __init__(self, lab: Lab) -> None:
        import pandas as pd
        import panel as pn

        self.lab = lab
        self.notice = Notice("memory-notice")
        self.namespace = pn.widgets.TextInput(label="Namespace", value="user", width=160)
        self.text = pn.widgets.TextInput(label="New memory", placeholder="I prefer tea",
                                         sizing_mode="stretch_width")
        self.importance = pn.widgets.FloatSlider(label="Importance", start=0, end=1,
                                                 step=0.05, value=0.5, width=160)
        self.add_button = pn.widgets.Button(label="Add", color="primary")
        self.query = pn.widgets.TextInput(label="Search", placeholder="drinks",
                                          sizing_mode="stretch_width")
        self.search_button = pn.widgets.Button(label="Search")
        self.list_button = pn.widgets.Button(label="Show all")
        self.forget_button = pn.widgets.Button(label="Forget selected", color="danger")
        self.table = pn.widgets.Tabulator(pd.DataFrame(columns=COLUMNS), disabled=True,
                                          show_index=False, selectable="checkbox",
                                          pagination="local", page_size=15,
                                          sizing_mode="stretch_width")
        self.add_request = submit_fields(
            self.add_button, {"namespace": self.namespace, "text": self.text,
                              "importance": self.importance}, self._on_add, "memory-add")
        self.search_request = submit_fields(
            self.search_button, {"namespace": self.namespace, "query": self.query},
            self._on_search, "memory-search")
        self.list_request = submit_fields(self.list_button, {"namespace": self.namespace},
                                          self._on_list, "memory-list")
        self.forget_button.on_click(self._on_forget)
        self.view = pn.Column(
            pn.pane.Markdown("### Memory\nLong-term memories: adding a near-duplicate "
                             "strengthens it; forgetting hides a memory from search."),
            pn.Row(self.namespace, self.text, self.importance, self.add_button,
                   sizing_mode="stretch_width"),
            pn.Row(self.query, self.search_button, self.list_button, self.forget_button,
                   sizing_mode="stretch_width"),
            self.notice.alert, self.table, self.add_request, self.search_request,
            self.list_request, name=self.title, sizing_mode="stretch_width")

    async def add(self, text: str | None = None, namespace: str | None = None,
                  importance: float | None = None) -> bool:
        """Remember ``text`` (default: the boxes' values) in ``namespace``."""
        namespace = self._namespace(namespace)
        text = (self.text.value if text is None else text).strip()
        if not text:
            self.notice.error("Type the memory to add first.")
            return False
        try:
            memory = await self.lab.memory.aadd(
                text, namespace, importance=self.importance.value if importance is None
                else float(importance))
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.text.value = ""
        await self.browse(namespace)
        self.notice.ok(f"Remembered ({memory.id[:8]}, strength {memory.strength}).")
        return True

    async def browse(self, namespace: str | None = None) -> bool:
        try:
            memories = await self.lab.memory.alist(self._namespace(namespace))
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.table.value = _frame([(m, None) for m in memories])
        self.table.selection = []
        return True

    async def search(self, query: str | None = None, namespace: str | None = None) -> bool:
        namespace = self._namespace(namespace)
        query = (self.query.value if query is None else query).strip()
        if not query:
            self.notice.error("Type what to search for first.")
            return False
        try:
            hits = await self.lab.memory.asearch(query, namespace, k=20)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        self.table.value = _frame([(h.memory, h.score) for h in hits])
        self.table.selection = []
        self.notice.ok(f"{len(hits)} memory(ies) match {query!r}.")
        return True

    async def forget_selected(self) -> bool:
        frame, rows = self.table.value, list(self.table.selection)
        if not rows:
            self.notice.error("Select the memories to forget first (the check boxes).")
            return False
        ids = [str(frame.iloc[i]["id"]) for i in rows]
        try:
            for memory_id in ids:
                await self.lab.memory.aforget(memory_id)
        except Exception as exc:
            self.notice.failed(exc)
            return False
        await self.browse()
        self.notice.ok(f"Forgot {len(ids)} memory(ies).")
        return True

    def _namespace(self, sent: Any) -> str:
        """The namespace a click sent (the box's value when called from Python)."""
        return (str(sent).strip() if sent is not None else "") or self.namespace.value

    async def _on_add(self, fields: dict[str, Any]) -> None:
        await self.add(str(fields.get("text") or ""), fields.get("namespace"),
                       _number(fields.get("importance")))

    async def _on_search(self, fields: dict[str, Any]) -> None:
        await self.search(str(fields.get("query") or ""), fields.get("namespace"))

    async def _on_list(self, fields: dict[str, Any]) -> None:
        await self.browse(fields.get("namespace"))

    async def _on_forget(self, event: Any = None) -> None:
        await self.forget_selected()


def _number(value: Any) -> float | None:
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _frame(rows: list[tuple[Any, float | None]]) -> Any:
    import pandas as pd

    records = [{"id": m.id, "namespace": m.namespace, "text": m.text,
                "importance": m.importance, "strength": m.strength,
                "state": "live" if m.live else ("forgotten" if m.forgotten_at else "superseded"),
                **({} if score is None else {"score": round(score, 3)})}
               for m, score in rows]
    return pd.DataFrame(records, columns=None if records else COLUMNS)
