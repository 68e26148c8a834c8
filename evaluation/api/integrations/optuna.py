"""An Optuna sampler whose proposals come from a tuneloop method: `AgentSampler` runs a
tuneloop ask/tell `Study` (any method: llm, centaur, tpe, cmaes, random, grid) behind
Optuna's sampler interface, so `study.optimize` drives an LLM agent and the run leaves a
tuneloop trace (summary, compare, replay and export read it).

    >>> import math, optuna
    >>> from tuneloop.tools.record import read_trace
    >>> def objective(trial):
    ...     lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    ...     act = trial.suggest_categorical("act", ["relu", "tanh"])
    ...     return (math.log10(lr) + 2) ** 2 + (act == "tanh")
    >>> sampler = AgentSampler(method="random", budget=4, runs_dir=tmp)
    >>> study = optuna.create_study(sampler=sampler)
    >>> study.optimize(objective, n_trials=5)  # trial 0 shows the space; trials 1-4 are tuneloop's
    >>> sampler.close(), len(read_trace(sampler.run_dir).of("trial_evaluated"))
    ('budget_spent', 4)

The design, in Optuna's terms (optuna/samplers/_base.py):

- The search space is fixed once, as QMCSampler fixes it: `search_space=` when given
  (then every trial, the first included, is tuneloop's), else the intersection search
  space (optuna.search_space.IntersectionSearchSpace) of the first completed trial(s).
  Until then (the first trial) the independent sampler answers. A parameter outside the
  fixed space (a conditional or dynamic one) is sampled independently, with a warning.
  For the trace to describe what ran, keep the space static; a parameter a trial does not
  suggest leaves the proposal's value unused, and enqueued (fixed) values override it.
- `sample_relative` asks the tuneloop Study for the next configuration and returns it in
  Optuna's types; `after_trial` tells it: COMPLETE, the value; FAIL or PRUNED, a failed
  trial. The Study's direction is the Optuna study's (single objective only).
- With `n_jobs > 1` (or ask/tell with several trials open) each Optuna trial gets a
  tuneloop trial of its own, asked while the others are out: the method proposes with
  them pending (evaluation/study.py), and each is told in its Optuna trial's
  `after_trial` (which Optuna calls for every finished trial, failed or pruned). Once the
  whole budget is handed out, a trial asked before the last results are in gets the
  independent sampler.
- `budget` is the number of trials the tuneloop method proposes. When its study is over
  (the budget spent, or an agent that stopped early) the independent sampler takes over,
  with one warning; a method that failed raises its StudyError.

Optuna distributions map onto tuneloop's space (tools/space.py): FloatDistribution to a
float (with a step: a float tuneloop searches continuously, rounded onto the step for
Optuna, with a warning; the trace keeps the unrounded value), IntDistribution to an int
(low, high, log, step), CategoricalDistribution to a categorical whose choices are JSON
literals (bool, int, float, str; anything else is refused). Names that are not Python
identifiers are renamed for tuneloop ("model/lr" -> "model_lr").

Uses no private name of Optuna.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import IntersectionSearchSpace
from optuna.study import StudyDirection
from optuna.trial import TrialState

from tuneloop.evaluation.strategies import known_method
from tuneloop.evaluation.study import Study, StudyError, Trial
from tuneloop.tools.space import SearchSpace

if TYPE_CHECKING:
    from optuna.study import Study as OptunaStudy
    from optuna.trial import FrozenTrial

    from tuneloop.agent.models import ModelSettings

__all__ = ["AgentSampler", "param_of", "tuneloop_names"]

JSON_LITERALS = (bool, int, float, str)


def param_of(name: str, dist: BaseDistribution) -> dict[str, Any]:
    """One Optuna distribution as a parameter of tuneloop's space (its JSON form).

    >>> param_of("lr", FloatDistribution(1e-4, 1.0, log=True))
    {'type': 'float', 'low': 0.0001, 'high': 1.0, 'log': True}
    >>> param_of("units", IntDistribution(16, 256, step=16))
    {'type': 'int', 'low': 16, 'high': 256, 'log': False, 'step': 16}
    >>> param_of("act", CategoricalDistribution(["relu", None]))
    Traceback (most recent call last):
    ...
    ValueError: categorical parameter 'act': choice None (NoneType) is not a JSON literal (bool, int, float, str), ...
    """
    if isinstance(dist, FloatDistribution):
        return {"type": "float", "low": dist.low, "high": dist.high, "log": dist.log}
    if isinstance(dist, IntDistribution):
        return {"type": "int", "low": dist.low, "high": dist.high, "log": dist.log, "step": dist.step}
    if isinstance(dist, CategoricalDistribution):
        for c in dist.choices:
            if not isinstance(c, JSON_LITERALS):
                raise ValueError(f"categorical parameter {name!r}: choice {c!r} ({type(c).__name__}) is not a JSON "
                                 "literal (bool, int, float, str), so tuneloop cannot search it; use its name or "
                                 "index as the choice")
        return {"type": "categorical", "choices": list(dist.choices)}
    raise ValueError(f"parameter {name!r}: {type(dist).__name__} is not a distribution tuneloop can search "
                     "(float, int, categorical)")


def tuneloop_names(names: Sequence[str]) -> dict[str, str]:
    """Optuna's parameter names -> identifiers (what tuneloop's space and tools take).

    >>> tuneloop_names(["lr", "model/lr", "model-lr", "2nd"])
    {'lr': 'lr', 'model/lr': 'model_lr', 'model-lr': 'model_lr_2', '2nd': 'p_2nd'}
    """
    out: dict[str, str] = {}
    for name in names:
        base = re.sub(r"\W", "_", name)
        base = base if base.isidentifier() else f"p_{base}"
        new, k = base, 2
        while new in out.values():
            new, k = f"{base}_{k}", k + 1
        out[name] = new
    return out


def choice_of(dist: CategoricalDistribution, value: Any) -> Any:
    """The choice of `dist` that tuneloop's `value` is, as Optuna holds it (its own type)."""
    text = json.dumps(value)
    for c in dist.choices:
        if json.dumps(c) == text:
            return c
    for c in dist.choices:
        if c == value and isinstance(c, bool) == isinstance(value, bool):
            return c
    raise ValueError(f"{value!r} is not one of the choices {dist.choices}")


