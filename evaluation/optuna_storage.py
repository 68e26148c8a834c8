"""A study's cells as Optuna studies, so that `optuna-dashboard URL` shows them: one
Optuna study per cell (named after the cell), one trial per charged evaluation, params
`log10_learning_rate` and `momentum`, value the score, user attrs status, final value,
iterations and source. Written by the parent process as cells finish (no two writers on
one SQLite file).

    >>> storage_or_error("sqlite:///:memory:") is not None
    True
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tuneloop.tools.errors import UserError


def storage_or_error(url: str) -> Any:
    """The Optuna storage at `url` (any RDB URL), or one line saying why it cannot be used."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises many kinds; the user needs one line
        raise UserError(f"cannot use --storage {url!r}: {str(e).splitlines()[0][:200]}") from None


def record_cell(storage: Any, study_name: str, run_dir: Path) -> int:
    """(Re)write the cell's Optuna study from its trace; returns the trials recorded."""
    import optuna
    from optuna.distributions import FloatDistribution

    from tuneloop.evaluation.traces import trial_rows
    from tuneloop.tools.record import read_trace

    rows = [r for r in trial_rows(read_trace(run_dir)) if r["charged"]]
    try:
        optuna.delete_study(study_name=study_name, storage=storage)  # a cell run again replaces its study
    except KeyError:
        pass
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize")
    study.set_user_attr("run_dir", str(run_dir))
    if not rows:
        return 0
    # one distribution for the whole study, wide enough for every proposal (a model may
    # go below the classical methods' 1e-5)
    low = min(-5.0, math.floor(min(math.log10(r["learning_rate"]) for r in rows)))
    dists = {"log10_learning_rate": FloatDistribution(low, 0.0), "momentum": FloatDistribution(0.0, 1.0)}
    for r in rows:
        study.add_trial(optuna.trial.create_trial(
            params={"log10_learning_rate": math.log10(r["learning_rate"]), "momentum": r["momentum"]},
            distributions=dists, value=r["score"],
            user_attrs={"status": r["status"], "final_value": r["final_value"], "iterations": r["iterations"],
                        "source": r["source"], "trial": r["trial"], "learning_rate": r["learning_rate"]}))
    return len(rows)
