"""The Evaluator: the one gate every proposal goes through, whoever made it.

It validates a proposal, enforces the budget of charged evaluations, answers a repeated
configuration from its cache (flagged, not charged), runs the kernel, scores the run,
keeps the incumbent and emits one `trial_evaluated` event per answered proposal (or a
`tool_error` event per rejected one) through the structlog logger it was given.

Example:

    >>> from tuneloop.tools.trials import Evaluator, EvaluatorConfig
    >>> ev = Evaluator(EvaluatorConfig(objective="rosenbrock", budget=2))
    >>> ev.evaluate(1e-3, 0.9, source="manual").status
    'converged'
    >>> ev.budget_left
    1
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneloop.tools import momentum
from tuneloop.tools.errors import TuneloopError
from tuneloop.tools.formatting import finite_or_none, fmt_lr
from tuneloop.tools.objectives import get_objective
from tuneloop.tools.scoring import score as score_run

CURVE_POINTS = 48  # recorded points per run for the loss-curve summary


class TrialError(TuneloopError):
    """A proposal the Evaluator refused; the message is written for the proposer."""


class InvalidProposal(TrialError):
    pass


class BudgetExhausted(TrialError):
    pass


class Bounds(BaseModel):
    """Allowed ranges. alpha must also be > 0 and beta < 1, whatever the bounds say.

    The default, alpha in [1e-4, 0.1] and beta in [0, 0.99], is the study's range (the
    span of its grid): wide enough for every built-in objective's good region, and
    without the decades above 0.1 where gradient descent with momentum diverges on all of
    them. Learning rates are searched on a log scale (see SearchSpace)."""

    model_config = ConfigDict(frozen=True)
    alpha_min: float = 1e-4
    alpha_max: float = 0.1
    beta_min: float = 0.0
    beta_max: float = 0.99

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if not (0.0 <= self.alpha_min < self.alpha_max <= 1.0):
            raise ValueError("need 0 <= alpha_min < alpha_max <= 1")
        if not (0.0 <= self.beta_min < self.beta_max <= 1.0):
            raise ValueError("need 0 <= beta_min < beta_max <= 1")
        return self

    def alpha_text(self) -> str:
        lo = "(0" if self.alpha_min == 0.0 else f"[{fmt_lr(self.alpha_min)}"
        return f"{lo}, {fmt_lr(self.alpha_max)}]"

    def beta_text(self) -> str:
        hi = "1)" if self.beta_max == 1.0 else f"{self.beta_max:g}]"
        return f"[{self.beta_min:g}, {hi}"

    def args_schema(self) -> dict[str, Any]:
        """The JSON schema of a proposal {learning_rate, momentum}, these bounds included:
        what every model is shown, whether it answers through a tool or in JSON."""
        lr: dict[str, Any] = {"type": "number", "maximum": self.alpha_max,
                              "description": f"learning rate alpha, in {self.alpha_text()}"}
        lr |= {"minimum": self.alpha_min} if self.alpha_min > 0 else {"exclusiveMinimum": 0}
        mom: dict[str, Any] = {"type": "number", "minimum": self.beta_min,
                               "description": f"momentum beta, in {self.beta_text()}"}
        mom |= {"exclusiveMaximum": 1} if self.beta_max >= 1.0 else {"maximum": self.beta_max}
        return {"type": "object", "properties": {"learning_rate": lr, "momentum": mom},
                "required": ["learning_rate", "momentum"]}

    def check(self, alpha: float, beta: float) -> str | None:
        """None if (alpha, beta) is allowed, else what is wrong, in words."""
        problems = []
        if not (alpha > 0.0 and self.alpha_min <= alpha <= self.alpha_max):
            problems.append(f"learning_rate={alpha!r} is outside the allowed range {self.alpha_text()}")
        if not (beta < 1.0 and self.beta_min <= beta <= self.beta_max):
            problems.append(f"momentum={beta!r} is outside the allowed range {self.beta_text()}")
        return "; ".join(problems) or None


class Proposal(BaseModel):
    """A proposal as it arrives: from a model it may be a string, NaN or missing."""

    learning_rate: float
    momentum: float

    @field_validator("learning_rate", "momentum")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class EvaluatorConfig(BaseModel):
    """Everything that decides a trial's outcome; recorded in every manifest."""

    model_config = ConfigDict(frozen=True)
    objective: str = "rosenbrock"
    x0: tuple[float, ...] = momentum.DEFAULT_X0
    max_iter: int = Field(default=momentum.DEFAULT_MAX_ITER, ge=1)
    tol: float = Field(default=momentum.DEFAULT_TOL, ge=0.0)
    budget: int = Field(default=10, ge=1)
    bounds: Bounds = Bounds()

    @field_validator("objective")
    @classmethod
    def _known(cls, v: str) -> str:
        return get_objective(v).name

    @model_validator(mode="after")
    def _dims(self) -> EvaluatorConfig:
        get_objective(self.objective).check_dim(len(self.x0))
        if not all(math.isfinite(v) for v in self.x0):
            raise ValueError("x0 must be finite")
        return self


class CurveSummary(BaseModel):
    checkpoints: list[tuple[int, float | None]]  # (iteration, f) at a few points
    increases: int  # how often f rose between recorded points
    oscillating: bool


class TrialResult(BaseModel):
    trial: int  # 1-based count of answered proposals (charged and repeats)
    source: str
    learning_rate: float
    momentum: float
    status: Literal["converged", "max_iter", "diverged"]
    final_value: float | None  # None when diverged
    iterations: int
    x_final: list[float | None]
    distance_to_optimum: float | None
    best_value: float | None
    score: float
    repeat: bool
    repeat_of: int | None = None
    charged: bool
    budget_left: int
    curve: CurveSummary


