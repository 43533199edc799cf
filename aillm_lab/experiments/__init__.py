"""Experiments and evals: a grid of prompts × models over a dataset, scored, resumable.

``spec.py`` (``Experiment``, the cells and their ids), ``runner.py`` (the local runner on the
Lab's loop), ``store.py`` (the run's folder: manifest and Parquet parts), ``results.py``
(``ExperimentRun``: results, summary), ``scorers.py`` (the built-in scorers), ``stats.py``
(bootstrap intervals), ``compare.py`` (``compare``), ``plots.py`` (bokeh figures),
``judge.py`` (LLM-as-judge), ``tool_scorer.py`` (the BFCL-style tool-call match), and the
built-in suites ``bfcl.py`` (tool-calling conformance) and ``humaneval.py`` (sandboxed pass@1).
"""

from aillm_lab.experiments import scorers, suites
from aillm_lab.experiments.compare import compare, plot_comparison
from aillm_lab.experiments.results import ExperimentRun
from aillm_lab.experiments.spec import Experiment

__all__ = ["Experiment", "ExperimentRun", "compare", "plot_comparison", "scorers", "suites"]
