"""Tools and a tool-call maker shared by the agent tests (a unique module name, so it
never shadows another test folder's helpers)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aillm_lab as al


@al.tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


@al.tool
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@al.tool
async def slow(seconds: float) -> str:
    """Wait, then say done."""
    await asyncio.sleep(seconds)
    return "done"


def call(name: str, call_id: str = "c1", **arguments: Any) -> al.ToolCall:
    return al.ToolCall(id=call_id, name=name, arguments=arguments)


def label_of(messages: list[al.Message], needle: str) -> int:
    """The [n] the prompt gives the passage that contains ``needle``."""
    for message in messages:
        for part in re.split(r"(?m)^(?=\[\d+\] \()", message.text):
            found = re.match(r"\[(\d+)\] \(", part)
            if found and needle in part:
                return int(found.group(1))
    raise AssertionError(f"no numbered source holds {needle!r}")
