"""The one scalar score every method minimises, and the study's status labels.

score = bin(log10(gap + 1e-12)) + 0.01 * iterations / (max_iter + 1)      (finite runs)
score = 400                                                                (diverged)

where gap = max(f_final - f*, 0) is the distance to the objective's known global minimum
and bin() rounds down to a multiple of SCORE_TOL_DECADES = 0.01. Hence:
  - lower is better and the score never decreases as the final value grows;
  - two final values in the same 0.01-decade bin (about 2.3 % apart in gap, or both within
    1e-12 of the minimum) count as equal, and then fewer iterations win: the iteration
    term is always below one bin;
  - a diverged run (400) is strictly worse than any finite one (at most log10(DBL_MAX)
    + 0.01 < 308.3).
The log scale lets CMA-ES and TPE see progress across many orders of magnitude.
"""

from __future__ import annotations

import math

SCORE_TOL_DECADES = 0.01
GAP_FLOOR = 1e-12
DIVERGED_SCORE = 400.0
GOOD_GAP = 1e-3  # within this of the global minimum a run is "Good"


def score(final_value: float | None, iterations: int, max_iter: int, f_star: float = 0.0) -> float:
    if final_value is None or not math.isfinite(final_value):
        return DIVERGED_SCORE
    gap = max(final_value - f_star, 0.0)
    level = math.log10(gap + GAP_FLOOR)
    binned = math.floor(level / SCORE_TOL_DECADES) * SCORE_TOL_DECADES
    return binned + SCORE_TOL_DECADES * iterations / (max_iter + 1)


def study_label(status: str, final_value: float | None, f_star: float, is_best: bool) -> str:
    """The study's labels, made precise:

    Diverged  the run went non-finite;
    Best      the lowest score among the runs being compared (ties share it);
    Good      within GOOD_GAP of the global minimum;
    Slow      not within GOOD_GAP and still moving when max_iter ran out;
    Poor      not within GOOD_GAP and stopped (converged to a local minimum or plateau).
    """
    if status == "diverged" or final_value is None or not math.isfinite(final_value):
        return "Diverged"
    if is_best:
        return "Best"
    if final_value - f_star <= GOOD_GAP:
        return "Good"
    return "Slow" if status == "max_iter" else "Poor"


def is_failed(status: str, final_value: float | None, f_star: float) -> bool:
    """A failed trial, for prompts and the state audit: one the study would label Diverged
    or Poor (diverged, or stopped more than GOOD_GAP above the minimum)."""
    return study_label(status, final_value, f_star, is_best=False) in ("Diverged", "Poor")
