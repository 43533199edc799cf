"""A button that sends its text box's text with the click, as one event.

Why: under ``panel serve --num-threads 2`` a text box's new ``value`` and a button's click
are two websocket messages that two threads may handle in either order, so a Python click
handler that reads the box can see the previous text. Here the click runs a line of
JavaScript in the browser that copies the box's current text (``value_input``, updated on
every key press) into a hidden carrier widget together with a fresh nonce; the server sees one
property change that holds the text, and runs the action on exactly that text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

# the browser's side: the text as typed, and a nonce so the same text sent twice is two events
_SEND = ("carrier.value = JSON.stringify({text: source.value_input ?? source.value ?? '', "
         "nonce: Date.now() + Math.random()})")


def submit_with_text(button: Any, source: Any, action: Callable[[str], Awaitable[Any]],
                     name: str) -> Any:
    """Have ``button`` run ``await action(text)`` with ``source``'s text at click time;
    returns the hidden carrier widget (put it in the page, or nothing reaches the browser).

    ``send(carrier, text)`` does in Python what a click does in the browser (for tests).
    """
    import panel as pn

    carrier = pn.widgets.TextInput(value="", visible=False, css_classes=[name])
    button.js_on_click(args={"source": source, "carrier": carrier}, code=_SEND)

    async def on_carrier(event: Any) -> None:
        text = read(event.new)
        if text is not None:
            await action(text)

    carrier.param.watch(on_carrier, "value")
    return carrier


def read(payload: str) -> str | None:
    """The text a click sent, or None (an empty or malformed carrier value)."""
    try:
        data = json.loads(payload) if payload else None
    except json.JSONDecodeError:
        return None
    text = data.get("text") if isinstance(data, dict) else None
    return text if isinstance(text, str) else None


def send(carrier: Any, text: str) -> None:
    """What the browser does on a click: the text and a new nonce into the carrier."""
    import time

    carrier.value = json.dumps({"text": text, "nonce": time.monotonic_ns()})
