"""The workbench's model preload: loaded in the background at server start, the chat page
disabled and saying so until it is ready (the browser test times the first reply after)."""

from __future__ import annotations

import asyncio
import threading

import pytest

import aillm_lab as al
from aillm_lab.errors import ModelNotAvailable
from aillm_lab.testing import ScriptedModel
from aillm_lab.ui.workbench.preload import Preload

pytest.importorskip("panel")
pytestmark = [  # Panel's Tabulator, on pandas 3.1 (see test_dashboard.py)
    pytest.mark.filterwarnings(
        "ignore:The inplace keyword in DataFrame.reset_index:pandas.errors.Pandas4Warning"),
    pytest.mark.filterwarnings("ignore::aillm_lab.db.SqliteVersionWarning")]


class SlowLoading(ScriptedModel):
    """A scripted model with weights to load, which load when the test says so."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__("hello")
        self.release = threading.Event()
        self.loads = 0
        self.fail = fail

    async def load(self) -> None:
        self.loads += 1
        await asyncio.to_thread(self.release.wait, 30)
        if self.fail:
            raise ModelNotAvailable("no weights here; run aillm-lab models pull smollm2")


def test_the_chat_is_disabled_and_says_loading_until_the_model_is_loaded(make_lab):
    from aillm_lab.ui.workbench.app import Workbench

    model = SlowLoading()
    lab = make_lab(model)
    preload = Preload(lab)
    bench = Workbench(lab, preload=preload)
    assert bench.chat.disabled and bench.chat.active_widget.disabled  # the box too
    assert "Loading the model" in bench.model_status.object
    model.release.set()
    asyncio.run(asyncio.wait_for(bench.when_ready(), 30))
    assert not bench.chat.disabled and not bench.chat.active_widget.disabled
    assert "Model ready (loaded in" in bench.model_status.object
    assert model.loads == 1
    assert Workbench(lab, preload=preload).chat.disabled is False  # later tabs: open at once


def test_a_model_that_fails_to_load_is_reported_and_the_chat_opens_anyway(make_lab):
    model = SlowLoading(fail=True)
    model.release.set()
    preload = Preload(make_lab(model))
    assert preload.wait(30)
    assert preload.error is not None and "models pull smollm2" in preload.error
    assert preload.status().startswith("⚠️ The model did not load: ModelNotAvailable")


def test_a_model_with_nothing_to_load_is_ready_at_once(make_lab):
    preload = Preload(make_lab(al.testing.ScriptedModel("hi")))
    assert preload.wait(30) and preload.error is None
    assert preload.status().startswith("✅ Model ready")


def test_without_a_preload_the_workbench_shows_no_model_status(make_lab):
    from aillm_lab.ui.workbench.app import Workbench

    bench = Workbench(make_lab(ScriptedModel("hi")))
    assert not bench.model_status.visible and not bench.chat.disabled
