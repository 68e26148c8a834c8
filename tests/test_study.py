"""Ask/tell: every method behind a Study, the user's tell as the evaluation; bad use of it
(tell twice, tell unknown, ask twice, ask after the budget), NaN and failures, closing
early, repeats never handed out, and `tune`."""

from __future__ import annotations

import math

import pytest

import tuneloop
from tests.fakes import ScriptedChatModel
from tuneloop.evaluation.study import Study, StudyError, tune
from tuneloop.tools.record import read_trace
from tuneloop.tools.space import SearchSpace

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
         "layers": {"type": "int", "low": 1, "high": 4},
         "act": {"type": "categorical", "choices": ["relu", "tanh"]}}


def loss(p: dict) -> float:
    return (math.log10(p["lr"]) + 2) ** 2 + 0.1 * p["layers"] + (0.5 if p["act"] == "tanh" else 0.0)


def scripted(method: str, trials: int = 4):
    if method == "llm":
        calls = [{"name": "run_trial", "args": {"lr": 10.0 ** -(k % 4 + 1), "layers": 1 + k % 4,
                                                "act": "relu" if k < 4 else "tanh"}}
                 for k in range(1, trials + 1)]
        return ScriptedChatModel(script=[*calls, {"name": "FinalAnswer", "args": {
            "lr": 0.01, "layers": 2, "act": "relu", "rationale": "trial 2 had the lowest value."}}])
    if method == "centaur":
        return ScriptedChatModel(script=[{"name": "CentaurProposal", "args": {"lr": 0.01, "layers": 2,
                                                                              "act": "relu"}}] * 4)
    return None


@pytest.mark.parametrize("method", ["grid", "random", "cmaes", "tpe", "centaur", "llm"])
def test_every_method_proposes_through_ask_and_learns_through_tell(tmp_path, method):
    budget = 10 if method == "centaur" else 4
    study = tuneloop.Study(SPACE, method=method, budget=budget, seed=1, runs_dir=tmp_path,
                           chat_model=scripted(method), description="a made-up loss")
    space = SearchSpace.parse(SPACE)
    for _ in range(budget):
        trial = study.ask(timeout=60)
        assert space.check(space.coerce(trial.params)) is None
        study.tell(trial, {"value": loss(trial.params), "epochs": 3})
    with pytest.raises(StudyError, match="budget of .* is spent"):
        study.ask(timeout=60)
    assert study.close() == "budget_spent"
    trials = study.trials
    assert len(trials) == budget and all(t.metrics == {"epochs": 3.0} for t in trials)
    assert study.best.final_value == min(t.final_value for t in trials)
    t = read_trace(study.run_dir)
    assert t.manifest["task"]["spec"].startswith("ask-tell:") and t.method == method


def test_bad_use_is_one_clear_error_and_nothing_is_lost(tmp_path):
    study = Study(SPACE, method="tpe", budget=3, runs_dir=tmp_path)
    first = study.ask()
    with pytest.raises(StudyError, match="trial 1 is still out"):
        study.ask()
    with pytest.raises(StudyError, match="trial 7 is not the one out"):
        study.tell(first.model_copy(update={"id": 7}), 1.0)
    study.tell(first, float("nan"))  # NaN: a failed trial, charged
    with pytest.raises(StudyError, match="none is: ask first"):
        study.tell(first, 1.0)  # told twice
    second = study.ask()
    study.tell(second, failed=True)
    third = study.ask()
    study.tell(third, "not a number")
    assert [t.status for t in study.trials] == ["failed"] * 3
    assert "not a finite number" in study.trials[0].error and "str" in study.trials[2].error
    assert study.close() == "budget_spent"


def test_closing_with_a_trial_out_ends_interrupted_and_charges_only_what_was_told(tmp_path):
    study = Study(SPACE, method="random", budget=5, runs_dir=tmp_path)
    trial = study.ask()
    study.tell(trial, 1.0)
    study.ask()
    assert study.close() == "interrupted"
    fin = read_trace(study.run_dir).finished
    assert fin["trials_charged"] == 1 and len(study.trials) == 1


def test_a_repeated_proposal_is_answered_from_the_cache_not_handed_out(tmp_path):
    same = {"name": "run_trial", "args": {"lr": 0.01, "layers": 2, "act": "relu"}}
    other = {"name": "run_trial", "args": {"lr": 0.1, "layers": 2, "act": "relu"}}
    model = ScriptedChatModel(script=[same, same, other])
    study = Study(SPACE, method="llm", budget=2, runs_dir=tmp_path, chat_model=model)
    a = study.ask(timeout=60)
    study.tell(a, 0.5)
    b = study.ask(timeout=60)
    assert b.params["lr"] == 0.1  # the repeat of trial 1 never reached the user
    study.tell(b, 0.7)
    study.close()
    t = read_trace(study.run_dir)
    assert [e["repeat"] for e in t.of("trial_evaluated")] == [False, True, False]


def test_tune_is_the_simple_loop_and_records_a_raising_evaluate_as_failed(tmp_path):
    def evaluate(p):
        if p["layers"] == 4:
            raise ValueError("four layers do not fit")
        return loss(p)

    best = tune(evaluate, SPACE, method="random", budget=8, seed=3, runs_dir=tmp_path)
    assert best is not None and best.status == "ok" and best.params["layers"] != 4
    trials = read_trace(next(tmp_path.iterdir())).of("trial_evaluated")
    assert len(trials) == 8 and all("four layers" in e["error"] for e in trials if e["status"] == "failed")


@pytest.mark.parametrize("method", ["tpe", "cmaes", "llm"])
def test_a_study_interrupted_in_the_middle_is_loaded_and_continues(tmp_path, method):
    """Closed after 3 of 6 trials (a process that ended): `Study.load` re-runs the method on
    the recorded results without asking anyone, and its next ask is the 4th configuration
    an uninterrupted study of the same seed proposes."""
    def run(study, n):
        out = []
        for _ in range(n):
            trial = study.ask(timeout=60)
            study.tell(trial, loss(trial.params))
            out.append(trial.params)
        return out

    whole = Study(SPACE, method=method, budget=6, seed=2, runs_dir=tmp_path / "a", chat_model=scripted(method, 6))
    expected = run(whole, 6)
    whole.close()
    first = Study(SPACE, method=method, budget=6, seed=2, runs_dir=tmp_path / "b", chat_model=scripted(method, 6))
    assert run(first, 3) == expected[:3]
    assert first.close() == "interrupted"
    again = Study.load(first.run_dir, chat_model=scripted(method, 6))
    assert again.resumed_from == first.session_id
    assert run(again, 3) == expected[3:]
    assert again.close() == "budget_spent" and len(again.trials) == 6
    assert read_trace(again.run_dir).manifest["resumed_from"] == first.session_id
