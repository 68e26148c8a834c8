"""Ask/tell proposers, all searching (log10 alpha, beta) and all evaluated through the
same Evaluator. Like the `cmaes` package: one class per algorithm, `ask()` returns the
next (alpha, beta) or None when the strategy has nothing more to propose, `tell()`
takes the score the Evaluator gave it. Like Optuna's samplers, every class derives from
one base class whose hooks all have defaults, and is registered by name:

    >>> s = make_strategy("random", StrategyContext(budget=4, seed=0))
    >>> alpha, beta = s.ask()
    >>> s.tell(alpha, beta, score=-3.2)
    >>> sorted(STRATEGIES)
    ['centaur', 'cmaes', 'grid', 'random', 'refined', 'tpe']

Adding a method is one class with `@register("name")` and a `create(ctx)` classmethod.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from tuneloop.agent import AGENT_METHOD
from tuneloop.agent.gbnf import SCI_FLOOR_EXP
from tuneloop.evaluation.defaults import CENTAUR_RATIO
from tuneloop.tools.errors import TuneloopError
from tuneloop.tools.trials import Bounds

STUDY_ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1)
STUDY_BETAS = (0.0, 0.5, 0.9)
REFINE_ALPHA_FACTORS = (0.8, 1.0, 1.2, 1.4)
REFINE_BETA_OFFSETS = (-0.03, 0.0, 0.03)


@dataclass(frozen=True)
class SearchSpace:
    """The box every classical method searches: log10(alpha) x beta. By default the
    allowed ranges of the session (tools.trials.Bounds), so that every method of a study,
    the agents included, searches the same box."""

    log10_alpha: tuple[float, float] = (math.log10(Bounds().alpha_min), math.log10(Bounds().alpha_max))
    beta: tuple[float, float] = (Bounds().beta_min, Bounds().beta_max)

    @staticmethod
    def from_bounds(bounds: Bounds) -> SearchSpace:
        """The box of `bounds`; a range open at 0 starts at SCI_FLOOR_EXP's decade, and beta
        stops at the default's 0.99 at most (gradient descent needs beta < 1)."""
        lo = bounds.alpha_min if bounds.alpha_min > 0 else 10.0**SCI_FLOOR_EXP
        return SearchSpace((math.log10(lo), math.log10(bounds.alpha_max)),
                           (bounds.beta_min, min(bounds.beta_max, Bounds().beta_max)))

    def contains(self, alpha: float, beta: float) -> bool:
        """Inside the box, compared on the log scale with a rounding margin (10 ** log10(0.05)
        is 0.049999999999999996: a point on the bound is inside)."""
        la = math.log10(alpha) if alpha > 0 else -math.inf
        lo, hi = self.log10_alpha
        return lo - 1e-12 <= la <= hi + 1e-12 and self.beta[0] <= beta <= self.beta[1]

    @property
    def lows(self) -> np.ndarray:
        return np.array([self.log10_alpha[0], self.beta[0]])

    @property
    def highs(self) -> np.ndarray:
        return np.array([self.log10_alpha[1], self.beta[1]])

    def to_params(self, z: np.ndarray) -> tuple[float, float]:
        """[0, 1]^2 -> (alpha, beta)."""
        la, b = self.lows + np.clip(z, 0.0, 1.0) * (self.highs - self.lows)
        return float(10.0**la), float(b)

    def to_unit(self, alpha: float, beta: float) -> np.ndarray:
        x = np.array([math.log10(alpha), beta])
        return np.clip((x - self.lows) / (self.highs - self.lows), 0.0, 1.0)


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may be built from: the cell's budget and seed, the search box, and
    for the methods that use one, the LLM proposer (Centaur)."""

    budget: int
    seed: int = 0
    space: SearchSpace = SearchSpace()
    propose_llm: LLMProposer | None = None
    centaur_ratio: float = CENTAUR_RATIO
    centaur_warmup: int | None = None


class Strategy:
    """The base of every proposer. Only `ask` must be written; every other hook has a
    default that suits a strategy without it."""

    name: ClassVar[str] = "strategy"
    uses_llm: ClassVar[bool] = False  # True: the cell needs a chat model (Centaur)

    @classmethod
    def create(cls, ctx: StrategyContext) -> Strategy:
        """Build it for one cell; the default takes the search box and the seed."""
        return cls(ctx.space, seed=ctx.seed)  # type: ignore[call-arg]

    def ask(self) -> tuple[float, float] | None:
        raise NotImplementedError

    def tell(self, alpha: float, beta: float, score: float) -> None:
        """The Evaluator's score for a configuration (not necessarily one asked)."""

    @property
    def source(self) -> str:
        """The `source` recorded with the last proposal's trial."""
        return self.name

    def bind_evaluator(self, ev: Any) -> None:
        """Given the cell's Evaluator before the first ask (Centaur shows its state)."""

    def bind_trace(self, callbacks: Any) -> None:
        """Given the cell's trace callback (a LangChain handler) for any model it calls."""

    def rejected(self) -> tuple[float, float] | None:
        """The last proposal was invalid (the Evaluator reported and counted it): a
        replacement for this trial, or None to simply ask again."""
        return None

    def manifest(self) -> dict[str, Any]:
        """Settings recorded in the cell's manifest under the strategy's name."""
        return {}


