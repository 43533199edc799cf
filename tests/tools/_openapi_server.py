"""A real HTTP server on 127.0.0.1 for the OpenAPI tool tests: the Notes API of
``openapi_notes.yaml``, recording every request it receives (method, path, query, headers
and body) so a test can check what a tool really sent."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SPEC = Path(__file__).with_name("openapi_notes.yaml")


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class NotesServer:
    url: str
    requests: list[Seen] = field(default_factory=list)


@contextmanager
def notes_server() -> Iterator[NotesServer]:
    """Serve the Notes API on a free port; ``server.url`` is its base (``.../api``)."""
    notes = {1: {"id": 1, "title": "milk", "tags": ["shop"]},
             2: {"id": 2, "title": "paper", "tags": ["work"]}}
    state = NotesServer(url="")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _answer(self, status: int, value: Any) -> None:
            data = json.dumps(value).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self) -> Seen:
            parts = urlsplit(self.path)
            size = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(size) if size else b""
            body = json.loads(raw) if raw else None
            seen = Seen(self.command, parts.path, parse_qs(parts.query),
                        {k.lower(): v for k, v in self.headers.items()}, body)
            state.requests.append(seen)
            return seen

        def do_GET(self) -> None:
            seen = self._record()
            if seen.path == "/api/notes":
                tag = seen.query.get("tag", [None])[0]
                found = [n for n in notes.values() if tag is None or tag in n["tags"]]
                limit = int(seen.query.get("limit", ["50"])[0])
                self._answer(200, found[:limit])
            elif seen.path.startswith("/api/notes/"):
                note = notes.get(int(seen.path.rsplit("/", 1)[1]))
                self._answer(200 if note else 404, note or {"error": "no such note"})
            elif seen.path == "/api/whoami":
                self._answer(200, {"authorization": seen.headers.get("authorization")})
            elif seen.path == "/api/health":
                self._answer(200, {"ok": True})
            elif seen.path == "/openapi.yaml":
                data = SPEC.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/yaml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            seen = self._record()
            if seen.path == "/api/notes":
                note = {"id": max(notes) + 1, **seen.body}
                notes[note["id"]] = note
                self._answer(201, note)
            else:
                self._answer(404, {"error": "not found"})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/api"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
