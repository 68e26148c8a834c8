"""One way to run a method: what to run (`MethodSpec`) and the one function that runs it
(`run_method`). The harness, the service and replay all come through here, so a method
gets the same search box, the same Centaur settings and the same manifest wherever it runs.

    >>> from tuneloop.evaluation.methods import MethodSpec, run_method
    >>> r = run_method(MethodSpec(method="grid", function="rastrigin", budget=3, runs_dir=tmp))
    >>> [t.learning_rate for t in r.trials], r.stop_reason
    ([0.0001, 0.01, 0.1], 'budget_spent')
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneloop.agent.models import ModelFactory, ModelSettings, make_chat_model
from tuneloop.agent.session_config import SessionConfig, config_from_manifest
from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.grids import check_refined_space
from tuneloop.evaluation.strategies import (
    AGENT_METHOD,
    LLM_METHODS,
    StrategyContext,
    known_method,
    make_strategy,
)
from tuneloop.tools.defaults import DEFAULT_MAX_ITER, DEFAULT_TOL
from tuneloop.tools.gd_space import DEFAULT_SPACE, check_gd_space
from tuneloop.tools.momentum import start_point
from tuneloop.tools.objectives import get_objective
from tuneloop.tools.record import new_session_id
from tuneloop.tools.run_result import SessionResult
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.tasks import load_task
from tuneloop.tools.trial_pool import Demand
from tuneloop.tools.trials import EvaluatorConfig


class MethodSpec(BaseModel):
    """One method on one objective: everything that decides its trials."""

    model_config = ConfigDict(frozen=True)
    method: str
    function: str = "rosenbrock"
    budget: int = Field(default=EvaluatorConfig.model_fields["budget"].default, ge=1)
    seed: int = 0
    x0: Literal["paper", "random"] | tuple[float, ...] = "paper"  # a start drawn from the seed, or a point
    dim: int = Field(default=2, ge=2, le=D.MAX_DIM)  # a "paper" or "random" start's dimension
    max_iter: int = Field(default=DEFAULT_MAX_ITER, ge=1)
    tol: float = Field(default=DEFAULT_TOL, ge=0.0)
    space: SearchSpace | None = None  # None: the default, GD's or the task's SPACE
    task: str | None = None  # a task (a built-in name or a file) instead of GD on `function`
    model: ModelSettings = ModelSettings()  # LLM methods only
    prompt: str | None = None  # None: the method's own default template
    prompt_text: str | None = None  # a recorded template's text (replay) instead of the named one
    centaur_ratio: float = Field(default=D.CENTAUR_RATIO, ge=0.0, le=1.0)
    centaur_warmup: int | None = Field(default=None, ge=0)
    runs_dir: Path = Path("runs")
    manifest_extra: dict[str, Any] = {}

    @field_validator("method")
    @classmethod
    def _known(cls, v: str) -> str:
        return known_method(v)

    @field_validator("space", mode="before")
    @classmethod
    def _a_space(cls, v: Any) -> SearchSpace | None:
        return None if v is None else SearchSpace.parse(v)

    @model_validator(mode="after")
    def _fits_the_objective(self) -> MethodSpec:
        # refused here, not when it runs: an unknown function or task, a dimension it does not take
        if self.task is not None:
            load_task(self.task)
        else:
            get_objective(self.function).check_dim(len(self.x0) if isinstance(self.x0, tuple) else self.dim)
            check_gd_space(self.search_space)
        if self.method == "refined":
            check_refined_space(self.search_space)
        return self

    @property
    def search_space(self) -> SearchSpace:
        """What is searched: the space given, else GD's default or the task's SPACE."""
        if self.space is not None:
            return self.space
        return load_task(self.task).space if self.task is not None else DEFAULT_SPACE

    @property
    def uses_llm(self) -> bool:
        return self.method in LLM_METHODS

    def session_config(self) -> SessionConfig:
        x0 = self.x0 if isinstance(self.x0, tuple) else start_point(self.x0, self.seed, self.dim)
        on_gd, on_task = (D.PROMPT, D.TASK_PROMPT) if self.method == AGENT_METHOD else D.STRATEGY_PROMPTS.get(
            self.method, (D.CENTAUR_PROMPT, D.CENTAUR_TASK_PROMPT))
        default_prompt = on_gd if self.task is None else on_task  # a task's templates speak of a task, not GD
        return SessionConfig(
            evaluator=EvaluatorConfig(objective=self.function, x0=x0, max_iter=self.max_iter, tol=self.tol,
                                      budget=self.budget, space=self.search_space, task=self.task, seed=self.seed),
            model=self.model, prompt=self.prompt or default_prompt, prompt_text=self.prompt_text, seed=self.seed,
            x0_spec=self.x0 if isinstance(self.x0, str) else "explicit", method=self.method,
            runs_dir=self.runs_dir, manifest_extra=self.manifest_extra)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], **update: Any) -> MethodSpec:
        """The spec a run's manifest records (its prompt by the recorded text)."""
        cfg = config_from_manifest(m)
        ev = cfg.evaluator
        settings = m.get(cfg.method) or {}  # a hybrid's own settings (Centaur: ratio, warm-up)
        fields: dict[str, Any] = dict(
            method=cfg.method, function=ev.objective, budget=ev.budget, seed=cfg.seed, x0=tuple(ev.x0), dim=len(ev.x0),
            max_iter=ev.max_iter, tol=ev.tol, space=ev.space, task=ev.task, model=cfg.model, prompt=cfg.prompt,
            prompt_text=cfg.prompt_text, centaur_ratio=settings.get("ratio", D.CENTAUR_RATIO),
            centaur_warmup=settings.get("warmup"))
        return cls(**(fields | update))


