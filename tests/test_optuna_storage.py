"""`tuneloop eval --storage URL`: every cell of the study, finished before or now, is an
Optuna study holding exactly its charged trials; recording again adds nothing; SQLite is
written without an fsync per trial and gives the same studies as a plain RDBStorage."""

import json
import math
import sqlite3

import optuna
import pytest

from tuneloop.evaluation.harness import EvalConfig, cell_id, read_proposal, run_eval
from tuneloop.evaluation.optuna_storage import (
    FastSQLiteConnection,
    StudyRecorder,
    record_cell,
    storage_or_error,
    trace_sha256,
)

METHODS = ["grid", "random", "cmaes", "tpe"]


def config(tmp_path, seeds=(0, 1), storage=None):
    return EvalConfig(functions=["rosenbrock"], methods=METHODS, seeds=list(seeds), budget=4, max_iter=300,
                      out=tmp_path / "study", workers=1, storage=storage)


def names(cfg):
    return sorted(cell_id(*c) for c in cfg.cells())


def studies(url):
    """{name: (study id, trial count, user attrs)} through Optuna's own API."""
    storage = optuna.storages.RDBStorage(url)
    return {s.study_name: (storage.get_study_id_from_name(s.study_name), s.n_trials, s.user_attrs)
            for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}


def charged(cfg, name):
    """The cell's charged trials as its result.json lists them (read_proposal: lr, momentum, score, source)."""
    return [read_proposal(p) for p in json.loads((cfg.out / "runs" / name / "result.json").read_text())["proposals"]]


def test_a_finished_study_rerun_with_storage_records_all_its_cells(tmp_path):
    cfg = config(tmp_path)
    run_eval(cfg)  # finished without --storage
    url = f"sqlite:///{tmp_path / 'new.db'}"
    reports = []
    run_eval(cfg.model_copy(update={"storage": url}), on_recorded=reports.append)
    got = studies(url)
    assert sorted(got) == names(cfg)
    assert {n: got[n][1] for n in got} == {n: len(charged(cfg, n)) for n in names(cfg)}
    (r,) = reports
    assert (r.written, r.unchanged, r.trials) == (8, 0, sum(len(charged(cfg, n)) for n in names(cfg)))
    assert r.line() == f"recorded 8 cells as Optuna studies in {url}: 8 written now ({r.trials} trials), " \
                       "0 already there"


def test_a_second_run_adds_nothing_twice_and_a_rerun_cell_replaces_its_study(tmp_path):
    cfg = config(tmp_path)
    run_eval(cfg)
    url = f"sqlite:///{tmp_path / 'new.db'}"
    cfg_s = cfg.model_copy(update={"storage": url})
    reports = []
    run_eval(cfg_s, on_recorded=reports.append)
    first = studies(url)
    assert sorted(first) == names(cfg)
    run_eval(cfg_s, on_recorded=reports.append)
    assert studies(url) == first  # same names, same trial counts, the same studies (ids) left alone
    assert (reports[-1].written, reports[-1].unchanged, reports[-1].trials) == (0, 8, 0)
    # a cell run again (its result.json gone) replaces its study; the others stay
    victim = "tpe-rosenbrock-s1"
    (cfg.out / "runs" / victim / "result.json").unlink()
    run_eval(cfg_s, on_recorded=reports.append)
    third = studies(url)
    assert sorted(third) == names(cfg)
    assert {n: v for n, v in third.items() if n != victim} == {n: v for n, v in first.items() if n != victim}
    assert third[victim][1] == len(charged(cfg, victim))
    sha = trace_sha256(cfg.out / "runs" / victim)  # the new trace (its timestamps differ)
    assert third[victim][2]["trace_sha256"] == sha != first[victim][2]["trace_sha256"]
    assert (reports[-1].written, reports[-1].unchanged) == (1, 7)


def test_recorded_trials_are_the_cells_charged_trials(tmp_path):
    cfg = config(tmp_path, seeds=[0])
    run_eval(cfg)  # seed 0 finished before; seed 1 runs now, with --storage
    url = f"sqlite:///{tmp_path / 'new.db'}"
    wider = config(tmp_path, seeds=[0, 1], storage=url)
    run_eval(wider)
    assert sorted(optuna.get_all_study_names(url)) == names(wider)
    for name in names(wider):
        study = optuna.load_study(study_name=name, storage=url)
        want = charged(wider, name)
        assert len(want) == 4 and len(study.trials) == len(want)
        for t, p in zip(study.trials, want, strict=True):
            lr, momentum, score, source = p["learning_rate"], p["momentum"], p["score"], p["source"]
            assert t.state == optuna.trial.TrialState.COMPLETE and t.value == score
            assert t.params["momentum"] == momentum
            assert t.params["log10_learning_rate"] == pytest.approx(math.log10(lr), abs=1e-12)
            assert (t.user_attrs["learning_rate"], t.user_attrs["source"]) == (lr, source)


def test_an_incomplete_or_foreign_study_of_a_cells_name_is_replaced(tmp_path):
    cfg = config(tmp_path, seeds=[0])
    run_eval(cfg)
    url = f"sqlite:///{tmp_path / 'new.db'}"
    run_dir = cfg.out / "runs" / "grid-rosenbrock-s0"
    # a study cut short: the right marks, no trials
    cut = optuna.create_study(study_name="grid-rosenbrock-s0", storage=url)
    for k, v in {"run_dir": str(run_dir), "n_trials": 4, "trace_sha256": trace_sha256(run_dir)}.items():
        cut.set_user_attr(k, v)
    # someone else's study of that name: no marks, one trial
    other = optuna.create_study(study_name="cmaes-rosenbrock-s0", storage=url)
    other.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    run_eval(cfg.model_copy(update={"storage": url}))
    got = studies(url)
    assert sorted(got) == names(cfg)
    assert all(n == len(charged(cfg, name)) == 4 for name, (_, n, _) in got.items())


@pytest.mark.slow  # two full recordings
def test_fast_sqlite_write_gives_the_same_studies_as_a_plain_write(tmp_path):
    cfg = config(tmp_path)
    run_eval(cfg)
    fast_url, plain_url = f"sqlite:///{tmp_path / 'fast.db'}", f"sqlite:///{tmp_path / 'plain.db'}"
    recorder = StudyRecorder(fast_url)
    plain = optuna.storages.RDBStorage(plain_url)  # Optuna's defaults: a commit per trial, each synced
    for name in names(cfg):
        recorder.record(name, cfg.out / "runs" / name)
        assert record_cell(plain, name, cfg.out / "runs" / name) == len(charged(cfg, name))

    def dump(url):
        out = {}
        for s in optuna.get_all_study_summaries(url, include_best_trial=False):
            study = optuna.load_study(study_name=s.study_name, storage=url)
            out[s.study_name] = (s.user_attrs, s.directions, [
                (t.number, t.state, t.params, t.distributions, t.values, t.user_attrs) for t in study.trials])
        return out

    assert dump(fast_url) == dump(plain_url)
    assert sorted(dump(fast_url)) == names(cfg)
    # the fast file is in WAL mode, and its connections commit without an fsync
    with sqlite3.connect(tmp_path / "fast.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with sqlite3.connect(tmp_path / "plain.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    c = sqlite3.connect(tmp_path / "fast.db", factory=FastSQLiteConnection)
    assert c.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    c.close()
    # a server URL gets no SQLite arguments; a bad one is still one line
    with pytest.raises(Exception, match="cannot use --storage"):
        storage_or_error("nosuchdb://x")
