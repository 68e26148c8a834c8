"""LLM methods in which the model writes several candidates and a cheap surrogate picks the one
evaluated: LLAMBO (candidates toward a target value) and HOLLM (candidates inside regions a
KD-tree chose). Both start from N_INIT seeded random trials, rank candidates by TPE's
density ratio (evaluation/surrogate.py) where the originals ask the LLM to predict each one's
value, and never send a candidate outside the space: each is validated first, and a round
with no valid new candidate gives the trial to a seeded random draw (source "random").

    >>> from tuneloop.evaluation.strategy_base import LLMProposer, StrategyContext
    >>> class Fixed(LLMProposer):  # a stand-in for the model: k copies of one configuration
    ...     def candidates(self, state, k, box=None):
    ...         return [{"learning_rate": 3e-3, "momentum": 0.9}] * k
    >>> s = LLAMBO.create(StrategyContext(budget=8, seed=0, propose_llm=Fixed()))
    >>> for _ in range(6):
    ...     p = s.ask(); s.tell(p, score=1.0)
    >>> s.source, p, s.llm_calls
    ('llambo-llm', {'learning_rate': 0.003, 'momentum': 0.9}, 2)
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from tuneloop.evaluation.partition import kd_leaves, leaf_scores, leaf_size, sample_leaves
from tuneloop.evaluation.strategy_base import LLMProposer, LLMStrategy, Params, StrategyContext, register
from tuneloop.evaluation.surrogate import DensityRatio
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.scoring import DIVERGED_SCORE
from tuneloop.tools.space import FloatParam, IntParam, SearchSpace
from tuneloop.tools.tasks import FAILED_SCORE

N_INIT = 5  # seeded random trials before the first model call (both originals' initial design)


class CandidateHybrid(LLMStrategy):
    """The shared loop: random trials first, then rounds. A round makes one model call per
    `requests()` entry, each writing N_CANDIDATES candidates; the valid new ones are ranked
    by the surrogate and the best BATCH of them are the next trials, asked one at a time."""

    N_CANDIDATES: ClassVar[int]  # candidates one model call writes
    BATCH: ClassVar[int] = 1  # trials a round gives
    FALLBACK_SOURCE = "random"

    def __init__(self, propose_llm: LLMProposer, space: SearchSpace = DEFAULT_SPACE, seed: int = 0,
                 budget: int = 24, n_init: int = N_INIT) -> None:
        super().__init__(propose_llm, space)
        self.budget = budget
        self.n_init = n_init
        self.rng = np.random.default_rng([int(seed), 0xCA9D])  # the random trials, the rounds' draws
        self.history: list[tuple[Params, float, str]] = []  # params, score, source
        self._out: list[tuple[Any, str]] = []  # asked, not told (parallel ask/tell): key, source
        self._queue: list[Params] = []  # the round's ranked candidates not yet asked
        self.last_source = self.FALLBACK_SOURCE
        self.llm_calls = 0
        self.candidates_invalid = 0  # candidates refused before ranking (out of range, junk)

    @classmethod
    def create(cls, ctx: StrategyContext) -> CandidateHybrid:
        if ctx.propose_llm is None:
            raise ValueError(f"{cls.name} needs an LLM proposer (StrategyContext.propose_llm)")
        return cls(ctx.propose_llm, ctx.space, seed=ctx.seed, budget=ctx.budget)

    # ------------------------------------------------------------ the hook
    def requests(self) -> list[tuple[SearchSpace | None, dict[str, Any]]]:
        """This trial's model calls: for each, the box its candidates must lie in (None:
        the whole space) and what the prompt is shown beyond the trials."""
        raise NotImplementedError

    # ------------------------------------------------------------ ask/tell
    def ask(self) -> Params:
        proposal, source = None, self.FALLBACK_SOURCE
        if len(self.history) + len(self._out) >= self.n_init and self.history:
            seen = self._seen()
            self._queue = [p for p in self._queue if self.space.key(p) not in seen]
            if not self._queue:
                self._queue = self._round(seen)[: self.BATCH]
            if self._queue:
                proposal, source = self._queue.pop(0), self.LLM_SOURCE
        if proposal is None:
            proposal = self.space.sample(self.rng)
        self.last_source = source
        self._out.append((self.space.key(proposal), source))
        return proposal

    def _seen(self) -> set[Any]:
        return {self.space.key(p) for p, _, _ in self.history} | {key for key, _ in self._out}

    def _round(self, seen: set[Any]) -> list[Params]:
        """One round's valid new candidates, best first by the surrogate (the model's own
        order among equals)."""
        fresh: list[Params] = []
        for box, shown in self.requests():
            self.llm_calls += 1
            state = {"n_trials": len(self.history), **shown}
            for raw in self.propose_llm.candidates(state, self.N_CANDIDATES, box):
                try:
                    typed = self.space.coerce(raw)
                except (ValueError, TypeError):
                    typed = None
                if typed is None or self.space.check(typed) is not None:
                    self.candidates_invalid += 1
                elif (key := self.space.key(typed)) not in seen:
                    seen.add(key)
                    fresh.append(typed)
        if not fresh:
            return []
        ranks = DensityRatio(self.space).fit([p for p, _, _ in self.history], [s for _, s, _ in self.history])
        order = np.argsort(-ranks.rank(fresh), kind="stable")
        return [fresh[int(i)] for i in order]

    def rejected(self) -> None:
        """A proposal refused by the Evaluator (only a configuration out being tried can be:
        candidates are validated here) is no longer out; ask again."""
        self._out.pop()

    def tell(self, params: Params, score: float) -> None:
        key = self.key(params)
        i = next((i for i, out in enumerate(self._out) if out[0] == key), None)
        source = self.last_source if i is None else self._out.pop(i)[1]
        self.history.append((params, score, source))

    def finite_scores(self) -> list[float]:
        """The scores of the trials that did not fail (a diverged run's 400, a failed task's
        1e300 would swamp a range; a task's value may be any other number)."""
        return [s for _, s, _ in self.history if s != DIVERGED_SCORE and s < FAILED_SCORE]

    def manifest(self) -> dict[str, Any]:
        return {"n_init": self.n_init, "n_candidates": self.N_CANDIDATES, "batch": self.BATCH,
                "surrogate": "tpe density ratio"}


@register("llambo")
class LLAMBO(CandidateHybrid):
    """LLAMBO, lean (arXiv 2402.03921; the authors' llambo/acquisition_function.py): the model
    is shown the trials in a seeded random order and a target better than the best by a
    share ALPHA of the scores' range,

        f* = f_best - alpha (f_max - f_min)        (on the score: log10 of the gap on GD)

    and writes N_CANDIDATES configurations it expects to reach it, in CALLS calls (each its
    own order of the trials, as the original's two templates); TPE's density ratio ranks the
    candidates and the best is evaluated. The original makes ~22 model calls a trial (its 10
    candidates from 2 calls of 5 samples each, then an LLM surrogate asked 20 times per
    candidate for an expected improvement); here CALLS = 2, and the surrogate is TPE's."""

    LLM_SOURCE = "llambo-llm"
    ALPHA = 0.1  # the authors' runners' value (run_bayesmark.py)
    CALLS = 2
    N_CANDIDATES = 5

    def requests(self) -> list[tuple[SearchSpace | None, dict[str, Any]]]:
        finite = self.finite_scores()
        target = min(finite) - self.ALPHA * (max(finite) - min(finite)) if finite else None
        return [(None, {"target_score": target, "shuffle": int(self.rng.integers(2**31))}) for _ in range(self.CALLS)]

    def manifest(self) -> dict[str, Any]:
        return super().manifest() | {"alpha": self.ALPHA, "calls": self.CALLS}


@register("hollm")
class HOLLM(CandidateHybrid):
    """HOLLM (arXiv 2505.21372; the authors' code, arberzela/mohollm): a KD-tree over the
    trials' points in the unit box, each leaf scored by its best trial plus alpha_t (0.5
    volume^(1/d) + 0.5 MOSS bonus), alpha_t cosine-annealed 1 -> 0.1 over the budget
    (evaluation/partition.py); REGIONS leaves drawn in proportion to their scores, without
    replacement; the model writes N_CANDIDATES points inside each (the leaf's box is the
    ranges it is shown and, for the embedded model, its grammar's); the best BATCH of all by
    the surrogate are the next trials. As the authors' runs: 5 regions, 5 candidates each,
    4 trials a round. Categorical parameters are not split: every leaf keeps their choices."""

    LLM_SOURCE = "hollm-llm"
    REGIONS = 5
    N_CANDIDATES = 5
    BATCH = 4

    def requests(self) -> list[tuple[SearchSpace | None, dict[str, Any]]]:
        names = self.space.continuous
        if not names:
            return [(None, {})]
        X = np.array([self.space.to_unit(p) for p, _, _ in self.history])
        scores = np.clip([s for _, s, _ in self.history], -1e100, 1e100)  # a failed task's 1e300 squared overflows
        t = len(self.history)
        leaves = kd_leaves(X, leaf_size(len(names), t))
        chosen = sample_leaves(leaf_scores(leaves, scores, t, self.budget), self.REGIONS, self.rng)
        return [(self.box(leaves[i].lo, leaves[i].hi), {}) for i in chosen]

    def box(self, lo: np.ndarray, hi: np.ndarray) -> SearchSpace:
        """A leaf's box as a search space: each number's range cut to the leaf (an integer
        range at least one step wide), each choice kept."""
        params: dict[str, Any] = dict(self.space.root)
        for j, name in enumerate(self.space.continuous):
            p = self.space[name]
            a, b = self.space.value_at(name, float(lo[j])), self.space.value_at(name, float(hi[j]))
            if isinstance(p, FloatParam):
                ra, rb = float(f"{a:.2g}"), float(f"{b:.2g}")  # ranges a prompt can say, where they stay a range
                if ra < rb:
                    a, b = max(p.low, ra), min(p.high, rb)
            if isinstance(p, IntParam):
                if a == b:
                    a, b = (a, a + p.step) if a + p.step <= p.high else (a - p.step, a)
                params[name] = IntParam(low=int(a), high=int(b), log=p.log and a >= 1, step=p.step)
            elif isinstance(p, FloatParam) and a < b and math.isfinite(a) and math.isfinite(b):
                params[name] = FloatParam(low=a, high=b, log=p.log)
        return SearchSpace(params)

    def manifest(self) -> dict[str, Any]:
        return super().manifest() | {"regions": self.REGIONS}
