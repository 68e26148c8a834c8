"""AgentSampler: Optuna's study.optimize driving a tuneloop method (random, tpe, a scripted
llm) through relative sampling; the trace holds what Optuna ran; failed and pruned trials
are told as failed; n_jobs=2 is serialised; past the budget (or ask/tell with two trials
open) the independent sampler answers, without hanging."""

from __future__ import annotations

import math
import threading
import time
import warnings

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from tests.fakes import ScriptedChatModel
from tuneloop.integrations.optuna import AgentSampler
from tuneloop.tools.record import read_trace

DISTS = {"lr": FloatDistribution(1e-4, 1.0, log=True), "layers": IntDistribution(1, 4),
         "act": CategoricalDistribution(["relu", "tanh"])}


@pytest.fixture(autouse=True)
def quiet_optuna():
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(level)


def objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    layers = trial.suggest_int("layers", 1, 4)
    act = trial.suggest_categorical("act", ["relu", "tanh"])
    return (math.log10(lr) + 2) ** 2 + 0.1 * layers + (0.5 if act == "tanh" else 0.0)


def scripted(n: int) -> ScriptedChatModel:
    """n distinct run_trial calls (the Study's task tool), then a final answer."""
    calls = [{"name": "run_trial", "args": {"lr": 10.0 ** -(1 + k % 4), "layers": 1 + k % 4,
                                            "act": ["relu", "tanh"][k // 4 % 2]}} for k in range(n)]
    return ScriptedChatModel(script=[*calls, {"name": "FinalAnswer", "args": {
        "lr": 0.01, "layers": 2, "act": "relu", "rationale": "trial 2 had the lowest value."}}])


def sampler(method: str, budget: int, tmp_path, **kw) -> AgentSampler:
    return AgentSampler(method=method, budget=budget, seed=1, runs_dir=tmp_path, description="a made-up loss",
                        chat_model=scripted(budget) if method == "llm" else None, **kw)


def optimize(study: optuna.Study, func, n_trials: int, limit_s: float = 60, **kw) -> None:
    """study.optimize in a thread: a hang fails the test instead of stalling the suite."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            study.optimize(func, n_trials=n_trials, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit_s)
    assert not t.is_alive(), f"study.optimize still running after {limit_s} s"
    if errors:
        raise errors[0]


def assert_in_distributions(trials: list[optuna.trial.FrozenTrial]) -> None:
    for t in trials:
        assert type(t.params["lr"]) is float and 1e-4 <= t.params["lr"] <= 1.0
        assert type(t.params["layers"]) is int and 1 <= t.params["layers"] <= 4
        assert type(t.params["act"]) is str and t.params["act"] in ("relu", "tanh")


def traced(s: AgentSampler) -> list[dict]:
    """The charged trials of the sampler's trace (close it first: the method's thread writes the last one)."""
    return [e for e in read_trace(s.run_dir).of("trial_evaluated") if e["charged"]]


@pytest.mark.parametrize("given", [True, False], ids=["space-given", "space-inferred"])
@pytest.mark.parametrize("method", ["random", "tpe", "llm"])
def test_optimize_proposes_through_the_tuneloop_study_and_the_trace_holds_what_ran(tmp_path, method, given):
    budget = 4
    s = sampler(method, budget, tmp_path, search_space=DISTS if given else None)
    study = optuna.create_study(sampler=s)
    first = 0 if given else 1  # without a given space, trial 0 (the independent sampler's) shows it
    optimize(study, objective, n_trials=budget + first)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * (budget + first)
    assert_in_distributions(trials)
    assert s.close() == "budget_spent"
    events = traced(s)
    assert [(e["params"], e["final_value"], e["status"]) for e in events] == [
        (t.params, t.value, "ok") for t in trials[first:]]
    assert list(events[0]["params"]) == ["lr", "layers", "act"]  # the objective's order
    assert read_trace(s.run_dir).method == method
    if method == "llm":
        assert [e["params"]["lr"] for e in events] == [0.1, 0.01, 0.001, 0.0001]  # the script's proposals


def test_a_failed_and_a_pruned_trial_are_told_as_failed(tmp_path):
    def flaky(trial: optuna.Trial) -> float:
        value = objective(trial)
        if trial.number == 1:
            raise ValueError("out of memory")
        if trial.number == 2:
            trial.report(value, step=1)
            raise optuna.TrialPruned()
        return value

    s = sampler("tpe", 4, tmp_path, search_space=DISTS)
    study = optuna.create_study(sampler=s)
    optimize(study, flaky, n_trials=4, catch=(ValueError,))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED,
                                               TrialState.COMPLETE]
    assert s.close() == "budget_spent"
    events = traced(s)
    assert [e["status"] for e in events] == ["ok", "failed", "failed", "ok"]
    assert "failed" in events[1]["error"] and "pruned" in events[2]["error"]
    assert [e["params"] for e in events] == [t.params for t in study.trials]


@pytest.mark.parametrize("method", ["random", "llm"])
def test_two_jobs_run_two_tuneloop_trials_at_once_and_complete_every_trial(tmp_path, method):
    budget = 6
    s = sampler(method, budget, tmp_path, search_space=DISTS)  # every trial tuneloop's
    running: list[int] = []
    most = [0]
    lock = threading.Lock()

    def slow(trial: optuna.Trial) -> float:
        value = objective(trial)  # the suggestions first: a tuneloop trial is out from here
        with lock:
            running.append(trial.number)
            most[0] = max(most[0], len(running))
        time.sleep(0.3)
        with lock:
            running.remove(trial.number)
        return value

    study = optuna.create_study(sampler=s, direction="maximize")
    optimize(study, slow, n_trials=budget, n_jobs=2)
    trials = study.trials
    assert len(trials) == budget and all(t.state == TrialState.COMPLETE for t in trials)
    assert most[0] == 2  # two tuneloop trials ran at once, one per thread
    assert_in_distributions(trials)
    assert s.close() == "budget_spent"
    events = traced(s)
    ran = {json_key(t.params): t.value for t in trials}
    assert len(events) == budget and all(ran[json_key(e["params"])] == e["final_value"] for e in events)
    assert s.tuneloop_study is not None and s.tuneloop_study.task.direction == "maximize"


def json_key(params: dict) -> tuple:
    return tuple(sorted(params.items()))


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_past_its_budget_the_independent_sampler_answers_with_one_warning(tmp_path, n_jobs):
    s = sampler("random", 3, tmp_path, search_space=DISTS)
    study = optuna.create_study(sampler=s)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        optimize(study, objective, n_trials=8, n_jobs=n_jobs)
    over = [w for w in caught if "tuneloop study is over (budget_spent) after 3 of its 3 trials" in str(w.message)]
    assert len(over) == 1, [str(w.message) for w in caught]
    assert len(study.trials) == 8 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert_in_distributions(study.trials)
    assert s.close() == "budget_spent" and len(traced(s)) == 3


def test_an_agent_that_stops_early_hands_over_to_the_independent_sampler(tmp_path):
    s = AgentSampler(method="llm", budget=5, runs_dir=tmp_path, chat_model=scripted(2), search_space=DISTS)
    study = optuna.create_study(sampler=s)
    with pytest.warns(UserWarning, match="tuneloop study is over"):
        optimize(study, objective, n_trials=6)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    assert s.close() == "model_call_limit" and len(traced(s)) == 2


def test_ask_tell_with_trials_open_in_one_thread_past_the_budget_gets_the_independent_sampler(tmp_path):
    s = sampler("random", 2, tmp_path, search_space=DISTS)
    study = optuna.create_study(sampler=s)
    a = study.ask()
    va = objective(a)  # a holds tuneloop trial 1
    b = study.ask()
    vb = objective(b)  # b holds tuneloop trial 2, asked with trial 1 out
    c = study.ask()
    with pytest.warns(UserWarning, match="trials are all handed out"):
        vc = objective(c)  # the budget is handed out: sampled independently, at once
    study.tell(b, vb)
    study.tell(c, vc)
    study.tell(a, va)
    assert s.close() == "budget_spent"
    assert sorted(map(json_key, (e["params"] for e in traced(s)))) == sorted(map(json_key, (a.params, b.params)))


def test_what_tuneloop_cannot_search_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="choice None .* is not a JSON literal"):
        AgentSampler(method="random", budget=3, search_space={"c": CategoricalDistribution([None, "a"])})
    with pytest.raises(ValueError, match="unknown method 'bayes'"):
        AgentSampler(method="bayes", budget=3)
    s = sampler("random", 3, tmp_path)
    study = optuna.create_study(directions=["minimize", "maximize"], sampler=s)
    with pytest.raises(ValueError, match="one objective"):
        optimize(study, lambda t: (objective(t), 1.0), n_trials=3)


def test_a_stepped_float_is_rounded_onto_its_step_and_odd_names_are_renamed(tmp_path):
    def stepped(trial: optuna.Trial) -> float:
        return (trial.suggest_float("model/dropout", 0.0, 0.5, step=0.1) - 0.2) ** 2

    with pytest.warns(UserWarning, match="has a step"):
        s = sampler("random", 4, tmp_path, search_space={"model/dropout": FloatDistribution(0.0, 0.5, step=0.1)})
    study = optuna.create_study(sampler=s)
    optimize(study, stepped, n_trials=4)
    assert s.close() == "budget_spent"
    values = [t.params["model/dropout"] for t in study.trials]
    assert all(abs(v * 10 - round(v * 10)) < 1e-9 and 0 <= v <= 0.5 for v in values)
    events = traced(s)
    assert [list(e["params"]) for e in events] == [["model_dropout"]] * 4
    assert all(abs(e["params"]["model_dropout"] - v) <= 0.05 + 1e-12 for e, v in zip(events, values, strict=True))


def test_an_optuna_study_continued_from_its_storage_continues_its_tuneloop_study(tmp_path):
    """Three trials, the process ends (its sampler closed early); the study reloaded from
    Optuna's own storage with `resume=` continues: the tuneloop trace of the second run
    holds all six, and the last three are those an uninterrupted run proposes."""
    whole = optuna.create_study(sampler=(ws := sampler("tpe", 6, tmp_path / "whole", search_space=DISTS)))
    optimize(whole, objective, n_trials=6)
    ws.close()
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = sampler("tpe", 6, tmp_path / "runs", search_space=DISTS)
    optimize(optuna.create_study(study_name="s", storage=storage, sampler=first), objective, n_trials=3)
    assert first.close() == "interrupted"
    again = sampler("tpe", 6, tmp_path / "runs", search_space=DISTS, resume=first.run_dir)
    study = optuna.load_study(study_name="s", storage=storage, sampler=again)
    optimize(study, objective, n_trials=3)
    assert again.close() == "budget_spent"
    assert [e["params"] for e in traced(again)] == [t.params for t in whole.trials]
    assert [t.params for t in study.trials] == [t.params for t in whole.trials]
    other = sampler("random", 6, tmp_path / "runs", search_space=DISTS, resume=first.run_dir)
    with pytest.raises(ValueError, match="is a tpe study of budget 6, not random of 6"):
        optimize(optuna.load_study(study_name="s", storage=storage, sampler=other), objective, n_trials=1)
