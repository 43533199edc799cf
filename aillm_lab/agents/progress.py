"""``RunBar``: the progress bar of a long agent run, built only once the run has gone on
for a while.

Why lazy: most runs take well under a second, and a bar that flashes up for them is noise
(and tqdm's import and its first draw cost more than a whole step of the loop). The loop asks
``due`` at each step boundary, a float comparison; tqdm is imported and the bar drawn only
the first time a step starts after the threshold.
"""

from __future__ import annotations

import time
from typing import Any


class RunBar:
    """Steps taken out of ``max_steps`` (``tqdm.auto``: a widget in Jupyter, text elsewhere),
    shown from the first step boundary ``after_s`` seconds into the run; None: never."""

    __slots__ = ("after_s", "due_at", "bar", "desc")

    def __init__(self, after_s: float | None, desc: str) -> None:
        self.after_s, self.desc = after_s, desc
        self.due_at: float | None = None
        self.bar: Any = None

    def start(self, started: float) -> None:
        """The run's clock started (``time.monotonic()``)."""
        if self.after_s is not None:
            self.due_at = started + self.after_s

    def due(self) -> bool:
        """Whether the bar should be shown or moved now (cheap: called every step)."""
        return self.due_at is not None and time.monotonic() >= self.due_at

    def show(self, done: int, total: int) -> None:
        """Draw the bar the first time, else move it to ``done`` steps."""
        if self.bar is None:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # the bar is a comfort, not a need
                self.due_at = None
                return
            self.bar = tqdm(total=total, initial=done, unit="step", desc=self.desc)
        elif done != self.bar.n:
            self.bar.update(done - self.bar.n)

    def close(self, done: int) -> None:
        """The run ended: show its last step count and close the bar, if it was shown."""
        self.due_at = None
        bar, self.bar = self.bar, None
        if bar is not None:
            if done != bar.n:
                bar.update(done - bar.n)
            bar.close()
