"""Grids: the study's grid and its refinement (docs/protocol.md), and a grid over any
typed space."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from tuneloop.evaluation.strategy_base import Params, Strategy, StrategyContext, register
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.space import CategoricalParam, IntParam, SearchSpace

STUDY_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)
STUDY_BETAS = (0.0, 0.5, 0.9)
REFINE_ALPHA_FACTORS = (0.8, 1.0, 1.2, 1.4)
REFINE_BETA_OFFSETS = (-0.03, 0.0, 0.03)


def grid_counts(sizes: int, budget: int) -> list[int]:
    """Points per continuous axis for a grid of about `budget` points: the counts grow one
    axis at a time, first axes first, until their product reaches `budget` (`sizes` axes).

    >>> grid_counts(2, 12), grid_counts(4, 6), grid_counts(4, 12), grid_counts(0, 5)
    ([4, 3], [2, 2, 2, 1], [2, 2, 2, 2], [])
    """
    counts = [1] * sizes
    while sizes and math.prod(counts) < budget:
        i = counts.index(min(counts))  # the first of the smallest
        counts[i] += 1
    return counts


def axis_values(space: SearchSpace, name: str, n: int) -> list[Any]:
    """n evenly spaced values of a continuous parameter (on its log scale if it has one;
    one value: the centre), integers rounded and deduplicated; a categorical's choices."""
    p = space[name]
    if isinstance(p, CategoricalParam):
        return list(p.choices)
    z = np.full(1, 0.5) if n == 1 else np.linspace(0.0, 1.0, n)
    c = space.continuous
    vals = [space.from_unit(np.array([zi if k == name else 0.5 for k in c]))[name] for zi in z]
    return list(dict.fromkeys(vals)) if isinstance(p, IntParam) else vals


def spread(points: list[Any], budget: int | None) -> list[Any]:
    """`budget` of the points, spread evenly over their order (indices round(linspace(0,
    n - 1, budget))), or all of them when they fit."""
    if budget is None or budget >= len(points):
        return points
    idx = sorted({int(round(i)) for i in np.linspace(0, len(points) - 1, budget)})
    return [points[i] for i in idx]


REFINED_PARAMS = ("learning_rate", "momentum")  # the only space `refined` searches, in this order


def check_refined_space(space: SearchSpace) -> SearchSpace:
    """`space` if `refined` can search it (the study's protocol: learning_rate and momentum,
    in that order), else a ValueError saying so."""
    if space.names != REFINED_PARAMS:
        raise ValueError(f"refined is the study's protocol: it searches {' and '.join(REFINED_PARAMS)} only")
    return space


def study_grid(space: SearchSpace) -> list[Params] | None:
    """The study's grid, alpha in {1e-4, 1e-3, 1e-2, 1e-1} x beta in {0, 0.5, 0.9} in
    alpha-major order, when `space` is learning_rate and momentum and holds all of it."""
    if space.names != REFINED_PARAMS:
        return None
    pts = [{"learning_rate": float(a), "momentum": float(b)} for a in STUDY_ALPHAS for b in STUDY_BETAS]
    return pts if all(space.check(p) is None for p in pts) else None


@register("grid")
class GridSearch(Strategy):
    """A grid over the space, at most `budget` points. On the default space (learning_rate
    and momentum holding the study's grid) the study's 12 points; otherwise every
    categorical combination times a full factorial over the continuous axes, with
    `grid_counts` points per axis (a budget's worth), in lexicographic order. When the
    grid has more points than the budget, `spread` picks them."""

    @classmethod
    def create(cls, ctx: StrategyContext) -> GridSearch:
        return cls(ctx.space, budget=ctx.budget)

    def __init__(self, space: SearchSpace = DEFAULT_SPACE, budget: int | None = None) -> None:
        points = study_grid(space)
        if points is None:
            n_cat = math.prod(len(axis_values(space, n, 0)) for n in space.categorical)
            target = max(1, -(-(budget or 1) // n_cat)) if budget else 1
            counts = dict(zip(space.continuous, grid_counts(len(space.continuous), target), strict=True))
            axes = [axis_values(space, n, counts.get(n, 0)) for n in space.names]
            points = [dict(zip(space.names, combo, strict=True)) for combo in itertools.product(*axes)]
        self.points = spread(points, budget)
        self._i = 0
        self.results: list[tuple[Params, float]] = []

    def ask(self) -> Params | None:
        if self._i >= len(self.points):
            return None
        self._i += 1
        return dict(self.points[self._i - 1])

    def tell(self, params: Params, score: float) -> None:
        self.results.append((params, score))

    def best(self) -> tuple[Params, float] | None:
        return min(self.results, key=lambda r: r[1]) if self.results else None


def refinement_points(alpha: float, beta: float, space: SearchSpace | None = None) -> list[tuple[float, float]]:
    """docs/protocol.md: alpha in {0.8, 1.0, 1.2, 1.4} x alpha*, beta in {beta* - 0.03, beta*,
    beta* + 0.03}, dropping betas outside [0, 1) and alphas above 1, and with a `space`,
    points outside it."""
    pts = []
    for f in REFINE_ALPHA_FACTORS:
        for d in REFINE_BETA_OFFSETS:
            a, b = alpha * f, round(beta + d, 10)
            if 0.0 <= b < 1.0 and 0.0 < a <= 1.0 and (
                    space is None or space.check({"learning_rate": a, "momentum": b}) is None):
                pts.append((a, b))
    return pts


@register("refined")
class RefinedGrid(Strategy):
    """The study's grid, then its refinement around the grid's best, charged to the same
    budget: the first min(12, budget) trials are the grid (subset as in GridSearch), the
    rest refine; the refinement point equal to the grid's best is skipped (a repeat).
    The study's protocol: learning_rate and momentum only."""

    @classmethod
    def create(cls, ctx: StrategyContext) -> RefinedGrid:
        return cls(budget=ctx.budget, space=ctx.space)

    def __init__(self, budget: int | None = None, space: SearchSpace = DEFAULT_SPACE) -> None:
        check_refined_space(space)
        self.grid = GridSearch(space, budget=budget)
        self.space = space
        self._refine: list[Params] | None = None

    def ask(self) -> Params | None:
        p = self.grid.ask()
        if p is not None:
            return p
        if self._refine is None:
            best = self.grid.best()
            if best is None:
                self._refine = []
            else:
                a, b = best[0]["learning_rate"], best[0]["momentum"]
                self._refine = [{"learning_rate": x, "momentum": y}
                                for x, y in refinement_points(a, b, self.space) if (x, y) != (a, b)]
        return self._refine.pop(0) if self._refine else None

    def tell(self, params: Params, score: float) -> None:
        if self._refine is None:
            self.grid.tell(params, score)
