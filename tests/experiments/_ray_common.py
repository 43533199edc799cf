"""What the Ray executor's tests share (test_ray_executor.py, test_ray_after_local.py): the
columns a Ray run must match the local run on, and the skip without the ``[ray]`` extra."""

from __future__ import annotations

import importlib.util

import pytest

# the deterministic columns: everything but when and how fast
SAME = ["cell_id", "item_id", "item_index", "prompt_index", "prompt", "model", "epoch",
        "sample", "input", "output", "tool_calls", "error", "cost_usd", "input_tokens",
        "output_tokens", "exact", "numeric", "cost"]

RAY_MISSING = "the Ray executor needs the [ray] extra: pip install 'aillm-lab[ray]'"
needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason=RAY_MISSING)
