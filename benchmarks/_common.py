"""What every benchmark script shares: the machine it ran on and where results go."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("results")


def environment(load_at_start: float | None = None) -> dict[str, object]:
    """Date, Python, platform, CPUs and load average, so a busy run can be spotted."""
    env: dict[str, object] = {
        "date_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0], "platform": platform.platform(),
        "cpus": os.cpu_count()}
    if load_at_start is not None:
        env["loadavg_1m_start"] = round(load_at_start, 2)
    env["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return env


def save(name: str, report: str, data: dict[str, Any]) -> None:
    """Print the report and write it, with the raw figures, to ``results/<name>.{txt,json}``."""
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.txt").write_text(report + "\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"benchmark": name, **data},
                                                     indent=2) + "\n")