def run_method(spec: MethodSpec, *, session_id: str | None = None, chat_model: Any = None,
               model_factory: ModelFactory = make_chat_model, should_stop: Callable[[], bool] | None = None,
               on_trial: Callable[[dict], None] | None = None, demand: Demand | None = None) -> SessionResult:
    """Run `spec` to its end in `spec.runs_dir / session_id` (a fresh id when None) and
    return its result. An LLM method talks to `chat_model` when given (a LangChain chat
    model: a scripted one replays recorded replies), else to `model_factory(spec.model)`.
    Once `should_stop()` is True the run ends before its next proposal, as interrupted.
    With a `demand` (an ask/tell study) trials run in worker threads, as many at once as
    the user has asked for (tools/trial_pool.py)."""
    cfg = spec.session_config()
    sid = session_id or new_session_id(spec.method)
    if spec.method == AGENT_METHOD:
        from tuneloop.agent.session import run_session

        return run_session(cfg, chat_model=chat_model, model_factory=model_factory, session_id=sid,
                           should_stop=should_stop, on_trial=on_trial, demand=demand)
    from tuneloop.evaluation.runner import run_strategy

    proposer = None
    if spec.uses_llm:
        from tuneloop.agent.prompts import template_for
        from tuneloop.evaluation.centaur import CentaurLLM

        model = chat_model if chat_model is not None else model_factory(cfg.model)
        proposer = CentaurLLM(model, template_for(cfg.prompt, cfg.prompt_text))
    space = cfg.evaluator.space
    strategy = make_strategy(spec.method, StrategyContext(budget=spec.budget, seed=spec.seed, space=space,
                                                          propose_llm=proposer, centaur_ratio=spec.centaur_ratio,
                                                          centaur_warmup=spec.centaur_warmup))
    extra: dict[str, Any] = {}
    if strategy.manifest():
        extra[spec.method] = strategy.manifest()
    return run_strategy(strategy, cfg, sid, extra_manifest=extra, should_stop=should_stop, on_trial=on_trial,
                        demand=demand)
