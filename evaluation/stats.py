"""The statistics a study's summary reports: pure functions over scores and proposals.

Lower scores are better throughout (every method minimises the score). Arms are compared
seed for seed (paired: under one seed every arm starts from the same point):

- `paired_table`: for every pair of arms, wins/ties/losses over the seeds both ran, the
  two-sided Wilcoxon signed-rank p-value on the paired scores (scipy.stats.wilcoxon with
  zero_method="zsplit": a tied seed's rank counts half for each side; p = 1 when every
  difference is zero, None below two paired seeds), the Holm-corrected p over the pairs
  of the table (`holm`), and the matched-pairs rank-biserial correlation (`rank_biserial`);
- `bootstrap_median_ci`: the median with a seeded percentile-bootstrap interval;
- `diversity`: the mean pairwise distance of a run's proposals in the space's unit
  coordinates, averaged over runs; `failed_share`: the share of failed trials;
- `runtime_ecdf`: the share of (seed, target) pairs each arm has reached after k
  evaluations, COCO's and IOHanalyzer's runtime ECDF with targets relative to the best
  score any arm found on the seed.

    >>> rows = paired_table({"a": {0: 1.0, 1: 2.0, 2: 3.0}, "b": {0: 2.0, 1: 2.0, 2: 5.0}})
    >>> r = rows[0]
    >>> (r.a, r.b, r.n, r.wins, r.ties, r.losses, r.p, r.r)
    ('a', 'b', 3, 2, 1, 0, 0.5, 0.8333333333333334)
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats as sps  # type: ignore[import-untyped]  # scipy ships no py.typed

from tuneloop.tools.space import SearchSpace

ZERO_METHOD = "zsplit"  # Wilcoxon's zero differences: half their rank to each side (test and effect size)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
ECDF_TAUS = (0.0, 0.5, 1.0, 2.0, 4.0)  # added to the seed's best score: decades of the gap on a GD objective
ECDF_RELATIVE_TAUS = (0.0, 0.01, 0.05, 0.1, 0.5)  # a task: fractions of |seed's best score|

Scores = Sequence[float | None] | np.ndarray  # one score per seed, in seed order; None: no result


@dataclass(frozen=True)
class PairRow:
    """Arm `a` against arm `b` over the `n` seeds both ran: `wins` (a scored lower),
    `ties`, `losses`; the Wilcoxon p-value (None: fewer than two seeds), its Holm-corrected
    value over the table, and the rank-biserial r (> 0: a scored lower; None: no seed)."""

    a: str
    b: str
    n: int
    wins: int
    ties: int
    losses: int
    p: float | None
    p_holm: float | None
    r: float | None


def _paired(a: Scores, b: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Two score vectors as finite arrays. A missing score (None, inf or nan: a cell with
    no result) is worse than every finite one: it becomes M = max + (max - min) + 1 of the
    finite scores, so any difference against it outranks every difference between finite
    scores, and two missing scores tie.

    >>> _paired([1.0, None], [3.0, 2.0])
    (array([1., 6.]), array([3., 2.]))
    """
    x = np.array([np.inf if v is None else v for v in a], float)
    y = np.array([np.inf if v is None else v for v in b], float)
    both = np.concatenate([x, y])
    finite = both[np.isfinite(both)]
    worst = float(finite.max() + (finite.max() - finite.min()) + 1.0) if finite.size else 0.0
    return np.where(np.isfinite(x), x, worst), np.where(np.isfinite(y), y, worst)


