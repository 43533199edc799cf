"""pytest fixtures for labs in a throwaway home; enable with
``pytest_plugins = ["aillm_lab.testing.fixtures"]``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from aillm_lab.config import LabSettings
from aillm_lab.core.lab import Lab
from aillm_lab.llm.scripted import ScriptedModel
from aillm_lab.runtime import LoopRunner


@pytest.fixture
def lab_home(tmp_path: Path) -> Path:
    """An empty workspace folder for one test."""
    home = tmp_path / "aillm_home"
    home.mkdir()
    return home


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, lab_home: Path) -> Path:
    """No ambient ``AILLM_*`` settings, provider keys or Ollama host; a temporary home."""
    import os

    for name in list(os.environ):
        if name.startswith("AILLM_") or name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY",
                                                 "OLLAMA_HOST"):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AILLM_HOME", str(lab_home))
    return lab_home


@pytest.fixture
def scripted_model() -> ScriptedModel:
    """A ScriptedModel with an empty queue; ``enqueue`` the replies the test needs."""
    return ScriptedModel()


@pytest.fixture
def lab(lab_home: Path, scripted_model: ScriptedModel) -> Iterator[Lab]:
    """A Lab on its own runner, in a temporary home, answering from ``scripted_model``."""
    runner = LoopRunner(name="aillm-test-loop")
    settings = LabSettings.load(home=lab_home)
    with Lab(settings, model=scripted_model, runner=runner) as lab:
        yield lab
    runner.close()
