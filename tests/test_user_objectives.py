"""Objectives from a user's file: the same kernels, stop rule and divergence detection as
the built-ins, in gd, sweep, run and eval; broken files are one clear line."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tuneloop.agent.scripted import ScriptedChatModel
from tuneloop.evaluation.cli import main

BOOTH = '''
import numpy as np

NAME = "booth"
MINIMUM = 0.0
MINIMISERS = [(1.0, 3.0)]
DOMAIN = (-10.0, 10.0)
FORMULA = "f(x, y) = (x + 2y - 7)^2 + (2x + y - 5)^2"


def f(x):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def grad(x):
    a = x[0] + 2 * x[1] - 7
    b = 2 * x[0] + x[1] - 5
    return np.array([2 * a + 4 * b, 4 * a + 2 * b])
'''


def booth_reference(alpha, beta, x0=(-1.5, 2.0), max_iter=5000, tol=1e-6):
    """Momentum GD on Booth's function in plain NumPy, written from the protocol: no tuneloop code."""
    x = np.array(x0, float)
    v = np.zeros(2)
    for t in range(1, max_iter + 1):
        a = x[0] + 2 * x[1] - 7
        b = 2 * x[0] + x[1] - 5
        g = np.array([2 * a + 4 * b, 4 * a + 2 * b])
        v = beta * v - alpha * g
        x = x + v
        with np.errstate(all="ignore"):
            fx = (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2
        if not (np.all(np.isfinite(x)) and math.isfinite(fx)):
            return "diverged", t, None
        if v @ v < tol * tol:
            return "converged", t, fx
    return "max_iter", max_iter, fx


@pytest.fixture
def booth(tmp_path):
    p = tmp_path / "booth.py"
    p.write_text(BOOTH)
    return p


MORE_RATES = [(0.001, 0.9), (1e-4, 0.0), (0.05, 0.95), (0.3, 0.9)]  # the full suite's: a compile each


@pytest.mark.parametrize("alpha,beta", [(0.01, 0.5),
                                        *(pytest.param(a, b, marks=pytest.mark.slow) for a, b in MORE_RATES)])
def test_gd_on_a_file_matches_an_independent_numpy_run(booth, capsys, alpha, beta):
    assert main(["gd", "--function", str(booth), "--lr", str(alpha), "--momentum", str(beta), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    status, iters, final = booth_reference(alpha, beta)
    assert (d["status"], d["iterations"]) == (status, iters)
    if final is None:
        assert d["final_value"] is None
    else:
        assert d["final_value"] == pytest.approx(final, rel=1e-9, abs=1e-15)
        if status == "converged":
            assert d["distance_to_optimum"] == pytest.approx(math.hypot(d["x_final"][0] - 1, d["x_final"][1] - 3))


@pytest.mark.slow  # numba compiles the file's batch kernel
def test_batch_sweep_agrees_with_single_runs(booth, tmp_path, capsys):
    from tuneloop.tools.momentum import run, run_batch

    a, b = np.array([0.01, 0.001, 0.3, 1e-4]), np.array([0.5, 0.9, 0.9, 0.0])
    batch = run_batch(str(booth), a, b)
    for i in range(a.size):
        single = run(str(booth), a[i], b[i])
        assert (batch.status[i], int(batch.iterations[i])) == (single.status, single.iterations)
    out = tmp_path / "booth.png"
    assert main(["sweep", "--function", str(booth), "--resolution", "12", "--max-iter", "400", "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_a_session_records_the_file_and_its_hash(booth, tmp_path, capsys):
    seen = []

    def propose(messages, kwargs):
        seen.append("\n".join(str(m.content) for m in messages))
        return {"name": "run_momentum_gd", "args": {"learning_rate": 0.01, "momentum": 0.5}}

    final = {"name": "FinalAnswer", "args": {"learning_rate": 0.01, "momentum": 0.5, "rationale": "converged"}}
    code = main(["run", "--function", str(booth), "--budget", "1", "--runs-dir", str(tmp_path / "runs"), "--json"],
                model_factory=lambda s: ScriptedChatModel(script=[propose, final]))
    d = json.loads(capsys.readouterr().out)
    assert code == 0 and d["trials_charged"] == 1 and d["best"]["status"] == "converged"
    manifest = json.loads((Path(d["run_dir"]) / "manifest.json").read_text())
    import hashlib

    assert manifest["objective_file"] == {"path": str(booth.resolve()),
                                          "sha256": hashlib.sha256(booth.read_bytes()).hexdigest()}
    assert "booth" in seen[0] and "(x + 2y - 7)^2" in seen[0]  # the prompt names it and shows FORMULA


@pytest.mark.slow  # numba compiles the file in each worker
def test_eval_runs_a_file_like_a_built_in(booth, tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["eval", "--functions", str(booth), "--methods", "grid", "cmaes", "--seeds", "0", "--budget", "4",
                 "--max-iter", "500", "--workers", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["cmaes-booth-s0", "grid-booth-s0"]
    # the figures are named by the file's stem (a path in a file name was a crash)
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "anytime_booth.png", "ecdf_booth.png", "landscape_booth.png", "per_seed_booth.png", "trajectories_booth.png"]


def test_without_a_minimum_the_score_ranks_by_the_final_value(tmp_path):
    from tuneloop.tools.scoring import DIVERGED_SCORE, score
    from tuneloop.tools.trials import Evaluator, EvaluatorConfig

    p = tmp_path / "shifted.py"
    p.write_text(BOOTH.replace("MINIMUM = 0.0", "").replace("MINIMISERS = [(1.0, 3.0)]", "")
                 .replace("** 2\n\n\ndef grad", "** 2 - 5.0\n\n\ndef grad"))
    ev = Evaluator(EvaluatorConfig(objective=str(p), budget=3, max_iter=2000))
    assert ev.f_star is None
    good = ev.evaluate({"learning_rate": 0.01, "momentum": 0.5})
    slow = ev.evaluate({"learning_rate": 1e-4, "momentum": 0.0})
    assert good.final_value < slow.final_value and good.score < slow.score < DIVERGED_SCORE
    assert good.distance_to_optimum is None  # no minimiser named
    values = [-1e300, -5.0, -1e-9, 0.0, 1e-9, 3.0, 1e300]
    scores = [score(v, 10, 2000, None) for v in values]
    assert scores == sorted(scores) and max(scores) < DIVERGED_SCORE


BROKEN = {
    "missing": (None, "objective file not found"),
    "syntax": ("def f(x) return 1\n", "does not compile: line 1"),
    "no grad": ("def f(x):\n    return float(x[0] ** 2)\n", "defines no function grad(x)"),
    "numba": ("class Box:\n    pass\n\ndef f(x):\n    Box()\n    return x[0]\n\ndef grad(x):\n    return x\n",
              "numba cannot compile f"),
    "raises": ("import nonexistent_module_xyz\n", "failed when loaded: ModuleNotFoundError"),
    "grad shape": ("import numpy as np\ndef f(x):\n    return x[0] ** 2\n\ndef grad(x):\n    return np.zeros(3)\n",
                   "grad in"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_file_is_one_line_and_exit_2(tmp_path, capsys, case):
    text, message = BROKEN[case]
    p = tmp_path / "obj.py"
    if text is not None:
        p.write_text(text)
    assert main(["gd", "--function", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err, err


def test_a_gradient_that_disagrees_with_f_is_a_warning(tmp_path, capsys):
    p = tmp_path / "wrong.py"
    p.write_text(BOOTH.replace("return np.array([2 * a + 4 * b, 4 * a + 2 * b])",
                               "return np.array([2 * a + 4 * b, 3 * a + 2 * b])"))
    assert main(["gd", "--function", str(p), "--lr", "0.001"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "finite differences" in err and "check grad" in err


def test_a_file_that_is_not_python_is_one_line_and_exit_2(tmp_path, capsys):
    p = tmp_path / "sub" / "booth.txt"  # a path, not a built-in name, but not a .py file
    p.parent.mkdir()
    p.write_text("def f(x):\n    return 0.0\n")
    assert main(["gd", "--function", str(p)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {p} is not a Python file: an objective file is a .py file\n"
