import math

import pytest
import structlog

from tuneloop.tools.scoring import DIVERGED_SCORE, score, study_label
from tuneloop.tools.trials import BudgetExhausted, Evaluator, EvaluatorConfig, InvalidProposal


class Capture:
    def __init__(self):
        self.events = []

    def info(self, event, **kw):
        self.events.append((event, kw))


def test_budget_cache_and_counts():
    cap = Capture()
    ev = Evaluator(EvaluatorConfig(objective="rosenbrock", budget=3, max_iter=2000), logger=cap)
    r1 = ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9}, source="t")
    assert r1.charged and not r1.repeat and r1.budget_left == 2 and r1.trial == 1
    r2 = ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9}, source="t")
    assert r2.repeat and not r2.charged and r2.repeat_of == 1 and r2.budget_left == 2
    assert r2.final_value == r1.final_value and r2.score == r1.score
    with pytest.raises(InvalidProposal, match=r"outside the allowed range \[1e-4, 1e-1\]"):
        ev.evaluate({"learning_rate": 2.0, "momentum": 0.5})
    ev.evaluate({"learning_rate": 1e-4, "momentum": 0.5})
    ev.evaluate({"learning_rate": 0.09, "momentum": 0.9})  # diverges: still charged
    assert ev.exhausted and ev.budget_left == 0
    with pytest.raises(BudgetExhausted):
        ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9})  # even a repeat is refused once the budget is spent
    assert (ev.charged, ev.invalid, ev.repeats) == (3, 1, 1)
    assert ev.incumbent.trial == 1
    names = [e for e, _ in cap.events]
    assert names == ["trial_evaluated", "trial_evaluated", "tool_error", "trial_evaluated", "trial_evaluated"]
    required = {"trial", "source", "learning_rate", "momentum", "status", "final_value", "iterations",
                "score", "repeat", "charged", "budget_left"}
    assert required <= set(cap.events[0][1])
    assert cap.events[4][1]["final_value"] is None and cap.events[4][1]["status"] == "diverged"


@pytest.mark.parametrize("alpha,beta,msg", [
    (-0.1, 0.5, "learning_rate=-0.1 is outside"),
    (0.0, 0.5, "learning_rate=0.0 is outside"),
    (float("nan"), 0.5, "finite"),
    ("fast", 0.5, "must be a number"),
    (None, 0.5, "learning_rate: missing"),
    (0.01, 1.0, "momentum=1.0 is outside the allowed range [0, 0.99]"),
    (0.5, 0.5, "learning_rate=0.5 is outside the allowed range [1e-4, 1e-1]"),
    (0.01, -0.2, "momentum=-0.2"),
    (0.01, float("inf"), "finite"),
])
def test_invalid_proposals_are_typed_and_not_charged(alpha, beta, msg):
    ev = Evaluator(EvaluatorConfig(budget=2))
    with pytest.raises(InvalidProposal) as e:
        ev.evaluate({"learning_rate": alpha, "momentum": beta})
    assert msg in str(e.value)
    assert ev.budget_left == 2 and ev.invalid == 1 and not ev.trials


def test_bounds_recorded_before_typed_spaces_still_configure_the_range():
    ev = Evaluator(EvaluatorConfig(budget=2, bounds={"alpha_min": 1e-4, "alpha_max": 1e-2, "beta_max": 0.95}))
    with pytest.raises(InvalidProposal, match=r"\[1e-4, 1e-2\]"):
        ev.evaluate({"learning_rate": 0.05, "momentum": 0.5})
    with pytest.raises(InvalidProposal, match=r"\[0, 0.95\]"):
        ev.evaluate({"learning_rate": 1e-3, "momentum": 0.97})
    assert ev.evaluate({"learning_rate": 1e-3, "momentum": 0.95}).charged
    with pytest.raises(ValueError, match="must be below high"):
        EvaluatorConfig(bounds={"alpha_min": 0.5, "alpha_max": 0.1})


def test_config_validation():
    with pytest.raises(ValueError, match="unknown objective"):
        EvaluatorConfig(objective="nope")
    with pytest.raises(ValueError, match="dimension 2 only"):
        EvaluatorConfig(objective="beale", x0=(1.0, 2.0, 3.0))


def test_structlog_logger_receives_events():
    out = []
    log = structlog.wrap_logger(None, processors=[lambda _, __, ed: out.append(ed) or ""],
                                wrapper_class=structlog.BoundLogger)

    class Sink:
        def msg(self, *_):
            pass
        info = msg
    log = structlog.wrap_logger(Sink(), processors=[lambda _, __, ed: (out.append(ed), "")[1]])
    Evaluator(EvaluatorConfig(budget=1), logger=log).evaluate({"learning_rate": 1e-3, "momentum": 0.5}, source="s")
    assert out[0]["event"] == "trial_evaluated" and out[0]["source"] == "s"


def test_score_properties():
    T = 1000
    # monotone in the final value
    vals = [0.0, 1e-13, 1e-9, 1e-6, 1e-3, 1.0, 10.0, 1e300]
    scores = [score(v, 10, T) for v in vals]
    assert scores == sorted(scores)
    # same final value: fewer iterations win; a lower bin always beats more iterations
    assert score(1e-4, 10, T) < score(1e-4, 900, T)
    assert score(1e-5, T, T) < score(1e-4, 1, T)
    # diverged is worse than any finite value
    assert score(None, 1, T) == DIVERGED_SCORE > score(1.7e308, T, T)
    assert score(math.nan, 1, T) == DIVERGED_SCORE
    # relative to the known minimum (negative minima work)
    assert score(-78.0, 10, T, f_star=-78.33) < score(-70.0, 10, T, f_star=-78.33)


def test_study_labels():
    assert study_label("diverged", None, 0.0, False) == "Diverged"
    assert study_label("converged", 1e-9, 0.0, True) == "Best"
    assert study_label("converged", 1e-5, 0.0, False) == "Good"
    assert study_label("max_iter", 0.5, 0.0, False) == "Slow"
    assert study_label("converged", 0.99, 0.0, False) == "Poor"