class LLMProposer:
    """What Centaur asks for its LLM trials: given CMA-ES's state and the history, one
    (alpha, beta). Raises CentaurError when the LLM fails."""

    def bind_evaluator(self, ev: Any) -> None:
        """Given the cell's Evaluator (its objective, ranges and trials) before the first call."""

    def bind_trace(self, callbacks: Any) -> None:
        """Given the cell's trace callback: the model calls go to the trace like an agent's."""

    def __call__(self, state: dict) -> tuple[float, float]:
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    """Class decorator: make a strategy available by `name` to the harness and the CLI."""

    def deco(cls: type[Strategy]) -> type[Strategy]:
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return deco


def make_strategy(name: str, ctx: StrategyContext) -> Strategy:
    try:
        cls = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}") from None
    return cls.create(ctx)


@register("grid")
class GridSearch(Strategy):
    """The study's grid: alpha in {1e-4, 1e-3, 1e-2, 1e-1} x beta in {0, 0.5, 0.9}, in
    alpha-major order. With a budget below the grid size, `budget` points spread evenly
    over that order (indices round(linspace(0, n - 1, budget))) are used."""

    @classmethod
    def create(cls, ctx: StrategyContext) -> GridSearch:
        return cls(budget=ctx.budget)

    def __init__(self, alphas=STUDY_ALPHAS, betas=STUDY_BETAS, budget: int | None = None) -> None:
        points = [(float(a), float(b)) for a in alphas for b in betas]
        if budget is not None and budget < len(points):
            idx = sorted({int(round(i)) for i in np.linspace(0, len(points) - 1, budget)})
            points = [points[i] for i in idx]
        self.points = points
        self._i = 0
        self.results: list[tuple[float, float, float]] = []

    def ask(self) -> tuple[float, float] | None:
        if self._i >= len(self.points):
            return None
        self._i += 1
        return self.points[self._i - 1]

    def tell(self, alpha: float, beta: float, score: float) -> None:
        self.results.append((alpha, beta, score))

    def best(self) -> tuple[float, float, float] | None:
        return min(self.results, key=lambda r: r[2]) if self.results else None


def refinement_points(alpha: float, beta: float, space: SearchSpace | None = None) -> list[tuple[float, float]]:
    """docs/protocol.md: alpha in {0.8, 1.0, 1.2, 1.4} x alpha*, beta in {beta* - 0.03, beta*,
    beta* + 0.03}, dropping betas outside [0, 1) and alphas above 1, and with a `space`,
    points outside it."""
    pts = []
    for f in REFINE_ALPHA_FACTORS:
        for d in REFINE_BETA_OFFSETS:
            a, b = alpha * f, round(beta + d, 10)
            if 0.0 <= b < 1.0 and 0.0 < a <= 1.0 and (space is None or space.contains(a, b)):
                pts.append((a, b))
    return pts


@register("refined")
class RefinedGrid(Strategy):
    """The study's grid, then its refinement around the grid's best, charged to the same
    budget: the first min(12, budget) trials are the grid (subset as in GridSearch), the
    rest refine; the refinement point equal to the grid's best is skipped (a repeat)."""

    @classmethod
    def create(cls, ctx: StrategyContext) -> RefinedGrid:
        return cls(budget=ctx.budget, space=ctx.space)

    def __init__(self, budget: int | None = None, space: SearchSpace | None = None) -> None:
        self.grid = GridSearch(budget=budget)
        self.space = space
        self._refine: list[tuple[float, float]] | None = None

    def ask(self) -> tuple[float, float] | None:
        p = self.grid.ask()
        if p is not None:
            return p
        if self._refine is None:
            best = self.grid.best()
            self._refine = [] if best is None else [
                q for q in refinement_points(best[0], best[1], self.space) if q != (best[0], best[1])]
        return self._refine.pop(0) if self._refine else None

    def tell(self, alpha: float, beta: float, score: float) -> None:
        if self._refine is None:
            self.grid.tell(alpha, beta, score)


