"""A server in a subprocess for the UI tests (``aillm-lab serve``, ``panel serve``, a small
script): started on a free 127.0.0.1 port, waited for on /liveness, stopped after. Shared by
test_dashboard.py and test_browser.py (a unique module name, so it shadows nothing)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest


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
