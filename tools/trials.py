"""The Evaluator: the one gate every proposal goes through, whoever made it.

It validates a proposal, enforces the budget of charged evaluations, answers a repeated
configuration from its cache (flagged, not charged), runs the kernel, scores the run,
keeps the incumbent and emits one `trial_evaluated` event per answered proposal (or a
`tool_error` event per rejected one) through the structlog logger it was given.

Example:

    >>> from tuneloop.tools.trials import Evaluator, EvaluatorConfig
    >>> ev = Evaluator(EvaluatorConfig(objective="rosenbrock", budget=2))
    >>> ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9}, source="manual").status
    'converged'
    >>> ev.budget_left
    1
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneloop.tools import momentum
from tuneloop.tools.errors import TuneloopError
from tuneloop.tools.formatting import finite_or_none
from tuneloop.tools.gd_space import DEFAULT_SPACE, check_gd_space, run_kwargs, space_from_bounds
from tuneloop.tools.objectives import Objective, get_objective
from tuneloop.tools.scoring import score as score_run
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.task_worker import run_trial
from tuneloop.tools.tasks import Task, load_task

CURVE_POINTS = 48  # recorded points per run for the loss-curve summary


class TrialError(TuneloopError):
    """A proposal the Evaluator refused; the message is written for the proposer."""


class InvalidProposal(TrialError):
    pass


class BudgetExhausted(TrialError):
    pass


class EvaluatorConfig(BaseModel):
    """Everything that decides a trial's outcome; recorded in every manifest."""

    model_config = ConfigDict(frozen=True)
    objective: str = "rosenbrock"
    x0: tuple[float, ...] = momentum.DEFAULT_X0
    max_iter: int = Field(default=momentum.DEFAULT_MAX_ITER, ge=1)
    tol: float = Field(default=momentum.DEFAULT_TOL, ge=0.0)
    budget: int = Field(default=10, ge=1)
    space: SearchSpace = DEFAULT_SPACE
    # a task (tools/tasks.py: a built-in name or a file) instead of GD on `objective`: its
    # SPACE is the default space, and evaluate(params, seed) gets `seed`
    task: str | None = None
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _from_bounds(cls, data: Any) -> Any:
        """A manifest written before typed spaces records `bounds`: the same ranges as a
        space. A task's space is its SPACE unless one is given."""
        if isinstance(data, dict) and "bounds" in data:
            data = dict(data)
            data.setdefault("space", space_from_bounds(data.pop("bounds") or {}))
        if isinstance(data, dict) and data.get("task") and data.get("space") is None:
            data = dict(data) | {"space": load_task(data["task"]).space}
        return data

    @field_validator("space", mode="before")
    @classmethod
    def _parse_space(cls, v: Any) -> SearchSpace:
        return SearchSpace.parse(v)

    @model_validator(mode="after")
    def _fits(self) -> EvaluatorConfig:
        if self.task is not None:
            load_task(self.task)  # a task that cannot load is refused here
            return self
        self.__dict__["objective"] = get_objective(self.objective).name  # frozen: set once, validated
        check_gd_space(self.space)
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
    learning_rate: float | None = None  # GD's (None for a task)
    momentum: float | None = None  # GD's: 0 when the space has none (plain gradient descent)
    status: Literal["converged", "max_iter", "diverged", "ok", "failed"]  # the last two: a task's
    final_value: float | None  # None when diverged (a task: its value; None when failed)
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
    params: dict[str, Any] = {}  # the configuration, every parameter of the space
    metrics: dict[str, Any] = {}  # a task's, beside its value
    error: str | None = None  # why a task's trial failed

    @classmethod
    def from_event(cls, event: Mapping[str, Any]) -> TrialResult:
        """The trial a `trial_evaluated` event records (the event's own fields left out)."""
        return cls.model_validate({k: v for k, v in event.items() if k in cls.model_fields})

    @model_validator(mode="after")
    def _params(self) -> TrialResult:
        if not self.params and self.learning_rate is not None:  # recorded before typed spaces: its two
            self.params = {"learning_rate": self.learning_rate, "momentum": self.momentum}
        return self


