"""Ask/tell proposers over a typed search space (tools/space.py), all evaluated through
the same Evaluator. Like the `cmaes` package: one class per algorithm, `ask()` returns the
next configuration (a dict of the space's parameters) or None when the strategy has
nothing more to propose, `tell()` takes the score the Evaluator gave it. Like Optuna's
samplers, every class derives from one base class whose hooks all have defaults, and is
registered by name:

    >>> s = make_strategy("random", StrategyContext(budget=4, seed=0))
    >>> params = s.ask(); sorted(params)
    ['learning_rate', 'momentum']
    >>> s.tell(params, score=-3.2)
    >>> sorted(STRATEGIES)
    ['centaur', 'cmaes', 'grid', 'hollm', 'llambo', 'random', 'refined', 'sllmbo', 'tpe']

Adding a method is one class with `@register("name")` and a `create(ctx)` classmethod.
How each handles each parameter type is documented in docs/evaluation.md ("Search spaces").
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuneloop.agent import AGENT_METHOD
from tuneloop.evaluation.defaults import CENTAUR_RATIO
from tuneloop.evaluation.grids import (
    STUDY_ALPHAS,
    STUDY_BETAS,
    GridSearch,
    RefinedGrid,
    refinement_points,
)
from tuneloop.evaluation.strategy_base import (
    STRATEGIES,
    LLMHybrid,
    LLMProposer,
    LLMStrategy,
    Params,
    Strategy,
    StrategyContext,
    make_strategy,
    register,
)
from tuneloop.tools.errors import TuneloopError
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.space import CategoricalParam, IntParam, SearchSpace

__all__ = ["CLASSICAL", "LLM_METHODS", "LLM_SOURCES", "METHODS", "STRATEGIES", "STUDY_ALPHAS", "STUDY_BETAS",
           "AGENT_METHOD", "CMAESStrategy", "CandidateHybrid", "Centaur", "CentaurError", "GridSearch", "HOLLM",
           "LLAMBO", "LLMHybrid", "LLMProposer", "LLMStrategy", "Params", "RandomSearch", "RefinedGrid", "SLLMBO",
           "Strategy", "StrategyContext", "TPEStrategy", "centaur_schedule", "known_method", "make_strategy",
           "refinement_points", "register"]



@register("random")
class RandomSearch(Strategy):
    """Every parameter drawn independently (SearchSpace.sample: log-uniform on a log axis),
    seeded; with uniform_alpha=True the learning rate uniform in its range, as the study
    did."""

    def __init__(self, space: SearchSpace = DEFAULT_SPACE, seed: int = 0, uniform_alpha: bool = False) -> None:
        self.space = space
        self.rng = np.random.default_rng([int(seed), 0xA11CE])
        self.uniform_alpha = uniform_alpha

    def ask(self) -> Params:
        out = {}
        for name in self.space:
            if name == "learning_rate" and self.uniform_alpha:
                lo, hi = (10.0 ** v for v in (self.space.lows[0], self.space.highs[0]))
                alpha = float(self.rng.uniform(lo, hi))
                out[name] = alpha if alpha > 0 else lo
            else:
                out[name] = self.space.sample_one(name, self.rng)
        return out


@register("cmaes")
class CMAESStrategy(Strategy):
    """CMA-ES (the `cmaes` package) on the unit cube of the space's continuous part
    (SearchSpace.to_unit: log10 on a log axis, then scaled to [0, 1]).

    Coordinates are normalised so one step size fits every axis; the search starts at
    the centre with sigma0 = 0.3 (a third of the box) and the package's default
    population 4 + floor(3 ln n). Integers are rounded to their step when mapped back (as
    Optuna's CmaEsSampler does without margin); categoricals are drawn uniformly at
    random, seeded (as Optuna's CmaEsSampler leaves them to its independent sampler); a
    space with one continuous parameter gets a second, unused axis (`cmaes` needs two).
    `tell` collects a generation and passes it on whole; points told need not be the
    ones asked (Centaur injects its LLM's)."""

    SIGMA0 = 0.3

    def __init__(self, space: SearchSpace = DEFAULT_SPACE, seed: int = 0, sigma0: float = SIGMA0,
                 population_size: int | None = None) -> None:
        from cmaes import CMA  # type: ignore[import-untyped]  # cmaes ships no py.typed or stubs

        self.space = space
        self.sigma0 = sigma0
        self.n = len(space.continuous)
        dim = max(2, self.n)
        self.cma = CMA(mean=np.full(dim, 0.5), sigma=sigma0, bounds=np.array([[0.0, 1.0]] * dim),
                       seed=int(seed) % (2**31), population_size=population_size)
        self.rng = np.random.default_rng([int(seed), 0xCA7])  # the categoricals' draws
        self._pending: list[tuple[np.ndarray, float]] = []
        self._asked: dict[tuple[Any, ...], np.ndarray] = {}
        self.told = 0

    @property
    def population_size(self) -> int:
        return self.cma.population_size

    def ask_unit(self) -> np.ndarray:
        return self.cma.ask()

    def ask(self) -> Params:
        z = self.ask_unit()
        cont = self.space.from_unit(z[: self.n]) if self.n else {}
        out = {n: cont[n] if n in cont else self.space.sample_one(n, self.rng) for n in self.space}
        self._asked[self.space.key(out)] = z
        return out

    def tell(self, params: Params, score: float) -> None:
        z = self._asked.pop(self.space.key(params), None)
        if z is None or self.n == len(z):  # a point not asked here, or no unused axis: its own coordinates
            z = self.space.to_unit(params) if self.n == len(self.cma.mean) else np.append(
                self.space.to_unit(params), 0.5 if z is None else z[-1])
        self._pending.append((z, float(score)))
        self.told += 1
        if len(self._pending) == self.cma.population_size:
            self.cma.tell(self._pending)
            self._pending = []

    def manifest(self) -> dict[str, Any]:
        return {"sigma0": self.sigma0, "population_size": self.population_size, "space": "unit cube"}

    def state(self) -> dict:
        """The interpretable state Centaur shows its LLM, over the continuous parameters in
        their search units (log10 on a log axis)."""
        width = self.space.highs - self.space.lows
        sigma, mean_unit, cov_unit = self._internals()
        mean = self.space.lows + mean_unit[: self.n] * width
        cov = (sigma**2) * cov_unit[: self.n, : self.n] * np.outer(width, width)
        return {"sigma": sigma, "mean": mean.tolist(), "cov": cov.tolist(), "generation": self.cma.generation}

    def _internals(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(sigma, mean, C) in unit-cube coordinates. `cmaes.CMA` exposes `mean` but keeps
        sigma and C private (no public accessor as of cmaes 0.12); this is the one place
        that reads them, so a change in the package breaks only here."""
        return float(self.cma._sigma), np.asarray(self.cma.mean), np.asarray(self.cma._C)


# Optuna parameter names of the default space's two: what seeded TPE runs have always
# used (log10 of the learning rate, searched uniformly), so that they stay the same.
OPTUNA_NAMES = {"learning_rate": "log10_alpha", "momentum": "beta"}


@register("tpe")
class TPEStrategy(Strategy):
    """Optuna's TPESampler (seeded) on the same space, driven ask/tell. The first
    n_startup_trials (default 5) are random, the rest TPE; Optuna's logging is quiet.
    A log-scale float is suggested as its log10 (uniform), ints and categoricals as
    Optuna's own int and categorical distributions. With trials out in parallel (ask/tell
    with several workers) the sampler's constant liar counts the pending ones as bad, as
    Optuna does for its own parallel studies; with none pending it changes nothing."""

    def __init__(self, space: SearchSpace = DEFAULT_SPACE, seed: int = 0, n_startup_trials: int = 5) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space = space
        self.n_startup_trials = n_startup_trials
        self.study = optuna.create_study(
            direction="minimize", sampler=optuna.samplers.TPESampler(seed=int(seed), n_startup_trials=n_startup_trials,
                                                                  constant_liar=True))
        self._open: dict[tuple[Any, ...], optuna.trial.Trial] = {}

    def ask(self) -> Params:
        trial = self.study.ask()
        out: Params = {}
        for name in self.space:
            p = self.space[name]
            if isinstance(p, CategoricalParam):
                out[name] = trial.suggest_categorical(name, list(p.choices))
            elif isinstance(p, IntParam):
                out[name] = trial.suggest_int(name, p.low, p.high, step=p.step, log=p.log)
            elif p.log:
                lo, hi = math.log10(p.low), math.log10(p.high)
                out[name] = float(10.0 ** trial.suggest_float(OPTUNA_NAMES.get(name, f"log10_{name}"), lo, hi))
            else:
                out[name] = trial.suggest_float(OPTUNA_NAMES.get(name, name), p.low, p.high)
        self._open[self.space.key(out)] = trial
        return out

    def tell(self, params: Params, score: float) -> None:
        """A result: of a trial asked here, or (a hybrid's other proposer's) of a point
        TPE did not ask, added to its study as a finished trial."""
        trial = self._open.pop(self.space.key(params), None)
        if trial is not None:
            self.study.tell(trial, score)
            return
        import optuna

        internal, dists = self._internal(params)
        self.study.add_trial(optuna.trial.create_trial(params=internal, distributions=dists, value=score))

    def drop(self, params: Params) -> None:
        """A suggestion asked here and not used (a hybrid's LLM proposed instead): ended as
        failed, so it neither counts as pending nor informs the model."""
        import optuna

        trial = self._open.pop(self.space.key(params), None)
        if trial is not None:
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)

    def _internal(self, params: Params) -> tuple[dict[str, Any], dict[str, Any]]:
        """A configuration in Optuna's terms, as `ask` suggests it (log10 of a log float)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        values: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        for name in self.space:
            p, v = self.space[name], params[name]
            if isinstance(p, CategoricalParam):
                values[name], dists[name] = v, CategoricalDistribution(list(p.choices))
            elif isinstance(p, IntParam):
                values[name], dists[name] = int(v), IntDistribution(p.low, p.high, step=p.step, log=p.log)
            elif p.log:
                key = OPTUNA_NAMES.get(name, f"log10_{name}")
                values[key] = min(max(math.log10(v), math.log10(p.low)), math.log10(p.high))
                dists[key] = FloatDistribution(math.log10(p.low), math.log10(p.high))
            else:
                key = OPTUNA_NAMES.get(name, name)
                values[key], dists[key] = float(v), FloatDistribution(p.low, p.high)
        return values, dists

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
class Centaur(LLMHybrid):
    """CMA-ES proposes every trial; after the warm-up, on the scheduled trials the LLM's
    proposal replaces CMA-ES's. Every result, the LLM's included, is told to CMA-ES.

    `propose_llm(state) -> params` is given CMA-ES's interpretable state and the
    trial history; it raises CentaurError when the LLM fails. Its answer is passed to the
    Evaluator as it is: an out-of-range value is rejected there and reported (a
    `tool_error` event, counted as invalid), never clamped; that trial goes to CMA-ES's
    suggestion, recorded with source "cmaes"."""

    LLM_SOURCE = "centaur-llm"
    CLASSICAL_SOURCE = "cmaes"

    @classmethod
    def create(cls, ctx: StrategyContext) -> Centaur:
        if ctx.propose_llm is None:
            raise ValueError("centaur needs an LLM proposer (StrategyContext.propose_llm)")
        return cls(ctx.propose_llm, ctx.budget, ctx.space, seed=ctx.seed, warmup=ctx.centaur_warmup,
                   ratio=ctx.centaur_ratio)

    def __init__(self, propose_llm: LLMProposer, budget: int,
                 space: SearchSpace = DEFAULT_SPACE, seed: int = 0, warmup: int | None = None,
                 ratio: float = CENTAUR_RATIO, sigma0: float = 0.3) -> None:
        super().__init__(propose_llm, space)
        self.cma = CMAESStrategy(space, seed=seed, sigma0=sigma0)
        self.ratio = ratio
        self.warmup = self.cma.population_size if warmup is None else warmup
        self.schedule = centaur_schedule(budget, self.warmup, ratio)

    def suggest(self) -> Params:
        return self.cma.ask()

    def llm_turn(self, k: int) -> bool:
        return k < len(self.schedule) and self.schedule[k]

    def llm_state(self, suggestion: Params, k: int) -> dict[str, Any]:
        st = self.cma.state()
        st.update(suggestion=dict(suggestion), history=list(self.history), n_trials=k)
        return st

    def learn(self, params: Params, score: float, source: str, suggestion: Params | None) -> None:
        self.cma.tell(params, score)

    def manifest(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "warmup": self.warmup,
                "llm_trials": [i + 1 for i, v in enumerate(self.schedule) if v]}


@register("sllmbo")
class SLLMBO(LLMHybrid):
    """The LLM and TPE take turns (SLLMBO, arXiv 2410.20302, its LLM-TPE sampler): before
    each trial a seeded coin (probability `p_llm`, 0.5) picks the proposer. TPE is asked
    every time: on TPE's turns its suggestion is the trial; on the LLM's, the LLM sees
    every trial so far and TPE's suggestion (the `sllmbo` template) and proposes instead,
    and TPE's unused suggestion is dropped. TPE is told every result, the LLM's too.
    An LLM proposal the Evaluator rejects is replaced by TPE's suggestion (source "tpe").

    Where this differs from the paper: only its LLM-TPE sampler, one model call per LLM
    trial; the paper's framework also has the LLM set the initial search space, adapt it
    and summarise the history (not done: the space is the user's). The coin is seeded, so
    a seed gives the same turns."""

    LLM_SOURCE = "sllmbo-llm"
    CLASSICAL_SOURCE = "tpe"

    @classmethod
    def create(cls, ctx: StrategyContext) -> SLLMBO:
        if ctx.propose_llm is None:
            raise ValueError("sllmbo needs an LLM proposer (StrategyContext.propose_llm)")
        return cls(ctx.propose_llm, ctx.space, seed=ctx.seed)

    def __init__(self, propose_llm: LLMProposer, space: SearchSpace = DEFAULT_SPACE, seed: int = 0,
                 p_llm: float = 0.5) -> None:
        super().__init__(propose_llm, space)
        self.tpe = TPEStrategy(space, seed=seed)
        self.p_llm = p_llm
        self.rng = np.random.default_rng([int(seed), 0x511B0])  # the turns' coin

    def suggest(self) -> Params:
        return self.tpe.ask()

    def llm_turn(self, k: int) -> bool:
        return bool(self.rng.random() < self.p_llm)

    def llm_state(self, suggestion: Params, k: int) -> dict[str, Any]:
        tried = {self.key(p) for p, _, _ in self.history}  # (a repeat is told too, and charged once)
        return {"suggestion": dict(suggestion), "history": list(self.history),
                "n_trials": len(tried) + len(self._out)}

    def learn(self, params: Params, score: float, source: str, suggestion: Params | None) -> None:
        if source == self.LLM_SOURCE and suggestion is not None and self.key(suggestion) != self.key(params):
            self.tpe.drop(suggestion)  # TPE's suggestion for this trial went unused
        self.tpe.tell(params, score)

    def manifest(self) -> dict[str, Any]:
        return {"p_llm": self.p_llm, "tpe": self.tpe.manifest()}


# LLAMBO and HOLLM (a module of their own) registered after the hybrids above: tables list them after
from tuneloop.evaluation.candidate_methods import HOLLM, LLAMBO, CandidateHybrid  # noqa: E402

# Method names, in the order tables list them: the classical strategies, then those that
# use an LLM (the agent session, which is not a strategy, then the hybrids).
CLASSICAL = tuple(n for n, c in STRATEGIES.items() if not c.uses_llm)
LLM_METHODS = (AGENT_METHOD, *(n for n, c in STRATEGIES.items() if c.uses_llm))
METHODS = CLASSICAL + LLM_METHODS

# The `source` of the trials an LLM proposed inside a hybrid (Centaur's, SLLMBO's, LLAMBO's,
# HOLLM's): what the state audit judges as the model's proposals
LLM_SOURCES = tuple(c.LLM_SOURCE for c in STRATEGIES.values() if issubclass(c, LLMStrategy))


def known_method(name: str) -> str:
    """`name` if it is a method, else a ValueError listing them (a validator's message)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    return name
