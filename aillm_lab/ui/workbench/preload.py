"""Load the Lab's default model in the background when the server starts.

Loading a local model takes from a third of a second (llama.cpp) to several seconds
(transformers); done on the first message, it makes the first reply the slowest one. The
server starts this at once, and each page shows a loading state until it is done, so a
user never types into a chat that cannot answer yet.
"""

from __future__ import annotations

import threading
import time

from aillm_lab.core.lab import Lab


class Preload:
    """One background load of ``lab``'s default model; pages wait on ``ready``."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ready = threading.Event()
        self.error: str | None = None
        self.seconds: float | None = None
        self._thread = threading.Thread(target=self._run, name="aillm-preload", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            model = self.lab.model()
            load = getattr(model, "load", None)  # local models; a hosted one has no weights
            if load is not None:
                self.lab.runner.run(load())
        except Exception as exc:  # shown on the page; the chat then reports it per message
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.seconds = time.perf_counter() - started
            self.ready.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.ready.wait(timeout)

    def status(self) -> str:
        """One line for the page: loading, ready (with the time it took), or the error."""
        if not self.ready.is_set():
            return "⏳ Loading the model… the chat opens when it is ready."
        if self.error is not None:
            return f"⚠️ The model did not load: {self.error}"
        return f"✅ Model ready (loaded in {self.seconds:.1f} s)."
