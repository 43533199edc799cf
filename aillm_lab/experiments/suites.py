"""``al.suites``: ready experiments over datasets that ship in installed packages.

    he = al.suites.humaneval(["local:smollm2"], limit=20).run()      # pass@1 in the sandbox
    bf = al.suites.bfcl(["openai:gpt-4o-mini"], "simple_python")     # needs the [bfcl] data

Each returns an ``Experiment`` (run, resume, compare it like any other). The ``*_replay``
functions are ``ScriptedModel`` replies that answer each item correctly (or, for HumanEval,
with an empty body): the reference points a suite is checked against offline.
"""

from __future__ import annotations

from aillm_lab.experiments import bfcl as _bfcl
from aillm_lab.experiments import humaneval as _humaneval

humaneval = _humaneval.experiment
bfcl = _bfcl.experiment
humaneval_replay = _humaneval.replay
bfcl_replay = _bfcl.replay

__all__ = ["bfcl", "bfcl_replay", "humaneval", "humaneval_replay"]
