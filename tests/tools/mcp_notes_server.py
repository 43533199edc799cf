"""A small MCP server (the ``mcp`` SDK's server side) that the MCP tool tests start as a
subprocess: two tools and one resource. ``--spawn`` makes it start a sleeping child of its
own, so a test can check that the whole process tree is gone after the client exits."""

from __future__ import annotations

import subprocess
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("notes")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def shout(text: str) -> str:
    """Return the text in upper case; 'boom' makes the tool fail."""
    if text == "boom":
        raise ValueError("the server refuses to shout boom")
    return text.upper()


@server.resource("notes://today", description="today's note")
def today() -> str:
    return "buy milk"


if __name__ == "__main__":
    if "--spawn" in sys.argv:
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    server.run()
