"""A study's cells as Optuna studies, so that `optuna-dashboard URL` shows them: one
Optuna study per cell (named after the cell), one trial per charged evaluation, value the
score, user attrs status, final value, iterations and source. Params: for a run of
learning_rate and momentum (every run before typed spaces), `log10_learning_rate` and
`momentum` as ever; for any other space, each parameter under its name with the space's
distribution (float and int with their log scale and step, categorical with its choices).
Written by the parent process (no two writers on one SQLite file).

Every cell of the study is recorded, whether it finished in an earlier run or in this
one, and recording is idempotent: a study carries its cell's run dir, trial count and the
sha256 of its trace (written last, so a half-written study never matches); a study that
matches all three, and holds that many trials, is left alone; any other is replaced.

Optuna's public storage API writes a trial per transaction (`Study.add_trials` and
`copy_study` loop over `add_trial`; there is no batch write), so the cost of a trial on
SQLite is an fsync per commit plus Optuna's ORM work. The fsyncs go: a SQLite file is
opened in WAL mode with `synchronous=NORMAL` (commits stop syncing; a power cut may lose
the last commits, never corrupt the file, and a re-run records them again). WAL also
lets optuna-dashboard read while tuneloop writes.

    >>> storage_or_error("sqlite:///:memory:") is not None
    True
    >>> shown_url("postgresql://me:secret@db.example/optuna")
    'postgresql://me:***@db.example/optuna'
"""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.tools.errors import UserError
from tuneloop.tools.formatting import hide_password
from tuneloop.tools.space import CategoricalParam, FloatParam, IntParam, SearchSpace

SHA_ATTR = "trace_sha256"  # the study's last write: its presence means the study is complete
SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


class FastSQLiteConnection(sqlite3.Connection):
    """A sqlite3 connection in WAL mode with synchronous=NORMAL: a commit writes the WAL
    without an fsync. Given to SQLAlchemy as `connect_args={"factory": ...}` (public
    sqlite3 and create_engine arguments, through RDBStorage's `engine_kwargs`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for pragma in SQLITE_PRAGMAS:
            try:
                self.execute(pragma)
            except sqlite3.OperationalError:  # busy or read-only: keep the file's own mode
                pass


def engine_kwargs_for(url: str) -> dict[str, Any]:
    """SQLAlchemy engine arguments for `url`: the fast connection for SQLite (the default
    pysqlite driver), nothing for a server database."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() == "sqlite" and u.get_driver_name() == "pysqlite":
        return {"connect_args": {"factory": FastSQLiteConnection}}
    return {}


def shown_url(url: str) -> str:
    """`url` as it may be printed: any password masked."""
    return hide_password(url)


def storage_or_error(url: str) -> Any:
    """The Optuna storage at `url` (any RDB URL), or one line saying why it cannot be used."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs_for(url))
    except Exception as e:  # noqa: BLE001 - SQLAlchemy raises many kinds; the user needs one line
        why = hide_password(str(e).splitlines()[0][:200]) if str(e) else type(e).__name__
        raise UserError(f"cannot use --storage {shown_url(url)!r}: {why}") from None


def trace_sha256(run_dir: Path) -> str:
    return hashlib.sha256((Path(run_dir) / "trace.jsonl").read_bytes()).hexdigest()


def study_attrs(storage: Any, study_name: str) -> dict[str, Any] | None:
    """The study's user attrs, or None when the storage has no study of that name."""
    try:
        return storage.get_study_user_attrs(storage.get_study_id_from_name(study_name))
    except KeyError:
        return None


def holds(storage: Any, study_name: str, attrs: dict[str, Any] | None, run_dir: Path, sha: str) -> bool:
    """Whether the study already holds exactly this cell's trials: same run dir, same
    trace, completely written (the sha is written last), as many trials as it says."""
    if not attrs or attrs.get(SHA_ATTR) != sha or attrs.get("run_dir") != str(run_dir):
        return False
    try:
        return storage.get_n_trials(storage.get_study_id_from_name(study_name)) == attrs.get("n_trials")
    except KeyError:
        return False


