"""LLM-as-judge: a scorer whose score is a model's grade of the output against a rubric.

The judge asks through the Lab (``lab.acomplete`` with a JSON schema), so its calls pass the
gateway like the cells' own: limits, retries, record/replay, the call log under the run id,
and the run's budget. A judge that fails (a refused budget, a reply that never validates) is
that score's error row; the cell keeps its output.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aillm_lab.errors import ConfigError
from aillm_lab.experiments.scorers import Scorer

if TYPE_CHECKING:
    from aillm_lab import Lab

PROMPT = """You grade one answer against a rubric.

Rubric:
{rubric}

The item the answer is for:
{item}
{reference}
The answer to grade:
<<<
{output}
>>>

Grade from {low} to {high}, where {high} is best. Reply with JSON only:
{{"score": <number>, "reason": "<one sentence>"}}"""

VERDICT = {"type": "object", "required": ["score"],
           "properties": {"score": {"type": "number"}, "reason": {"type": "string"}}}


def judge(rubric: str, model: Any = None, *, reference: str | None = None,
          scale: tuple[float, float] = (0, 10), name: str = "judge") -> Scorer:
    """See ``al.scorers.judge``."""
    low, high = scale
    if not rubric.strip():
        raise ConfigError("scorers.judge: the rubric is empty; say what a good answer is",
                          fields=("rubric",))
    if not high > low:
        raise ConfigError(f"scorers.judge: scale={scale}: give (low, high) with high > low",
                          fields=("scale",))

    async def grade(output: str | None, item: Mapping[str, Any], cell: Mapping[str, Any],
                    lab: Lab) -> float:
        shown = {k: v for k, v in item.items() if k != reference}
        ref = (f"\nThe reference answer:\n{item.get(reference)}\n"
               if reference is not None else "")
        prompt = PROMPT.format(rubric=rubric.strip(), item=json.dumps(shown, ensure_ascii=False),
                               reference=ref, output=output or "(empty)", low=low, high=high)
        verdict = await lab.acomplete(prompt, model, output=VERDICT, max_tokens=256)
        score = min(max(float(verdict["score"]), low), high)
        return (score - low) / (high - low)

    return Scorer(name, grade, (reference,) if reference else (), needs_lab=True)
