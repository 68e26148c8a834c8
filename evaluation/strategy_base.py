"""What every strategy is: the base class with its default hooks, the context a strategy is
built from, the LLM proposer hybrids call, and the registry of strategies by name
(evaluation/strategies.py holds the strategies themselves)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tuneloop.evaluation.defaults import CENTAUR_RATIO
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.space import SearchSpace

Params = dict[str, Any]  # a configuration: the space's parameter names -> values


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may be built from: the cell's budget and seed, the search box, and
    for the methods that use one, the LLM proposer (Centaur)."""

    budget: int
    seed: int = 0
    space: SearchSpace = DEFAULT_SPACE
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

    def ask(self) -> Params | None:
        raise NotImplementedError

    def tell(self, params: Params, score: float) -> None:
        """The Evaluator's score for a configuration (not necessarily one asked)."""

    @property
    def source(self) -> str:
        """The `source` recorded with the last proposal's trial."""
        return self.name

    def bind_evaluator(self, ev: Any) -> None:
        """Given the cell's Evaluator before the first ask (Centaur shows its state)."""

    def bind_trace(self, callbacks: Any) -> None:
        """Given the cell's trace callback (a LangChain handler) for any model it calls."""

    def rejected(self) -> Params | None:
        """The last proposal was invalid (the Evaluator reported and counted it): a
        replacement for this trial, or None to simply ask again."""
        return None

    def manifest(self) -> dict[str, Any]:
        """Settings recorded in the cell's manifest under the strategy's name."""
        return {}


class LLMProposer:
    """What Centaur asks for its LLM trials: given CMA-ES's state and the history, one
    configuration (its raw arguments: the Evaluator checks them). Raises CentaurError when
    the LLM fails."""

    def bind_evaluator(self, ev: Any) -> None:
        """Given the cell's Evaluator (its objective, ranges and trials) before the first call."""

    def bind_trace(self, callbacks: Any) -> None:
        """Given the cell's trace callback: the model calls go to the trace like an agent's."""

    def __call__(self, state: dict) -> Params:
        raise NotImplementedError

    def candidates(self, state: dict, k: int, box: SearchSpace | None = None) -> list[dict[str, Any]]:
        """k raw configurations in one call, inside `box` (the space when None): what
        LLAMBO and HOLLM ask (evaluation/candidate_methods.py)."""
        raise NotImplementedError


class LLMStrategy(Strategy):
    """A strategy whose model calls go through an LLMProposer: the proposer is given the
    cell's Evaluator and trace callback, and each trial's `source` says who proposed it."""

    uses_llm = True
    LLM_SOURCE: ClassVar[str]  # the `source` of the trials the LLM proposed

    def __init__(self, propose_llm: LLMProposer, space: SearchSpace) -> None:
        self.propose_llm = propose_llm
        self.space = space
        self.last_source = ""

    @property
    def source(self) -> str:
        return self.last_source

    def key(self, params: Params) -> Any:
        """A proposal's cache key; for an answer the space cannot read, its own text."""
        try:
            return self.space.key(self.space.coerce(params))
        except (ValueError, TypeError):
            return repr(sorted(params.items(), key=lambda kv: str(kv[0])))

    def bind_evaluator(self, ev: Any) -> None:
        self.propose_llm.bind_evaluator(ev)

    def bind_trace(self, callbacks: Any) -> None:
        self.propose_llm.bind_trace(callbacks)


class LLMHybrid(LLMStrategy):
    """A classical proposer some of whose proposals an LLM replaces (Centaur, SLLMBO). The
    classical method is asked for every trial; on the LLM's turns its suggestion is shown
    to the LLM, whose answer is the trial. What both keep alike lives here: the history
    (params, score, source), the trials out (parallel ask/tell: each with its source and
    the classical suggestion it replaced), an invalid LLM answer replaced by that
    suggestion. A subclass writes the hooks: `suggest`, `llm_turn`, `llm_state`, `learn`.
    """

    CLASSICAL_SOURCE: ClassVar[str]  # the `source` of the classical method's own trials

    def __init__(self, propose_llm: LLMProposer, space: SearchSpace) -> None:
        super().__init__(propose_llm, space)
        self.history: list[tuple[Params, float, str]] = []  # params, score, source
        self.last_source = self.CLASSICAL_SOURCE
        self.llm_calls = 0
        self._suggestion: Params = {}
        # asked, not told yet (parallel ask/tell): key, source, and the classical suggestion for that trial
        self._out: list[tuple[Any, str, Params]] = []

    # ------------------------------------------------------------ the hooks
    def suggest(self) -> Params:
        """The classical method's proposal for the next trial."""
        raise NotImplementedError

    def llm_turn(self, k: int) -> bool:
        """Whether the LLM proposes trial k (0-based: trials told plus trials out)."""
        raise NotImplementedError

    def llm_state(self, suggestion: Params, k: int) -> dict[str, Any]:
        """What the LLM proposer is given on its turn."""
        raise NotImplementedError

    def learn(self, params: Params, score: float, source: str, suggestion: Params | None) -> None:
        """A result, for the classical method (`suggestion`: the one this trial was asked
        for, None for a point not asked here)."""
        raise NotImplementedError

    # ------------------------------------------------------------ ask/tell
    def ask(self) -> Params:
        k = len(self.history) + len(self._out)  # the trial this proposal is for
        suggestion = self.suggest()
        self._suggestion = suggestion
        if self.llm_turn(k):
            state = self.llm_state(suggestion, k)
            self.llm_calls += 1
            self.last_source = self.LLM_SOURCE
            proposal = self.propose_llm(state)
        else:
            self.last_source = self.CLASSICAL_SOURCE
            proposal = suggestion
        self._out.append((self.key(proposal), self.last_source, suggestion))
        return proposal

    def rejected(self) -> Params:
        """The LLM's proposal was invalid (the Evaluator reported and counted it): this
        trial goes to the classical method's suggestion, recorded with its source."""
        self._out.pop()  # the rejected proposal, the last asked, is not out
        self.last_source = self.CLASSICAL_SOURCE
        self._out.append((self.key(self._suggestion), self.last_source, self._suggestion))
        return self._suggestion

    def tell(self, params: Params, score: float) -> None:
        key = self.key(params)
        i = next((i for i, out in enumerate(self._out) if out[0] == key), None)
        source, suggestion = (self.last_source, None) if i is None else self._out.pop(i)[1:]
        self.history.append((params, score, source))
        self.learn(params, score, source, suggestion)



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
