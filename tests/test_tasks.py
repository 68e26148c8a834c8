"""Tasks: a user's own objective in a Python file. Loading and its errors, what an
evaluate may return or do (raise, NaN, a wrong type: each a failed trial, charged, its
error in the trace), sessions, studies and replay on a task, and the built-in training
task through the harness."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from tests.fakes import ScriptedChatModel
from tuneloop.agent.prompt_state import prompt_values, untried_text
from tuneloop.evaluation.cli import main
from tuneloop.tools.record import read_trace
from tuneloop.tools.tasks import FAILED_SCORE, TaskError, load_task, outcome_of
from tuneloop.tools.trials import Evaluator, EvaluatorConfig, InvalidProposal

TASK = '''
NAME = "bowl"
DESCRIPTION = "a bowl in x with a categorical offset"
DIRECTION = "{direction}"
SPACE = {{"x": {{"type": "float", "low": -5, "high": 5}}, "k": {{"type": "int", "low": 1, "high": 4}},
          "shift": {{"type": "categorical", "choices": ["none", "up"]}}}}


def evaluate(params, seed):
    x = params["x"]
    if x > 4:
        raise RuntimeError("x is too large for this model")
    if x < -4:
        return float("nan")
    if params["k"] == 4:
        return "not a number"
    if params["shift"] == "up" and x < -3:
        raise KeyboardInterrupt
    return {{"value": (x - 1) ** 2 + params["k"] + (1.0 if params["shift"] == "up" else 0.0), "seed": seed}}
'''


def task_file(tmp_path: Path, direction: str = "minimize", body: str | None = None) -> Path:
    p = tmp_path / "bowl.py"
    p.write_text(body if body is not None else TASK.format(direction=direction))
    return p


def at(x: float, k: int = 1, shift: str = "none") -> dict:
    return {"x": x, "k": k, "shift": shift}


@pytest.mark.parametrize("body,why", [
    ("def evaluate(p, s):\n    return 1\n", "defines no SPACE"),
    ("SPACE = {'x': {'type': 'float', 'low': 0, 'high': 1}}\n", "defines no function evaluate"),
    ("SPACE = {'x': {'type': 'float', 'low': 1, 'high': 0}}\ndef evaluate(p, s):\n    return 1\n",
     "SPACE: x: low (1) must be below high (0)"),
    ("SPACE = {'x': {'type': 'float', 'low': 0, 'high': 1}}\nDIRECTION = 'up'\ndef evaluate(p, s):\n    return 1\n",
     "DIRECTION must be 'minimize' or 'maximize'"),
    ("def evaluate(p, s)\n", "does not compile: line 1"),
    ("import no_such_module_here\n", "failed when loaded: ModuleNotFoundError"),
    ("SPACE = {'x': {'type': 'float', 'low': 0, 'high': 1}}\nTIMEOUT_S = 0\ndef evaluate(p, s):\n    return 1\n",
     "TIMEOUT_S must be a positive number of seconds, got 0"),
])
def test_a_task_that_cannot_be_used_is_one_error(tmp_path, body, why):
    with pytest.raises(TaskError, match=re.escape(why)):
        load_task(str(task_file(tmp_path, body=body)))


def test_a_bad_task_file_on_the_command_line_is_one_error_line_and_exit_2(tmp_path, capsys):
    code = main(["run", "--task", str(tmp_path / "missing.py")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: task not found") and len(err.strip().splitlines()) == 1


def test_what_evaluate_returns_becomes_an_outcome():
    assert outcome_of(2).value == 2.0 and outcome_of({"value": 1.5, "acc": 0.9}).metrics == {"acc": 0.9}
    for bad, why in [(float("inf"), "not a finite number"), ("x", "evaluate returned str"),
                     (True, "evaluate returned bool"), ({"acc": 1}, "evaluate returned NoneType"),
                     ({"value": 1, "status": "weird"}, "status 'weird'")]:
        out = outcome_of(bad)
        assert out.status == "failed" and out.value is None and why in out.error
    assert outcome_of({"value": float("nan"), "status": "failed", "error": "diverged"}).error == "diverged"


def test_failed_trials_are_charged_with_their_error_and_the_session_goes_on(tmp_path):
    ev = Evaluator(EvaluatorConfig(task=str(task_file(tmp_path)), budget=5, seed=7))
    ok = ev.evaluate(at(1.0))
    assert (ok.status, ok.final_value, ok.score, ok.metrics) == ("ok", 1.0, 1.0, {"seed": 7.0})
    raised, nan, wrong = ev.evaluate(at(4.5)), ev.evaluate(at(-4.5)), ev.evaluate(at(0.0, k=4))
    assert [t.status for t in (raised, nan, wrong)] == ["failed"] * 3
    assert "RuntimeError: x is too large" in raised.error and "nan" in nan.error and "str" in wrong.error
    assert all(t.charged and t.score == FAILED_SCORE for t in (raised, nan, wrong))
    assert ev.evaluate(at(1.0)).repeat and ev.charged == 4  # a repeat is answered free
    with pytest.raises(InvalidProposal, match="shift: must be one of"):
        ev.evaluate(at(1.0, shift="down"))
    assert ev.invalid == 1 and ev.incumbent is ok and ev.objective.name == "bowl"


SLOW = '''
import os, time
SPACE = {"x": {"type": "float", "low": 0, "high": 10}}
TIMEOUT_S = 2


def evaluate(params, seed):
    time.sleep(params["x"])  # x seconds: past 2, the trial is stopped
    return {"value": params["x"], "pid": os.getpid()}
'''


def test_a_slow_trial_is_stopped_at_the_tasks_timeout_and_failed_and_the_next_one_runs(tmp_path):
    import os
    import time

    ev = Evaluator(EvaluatorConfig(task=str(task_file(tmp_path, body=SLOW)), budget=3))
    t0 = time.monotonic()
    slow = ev.evaluate({"x": 9.0})
    assert time.monotonic() - t0 < 8  # stopped, not waited for
    assert slow.status == "failed" and slow.charged and "TIMEOUT_S of 2 s" in slow.error
    quick, again = ev.evaluate({"x": 0.0}), ev.evaluate({"x": 0.1})
    assert (quick.status, quick.final_value, again.final_value) == ("ok", 0.0, 0.1)
    assert quick.metrics["pid"] == again.metrics["pid"] != os.getpid()  # one worker process, kept


def test_a_maximised_task_is_scored_by_its_negated_value(tmp_path):
    ev = Evaluator(EvaluatorConfig(task=str(task_file(tmp_path, "maximize")), budget=2))
    low, high = ev.evaluate(at(1.0)), ev.evaluate(at(3.0))
    assert (low.score, high.score) == (-1.0, -5.0) and ev.incumbent is high


def test_an_agent_session_on_a_task_records_values_metrics_errors_and_the_file(tmp_path, capsys):
    path = task_file(tmp_path)
    calls = [{"name": "run_trial", "args": at(1.0)}, {"name": "run_trial", "args": at(4.5, 2)},
             {"name": "FinalAnswer", "args": at(1.0) | {"rationale": "trial 1 had the lowest value of the two."}}]
    seen = []

    def first(messages, kwargs):
        seen.append("\n".join(str(m.content) for m in messages))
        return calls[0]

    code = main(["run", "--task", str(path), "--budget", "2", "--seed", "3", "--runs-dir", str(tmp_path / "runs")],
                model_factory=lambda s: ScriptedChatModel(script=[first, *calls[1:]]))
    out = capsys.readouterr().out
    assert code == 0 and 'x=4.5 k=2 shift="none"  failed' in out and "RuntimeError" in out
    assert "You are tuning bowl: a bowl in x with a categorical offset" in seen[0]
    # the first turn's two examples: the space's middle (nothing tried yet)
    space = load_task(str(path)).space
    assert f"such as {untried_text([], space)}, or near the best so far: {untried_text([], space)}." in seen[0]
    assert f"You choose {space.describe(sci=False)}." in seen[0]
    t = read_trace(next((tmp_path / "runs").iterdir()))
    trials = t.of("trial_evaluated")
    assert [e["status"] for e in trials] == ["ok", "failed"] and trials[0]["metrics"] == {"seed": 3.0}
    assert "x is too large" in trials[1]["error"]
    assert t.manifest["task"]["sha256"] and Path(t.manifest["task"]["path"]) == path.resolve()
    assert t.finished["recommendation"]["x"] == 1.0 and t.finished["recommendation"]["shift"] == "none"
    code = main(["trace", "replay", str(t.run_dir)])
    assert code == 0


def test_a_task_prompt_writes_a_log_range_in_plain_decimals_and_offers_the_middle():
    # The embedded model copies numbers it reads; shown '[1e-4, 1e0]' and no example, it proposed
    # learning_rate 1e-4 (the bound) in all 24 trials of an mlp-digits session (seed 0, 2026-12-01).
    values = prompt_values(Evaluator(EvaluatorConfig(task="mlp-digits", budget=2)))
    assert values["space"] == "learning_rate in [0.0001, 1], momentum in [0, 0.99], nesterov in {false, true}"
    assert values["untried"] == values["near_best"] == "learning_rate=1e-2, momentum=0.49, nesterov=false"


def test_a_keyboard_interrupt_in_evaluate_ends_the_session_resumably(tmp_path, capsys):
    path = task_file(tmp_path)
    script = [{"name": "run_trial", "args": at(1.0)}, {"name": "run_trial", "args": at(-3.5, 1, "up")}]
    code = main(["run", "--task", str(path), "--budget", "3", "--runs-dir", str(tmp_path / "runs"), "--json"],
                model_factory=lambda s: ScriptedChatModel(script=script))
    d = json.loads(capsys.readouterr().out)
    assert code == 130 and d["stop_reason"] == "interrupted" and d["trials_charged"] == 1
    more = [{"name": "run_trial", "args": at(2.0)}, {"name": "run_trial", "args": at(0.0)},
            {"name": "FinalAnswer", "args": at(1.0) | {"rationale": "trial 1 had the lowest value seen."}}]
    code = main(["run", "--resume", d["run_dir"], "--json"], model_factory=lambda s: ScriptedChatModel(script=more))
    d2 = json.loads(capsys.readouterr().out)
    assert code == 0 and d2["trials_charged"] == 3 and d2["stop_reason"] == "budget_spent"


def test_every_method_of_a_study_tunes_a_task_inside_its_space(tmp_path, capsys):
    no_interrupt = TASK.format(direction="minimize").replace("raise KeyboardInterrupt", "return 9.0")
    path = task_file(tmp_path, body=no_interrupt)
    code = main(["eval", "--task", str(path), "--methods", "grid", "random", "cmaes", "tpe", "--seeds", "0-1",
                 "--budget", "8", "--out", str(tmp_path / "study"), "--no-plots", "--workers", "1"])
    assert code == 0, capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "study" / "results.csv")))
    assert len(rows) == 8 and {r["function"] for r in rows} == {"bowl"}
    assert {"best_x", "best_k", "best_shift"} <= set(rows[0])
    space = load_task(str(path)).space
    for run_dir in (tmp_path / "study" / "runs").iterdir():
        trials = read_trace(run_dir).of("trial_evaluated")
        assert len([e for e in trials if e["charged"]]) == 8
        assert all(space.check(e["params"]) is None for e in trials)
    assert "score = the task's value" in (tmp_path / "study" / "summary.md").read_text()


def test_the_builtin_training_task_runs_through_the_harness(tmp_path, capsys):
    pytest.importorskip("sklearn")
    code = main(["eval", "--task", "mlp-digits", "--methods", "random", "tpe", "--seeds", "0", "--budget", "3",
                 "--out", str(tmp_path / "digits"), "--no-plots", "--workers", "1"])
    assert code == 0, capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "digits" / "results.csv")))
    assert {r["function"] for r in rows} == {"mlp-digits"} and all(r["best_nesterov"] in ("True", "False")
                                                                  for r in rows)
    assert all(0 < float(r["best_value"]) < 2.31 for r in rows)  # better than the uniform guess, ln 10


def test_a_task_studys_anytime_plot_labels_its_axis_with_the_tasks_value_not_a_gap(tmp_path, capsys, monkeypatch):
    from matplotlib.axes import Axes


    labels: list[str] = []
    set_ylabel = Axes.set_ylabel
    monkeypatch.setattr(Axes, "set_ylabel",
                        lambda ax, text, *a, **k: (labels.append(text), set_ylabel(ax, text, *a, **k))[1])
    path = task_file(tmp_path, body=TASK.format(direction="minimize").replace("raise KeyboardInterrupt", "return 9.0"))
    code = main(["eval", "--task", str(path), "--methods", "random", "--seeds", "0", "--budget", "3",
                 "--out", str(tmp_path / "study"), "--workers", "1"])
    assert code == 0, capsys.readouterr()
    assert (tmp_path / "study" / "plots" / "anytime_bowl.png").exists()
    assert "best score so far\n(the task's value, negated when it maximises)" in labels
    assert not any("gap" in label for label in labels)
