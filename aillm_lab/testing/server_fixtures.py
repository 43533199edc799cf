"""pytest fixtures that start a fake vendor server per test and stop it afterwards; enable
with ``pytest_plugins = ["aillm_lab.testing.server_fixtures"]`` in a root conftest.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aillm_lab.testing.fake_servers import FakeAnthropic, FakeOllama, FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI; pass ``fake_openai.url`` as the SDK's ``base_url``."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A running FakeAnthropic; pass ``fake_anthropic.url`` as the SDK's ``base_url``."""
    with FakeAnthropic() as server:
        yield server


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A running FakeOllama; pass ``fake_ollama.url`` as ``ollama.Client(host=...)``."""
    with FakeOllama() as server:
        yield server