def value_for(dist: BaseDistribution, value: Any) -> Any:
    """tuneloop's proposed `value` in Optuna's type for `dist` (a stepped float rounded onto its step)."""
    if isinstance(dist, CategoricalDistribution):
        return choice_of(dist, value)
    if isinstance(dist, IntDistribution):
        return int(value)
    assert isinstance(dist, FloatDistribution)
    v = min(max(float(value), dist.low), dist.high)
    if dist.step is not None:
        v = min(dist.low + round((v - dist.low) / dist.step) * dist.step, dist.high)
    return v


@dataclass
class _Out:
    """A tuneloop trial out: the Optuna trial that runs it."""

    number: int
    trial: Trial


class AgentSampler(BaseSampler):
    """Optuna's relative sampling through a tuneloop Study running `method` for `budget`
    trials (the module's docstring says how). `model`, `chat_model` and `prompt` are an
    LLM method's (`chat_model`: a LangChain chat model, such as a scripted one);
    `runs_dir` receives the trace; `description` tells the agent what is tuned;
    `independent_sampler` (default RandomSampler(seed)) answers what tuneloop does not;
    `search_space` (Optuna distributions) fixes the space before the first trial.
    `resume` (the `run_dir` of an earlier sampler on the same Optuna study, stopped before
    its budget: the process ended) continues that tuneloop study (`Study.load`): its
    method re-runs on the recorded results and the next trials are the ones it had not
    proposed yet. One sampler per Optuna study; `close()` ends the tuneloop run."""

    def __init__(self, method: str = "llm", *, budget: int, model: str | ModelSettings = "local", seed: int = 0,
                 chat_model: Any = None, runs_dir: str | Path = "runs", description: str = "",
                 prompt: str | None = None, independent_sampler: BaseSampler | None = None,
                 search_space: Mapping[str, BaseDistribution] | None = None,
                 resume: str | Path | None = None) -> None:
        self.method = known_method(method)
        if budget < 1:
            raise ValueError(f"budget must be at least 1, got {budget}")
        self.budget, self.model, self.seed, self.chat_model = budget, model, seed, chat_model
        self.runs_dir, self.description, self.prompt = Path(runs_dir), description, prompt
        self.resume = None if resume is None else Path(resume)
        self._independent = independent_sampler or RandomSampler(seed=seed)
        self._intersection = IntersectionSearchSpace()
        self._cond = threading.Condition()
        self._space: dict[str, BaseDistribution] | None = None
        self._names: dict[str, str] = {}  # Optuna's name -> tuneloop's
        self._params: dict[str, dict[str, Any]] = {}  # the tuneloop space's JSON form
        self._study: Study | None = None
        self._out: dict[int, _Out] = {}  # by Optuna trial number
        self._over: str | None = None  # why the tuneloop study is over (then the independent sampler answers)
        self._warned: set[str] = set()
        self._told = 0  # tuneloop trials told (charged: a repeat is answered from the cache)
        if search_space is not None:
            self._fix_space(search_space)
            if self._space is None:
                raise ValueError("search_space has no parameter to search (each has a single value)")

    def __str__(self) -> str:
        return f"AgentSampler({self.method})"

    # ------------------------------------------------------------ Optuna's sampler interface
    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

    def before_trial(self, study: OptunaStudy, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def infer_relative_search_space(self, study: OptunaStudy, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        if len(study.directions) > 1:
            raise ValueError("AgentSampler optimizes one objective; this study has "
                             f"{len(study.directions)} (a tuneloop study's trials have one value)")
        with self._cond:
            if self._over is not None:  # the tuneloop study is over: the independent sampler answers
                return {}
            if self._space is None:
                space = self._intersection.calculate(study)  # sorted by name: back in the objective's order
                done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                order = {n: i for i, n in enumerate(done[0].distributions if done else ())}
                self._fix_space(dict(sorted(space.items(), key=lambda kv: order.get(kv[0], len(order)))))
            return dict(self._space or {})

    def sample_relative(self, study: OptunaStudy, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        with self._cond:
            if self._over is not None:
                return {}
            if self._study is None:
                self._study = self._new_study(study)
            tuneloop = self._study
            if tuneloop.handed_out:  # every trial of the budget is out: this one is not tuneloop's
                self._warn(f"trial {trial.number} is sampled by {type(self._independent).__name__}: the tuneloop "
                           f"study's {self.budget} trials are all handed out, their results not all in",
                           key="handed out")
                return {}
        try:  # not under the lock: other threads tell their trials while the method thinks
            asked = tuneloop.ask()
        except StudyError:
            with self._cond:
                if tuneloop.handed_out:  # handed out in another thread meanwhile: not over
                    return {}
                self._end(trial.number)  # raises when the method failed
            return {}
        with self._cond:
            self._out[trial.number] = _Out(trial.number, asked)
        try:
            return {name: value_for(dist, asked.params[self._names[name]]) for name, dist in search_space.items()}
        except BaseException:
            self._tell(trial.number, {"status": "failed", "error": "its proposal could not be given to Optuna"})
            raise

    def sample_independent(self, study: OptunaStudy, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        if trial.number in self._out and param_name not in self._warned:
            why = ("its distribution differs from the one the tuneloop space holds" if param_name in self._names
                   else "it is not in the tuneloop search space (fixed when the first trial completed)")
            self._warn(f"parameter {param_name!r} (trial {trial.number}) is sampled by "
                       f"{type(self._independent).__name__}: {why}", key=param_name)
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: OptunaStudy, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        try:
            if state == TrialState.COMPLETE and values is not None and len(values) == 1:
                self._tell(trial.number, values[0])
            else:
                what = "pruned" if state == TrialState.PRUNED else "failed"
                self._tell(trial.number, {"status": "failed", "error": f"the Optuna trial {what}"})
        finally:
            self._independent.after_trial(study, trial, state, values)

    # ------------------------------------------------------------ the tuneloop side
    @property
    def tuneloop_study(self) -> Study | None:
        """The tuneloop Study (None until the first trial it proposes)."""
        return self._study

    @property
    def run_dir(self) -> Path:
        """The tuneloop run's directory (its manifest and trace)."""
        if self._study is None:
            raise RuntimeError("no tuneloop run yet: it starts with the first trial AgentSampler samples "
                               "(after the first complete trial, unless search_space was given)")
        return self._study.run_dir

    def close(self) -> str | None:
        """End the tuneloop run and return how it ended (`budget_spent`, `interrupted` when a
        trial was out or budget was left); None if it never started. Later trials are the
        independent sampler's. Close before reading the trace: the method's thread writes
        the last trial's event after its tell, and an agent may still give its final answer."""
        with self._cond:
            try:
                if self._study is not None and self._over is None:
                    if self._told >= self.budget and not self._out:
                        try:  # the budget is spent: the method ends on its own (an agent's final answer)
                            self._study.ask()
                        except StudyError:
                            pass
                    self._over = self._study.close()
            finally:
                self._over = self._over or "closed"
                self._out = {}
                self._cond.notify_all()
            return self._over if self._study is not None else None

    # ------------------------------------------------------------ helpers
    def _fix_space(self, distributions: Mapping[str, BaseDistribution]) -> None:
        space = {n: d for n, d in distributions.items() if not d.single()}
        if not space:
            return
        names = tuneloop_names(list(space))
        params = {names[n]: param_of(n, d) for n, d in space.items()}  # refuses what tuneloop cannot search
        for n, d in space.items():
            if isinstance(d, FloatDistribution) and d.step is not None:
                self._warn(f"parameter {n!r} has a step ({d.step:g}): tuneloop searches it as a continuous float "
                           "and Optuna gets the proposal rounded onto the step (the trace keeps the unrounded one)")
        self._space, self._names, self._params = space, names, params

    def _new_study(self, study: OptunaStudy) -> Study:
        if self.resume is not None:
            loaded = Study.load(self.resume, chat_model=self.chat_model)
            if loaded.space.model_dump(mode="json") != SearchSpace.parse(self._params).model_dump(mode="json"):
                raise ValueError(f"resume: {self.resume} searched another space than this study's "
                                 f"({loaded.space.describe()}); give the run of this study's sampler")
            if loaded.spec.method != self.method or loaded.spec.budget != self.budget:
                raise ValueError(f"resume: {self.resume} is a {loaded.spec.method} study of budget "
                                 f"{loaded.spec.budget}, not {self.method} of {self.budget}")
            self._told = loaded.recorded  # told before: the budget left is what they left
            return loaded
        direction: Literal["minimize", "maximize"] = (
            "maximize" if study.direction == StudyDirection.MAXIMIZE else "minimize")
        return Study(self._params, method=self.method, budget=self.budget, seed=self.seed, model=self.model,
                     prompt=self.prompt, runs_dir=self.runs_dir, direction=direction, description=self.description,
                     name=study.study_name, chat_model=self.chat_model)

    def _end(self, number: int) -> None:
        """The tuneloop study is over: close it (raising when its method failed) and say so once."""
        assert self._study is not None
        if self._over is not None:  # closed meanwhile (another thread, or close())
            return
        try:
            self._over = self._study.close()
        except StudyError:
            self._over = "failed"
            raise
        finally:
            self._cond.notify_all()
        self._warn(f"the tuneloop study is over ({self._over}) after {self._told} of its {self.budget} trials: "
                   f"trial {number} and later are sampled by {type(self._independent).__name__}")

    def _tell(self, number: int, result: float | dict[str, Any]) -> None:
        """Tell the tuneloop trial out its result, if Optuna trial `number` runs it."""
        with self._cond:
            out = self._out.pop(number, None)
            if out is None:
                return
            try:
                assert self._study is not None
                self._study.tell(out.trial, result)
                self._told += 1
            finally:
                self._cond.notify_all()

    def _warn(self, message: str, key: str | None = None) -> None:
        if key is not None:
            self._warned.add(key)
        warnings.warn(f"AgentSampler: {message}", UserWarning, stacklevel=3)
