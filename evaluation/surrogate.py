"""The cheap surrogate that ranks an LLM's candidates (LLAMBO and HOLLM in tuneloop): TPE's
density ratio (Bergstra et al. 2011, "Algorithms for Hyper-Parameter Optimization", sec. 4:
maximising EI under the tree-structured Parzen estimator is maximising l(x) / g(x)).

The trials told so far are split at the gamma-quantile of their scores: the best
ceil(gamma n) are "good", the rest "bad". Each group is a Parzen estimator in the space's
encoding (`encode`: unit coordinates of the numbers, a one-hot of each choice), a Gaussian of
bandwidth h on each point plus a uniform prior over the box with weight PRIOR_WEIGHT:

    l(x) = (sum_i N(x; x_i, h^2 I) + w) / (n_good + w),   g(x) likewise over the bad points,
    h = clip(n^(-1 / (d + 4)), H_MIN, H_MAX) * H_SCALE   (Scott's rule on a unit box)

A candidate's rank is log l(x) - log g(x): high where good trials are dense and bad ones are
not. Written here rather than taken from Optuna because Optuna's TPESampler scores only its
own draws (its Parzen estimator is private); numpy is all it needs.

    >>> from tuneloop.tools.gd_space import DEFAULT_SPACE
    >>> told = [{"learning_rate": lr, "momentum": m} for lr, m in [(1e-2, .9), (1e-2, .8), (1e-4, .1), (1e-4, .2)]]
    >>> r = DensityRatio(DEFAULT_SPACE).fit(told, [1.0, 2.0, 9.0, 8.0])
    >>> near_good, near_bad = {"learning_rate": 1.1e-2, "momentum": .85}, {"learning_rate": 1.1e-4, "momentum": .15}
    >>> bool(r.rank([near_good, near_bad])[0] > r.rank([near_good, near_bad])[1])
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tuneloop.tools.space import CategoricalParam, SearchSpace, json_key

GAMMA = 0.25  # the share of trials counted good (TPE's default is about this: 0.1 ... 0.25)
PRIOR_WEIGHT = 1.0  # the uniform prior's weight, in points: keeps g(x) > 0 away from every trial
H_SCALE, H_MIN, H_MAX = 0.5, 0.05, 1.0


def encode(space: SearchSpace, params: Mapping[str, Any]) -> np.ndarray:
    """A configuration as a point of the unit box: the numbers' unit coordinates (log10 on a
    log axis), then each categorical as a one-hot of its choices."""
    parts = [space.to_unit(params)]
    for name in space.categorical:
        p = space[name]
        assert isinstance(p, CategoricalParam)
        parts.append(np.array([float(json_key(params[name]) == json_key(c)) for c in p.choices]))
    return np.concatenate(parts) if parts else np.zeros(0)


class DensityRatio:
    """TPE's l(x) / g(x) over the trials told, fitted once per ranking (see the module)."""

    def __init__(self, space: SearchSpace, gamma: float = GAMMA) -> None:
        self.space = space
        self.gamma = gamma
        self.good = np.zeros((0, 0))
        self.bad = np.zeros((0, 0))

    def fit(self, told: Sequence[Mapping[str, Any]], scores: Sequence[float]) -> DensityRatio:
        X = np.array([encode(self.space, p) for p in told]) if told else np.zeros((0, 0))
        order = np.argsort(np.asarray(scores, dtype=float), kind="stable")
        n_good = math.ceil(self.gamma * len(order)) if len(order) else 0
        self.good, self.bad = X[order[:n_good]], X[order[n_good:]]
        return self

    @staticmethod
    def _log_density(points: np.ndarray, X: np.ndarray) -> np.ndarray:
        """log of the Parzen mixture (with the uniform prior) at each row of `X`."""
        n, d = len(points), X.shape[1]
        if n == 0:
            return np.zeros(len(X))  # the prior alone: density 1 on the unit box
        h = min(max(n ** (-1.0 / (d + 4)), H_MIN), H_MAX) * H_SCALE
        sq = ((X[:, None, :] - points[None, :, :]) ** 2).sum(-1)
        kernels = np.exp(-0.5 * sq / h**2) / ((2 * math.pi) ** 0.5 * h) ** d
        return np.log((kernels.sum(1) + PRIOR_WEIGHT) / (n + PRIOR_WEIGHT))

    def rank(self, candidates: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """log l(x) - log g(x) of each candidate; all 0 before any trial is told."""
        if not candidates:
            return np.zeros(0)
        X = np.array([encode(self.space, c) for c in candidates])
        return self._log_density(self.good, X) - self._log_density(self.bad, X)