def record_cell(storage: Any, study_name: str, run_dir: Path, known: dict[str, dict] | None = None) -> int | None:
    """Write the cell's Optuna study from its trace, replacing any other study of that
    name, unless the study already holds exactly the cell's trials. Returns the trials
    written, or None when the study was left alone. `known` maps study names to their user
    attrs (all the storage's studies, read once); it is kept up to date."""
    import optuna

    from tuneloop.evaluation.trace_params import run_space
    from tuneloop.evaluation.traces import trial_rows
    from tuneloop.tools.record import read_trace

    sha = trace_sha256(run_dir)
    attrs = known.get(study_name) if known is not None else study_attrs(storage, study_name)
    if holds(storage, study_name, attrs, run_dir, sha):
        return None
    t = read_trace(run_dir)
    rows = [r for r in trial_rows(t) if r["charged"]]
    try:
        optuna.delete_study(study_name=study_name, storage=storage)  # a cell run again replaces its study
    except KeyError:
        pass
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize")
    study.set_user_attr("run_dir", str(run_dir))
    study.set_user_attr("n_trials", len(rows))
    if rows:
        dists, params = trial_params(run_space(t), rows)
        study.add_trials([optuna.trial.create_trial(
            params=p, distributions=dists, value=r["score"],
            user_attrs={"status": r["status"], "final_value": r["final_value"], "iterations": r["iterations"],
                        "source": r["source"], "trial": r["trial"], "learning_rate": r["learning_rate"]})
            for r, p in zip(rows, params, strict=True)])
    study.set_user_attr(SHA_ATTR, sha)  # last: a study cut short by a crash never matches
    if known is not None:
        known[study_name] = {"run_dir": str(run_dir), "n_trials": len(rows), SHA_ATTR: sha}
    return len(rows)


def trial_params(space: SearchSpace, rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(distributions, each row's params) of a study. A space of exactly learning_rate and
    momentum (every run written before typed spaces) is recorded as it always was, so its
    studies line up with the old ones; any other space with its own distributions."""
    if space.names == ("learning_rate", "momentum"):
        return two_param_study(rows)
    dists = {n: distribution(space[n], [r[n] for r in rows if r.get(n) is not None]) for n in space.names}
    return dists, [{n: r[n] for n in space.names if r.get(n) is not None} for r in rows]


def two_param_study(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """`log10_learning_rate` and `momentum`: one distribution for the whole study, wide
    enough for every proposal (a model may go below the classical methods' 1e-5)."""
    from optuna.distributions import BaseDistribution, FloatDistribution

    logs = [math.log10(r["learning_rate"]) for r in rows]
    low, high = min(-5.0, math.floor(min(logs))), max(0.0, math.ceil(max(logs)))
    dists: dict[str, BaseDistribution] = {"log10_learning_rate": FloatDistribution(low, high),
                                          "momentum": FloatDistribution(0.0, 1.0)}
    return dists, [{"log10_learning_rate": lg, "momentum": r["momentum"]} for lg, r in zip(logs, rows, strict=True)]


def distribution(p: FloatParam | IntParam | CategoricalParam, values: list[Any]) -> Any:
    """The Optuna distribution of one parameter of the space (FloatDistribution and
    IntDistribution with its log and step, CategoricalDistribution), widened to hold
    every recorded value, as Optuna refuses a trial whose value lies outside."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(p, CategoricalParam):
        seen = {json.dumps(c) for c in p.choices}
        extra = {json.dumps(v): v for v in values if json.dumps(v) not in seen}
        return CategoricalDistribution([*p.choices, *extra.values()])
    low, high = min([p.low, *values]), max([p.high, *values])
    if isinstance(p, IntParam):
        step = p.step if (low, high) == (p.low, p.high) else 1  # a value off the range: off its grid too
        return IntDistribution(int(low), int(high), log=p.log, step=step)
    return FloatDistribution(float(low), float(high), log=p.log)


@dataclass
class StorageReport:
    """What recording a study's cells did to one storage."""

    url: str  # as printed: any password masked
    written: int = 0  # studies (re)written by this run
    unchanged: int = 0  # studies that already held exactly their cell's trials
    trials: int = 0  # trials written by this run

    @property
    def studies(self) -> int:
        return self.written + self.unchanged

    def line(self) -> str:
        """One line for the end of `tuneloop eval`.

        >>> StorageReport("sqlite:///s.db", written=2, unchanged=38, trials=24).line()
        'recorded 40 cells as Optuna studies in sqlite:///s.db: 2 written now (24 trials), 38 already there'
        """
        return (f"recorded {self.studies} cells as Optuna studies in {self.url}: "
                f"{self.written} written now ({self.trials} trials), {self.unchanged} already there")


class StudyRecorder:
    """Records cells into one Optuna storage, idempotently, and counts what it did."""

    def __init__(self, url: str) -> None:
        self.storage = storage_or_error(url)
        self.known = {s.study_name: dict(s.user_attrs) for s in self.storage.get_all_studies()}
        self.report = StorageReport(shown_url(url))

    def record(self, study_name: str, run_dir: Path) -> None:
        n = record_cell(self.storage, study_name, run_dir, self.known)
        if n is None:
            self.report.unchanged += 1
        else:
            self.report.written += 1
            self.report.trials += n
