"""The built-in task mlp-digits: a real (small) training run in the task-file form. Its SPACE
is a valid search space, a sane setting trains well, a seed fixes the run and picks the split,
and a diverging setting comes back as a failed trial instead of an exception or a plausible
number. A handful of evaluations, about 0.3 s each, plus scikit-learn's import."""

import importlib.util
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("sklearn")

from tuneloop.tools.space import SearchSpace  # noqa: E402

TASK_FILE = Path(__file__).resolve().parents[1] / "tools" / "task_files" / "mlp_digits.py"
SANE = {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False}
DIVERGING = {"learning_rate": 1.0, "momentum": 0.99, "nesterov": True}


@pytest.fixture(scope="module")
def task() -> ModuleType:
    """The task file loaded by its path, as a user's task file would be (not through the package)."""
    spec = importlib.util.spec_from_file_location("mlp_digits_task", TASK_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sane(task: ModuleType) -> dict[str, Any]:
    """One training at the sane setting, seed 0, shared by the tests that read it."""
    return task.evaluate(dict(SANE), 0)


def test_the_file_declares_a_task(task: ModuleType) -> None:
    space = SearchSpace.model_validate(task.SPACE)
    assert space.names == ("learning_rate", "momentum", "nesterov")
    assert space.check(SANE) is None and space.check(DIVERGING) is None
    assert task.NAME == "mlp-digits" and task.DIRECTION == "minimize"
    assert isinstance(task.DESCRIPTION, str) and 0 < len(task.DESCRIPTION) < 400


def test_a_sane_setting_trains_well(task: ModuleType, sane: dict[str, Any]) -> None:
    assert sane["status"] == "ok"
    assert math.isfinite(sane["value"]) and sane["value"] < math.log(10)  # better than the uniform guess
    assert sane["accuracy"] > 0.8
    assert sane["epochs"] == task.EPOCHS  # no early stop: every setting pays for the same epochs
    assert 0 < sane["train_loss"] < math.log(10)
    assert all(isinstance(v, int | float) for k, v in sane.items() if k != "status")


def test_the_seed_fixes_the_run_and_picks_the_split(task: ModuleType, sane: dict[str, Any]) -> None:
    assert task.evaluate(dict(SANE), 0) == sane
    other = task.evaluate(dict(SANE), 1)
    assert other["status"] == "ok" and other["value"] != sane["value"]


def test_a_diverging_setting_is_a_failed_trial(task: ModuleType) -> None:
    """At lr 1.0, momentum 0.99 sklearn raises nothing and the clipped validation loss looks
    finite; the blown-up training loss is what marks the run failed."""
    result = task.evaluate(dict(DIVERGING), 0)
    assert result["status"] == "failed" and math.isnan(result["value"])
    assert "diverged" in result["error"]


def test_a_slow_setting_is_a_poor_result_not_a_failure(task: ModuleType) -> None:
    """lr 1e-4 barely learns in 40 epochs (training loss above ln 10) but its loss still falls."""
    result = task.evaluate({"learning_rate": 1e-4, "momentum": 0.0, "nesterov": False}, 0)
    assert result["status"] == "ok" and result["value"] > 1.5


def test_sklearn_refusing_non_finite_weights_is_a_failed_trial(
    task: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The error sklearn raises when the weights overflow to inf, simulated (no setting in the
    space overflows within 40 epochs): reported, not raised; another ValueError still raises."""
    from sklearn.neural_network import MLPClassifier

    def overflowing_fit(self: Any, X: Any, y: Any) -> Any:
        raise ValueError("Solver produced non-finite parameter weights. The input data may contain large values")

    monkeypatch.setattr(MLPClassifier, "fit", overflowing_fit)
    result = task.evaluate(dict(SANE), 0)
    assert result["status"] == "failed" and math.isnan(result["value"])
    assert "non-finite" in result["error"]

    def broken_fit(self: Any, X: Any, y: Any) -> Any:
        raise ValueError("a bug, not a divergence")

    monkeypatch.setattr(MLPClassifier, "fit", broken_fit)
    with pytest.raises(ValueError, match="a bug"):
        task.evaluate(dict(SANE), 0)


def test_a_parameter_out_of_sklearn_bounds_raises(task: ModuleType) -> None:
    """A negative learning rate is the caller's error, not a divergence, though sklearn's message
    names the range (0.0, inf)."""
    with pytest.raises(ValueError, match="learning_rate_init"):
        task.evaluate({"learning_rate": -1.0, "momentum": 0.9, "nesterov": False}, 0)
