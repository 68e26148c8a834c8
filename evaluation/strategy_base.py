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
