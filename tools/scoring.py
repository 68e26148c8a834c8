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

`score` scores one run (called per trial), `score_array` a whole grid of runs; both
evaluate the rule in `_finite_score`, so they agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import accumulate
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt

SCORE_TOL_DECADES = 0.01
GAP_FLOOR = 1e-12
DIVERGED_SCORE = 400.0
GOOD_GAP = 1e-3  # within this of the global minimum a run is "Good"

# A level this close to a bin edge (in bins) is recomputed with math.log10 by
# score_array; vector log10s are within a few ulps (~1e-11 bins at |level| ~ 308).
EDGE_BINS = 1e-6


class _Ops(NamedTuple):
    """The non-arithmetic operations of the rule, for floats or for arrays."""

    maximum: Callable[..., Any]
    log10: Callable[..., Any]
    floor: Callable[..., Any]
    sign: Callable[..., Any]
    abs: Callable[..., Any]


@overload
def _finite_score(final_value: float, iterations: int, max_iter: int, f_star: float | None, ops: _Ops) -> float: ...


@overload
def _finite_score(final_value: npt.NDArray[np.float64], iterations: npt.NDArray[Any], max_iter: int,
                  f_star: float | None, ops: _Ops) -> npt.NDArray[np.float64]: ...


def _finite_score(final_value: Any, iterations: Any, max_iter: int, f_star: float | None, ops: _Ops) -> Any:
    """The score of a finite run: the rule, written once for floats and arrays alike.
    With no known minimum (an objective from a file without MINIMUM) the level is the
    final value itself, compressed as sign(f) log10(1 + |f|): increasing in f, and below
    309 for any finite f, so a diverged run still scores worse."""
    if f_star is None:
        level = ops.sign(final_value) * ops.log10(1.0 + ops.abs(final_value))
    else:
        gap = ops.maximum(final_value - f_star, 0.0)
        level = ops.log10(gap + GAP_FLOOR)
    binned = ops.floor(level / SCORE_TOL_DECADES) * SCORE_TOL_DECADES
    return binned + SCORE_TOL_DECADES * iterations / (max_iter + 1)


# Swapped out by the tests to stand in for a vector log10 that is not the C library's.
vector_log10 = np.log10


def _log10_like_math(x: np.ndarray) -> np.ndarray:
    """np.log10, made to bin exactly as math.log10 does.

    NumPy may compute log10 with its own SIMD code (SVML on AVX-512 machines), which can
    differ from the C library's log10 (what math.log10 calls) in the last bit. The level
    reaches the score only through floor(level / SCORE_TOL_DECADES), so a last-bit
    difference matters only next to a bin edge: those few values are recomputed with
    math.log10, which makes score_array equal score bit for bit on any machine."""
    level: np.ndarray = vector_log10(x)
    q = level / SCORE_TOL_DECADES
    near = np.abs(q - np.rint(q)) < EDGE_BINS
    if near.any():
        level[near] = [math.log10(v) for v in x[near].tolist()]
    return level


_SCALAR = _Ops(max, math.log10, math.floor, lambda v: (v > 0) - (v < 0), abs)
_ARRAY = _Ops(np.maximum, _log10_like_math, np.floor, np.sign, np.abs)


def score(final_value: float | None, iterations: int, max_iter: int, f_star: float | None = 0.0) -> float:
    if final_value is None or not math.isfinite(final_value):
        return DIVERGED_SCORE
    return _finite_score(final_value, iterations, max_iter, f_star, _SCALAR)


def score_array(final_values: np.ndarray, iterations: np.ndarray, max_iter: int,
                f_star: float | None = 0.0) -> np.ndarray:
    """`score` for every run at once (any shape; nan or inf final value: diverged).

    Equal bit for bit to [score(f, i, max_iter, f_star) for f, i in zip(...)]."""
    f = np.asarray(final_values, dtype=np.float64)
    it = np.asarray(iterations)
    f, it = np.broadcast_arrays(f, it)
    out = np.full(f.shape, DIVERGED_SCORE)
    finite = np.isfinite(f)
    # only the finite runs go through the rule: no nan/inf arithmetic, no warnings
    out[finite] = _finite_score(f[finite], it[finite], max_iter, f_star, _ARRAY)
    return out


def best_so_far(scores: Iterable[float]) -> list[float]:
    """The anytime curve: the best (lowest) score after each charged evaluation.

    >>> best_so_far([3.5, 400.0, -2.1, 0.7, -2.1])
    [3.5, 3.5, -2.1, -2.1, -2.1]
    >>> best_so_far([])
    []
    """
    return [float(s) for s in accumulate(scores, min)]


def study_label(status: str, final_value: float | None, f_star: float | None, is_best: bool) -> str:
    """The study's labels, made precise:

    Diverged  the run went non-finite;
    Best      the lowest score among the runs being compared (ties share it);
    Good      within GOOD_GAP of the global minimum;
    Slow      not within GOOD_GAP and still moving when max_iter ran out;
    Poor      not within GOOD_GAP and stopped (converged to a local minimum or plateau).

    Without a known minimum (f_star None) nothing can be called Good or Poor: a run that
    stopped is Good, one still moving is Slow.
    """
    if status == "diverged" or final_value is None or not math.isfinite(final_value):
        return "Diverged"
    if is_best:
        return "Best"
    if f_star is None:
        return "Slow" if status == "max_iter" else "Good"
    if final_value - f_star <= GOOD_GAP:
        return "Good"
    return "Slow" if status == "max_iter" else "Poor"


def is_failed(status: str, final_value: float | None, f_star: float | None) -> bool:
    """A failed trial, for prompts and the state audit: one the study would label Diverged
    or Poor (diverged, or stopped more than GOOD_GAP above the minimum)."""
    return study_label(status, final_value, f_star, is_best=False) in ("Diverged", "Poor")
