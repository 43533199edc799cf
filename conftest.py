"""Test-session set-up shared by tests/ and the notebooks run through nbmake.

Every run gets a throwaway AILLM_HOME and no provider keys, so nothing touches the user's
workspace or a paid API; the local model files are still found where `models pull` put them.
"""

from __future__ import annotations

import os
import shutil
import tempfile

pytest_plugins = ["aillm_lab.testing.fixtures", "aillm_lab.testing.server_fixtures"]

_SCRUB = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AILLM_OPENAI_API_KEY",
          "AILLM_ANTHROPIC_API_KEY", "AILLM_MODEL", "AILLM_CONFIG", "OPENAI_BASE_URL",
          "ANTHROPIC_BASE_URL")
_home: str | None = None


def pytest_configure(config: object) -> None:
    global _home
    if "AILLM_MODELS_DIR" not in os.environ:
        from aillm_lab.config import LabSettings

        os.environ["AILLM_MODELS_DIR"] = str(LabSettings.load().model_path)
    for key in _SCRUB:
        os.environ.pop(key, None)
    os.environ["OLLAMA_HOST"] = "127.0.0.1:9"  # a closed port: no Ollama in tests
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    _home = tempfile.mkdtemp(prefix="aillm-test-home-")
    os.environ["AILLM_HOME"] = _home


def pytest_unconfigure(config: object) -> None:
    if _home:
        shutil.rmtree(_home, ignore_errors=True)
