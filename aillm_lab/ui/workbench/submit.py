"""A button that sends its boxes' values with the click, as one event.

Why: under ``panel serve --num-threads 2`` a text box's new ``value`` and a button's click
are two websocket messages that two threads may handle in either order, so a Python click
handler that reads the box can see the previous text. Here the click runs a line of
JavaScript in the browser that copies each box's current value (a text box's ``value_input``,
updated on every key press) into a hidden carrier widget together with a fresh nonce; the
server sees one property change that holds every value, and runs the action on exactly those.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

# the browser's side of a click: every named widget's current value, and a fresh nonce (so the
# same values sent twice are two events)
_SEND = ("const read = w => w.value_input ?? w.value ?? '';\n"
         "carrier.value = JSON.stringify({{fields: {{{fields}}}, "
         "nonce: Date.now() + Math.random()}})")


def submit_fields(button: Any, fields: dict[str, Any],
                  action: Callable[[dict[str, Any]], Awaitable[Any]], name: str) -> Any:
    """Have ``button`` run ``await action({key: value})`` with each widget's value at click
    time; returns the hidden carrier widget (put it in the page, or nothing reaches the
    browser). ``send_fields(carrier, **values)`` does in Python what a click does."""
    import panel as pn

    carrier = pn.widgets.TextInput(value="", visible=False, css_classes=[name])
    code = _SEND.format(fields=", ".join(f"{key}: read(w_{key})" for key in fields))
    button.js_on_click(args={"carrier": carrier, **{f"w_{k}": w for k, w in fields.items()}},
                       code=code)

    async def on_carrier(event: Any) -> None:
        sent = read_fields(event.new)
        if sent is not None:
            await action(sent)

    carrier.param.watch(on_carrier, "value")
    return carrier


def submit_with_text(button: Any, source: Any, action: Callable[[str], Awaitable[Any]],
                     name: str) -> Any:
    """``submit_fields`` for one text box: ``await action(text)``; ``send(carrier, text)``
    does in Python what a click does."""

    async def with_text(fields: dict[str, Any]) -> None:
        text = fields.get("text")
        if isinstance(text, str):
            await action(text)

    return submit_fields(button, {"text": source}, with_text, name)


def read_fields(payload: str) -> dict[str, Any] | None:
    """The values a click sent, or None (an empty or malformed carrier value)."""
    try:
        data = json.loads(payload) if payload else None
    except json.JSONDecodeError:
        return None
    fields = data.get("fields") if isinstance(data, dict) else None
    return fields if isinstance(fields, dict) else None


def read(payload: str) -> str | None:
    """The text a ``submit_with_text`` click sent, or None."""
    text = (read_fields(payload) or {}).get("text")
    return text if isinstance(text, str) else None


def send_fields(carrier: Any, **fields: Any) -> None:
    """What the browser does on a click: the values and a new nonce into the carrier."""
    carrier.value = json.dumps({"fields": fields, "nonce": time.monotonic_ns()})


def send(carrier: Any, text: str) -> None:
    """What the browser does on a ``submit_with_text`` click."""
    send_fields(carrier, text=text)
