import doctest
import math

import numpy as np
import pytest

from tuneloop.tools import scoring
from tuneloop.tools.scoring import DIVERGED_SCORE, GAP_FLOOR, best_so_far, score, score_array
from tuneloop.tools.sweep import Landscape, sweep

T = 5000


def _bits(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).view(np.uint64)


def _hard_values(f_star: float, n_random: int, seed: int) -> np.ndarray:
    """Final values that stress the rule: random over many decades, nan, +-inf, below
    f*, within 1e-12 of f*, and on and next to the bin edges of the gap."""
    rng = np.random.default_rng(seed)
    gaps = 10.0 ** rng.uniform(-14, 300, n_random) * rng.choice([-1.0, 1.0], n_random, p=[0.1, 0.9])
    tiny = rng.uniform(-1e-12, 1e-12, 200)  # within 1e-12 of f*, above and below
    edges = 10.0 ** (np.arange(-1199, 30800, 37) / 100.0) - GAP_FLOOR  # gap + 1e-12 on an edge
    edges = edges[edges > 0]
    near = np.concatenate([np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf)])
    special = [math.nan, math.inf, -math.inf, 0.0, -0.0, GAP_FLOOR, 1.0 - GAP_FLOOR, 0.1 - GAP_FLOOR,
               1.7e308, -1.7e308, 5e-324]
    return f_star + np.concatenate([gaps, tiny, edges, near, special])


def _scalar_scores(values, iters, f_star) -> np.ndarray:
    return np.array([score(float(v), int(i), T, f_star) for v, i in zip(values, iters, strict=False)])


@pytest.mark.parametrize("f_star", [0.0, -78.33233140754282, 2.5])
def test_score_array_is_bit_identical_to_score(f_star):
    values = _hard_values(f_star, 3000, seed=int(abs(f_star) * 100))
    iters = np.random.default_rng(1).integers(0, T + 1, values.size)
    expected = _scalar_scores(values, iters, f_star)
    got = score_array(values, iters, T, f_star)
    assert got.dtype == np.float64 and got.shape == values.shape
    np.testing.assert_array_equal(_bits(got), _bits(expected))
    assert (got[~np.isfinite(values)] == DIVERGED_SCORE).all()


def _off_by_ulps(x):
    """A vector log10 that is off by up to 2 ulps (as a SIMD library's may be)."""
    out = np.log10(x)
    up = np.arange(out.size).reshape(out.shape) % 2 == 0
    for _ in range(2):
        out = np.where(up, np.nextafter(out, np.inf), np.nextafter(out, -np.inf))
    return out


def test_score_array_bins_like_math_log10_even_with_another_log10(monkeypatch):
    values = _hard_values(0.0, 500, seed=7)
    iters = np.full(values.size, 17)
    expected = _scalar_scores(values, iters, 0.0)
    monkeypatch.setattr(scoring, "vector_log10", _off_by_ulps)
    np.testing.assert_array_equal(_bits(score_array(values, iters, T)), _bits(expected))
    # the edge values really do bin differently without the math.log10 fix-up
    monkeypatch.setattr(scoring, "EDGE_BINS", 0.0)
    assert (_bits(score_array(values, iters, T)) != _bits(expected)).any()


def test_score_array_shapes_and_inputs():
    grid = np.array([[0.5, math.nan], [math.inf, 1e-3]])
    s = score_array(grid, np.array([[10, 3], [4, 100]]), T)
    assert s.shape == (2, 2)
    assert s[0, 1] == s[1, 0] == DIVERGED_SCORE
    assert s[1, 1] == score(1e-3, 100, T)
    assert score_array(np.array([]), np.array([], dtype=np.int64), T).shape == (0,)
    # a plain list, None for a diverged run, one iteration count for all
    np.testing.assert_array_equal(score_array([0.25, None], 7, T), [score(0.25, 7, T), DIVERGED_SCORE])
    assert score_array(np.float64(2.0), 5, T) == score(2.0, 5, T)


def test_best_so_far():
    assert best_so_far([400.0, 3.0, 5.0, -1.25, 400.0]) == [400.0, 3.0, 3.0, -1.25, -1.25]
    curve = best_so_far(np.array([2.0, 1.0]))
    assert curve == [2.0, 1.0] and all(type(v) is float for v in curve)
    assert best_so_far(iter(())) == []


def test_scoring_doctests():
    failed, attempted = doctest.testmod(scoring)
    assert attempted >= 2 and failed == 0


# ------------------------------------------------------------------ the landscape
def test_sweep_scores_every_cell_like_score():
    land = sweep("rosenbrock", (1e-4, 0.5), (0.0, 0.95), resolution=9, max_iter=400)
    assert land.score.shape == (9, 9)
    for j in range(9):
        for i in range(9):
            f = land.final_value[j, i]
            expected = score(None if np.isnan(f) else float(f), int(land.iterations[j, i]), 400, land.f_star)
            assert _bits(land.score[j, i]) == _bits(expected)
    assert (land.status_code == 2).any() and (land.status_code != 2).any()  # both kinds of cell


@pytest.mark.parametrize("writer", [np.savez, np.savez_compressed])
def test_landscape_npz_round_trip(tmp_path, writer):
    """from_npz reads what to_npz writes and also files written compressed (older ones)."""
    land = sweep("sphere", resolution=4, max_iter=50)
    path = tmp_path / "land.npz"
    if writer is np.savez:
        land.to_npz(path)
    else:
        fields = {k: getattr(land, k) for k in Landscape.__dataclass_fields__}
        fields["x0"] = np.array(land.x0)
        writer(path, **fields)
    back = Landscape.from_npz(path)
    for name in ("objective", "x0", "max_iter", "f_star"):
        assert getattr(back, name) == getattr(land, name)
    for name in ("log10_alphas", "betas", "final_value", "iterations", "status_code", "score"):
        np.testing.assert_array_equal(getattr(back, name), getattr(land, name))
