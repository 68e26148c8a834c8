"""tuneloop: LLM agents as hyperparameter tuners, and the classical methods beside them.

The public API, for a notebook or a script. Names load on first use, so `import tuneloop`
stays light (no LangChain, numba or Optuna until a name that needs them is touched).

Run one method on one objective (any method of `tuneloop eval`: grid, random, cmaes, tpe,
llm, centaur; an LLM method takes `model=`, or a LangChain chat model as `chat_model=`):

    >>> import tuneloop
    >>> r = tuneloop.run_method(tuneloop.MethodSpec(method="random", budget=4, seed=0, runs_dir=tmp))
    >>> r.trials_charged, r.stop_reason
    (4, 'budget_spent')

Evaluate one configuration through the budget gate every method uses:

    >>> ev = tuneloop.Evaluator(tuneloop.EvaluatorConfig(objective="rosenbrock", budget=3))
    >>> ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9}, source="notebook").status
    'converged'

Tune your own code, ask/tell (any method; the loop is yours):

    >>> study = tuneloop.Study({"lr": {"type": "float", "low": 1e-4, "high": 1, "log": True}}, method="cmaes",
    ...                        budget=3, runs_dir=tmp)
    >>> for _ in range(3):
    ...     trial = study.ask()
    ...     study.tell(trial, {"value": abs(trial.params["lr"] - 0.01), "epochs": 3})
    >>> study.close(), len(study.trials)
    ('budget_spent', 3)

Run a study (methods x objectives x seeds) and read a run's trace back:

    >>> rows = tuneloop.run_eval(tuneloop.EvalConfig(functions=["rosenbrock"], methods=["grid"], seeds=[0],
    ...                                              workers=1, out=tmp / "study"))
    >>> rows[0]["method"], rows[0]["trials_charged"]
    ('grid', 12)
    >>> t = tuneloop.read_trace(r.run_dir)
    >>> t.method, len(t.of("trial_evaluated"))
    ('random', 4)
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("tuneloop")
except PackageNotFoundError:  # pragma: no cover - running from a tree that was never installed
    __version__ = "0+unknown"

# public name -> the module that defines it (each name has one home; this only points to it)
_HOMES = {
    "MethodSpec": "tuneloop.evaluation.methods",
    "run_method": "tuneloop.evaluation.methods",
    "EvalConfig": "tuneloop.evaluation.harness",
    "run_eval": "tuneloop.evaluation.harness",
    "Evaluator": "tuneloop.tools.trials",
    "EvaluatorConfig": "tuneloop.tools.trials",
    "TrialResult": "tuneloop.tools.trials",
    "SessionResult": "tuneloop.tools.run_result",
    "Trace": "tuneloop.tools.record",
    "read_trace": "tuneloop.tools.record",
    "Client": "tuneloop.evaluation.client",
    "Study": "tuneloop.evaluation.study",
    "StudyError": "tuneloop.evaluation.study",
    "tune": "tuneloop.evaluation.study",
    "TuneloopError": "tuneloop.tools.errors",
    "UserError": "tuneloop.tools.errors",
}

__all__ = [
    "Client",
    "EvalConfig",
    "Evaluator",
    "EvaluatorConfig",
    "MethodSpec",
    "SessionResult",
    "Study",
    "StudyError",
    "Trace",
    "TrialResult",
    "TuneloopError",
    "UserError",
    "__version__",
    "read_trace",
    "run_eval",
    "run_method",
    "tune",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'tuneloop' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from tuneloop.evaluation.client import Client
    from tuneloop.evaluation.harness import EvalConfig, run_eval
    from tuneloop.evaluation.methods import MethodSpec, run_method
    from tuneloop.evaluation.study import Study, StudyError, tune
    from tuneloop.tools.errors import TuneloopError, UserError
    from tuneloop.tools.record import Trace, read_trace
    from tuneloop.tools.run_result import SessionResult
    from tuneloop.tools.trials import Evaluator, EvaluatorConfig, TrialResult