@register("random")
class RandomSearch(Strategy):
    """alpha log-uniform in the space (or uniform in alpha, as the study did, with
    uniform_alpha=True), beta uniform; seeded."""

    def __init__(self, space: SearchSpace = SearchSpace(), seed: int = 0, uniform_alpha: bool = False) -> None:
        self.space = space
        self.rng = np.random.default_rng([int(seed), 0xA11CE])
        self.uniform_alpha = uniform_alpha

    def ask(self) -> tuple[float, float]:
        lo, hi = self.space.log10_alpha
        if self.uniform_alpha:
            alpha = float(self.rng.uniform(10.0**lo, 10.0**hi))
            alpha = alpha if alpha > 0 else 10.0**lo
        else:
            alpha = float(10.0 ** self.rng.uniform(lo, hi))
        return alpha, float(self.rng.uniform(*self.space.beta))



@register("cmaes")
class CMAESStrategy(Strategy):
    """CMA-ES (the `cmaes` package) on the unit square mapped to the space.

    Coordinates are normalised to [0, 1]^2 so one step size fits both axes; the search
    starts at the centre with sigma0 = 0.3 (a third of the box) and the package's
    default population 4 + floor(3 ln 2) = 6. `tell` collects a generation and passes it
    on whole; points told need not be the ones asked (Centaur injects its LLM's)."""

    SIGMA0 = 0.3

    def __init__(self, space: SearchSpace = SearchSpace(), seed: int = 0, sigma0: float = SIGMA0,
                 population_size: int | None = None) -> None:
        from cmaes import CMA  # type: ignore[import-untyped]  # cmaes ships no py.typed or stubs

        self.space = space
        self.sigma0 = sigma0
        self.cma = CMA(mean=np.full(2, 0.5), sigma=sigma0, bounds=np.array([[0.0, 1.0], [0.0, 1.0]]),
                       seed=int(seed) % (2**31), population_size=population_size)
        self._pending: list[tuple[np.ndarray, float]] = []
        self.told = 0

    @property
    def population_size(self) -> int:
        return self.cma.population_size

    def ask_unit(self) -> np.ndarray:
        return self.cma.ask()

    def ask(self) -> tuple[float, float]:
        return self.space.to_params(self.ask_unit())

    def tell(self, alpha: float, beta: float, score: float) -> None:
        self._pending.append((self.space.to_unit(alpha, beta), float(score)))
        self.told += 1
        if len(self._pending) == self.cma.population_size:
            self.cma.tell(self._pending)
            self._pending = []

    def manifest(self) -> dict[str, Any]:
        return {"sigma0": self.sigma0, "population_size": self.population_size, "space": "unit square"}

    def state(self) -> dict:
        """The interpretable state Centaur shows its LLM (real units: log10 alpha, beta)."""
        width = self.space.highs - self.space.lows
        sigma, mean_unit, cov_unit = self._internals()
        mean = self.space.lows + mean_unit * width
        cov = (sigma**2) * cov_unit * np.outer(width, width)
        return {"sigma": sigma, "mean": mean.tolist(), "cov": cov.tolist(), "generation": self.cma.generation}

    def _internals(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(sigma, mean, C) in unit-square coordinates. `cmaes.CMA` exposes `mean` but keeps
        sigma and C private (no public accessor as of cmaes 0.12); this is the one place
        that reads them, so a change in the package breaks only here."""
        return float(self.cma._sigma), np.asarray(self.cma.mean), np.asarray(self.cma._C)


@register("tpe")
class TPEStrategy(Strategy):
    """Optuna's TPESampler (seeded) on the same space, driven ask/tell. The first
    n_startup_trials (default 5) are random, the rest TPE; Optuna's logging is quiet."""

    def __init__(self, space: SearchSpace = SearchSpace(), seed: int = 0, n_startup_trials: int = 5) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.n_startup_trials = n_startup_trials
        self.study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=int(seed), n_startup_trials=n_startup_trials))
        self._open: dict[tuple[float, float], optuna.trial.Trial] = {}

    def ask(self) -> tuple[float, float]:
        trial = self.study.ask()
        la = trial.suggest_float("log10_alpha", *self.space.log10_alpha)
        beta = trial.suggest_float("beta", *self.space.beta)
        alpha = float(10.0**la)
        self._open[(alpha, beta)] = trial
        return alpha, beta

    def tell(self, alpha: float, beta: float, score: float) -> None:
        trial = self._open.pop((alpha, beta), None)
        if trial is not None:
            self.study.tell(trial, score)

    def manifest(self) -> dict[str, Any]:
        return {"n_startup_trials": self.n_startup_trials}


