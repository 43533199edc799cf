"""How a page tells the user what happened: an inline alert, and a toast when served.

Errors are one readable line (the error's own message says what to do next), never a
traceback. The inline alert stays on the page, so tests and screenshots can see it; the toast
(``pn.state.notifications``) exists only inside a served session.
"""

from __future__ import annotations

from typing import Any

from aillm_lab.errors import AillmError


class Notice:
    """One page's message line: ``ok(text)``, ``error(text)`` or ``clear()``."""

    def __init__(self, name: str) -> None:
        import panel as pn

        self.alert = pn.pane.Alert("", alert_type="light", visible=False, name=name,
                                   sizing_mode="stretch_width")

    @property
    def text(self) -> str:
        return str(self.alert.object) if self.alert.visible else ""

    @property
    def kind(self) -> str:
        return str(self.alert.alert_type) if self.alert.visible else ""

    def ok(self, text: str) -> None:
        self._show(text, "success")

    def error(self, text: str) -> None:
        self._show(text, "danger")

    def failed(self, exc: BaseException) -> None:
        """A typed error as ``Kind: message``; anything else says it was unexpected."""
        if isinstance(exc, AillmError | ValueError | LookupError | PermissionError):
            self.error(f"{type(exc).__name__}: {exc}")
        else:
            self.error(f"Unexpected {type(exc).__name__}: {exc}")

    def clear(self) -> None:
        self.alert.visible = False
        self.alert.object = ""

    def _show(self, text: str, kind: str) -> None:
        self.alert.param.update(object=text, alert_type=kind, visible=True)
        toasts = _notifications()
        if toasts is not None:
            (toasts.error if kind == "danger" else toasts.success)(text, duration=6000)


def _notifications() -> Any:
    import panel as pn

    try:
        return pn.state.notifications
    except Exception:  # no session (a unit test, a notebook): the inline alert is enough
        return None