def wilcoxon_p(a: Scores, b: Scores) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired scores (scipy, zero_method
    "zsplit", its default method: exact without ties, an exact permutation test with ties
    up to 13 pairs, the normal approximation beyond); 1.0 when every difference is zero,
    None with fewer than two pairs.

    >>> wilcoxon_p([1, 2, 3, 4, 5], [2, 3, 4, 5, 6]), wilcoxon_p([1, 2], [1, 2]), wilcoxon_p([1], [2])
    (0.0625, 1.0, None)
    """
    x, y = _paired(a, b)
    if x.size < 2:
        return None
    if np.all(x == y):
        return 1.0
    return float(sps.wilcoxon(x, y, zero_method=ZERO_METHOD).pvalue)


def rank_biserial(a: Scores, b: Scores) -> float | None:
    """Matched-pairs rank-biserial correlation r = (W+ - W-) / (W+ + W-), where W+ sums the
    ranks of |d| over the pairs a scored lower (d = b - a > 0) and W- over those b did; a
    zero difference's rank counts half to each (as zsplit), so ties pull r toward 0. r is
    in [-1, 1]: 1 when a is lower on every seed. None without pairs.

    >>> rank_biserial([1, 2, 3], [2, 3, 4]), rank_biserial([1, 2, 3], [1, 2, 4]), rank_biserial([], [])
    (1.0, 0.5, None)
    """
    x, y = _paired(a, b)
    if x.size == 0:
        return None
    d = y - x
    ranks = sps.rankdata(np.abs(d))
    half_zero = ranks[d == 0].sum() / 2
    w_plus, w_minus = ranks[d > 0].sum() + half_zero, ranks[d < 0].sum() + half_zero
    return float((w_plus - w_minus) / (w_plus + w_minus))


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down correction over the p-values given (None: no test, left out of
    the count and returned as None): the i-th smallest of m becomes
    max over j <= i of min(1, (m - j + 1) p_(j)).

    >>> holm([0.01, 0.04, 0.03, None])
    [0.03, 0.06, 0.06, None]
    """
    tested = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for j, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def paired_table(scores: Mapping[str, Mapping[Hashable, float | None]]) -> list[PairRow]:
    """Every pair of arms (in the mapping's order, a before b), paired on the seeds (the
    inner keys) both have; the Holm correction runs over all pairs of the table. A score
    of None or inf (no result) loses to every finite score and ties another missing one."""
    arms = list(scores)
    rows = []
    for i, a in enumerate(arms):
        for b in arms[i + 1:]:
            seeds = [s for s in scores[a] if s in scores[b]]
            x, y = _paired([scores[a][s] for s in seeds], [scores[b][s] for s in seeds])
            rows.append(PairRow(a, b, len(seeds), int(np.sum(x < y)), int(np.sum(x == y)), int(np.sum(x > y)),
                                wilcoxon_p(x, y), None, rank_biserial(x, y)))
    adjusted = holm([r.p for r in rows])
    return [replace(r, p_holm=q) for r, q in zip(rows, adjusted, strict=True)]


def bootstrap_median_ci(values: Sequence[float | None], n_resamples: int = BOOTSTRAP_RESAMPLES,
                        level: float = 0.95, seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float] | None:
    """(median, low, high): the median of the finite values and its percentile-bootstrap
    interval (n_resamples resamples with replacement, numpy's default_rng(seed), the
    (1 - level) / 2 and (1 + level) / 2 quantiles of the resampled medians). None without
    a finite value.

    >>> bootstrap_median_ci([3.0, 1.0, 2.0, None])[0], bootstrap_median_ci([5.0]), bootstrap_median_ci([None])
    (2.0, (5.0, 5.0, 5.0), None)
    """
    x = np.array([v for v in values if v is not None and math.isfinite(v)], float)
    if x.size == 0:
        return None
    rng = np.random.default_rng(seed)
    medians = np.median(x[rng.integers(0, x.size, size=(n_resamples, x.size))], axis=1)
    lo, hi = np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])
    return float(np.median(x)), float(lo), float(hi)


