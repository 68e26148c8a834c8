import json
import math

import numpy as np
import pytest

from tests.reference import momentum_gd_ref
from tuneloop.evaluation.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_gd_json(capsys):
    code, out, err = run_cli(capsys, "gd", "--function", "rosenbrock", "--lr", "0.001", "--momentum", "0.9", "--json")
    assert code == 0, err
    d = json.loads(out)
    status, iters, final, _best = momentum_gd_ref("rosenbrock", 1e-3, 0.9)  # plain Python, from the protocol
    assert (d["function"], d["learning_rate"], d["momentum"]) == ("rosenbrock", 1e-3, 0.9)
    assert (d["status"], d["iterations"]) == (status, iters) and status == "converged"
    assert d["final_value"] == pytest.approx(final, rel=1e-9, abs=1e-15)
    assert d["x0"] == [-1.5, 2.0] and (d["max_iter"], d["tol"]) == (5000, 1e-6)
    # close to the minimiser (1, 1), and the distance is measured to it
    x, y = d["x_final"]
    assert d["distance_to_optimum"] == pytest.approx(math.hypot(x - 1.0, y - 1.0)) and d["distance_to_optimum"] < 1e-3


def test_gd_diverged_json_has_null_final_value(capsys):
    code, out, _ = run_cli(capsys, "gd", "--lr", "0.5", "--momentum", "0.9", "--json")
    d = json.loads(out)
    assert code == 0 and d["status"] == "diverged" and d["final_value"] is None


def test_gd_x0_with_negative_numbers_and_text_output(capsys):
    code, out, _ = run_cli(capsys, "gd", "--x0", "-1.5", "2", "-1.5", "2", "--lr", "1e-4", "--momentum", "0.9")
    assert code == 0 and "x0=(-1.5, 2, -1.5, 2)" in out and "status" in out


@pytest.mark.parametrize("argv", [
    ["gd", "--lr", "-0.1"],
    ["gd", "--lr", "nan"],
    ["gd", "--lr", "abc"],
    ["gd", "--momentum", "1.0"],
    ["gd", "--function", "nope"],
    ["gd", "--function", "beale", "--x0", "1", "2", "3"],
    ["gd", "--x0", "1"],
    ["gd", "--bogus"],
    ["sweep", "--lr-range", "0.1", "0.01", "--out", "x.png"],
    ["sweep", "--out", "x.txt"],
    ["nonexistent-command"],
])
def test_bad_input_is_one_line_and_exit_2(capsys, argv):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err


def test_functions_lists_all(capsys):
    code, out, _ = run_cli(capsys, "functions", "--json")
    names = [r["name"] for r in json.loads(out)]
    assert code == 0 and {"rosenbrock", "rastrigin", "ackley", "beale", "himmelblau"} <= set(names)


def test_sweep_writes_png_and_data(tmp_path, capsys):
    out = tmp_path / "land.png"
    code, _, err = run_cli(capsys, "sweep", "--function", "rosenbrock", "--resolution", "16",
                           "--max-iter", "500", "--out", str(out))
    assert code == 0, err
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = np.load(tmp_path / "land.npz")
    assert data["final_value"].shape == (16, 16)
    assert (data["status_code"] == 2).any() and (data["status_code"] != 2).any()


def test_bench_json_small(capsys):
    code, out, err = run_cli(capsys, "bench", "--configs", "200", "--max-iter", "200", "--repeats", "1", "--no-model",
                             "--json")
    assert code == 0, err
    d = json.loads(out)
    assert d["identical_results"] is True
    assert d["single_ns_per_iter"]["rosenbrock 2-D"] > 0