@dataclass(frozen=True, eq=False)
class Reservation:
    """A charged trial handed out and not yet answered (ask/tell with parallel workers):
    it counts against the budget, and its configuration is neither proposed nor cached
    again until `Evaluator.run` records it."""

    params: dict[str, Any]
    source: str


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
        self.task = load_task(config.task) if config.task is not None else None
        # what is tuned: a GD objective, or a task (both have a name, a title and a formula)
        self.gd_objective = None if self.task else get_objective(config.objective)
        self.objective: Objective | Task = self.task or get_objective(config.objective)
        self.f_star = None if self.task else get_objective(config.objective).minimum(len(config.x0))
        self.logger = logger
        self.trials: list[TrialResult] = []
        self.charged = 0
        self.invalid = 0
        self.repeats = 0
        self.outcomes: list[str] = []  # per proposal, in order: charged | repeat | invalid
        self._cache: dict[tuple[Any, ...], TrialResult] = {}
        self._every = max(1, config.max_iter // CURVE_POINTS)
        self.in_flight: list[Reservation] = []  # reserved, running or waiting for a tell
        # Bookkeeping and events under one lock, so trials can run in several threads at
        # once (parallel ask/tell); the trial itself runs outside it.
        self._lock = threading.RLock()

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
    def pending(self) -> list[dict[str, Any]]:
        """The configurations out being tried (reserved, not yet recorded), in order."""
        return [dict(r.params) for r in self.in_flight]

    @property
    def known_params(self) -> list[dict[str, Any]]:
        """Every configuration tried or out being tried, once each, in order: what a model
        is told not to propose again."""
        seen = {self.config.space.key(p): p for p in [*(t.params for t in self.trials), *self.pending]}
        return list(seen.values())

    @property
    def incumbent(self) -> TrialResult | None:
        """The best charged trial so far (lowest score; earliest on ties)."""
        best = None
        for t in self.trials:
            if not t.repeat and (best is None or t.score < best.score):
                best = t
        return best

    # ------------------------------------------------------------- evaluate
    def validate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Parse and range-check a raw proposal (a model's arguments: strings, NaN and
        missing values included); raises InvalidProposal. Returns it typed, in the
        space's order."""
        space = self.config.space
        if not isinstance(params, Mapping):
            raise InvalidProposal(f"invalid arguments (not an object: {params!r}); allowed: {space.describe()}")
        try:
            typed = space.coerce(params)
        except ValueError as e:
            raise InvalidProposal(f"invalid arguments ({e}); allowed: {space.describe()}") from None
        problem = space.check(typed)
        if problem:
            raise InvalidProposal(problem)
        return typed

    def evaluate(self, params: Mapping[str, Any], source: str = "manual") -> TrialResult:
        """Answer one proposal, a mapping of the space's parameters. Raises InvalidProposal
        (counted, not charged) or BudgetExhausted (nothing evaluated)."""
        out = self.reserve(params, source)
        return out if isinstance(out, TrialResult) else self.run(out)

    def reserve(self, params: Mapping[str, Any], source: str = "manual") -> TrialResult | Reservation:
        """The first half of `evaluate`: validate, check the budget and the cache. A repeat
        is answered (and recorded) at once; a new configuration is charged and returned as
        a Reservation for `run`. A configuration that is out being tried is refused (an
        InvalidProposal: it has no result to repeat yet)."""
        with self._lock:
            if self.exhausted:
                raise BudgetExhausted(
                    f"the evaluation budget of {self.config.budget} is spent; no more trials can run"
                )
            try:
                p = self.validate(params)
                key = self.config.space.key(p)
                if any(self.config.space.key(r.params) == key for r in self.in_flight):
                    raise InvalidProposal(f"{self.config.space.format(p)} is being tried now (a trial out, its "
                                          "result pending): propose a configuration not tried and not pending")
            except InvalidProposal as e:
                self.invalid += 1
                self.outcomes.append("invalid")
                raw = params if isinstance(params, Mapping) else {}
                self._emit("tool_error", source=source, error=str(e),
                           arguments={str(k): _jsonable(v) for k, v in raw.items()})
                raise
            cached = self._cache.get(key)
            if cached is not None:
                self.repeats += 1
                self.outcomes.append("repeat")
                result = cached.model_copy(update=dict(
                    trial=len(self.trials) + 1, source=source, repeat=True, repeat_of=cached.trial,
                    charged=False, budget_left=self.budget_left,
                ))
                self.trials.append(result)
                self._emit("trial_evaluated", **self.event_fields(result))
                return result
            self.charged += 1
            self.outcomes.append("charged")
            reservation = Reservation(params=p, source=source)
            self.in_flight.append(reservation)
            return reservation

    def run(self, reservation: Reservation) -> TrialResult:
        """The second half of `evaluate`: run the reserved trial (in any thread) and record
        it. Trials are numbered in the order they are recorded."""
        try:
            result = self._run(reservation.params, reservation.source)
        except BaseException:  # a Ctrl-C inside a task's evaluate: nothing ran to the end, nothing charged
            with self._lock:
                self.charged -= 1
                del self.outcomes[len(self.outcomes) - 1 - self.outcomes[::-1].index("charged")]
                self.in_flight.remove(reservation)
            raise
        with self._lock:
            self.in_flight.remove(reservation)
            result = result.model_copy(update=dict(trial=len(self.trials) + 1, budget_left=self.budget_left))
            self._cache[self.config.space.key(result.params)] = result
            self.trials.append(result)
            self._emit("trial_evaluated", **self.event_fields(result))
        return result

    def _run(self, params: dict[str, Any], source: str) -> TrialResult:
        if self.task is not None:
            return self._run_task(self.task, params, source)
        c = self.config
        kw = run_kwargs(params)
        assert self.gd_objective is not None  # not a task: GD on an objective
        r = momentum.run(self.gd_objective, x0=c.x0, max_iter=c.max_iter, tol=c.tol, record_every=self._every, **kw)
        final = finite_or_none(r.final_value)
        assert r.trajectory is not None  # recorded: record_every = self._every >= 1
        return TrialResult(
            trial=len(self.trials) + 1, source=source,
            learning_rate=kw["alpha"], momentum=kw["beta"],
            status=r.status, final_value=final, iterations=r.iterations,
            x_final=[finite_or_none(v) for v in r.x_final],
            distance_to_optimum=finite_or_none(r.distance_to_optimum),
            best_value=finite_or_none(r.best_value),
            score=score_run(final, r.iterations, c.max_iter, self.f_star),
            repeat=False, charged=True, budget_left=self.budget_left,
            curve=_curve(r.trajectory, r.status), params=params,
        )

    def _run_task(self, task: Task, params: dict[str, Any], source: str) -> TrialResult:
        out = run_trial(task, params, self.config.seed)
        return TrialResult(
            trial=len(self.trials) + 1, source=source,
            learning_rate=_number(params.get("learning_rate")), momentum=_number(params.get("momentum")),
            status=out.status, final_value=out.value, iterations=0, x_final=[], distance_to_optimum=None,
            best_value=out.value, score=task.score(out), repeat=False, charged=True, budget_left=self.budget_left,
            curve=CurveSummary(checkpoints=[], increases=0, oscillating=False), params=params,
            metrics=out.metrics, error=out.error,
        )

    def restore(self, result: TrialResult) -> None:
        """Re-enter a trial recorded earlier (resuming a session): nothing is re-run and
        a charged trial counts against the budget once, as it did the first time."""
        self.trials.append(result)
        if result.charged:
            self.charged += 1
            self.outcomes.append("charged")
            self._cache[self.config.space.key(result.params)] = result
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


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return repr(v)
