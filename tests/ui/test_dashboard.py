"""The workbench page: served for real on 127.0.0.1, and its chat callback driven directly."""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pn = pytest.importorskip("panel")

from aillm_lab import Lab  # noqa: E402
from aillm_lab.errors import ModelNotAvailable  # noqa: E402
from aillm_lab.llm.types import Completion, Usage  # noqa: E402
from aillm_lab.testing import ScriptedModel  # noqa: E402
from aillm_lab.ui.dashboard.app import _responder, create_app, reply_stats  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


@contextlib.contextmanager
def _serving(args: list[str], port: int, home: Path) -> Iterator[str]:
    """Run a server command in a subprocess until it answers /liveness; stop it after."""
    env = {**os.environ, "AILLM_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{args} exited early:\n{proc.stdout.read()}")
            try:
                if _get(f"{url}/liveness", 2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{args} did not answer /liveness within 90 s")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()


def _document_texts(url: str) -> tuple[set[str], str]:
    """Open a real Bokeh session over the websocket: the model kinds and all their text."""
    import panel.models  # noqa: F401 - registers Panel's Bokeh models for the client
    from bokeh.client import pull_session

    with pull_session(url=url) as session:
        models = list(session.document.models)
    texts = "\n".join(html.unescape(str(getattr(m, "text", ""))) for m in models)
    return {type(m).__name__ for m in models}, texts


@pytest.fixture
def served(lab_home) -> Iterator[str]:
    """`aillm-lab serve` on a free port."""
    port = _free_port()
    with _serving(["-m", "aillm_lab.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
                   "--model", "scripted:echo"], port, lab_home) as url:
        yield url


def test_served_page_loads_over_http_with_the_panel_bundle(served):
    status, page = _get(served + "/")
    assert status == 200
    assert "<title>AILLM Lab</title>" in page
    assert "panel.min.js" in page and "render_items" in page


def test_served_session_holds_a_chat_and_names_the_model_in_use(served):
    kinds, texts = _document_texts(served + "/")
    assert {"ChatAreaInput", "Feed"} <= kinds
    assert "scripted:echo" in texts and "given to Lab(model=...)" in texts


def test_the_app_file_runs_under_panel_serve_too(lab_home):
    port = _free_port()
    app = Path(create_app.__code__.co_filename)
    with _serving(["-m", "panel", "serve", str(app), "--port", str(port), "--address",
                   "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
                   "--liveness"], port, lab_home) as url:
        kinds, texts = _document_texts(f"{url}/app")
    assert "ChatAreaInput" in kinds and "local:smollm2" in texts


def test_sync_chat_works_inside_a_panel_serve_session(lab_home, tmp_path):
    port = _free_port()
    app = tmp_path / "sync_app.py"
    app.write_text(
        "import asyncio\nimport panel as pn\nimport aillm_lab as al\n"
        "asyncio.get_running_loop()  # Bokeh builds sessions on its running loop\n"
        "reply = al.chat('hello from panel serve', model='scripted:echo')\n"
        "pn.pane.Markdown('REPLY: ' + reply.text).servable()\n")
    with _serving(["-m", "panel", "serve", str(app), "--port", str(port), "--address",
                   "127.0.0.1", "--allow-websocket-origin", f"127.0.0.1:{port}",
                   "--liveness"], port, lab_home) as url:
        _, texts = _document_texts(f"{url}/sync_app")
    assert "REPLY: hello from panel serve" in texts


def _drive(respond, contents: str, instance) -> list:
    async def collect() -> list:
        return [item async for item in respond(contents, "User", instance)]

    return asyncio.run(collect())


def test_chat_callback_streams_growing_text_then_a_footer_with_tokens_and_latency():
    model = ScriptedModel(["Paris is the capital of France."])
    with Lab(model=model) as lab:
        chat = create_app(lab).objects[1]
        chat.send("What is the capital of France?", respond=False)
        items = _drive(_responder(lab, 64), "What is the capital of France?", chat)
    partial, final = items[:-1], items[-1]
    assert len(partial) > 1 and all(isinstance(p, str) for p in partial)
    assert all(b.startswith(a) for a, b in zip(partial, partial[1:], strict=False))
    assert final["object"] == "Paris is the capital of France."
    stats = final["footer_objects"][0].object
    assert "scripted:" in stats and "in /" in stats and "out tokens" in stats
    assert "latency" in stats and "first token" in stats
    assert model.requests[0].messages[-1].text == "What is the capital of France?"


def test_chat_callback_sends_the_earlier_turns_as_history():
    model = ScriptedModel(["first answer", "second answer"])
    with Lab(model=model) as lab:
        chat = create_app(lab).objects[1]
        respond = _responder(lab, 64)
        chat.send("first question", respond=False)
        chat.send(_drive(respond, "first question", chat)[-1]["object"], user="model",
                  respond=False)
        chat.send("second question", respond=False)
        _drive(respond, "second question", chat)
    roles = [(m.role, m.text) for m in model.requests[1].messages]
    assert roles == [("user", "first question"), ("assistant", "first answer"),
                     ("user", "second question")]


def test_chat_callback_shows_a_model_error_in_the_chat_instead_of_crashing():
    with Lab(model="local:no-such-model.gguf") as lab:
        chat = create_app(lab).objects[1]
        items = _drive(_responder(lab, 16), "hello", chat)
    assert len(items) == 1 and items[0]["user"] == "error"
    assert ModelNotAvailable.__name__ in items[0]["object"]


def test_header_names_the_default_model_and_why():
    with Lab(model="scripted:echo") as lab:
        header = create_app(lab).objects[0].object
    assert "scripted:echo" in header and "given to Lab(model=...)" in header


def test_reply_stats_report_tokens_latency_first_token_and_speed():
    completion = Completion(text="x", model="local:smollm2",
                            usage=Usage(input_tokens=12, output_tokens=11))
    stats = reply_stats(completion, latency_s=1.5, ttft_s=0.5)
    assert stats == ("local:smollm2 · 12 in / 11 out tokens · latency 1.50 s · "
                     "first token 0.50 s · 10.0 tok/s")
    assert reply_stats(None, 0.25, None) == "latency 0.25 s"