def mean_pairwise_distance(space: SearchSpace, configs: Sequence[Mapping[str, Any]]) -> float | None:
    """The mean Euclidean distance over all pairs of configurations, in the space's unit
    coordinates (SearchSpace.to_unit: each continuous axis, log10 on a log one, scaled to
    [0, 1]); a categorical axis adds 1 (squared) when the choices differ. So a distance lies
    in [0, sqrt(number of parameters)]. A configuration missing a parameter is left out;
    None with fewer than two.

    >>> from tuneloop.tools.gd_space import DEFAULT_SPACE
    >>> mean_pairwise_distance(DEFAULT_SPACE, [{"learning_rate": 1e-4, "momentum": 0.0},
    ...                                        {"learning_rate": 1e-1, "momentum": 0.0}])
    1.0
    """
    ok = [c for c in configs if all(c.get(n) is not None for n in space.names)]
    if len(ok) < 2:
        return None
    z = np.array([space.to_unit(c) for c in ok], float).reshape(len(ok), len(space.continuous))
    sq = ((z[:, None, :] - z[None, :, :]) ** 2).sum(axis=-1)
    for n in space.categorical:
        choice = np.array([json.dumps(c[n]) for c in ok])  # true and 1 are different choices
        sq += choice[:, None] != choice[None, :]
    upper = np.triu_indices(len(ok), 1)
    return float(np.sqrt(sq[upper]).mean())


def diversity(space: SearchSpace, runs: Sequence[Sequence[Mapping[str, Any]]]) -> float | None:
    """An arm's search diversity: `mean_pairwise_distance` of each run's proposals, averaged
    over the runs that have two or more (None if none has).

    >>> from tuneloop.tools.gd_space import DEFAULT_SPACE
    >>> lr = [{"learning_rate": 1e-4, "momentum": 0.0}, {"learning_rate": 1e-1, "momentum": 0.0}]
    >>> diversity(DEFAULT_SPACE, [lr, lr[:1] * 2, lr[:1]])
    0.5
    """
    per_run = [d for d in (mean_pairwise_distance(space, r) for r in runs) if d is not None]
    return float(np.mean(per_run)) if per_run else None


def failed_share(scores: Sequence[float | None], threshold: float) -> float | None:
    """The share of trials whose score is missing or at least `threshold` (a diverged GD
    run scores DIVERGED_SCORE, a failed task trial FAILED_SCORE); None without trials.

    >>> failed_share([1.0, 400.0, None, -3.0], 400.0), failed_share([], 400.0)
    (0.5, None)
    """
    if not scores:
        return None
    return sum(s is None or not s < threshold for s in scores) / len(scores)


def runtime_ecdf(curves: Mapping[str, Sequence[Sequence[float]]], taus: Sequence[float] = ECDF_TAUS,
                 relative: bool = False) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(k, {arm: share}): for each arm, the share of (seed, tau) pairs whose best-so-far
    score after k evaluations is at most the target best + tau (`relative`:
    best + tau |best|), best being the lowest score any arm reached on that seed. `curves`
    are each arm's anytime curves (best so far, one per seed, the seeds in the same order
    for every arm); a curve that stops early keeps its last value, an empty one never
    reaches a target. Seeds on which no arm has a finite score are left out.

    >>> ks, share = runtime_ecdf({"a": [[3.0, 1.0]], "b": [[2.0, 2.0]]}, taus=(0.0, 1.0))
    >>> ks.tolist(), share["a"].tolist(), share["b"].tolist()
    ([1, 2], [0.0, 1.0], [0.5, 0.5])
    """
    arms = list(curves)
    k_max = max((len(c) for cs in curves.values() for c in cs), default=0)
    n_seeds = max((len(cs) for cs in curves.values()), default=0)
    padded = {a: np.array([[c[k] if k < len(c) else (c[-1] if c else np.inf) for k in range(k_max)]
                           for c in curves[a]] + [[np.inf] * k_max] * (n_seeds - len(curves[a])),
                          float).reshape(n_seeds, k_max) for a in arms}
    best = np.min([padded[a].min(axis=1, initial=np.inf) for a in arms], axis=0) if arms else np.zeros(0)
    keep = np.isfinite(best)
    tau = np.asarray(taus, float)
    targets = best[keep, None] + tau[None, :] * (np.abs(best[keep, None]) if relative else 1.0)  # (seeds, taus)
    ks = np.arange(1, k_max + 1)
    share = {}
    for a in arms:
        reached = padded[a][keep][:, :, None] <= targets[:, None, :]  # (seeds, k, taus)
        share[a] = reached.mean(axis=(0, 2)) if targets.size else np.zeros(k_max)
    return ks, share