class CentaurError(TuneloopError, RuntimeError):
    """The LLM failed inside Centaur: a hard, visible failure, never a silent fallback."""


def centaur_schedule(budget: int, warmup: int, ratio: float) -> list[bool]:
    """Which trials (0-based) the LLM proposes: none in the warm-up, then a fraction
    `ratio` of the rest, spread evenly: trial k is the LLM's when floor((k - w + 1) r)
    > floor((k - w) r). Exactly floor((budget - w) r) LLM trials."""
    out = []
    for k in range(budget):
        j = k - warmup
        out.append(j >= 0 and math.floor((j + 1) * ratio + 1e-9) > math.floor(j * ratio + 1e-9))
    return out


@register("centaur")
class Centaur(Strategy):
    """CMA-ES proposes every trial; after the warm-up, on the scheduled trials the LLM's
    proposal replaces CMA-ES's. Every result, the LLM's included, is told to CMA-ES.

    `propose_llm(state) -> (alpha, beta)` is given CMA-ES's interpretable state and the
    trial history; it raises CentaurError when the LLM fails. Its answer is passed to the
    Evaluator as it is: an out-of-range value is rejected there and reported (a
    `tool_error` event, counted as invalid), never clamped."""

    uses_llm = True
    LLM_SOURCE = "centaur-llm"  # the `source` of the trials the LLM proposed

    @classmethod
    def create(cls, ctx: StrategyContext) -> Centaur:
        if ctx.propose_llm is None:
            raise ValueError("centaur needs an LLM proposer (StrategyContext.propose_llm)")
        return cls(ctx.propose_llm, ctx.budget, ctx.space, seed=ctx.seed, warmup=ctx.centaur_warmup,
                   ratio=ctx.centaur_ratio)

    def __init__(self, propose_llm: LLMProposer, budget: int,
                 space: SearchSpace = SearchSpace(), seed: int = 0, warmup: int | None = None,
                 ratio: float = CENTAUR_RATIO, sigma0: float = 0.3) -> None:
        self.cma = CMAESStrategy(space, seed=seed, sigma0=sigma0)
        self.ratio = ratio
        self.warmup = self.cma.population_size if warmup is None else warmup
        self.schedule = centaur_schedule(budget, self.warmup, ratio)
        self.propose_llm = propose_llm
        self.history: list[tuple[float, float, float, str]] = []  # alpha, beta, score, source
        self.last_source = "cmaes"
        self.llm_calls = 0

    def ask(self) -> tuple[float, float]:
        k = len(self.history)
        cma_alpha, cma_beta = self.cma.ask()
        self._suggestion = (cma_alpha, cma_beta)
        if k < len(self.schedule) and self.schedule[k]:
            st = self.cma.state()
            st.update(suggestion=(cma_alpha, cma_beta), history=list(self.history), n_trials=k)
            self.llm_calls += 1
            self.last_source = self.LLM_SOURCE
            return self.propose_llm(st)
        self.last_source = "cmaes"
        return cma_alpha, cma_beta

    @property
    def source(self) -> str:
        return self.last_source

    def bind_evaluator(self, ev) -> None:
        self.propose_llm.bind_evaluator(ev)

    def bind_trace(self, callbacks) -> None:
        self.propose_llm.bind_trace(callbacks)

    def manifest(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "warmup": self.warmup,
                "llm_trials": [i + 1 for i, v in enumerate(self.schedule) if v]}

    def rejected(self) -> tuple[float, float]:
        """The LLM's proposal was invalid (the Evaluator reported and counted it): this
        trial goes to CMA-ES's own suggestion for it, recorded with source "cmaes"."""
        self.last_source = "cmaes"
        return self._suggestion

    def tell(self, alpha: float, beta: float, score: float) -> None:
        self.history.append((alpha, beta, score, self.last_source))
        self.cma.tell(alpha, beta, score)


# Method names, in the order tables list them: the classical strategies, then the two
# that use an LLM (the agent session, which is not a strategy, and Centaur).
CLASSICAL = tuple(n for n, c in STRATEGIES.items() if not c.uses_llm)
LLM_METHODS = (AGENT_METHOD, *(n for n, c in STRATEGIES.items() if c.uses_llm))
METHODS = CLASSICAL + LLM_METHODS


def known_method(name: str) -> str:
    """`name` if it is a method, else a ValueError listing them (a validator's message)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return name
