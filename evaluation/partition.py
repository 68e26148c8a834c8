"""HOLLM's partition of the search box (arXiv 2505.21372, sec. 3): a KD-tree over the points
evaluated so far, each leaf scored by how good its best point is and how unexplored it is.
Everything here is in the unit box of the space's numbers (SearchSpace.to_unit); the
strategy (evaluation/candidate_methods.py: HOLLM) maps leaves back to ranges.

    >>> X = np.array([[0.1, 0.2], [0.2, 0.9], [0.8, 0.3], [0.9, 0.8]])
    >>> leaves = kd_leaves(X, leaf_size=2)
    >>> [(leaf.lo.tolist(), leaf.hi.tolist(), leaf.members) for leaf in leaves]
    [([0.0, 0.0], [0.5, 1.0], [0, 1]), ([0.5, 0.0], [1.0, 1.0], [2, 3])]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

M0 = 0.5  # a leaf's size per dimension, m_t = floor(m0 d) + ceil(lambda log(1 + t))
LAMBDA = 0.0  # its growth with the trials: the authors' synthetic runs use 0 (scripts/run_synthetic.sh)
ALPHA_MAX, ALPHA_MIN = 1.0, 0.1  # the exploration weight's cosine schedule, from the first trial to the last
BETA_VOLUME, BETA_BONUS = 0.5, 0.5  # the exploration's split between a leaf's size and its UCB bonus


@dataclass(frozen=True)
class Leaf:
    """A box of the unit cube and the indices of the points inside it."""

    lo: np.ndarray
    hi: np.ndarray
    members: list[int]

    @property
    def volume(self) -> float:
        return float(np.prod(self.hi - self.lo))


def leaf_size(d: int, t: int, m0: float = M0, lam: float = LAMBDA) -> int:
    """m_t = floor(m0 d) + ceil(lambda log(1 + t)), at least 1: the most points a leaf holds
    before it is split (as the authors' code computes it, mohollm's kd_tree_partitioning.py).

    >>> leaf_size(2, 10), leaf_size(10, 10), leaf_size(2, 10, lam=1.0)
    (1, 5, 4)
    """
    return max(1, int(m0 * d) + math.ceil(lam * math.log1p(t)))


def kd_leaves(X: np.ndarray, leaf_size: int) -> list[Leaf]:
    """The KD-tree's leaves over the points X (n x d, in [0, 1]^d): a box holding more than
    `leaf_size` points is split on the dimension where they vary most, at their mean
    (points on the mean go left); a box whose points all coincide stays a leaf. Leaves are
    listed left to right."""
    d = X.shape[1]

    def split(lo: np.ndarray, hi: np.ndarray, idx: list[int]) -> list[Leaf]:
        pts = X[idx]
        var = pts.var(axis=0) if idx else np.zeros(d)
        if len(idx) <= leaf_size or not var.max() > 0:
            return [Leaf(lo, hi, idx)]
        j = int(np.argmax(var))
        cut = float(pts[:, j].mean())
        left_hi, right_lo = hi.copy(), lo.copy()
        left_hi[j], right_lo[j] = cut, cut
        return (split(lo, left_hi, [i for i in idx if X[i, j] <= cut])
                + split(right_lo, hi, [i for i in idx if X[i, j] > cut]))

    return split(np.zeros(d), np.ones(d), list(range(len(X))))


def alpha_at(t: int, budget: int, a_max: float = ALPHA_MAX, a_min: float = ALPHA_MIN) -> float:
    """The exploration weight, cosine-annealed from a_max at t = 0 to a_min at the budget:
    alpha_t = a_min + (a_max - a_min) (1 + cos(pi t / T)) / 2.

    >>> alpha_at(0, 24), alpha_at(12, 24), alpha_at(24, 24)
    (1.0, 0.55, 0.1)
    """
    frac = min(max(t / max(budget, 1), 0.0), 1.0)
    return a_min + (a_max - a_min) * (1 + math.cos(math.pi * frac)) / 2


def _unit_range(v: np.ndarray) -> np.ndarray:
    """Min-max normalised to [0, 1]; all equal -> all 1 (no leaf is preferred)."""
    span = v.max() - v.min()
    return np.ones_like(v) if not span > 0 else (v - v.min()) / span


def leaf_scores(leaves: list[Leaf], scores: np.ndarray, t: int, budget: int) -> np.ndarray:
    """Each leaf's score (lower trial scores are better), as mohollm's ScoreRegion computes it:

        s = exploit + alpha_t (0.5 vol + 0.5 bonus)

    exploit: the leaf's best trial; vol: volume^(1/d); bonus: MOSS's, sqrt(2 var L / n) + L / n
    with L = max(0, log(T / (K n))) for a leaf of n points among K leaves, var their scores'
    sample variance (0.01 for one point); each term min-max normalised over the leaves (an
    empty leaf's exploit 0, its bonus the largest)."""
    d, k = len(leaves[0].lo), len(leaves)
    best = np.array([-scores[leaf.members].min() if leaf.members else -np.inf for leaf in leaves])
    finite = np.isfinite(best)
    exploit = np.zeros(k)
    if finite.any():
        exploit[finite] = _unit_range(best[finite])
    vol = _unit_range(np.array([leaf.volume ** (1.0 / d) for leaf in leaves]))
    bonus = np.empty(k)
    for i, leaf in enumerate(leaves):
        n = len(leaf.members)
        var = float(np.var(scores[leaf.members], ddof=1)) if n > 1 else 0.01
        log_t = max(0.0, math.log(max(budget, 1) / (k * max(n, 1))))
        bonus[i] = math.sqrt(2 * var * log_t / max(n, 1)) + log_t / max(n, 1)
    return exploit + alpha_at(t, budget) * (BETA_VOLUME * vol + BETA_BONUS * _unit_range(bonus))


def sample_leaves(weights: np.ndarray, m: int, rng: np.random.Generator) -> list[int]:
    """m leaf indices drawn without replacement, each with probability proportional to its
    score (all leaves when there are no more than m)."""
    n = len(weights)
    if n <= m:
        return list(range(n))
    w = np.clip(weights, 0.0, None)
    p = w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
    return [int(i) for i in rng.choice(n, size=m, replace=False, p=p)]