def _curve(traj: np.ndarray, status: str) -> CurveSummary:
    fs = [float(r[-1]) for r in traj]
    picks = sorted({0, len(fs) // 4, len(fs) // 2, (3 * len(fs)) // 4, len(fs) - 1})
    increases = sum(1 for a, b in zip(fs, fs[1:], strict=False) if b > a)
    return CurveSummary(
        checkpoints=[(int(traj[i][0]), finite_or_none(fs[i])) for i in picks],
        increases=increases,
        oscillating=status != "diverged" and increases >= 2,
    )


class Evaluator:
    """Budget, cache, validation, scoring and events for one session."""

    def __init__(self, config: EvaluatorConfig, logger: Any | None = None) -> None:
        self.config = config
        self.objective = get_objective(config.objective)
        self.f_star = self.objective.minimum(len(config.x0))
        self.logger = logger
        self.trials: list[TrialResult] = []
        self.charged = 0
        self.invalid = 0
        self.repeats = 0
        self.outcomes: list[str] = []  # per proposal, in order: charged | repeat | invalid
        self._cache: dict[tuple[float, float], TrialResult] = {}
        self._every = max(1, config.max_iter // CURVE_POINTS)

    # ---------------------------------------------------------------- state
    @property
    def budget_left(self) -> int:
        return self.config.budget - self.charged

    @property
    def exhausted(self) -> bool:
        return self.budget_left <= 0

    @property
    def uncharged_streak(self) -> int:
        """How many proposals in a row, up to now, were repeats or invalid."""
        n = 0
        for o in reversed(self.outcomes):
            if o == "charged":
                break
            n += 1
        return n

    @property
    def incumbent(self) -> TrialResult | None:
        """The best charged trial so far (lowest score; earliest on ties)."""
        best = None
        for t in self.trials:
            if not t.repeat and (best is None or t.score < best.score):
                best = t
        return best

    # ------------------------------------------------------------- evaluate
    def validate(self, learning_rate: Any, momentum: Any) -> Proposal:
        """Parse and range-check a raw proposal; raises InvalidProposal."""
        try:
            p = Proposal(learning_rate=learning_rate, momentum=momentum)
        except ValidationError as e:
            msg = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise InvalidProposal(
                f"invalid arguments ({msg}); learning_rate must be a number in "
                f"{self.config.bounds.alpha_text()}, momentum a number in {self.config.bounds.beta_text()}"
            ) from None
        problem = self.config.bounds.check(p.learning_rate, p.momentum)
        if problem:
            raise InvalidProposal(problem)
        return p

    def evaluate(self, learning_rate: Any, momentum: Any, source: str = "manual") -> TrialResult:
        """Answer one proposal. Raises InvalidProposal (counted, not charged) or
        BudgetExhausted (nothing evaluated)."""
        if self.exhausted:
            raise BudgetExhausted(
                f"the evaluation budget of {self.config.budget} is spent; no more trials can run"
            )
        try:
            p = self.validate(learning_rate, momentum)
        except InvalidProposal as e:
            self.invalid += 1
            self.outcomes.append("invalid")
            self._emit("tool_error", source=source, error=str(e),
                       learning_rate=_jsonable(learning_rate), momentum=_jsonable(momentum))
            raise
        key = (p.learning_rate, p.momentum)
        cached = self._cache.get(key)
        if cached is not None:
            self.repeats += 1
            self.outcomes.append("repeat")
            result = cached.model_copy(update=dict(
                trial=len(self.trials) + 1, source=source, repeat=True, repeat_of=cached.trial,
                charged=False, budget_left=self.budget_left,
            ))
        else:
            self.charged += 1
            self.outcomes.append("charged")
            result = self._run(p, source)
            self._cache[key] = result
        self.trials.append(result)
        self._emit("trial_evaluated", **self.event_fields(result))
        return result

    def _run(self, p: Proposal, source: str) -> TrialResult:
        c = self.config
        r = momentum.run(self.objective, p.learning_rate, p.momentum, x0=c.x0,
                         max_iter=c.max_iter, tol=c.tol, record_every=self._every)
        final = finite_or_none(r.final_value)
        assert r.trajectory is not None  # recorded: record_every = self._every >= 1
        return TrialResult(
            trial=len(self.trials) + 1, source=source,
            learning_rate=p.learning_rate, momentum=p.momentum,
            status=r.status, final_value=final, iterations=r.iterations,
            x_final=[finite_or_none(v) for v in r.x_final],
            distance_to_optimum=finite_or_none(r.distance_to_optimum),
            best_value=finite_or_none(r.best_value),
            score=score_run(final, r.iterations, c.max_iter, self.f_star),
            repeat=False, charged=True, budget_left=self.budget_left,
            curve=_curve(r.trajectory, r.status),
        )

    def restore(self, result: TrialResult) -> None:
        """Re-enter a trial recorded earlier (resuming a session): nothing is re-run and
        a charged trial counts against the budget once, as it did the first time."""
        self.trials.append(result)
        if result.charged:
            self.charged += 1
            self.outcomes.append("charged")
            self._cache[(result.learning_rate, result.momentum)] = result
        elif result.repeat:
            self.repeats += 1
            self.outcomes.append("repeat")

    def restore_invalid(self) -> None:
        """Re-enter an invalid proposal recorded earlier (resuming): counted, not charged,
        and part of the uncharged streak that heats the sampling."""
        self.invalid += 1
        self.outcomes.append("invalid")

    # --------------------------------------------------------------- events
    @staticmethod
    def event_fields(r: TrialResult) -> dict[str, Any]:
        return r.model_dump(exclude={"curve"}) | {"curve": r.curve.model_dump()}

    def _emit(self, event: str, **fields: Any) -> None:
        if self.logger is not None:
            self.logger.info(event, **fields)


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)
