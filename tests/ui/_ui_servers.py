"""Servers and a browser for the UI tests.

A server in a subprocess (``aillm-lab serve``, ``panel serve``, a small script): started on a
free 127.0.0.1 port, waited for on /liveness, stopped after. The browser tests also share
Debian's chromium driven by Playwright (never a browser Playwright downloads), the skip when
either is missing, and how a workbench page is opened and looked into. Shared by
test_dashboard.py and the test_browser*.py files (a unique module name, so it shadows
nothing). Playwright is imported only inside the browser helpers: test_dashboard.py runs
without it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Locator, Page

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
WAIT_MS = 60_000  # the longest any one element is waited for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(args: list[str], port: int, home: Path, **env: str) -> Iterator[str]:
    """Run ``python ARGS`` with ``AILLM_HOME=home`` until it answers /liveness; stop it after."""
    environ = {**os.environ, "AILLM_HOME": str(home), **env}
    proc = subprocess.Popen([sys.executable, *args], env=environ, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{args} exited early:\n{proc.stdout.read()}")
            try:
                with urllib.request.urlopen(f"{url}/liveness", timeout=2) as response:
                    if response.status == 200:
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


@contextlib.contextmanager
def serving_script(source: str, name: str, home: Path) -> Iterator[str]:
    """Write ``source`` to ``name`` beside ``home`` and serve it (the script takes its port as
    its one argument)."""
    script = home.parent / name
    script.write_text(source)
    port = free_port()
    with serving([str(script), str(port)], port, home) as url:
        yield url


# -- the browser ---------------------------------------------------------------------------------
def skip_without_browser() -> None:
    """Skip the calling test module, with the reason, unless Debian's chromium, Playwright and
    Panel are all there. Call it at module level before importing Playwright."""
    __tracebackhide__ = True  # the skip is reported at the calling module's line
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; `make test` "
                    "installs it when the machine allows): the browser tests need it",
                    allow_module_level=True)
    pytest.importorskip("playwright", reason="Playwright is not installed: pip install -e '.[dev]'")
    pytest.importorskip("panel")


@contextlib.contextmanager
def launch_chromium() -> Iterator[Browser]:
    """Debian's chromium, headless, through Playwright; closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Browser, url: str, *, height: int = 900) -> Page:
    """A new tab on the workbench at ``url``, open once its Chat tab shows (the document
    arrives over the websocket)."""
    page = browser.new_page(viewport={"width": 1280, "height": height})
    page.set_default_timeout(WAIT_MS)
    page.goto(url)
    tab(page, "Chat").wait_for()
    return page


def tab(page: Page, title: str) -> Locator:
    return page.locator(".bk-tab", has_text=re.compile(f"^{re.escape(title)}$"))


def visible(locator: Locator) -> Locator:
    return locator.filter(visible=True)


def said(page: Page, text: str | re.Pattern[str]) -> Locator:
    """A page's inline message (a notification toast may repeat it)."""
    return visible(page.get_by_role("paragraph").filter(has_text=text))
