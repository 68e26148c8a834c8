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
    if method in ("llambo", "hollm"):  # each call five candidates, new ones each time
        return ScriptedChatModel(script=[{"name": "Candidates", "args": {
            k: v for j in range(1, 6) for k, v in {f"lr_{j}": 10.0 ** -(1 + (5 * c + j) / 20), f"layers_{j}": 1 + j % 4,
                                                   f"act_{j}": "relu"}.items()}} for c in range(30)])
    return None


@pytest.mark.parametrize("method", ["grid", "random", "cmaes", "tpe", "centaur", "llm", "llambo", "hollm"])
def test_every_method_proposes_through_ask_and_learns_through_tell(tmp_path, method):
    budget = 10 if method in ("centaur", "llambo", "hollm") else 4
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
    with pytest.raises(StudyError, match=r"trial 7 is not out \(out now: 1\)"):
        study.tell(first.model_copy(update={"id": 7}), 1.0)
    study.tell(first, float("nan"))  # NaN: a failed trial, charged
    with pytest.raises(StudyError, match=r"trial 1 was already told \(none is out: ask first\)"):
        study.tell(first, 1.0)  # told twice
    second, third = study.ask(), study.ask()  # two workers
    with pytest.raises(StudyError, match=r"budget of 3 trials is handed out: tell the trials out \(2, 3\)"):
        study.ask()  # the budget counts asks
    study.tell(third, "not a number")
    study.tell(second.id, failed=True)  # by id, too
    assert [t.status for t in study.trials] == ["failed"] * 3
    assert "not a finite number" in study.trials[0].error and "str" in study.trials[1].error
    with pytest.raises(StudyError, match="budget of 3 trials is spent"):
        study.ask(timeout=60)
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


def _two_workers(study: Study, budget: int) -> list:
    """Two trials out at a time, told in reverse order (the second worker finished first)."""
    handed = []
    while len(handed) < budget:
        pair = [study.ask(timeout=60) for _ in range(min(2, budget - len(handed)))]
        handed += pair
        for trial in reversed(pair):
            study.tell(trial, {"value": loss(trial.params), "worker": pair.index(trial)})
    return handed


@pytest.mark.parametrize("method", ["grid", "random", "cmaes", "tpe", "centaur", "llm", "llambo", "hollm"])
def test_two_workers_get_different_trials_and_every_result_is_recorded(tmp_path, method):
    budget = 10 if method in ("centaur", "llambo", "hollm") else 6
    prompts: list[str] = []

    def llm_call(k):
        def reply(messages, _):
            prompts.append(str(messages[-1].content))
            return {"name": "run_trial", "args": {"lr": 10.0 ** -(k % 4 + 1), "layers": 1 + k // 4, "act": "relu"}}
        return reply

    model = ScriptedChatModel(script=[*(llm_call(k) for k in range(budget)), {"name": "FinalAnswer", "args": {
        "lr": 0.01, "layers": 2, "act": "relu", "rationale": "the lowest value."}}]) if method == "llm" else (
        scripted(method))
    study = Study(SPACE, method=method, budget=budget, seed=4, runs_dir=tmp_path, chat_model=model)
    handed = _two_workers(study, budget)
    space = SearchSpace.parse(SPACE)
    assert len({space.key(space.coerce(t.params)) for t in handed}) == budget  # never the same trial twice
    assert [t.id for t in handed] == list(range(1, budget + 1))
    assert study.close() == "budget_spent"
    events = read_trace(study.run_dir).of("trial_evaluated")
    charged = [e for e in events if e["charged"]]
    assert len(charged) == budget and [e["trial"] for e in events] == list(range(1, len(events) + 1))
    assert sorted(e["final_value"] for e in charged) == sorted(loss(t.params) for t in handed)
    assert [e["budget_left"] for e in charged] == sorted((e["budget_left"] for e in charged), reverse=True)
    if method == "llm":  # the agent saw the trial out as pending, in its table and its tool's reply
        assert any("| pending |" in p for p in prompts)
        outputs = [e["output"] for e in read_trace(study.run_dir).of("tool_called")]
        assert any('"pending": [{"lr"' in o for o in outputs)


def test_tpe_sees_the_trials_out_as_running_its_constant_liar_counts_them():
    from tuneloop.evaluation.strategies import TPEStrategy

    tpe = TPEStrategy(SearchSpace.parse(SPACE), seed=0, n_startup_trials=2)
    for _ in range(3):
        p = tpe.ask()
        tpe.tell(p, loss(p))
    a, b = tpe.ask(), tpe.ask()  # two out
    import optuna

    assert len(tpe.study.get_trials(states=(optuna.trial.TrialState.RUNNING,))) == 2
    assert a != b
    tpe.tell(b, loss(b))
    tpe.tell(a, loss(a))
    assert len(tpe.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 5


def test_closing_with_two_trials_out_charges_only_what_was_told(tmp_path):
    study = Study(SPACE, method="tpe", budget=6, runs_dir=tmp_path)
    a, b, c = study.ask(), study.ask(), study.ask()
    study.tell(b, 1.0)
    assert [t.id for t in study.pending] == [a.id, c.id]
    assert study.close() == "interrupted"
    fin = read_trace(study.run_dir).finished
    assert fin["trials_charged"] == 1 and [t.params for t in study.trials] == [b.params]


def test_a_study_run_by_two_workers_is_loaded_and_its_recorded_trials_answer_again(tmp_path):
    """Random search proposes the same configurations whatever the results: every trial
    the two workers recorded (told out of order) answers the reloaded study again."""
    first = Study(SPACE, method="random", budget=6, seed=5, runs_dir=tmp_path)
    handed = _two_workers(first, 4)
    assert first.close() == "interrupted"
    again = Study.load(first.run_dir)
    rest = [again.ask(timeout=60) for _ in range(2)]
    assert [t.id for t in rest] == [5, 6]
    for t in rest:
        again.tell(t, loss(t.params))
    assert again.close() == "budget_spent"
    replayed = [e["params"] for e in read_trace(again.run_dir).of("trial_evaluated")][:4]
    assert replayed == [t.params for t in handed]  # the method's order; nobody was asked for them
