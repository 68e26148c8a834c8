import math
import warnings

import numba as nb
import numpy as np
import pytest

from tests.reference import momentum_gd_ref
from tuneloop.tools import kernels, momentum
from tuneloop.tools.knobs import NO_KNOBS
from tuneloop.tools.momentum import kernel_knobs
from tuneloop.tools.objectives import OBJECTIVES


def _random_configs(n, seed):
    rng = np.random.default_rng(seed)
    return 10 ** rng.uniform(-5, -1, n), rng.uniform(0, 0.99, n)


@pytest.mark.parametrize("name", ["rosenbrock", "rastrigin"])
def test_kernel_matches_plain_python_reference(name):
    alphas, betas = _random_configs(150, seed=1)
    seen = set()
    for a, b in zip(alphas.tolist(), betas.tolist(), strict=False):  # plain floats: no numpy warnings
        st, it, fv, best = momentum_gd_ref(name, a, b, max_iter=2000)
        r = momentum.run(name, a, b, max_iter=2000)
        seen.add(st)
        assert (r.status, r.iterations) == (st, it), (a, b)
        if st == "diverged":
            assert math.isnan(r.final_value)
        else:
            assert r.final_value == pytest.approx(fv, rel=1e-12, abs=1e-300)
            assert r.best_value == pytest.approx(best, rel=1e-12, abs=1e-300)
    assert len(seen) >= 2  # the sample really exercises more than one outcome


def test_protocol_semantics_by_hand():
    # One update from (-1.5, 2) on Rosenbrock: g = (-2(2.5) - 400(-1.5)(2 - 2.25), 200(-0.25))
    gx = -2 * 2.5 - 400 * (-1.5) * (2 - 2.25)
    gy = 200 * (2 - 2.25)
    r = momentum.run("rosenbrock", 1e-3, 0.5, max_iter=1, record_every=1)
    assert r.status == "max_iter" and r.iterations == 1
    assert r.x_final == pytest.approx((-1.5 - 1e-3 * gx, 2.0 - 1e-3 * gy), rel=1e-15)
    assert r.trajectory.shape == (2, 4)
    # converging at the minimum: the first update has v = 0 < tol, iteration count 1
    r = momentum.run("sphere", 0.1, 0.0, x0=(0.0, 0.0))
    assert (r.status, r.iterations, r.final_value) == ("converged", 1, 0.0)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_batch_is_bit_identical_to_single_runs(name):
    alphas, betas = _random_configs(300, seed=2)
    alphas = np.concatenate([alphas, [0.9, 1.0, 1e-9]])
    betas = np.concatenate([betas, [0.99, 0.0, 0.5]])
    b = momentum.run_batch(name, alphas, betas, max_iter=1500)
    for i in range(alphas.size):
        s = momentum.run(name, alphas[i], betas[i], max_iter=1500)
        assert s.status == b.status[i]
        assert s.iterations == b.iterations[i]
        np.testing.assert_array_equal(np.array(s.x_final), b.x_final[i])
        assert (math.isnan(s.final_value) and math.isnan(b.final_value[i])) or s.final_value == b.final_value[i]
        assert s.best_value == b.best_value[i]


def test_batch_sorted_grid_and_odd_sizes_match():
    a = np.repeat(10 ** np.linspace(-5, -1, 40), 7)  # sorted by alpha: the unbalanced case
    b = np.tile(np.linspace(0, 0.95, 7), 40)
    full = momentum.run_batch("rosenbrock", a, b, max_iter=800)
    perm = np.random.default_rng(0).permutation(a.size)
    shuffled = momentum.run_batch("rosenbrock", a[perm], b[perm], max_iter=800)
    np.testing.assert_array_equal(full.iterations[perm], shuffled.iterations)
    np.testing.assert_array_equal(full.x_final[perm], shuffled.x_final)
    one = momentum.run_batch("rosenbrock", a[:1], b[:1], max_iter=800)
    assert one.iterations[0] == full.iterations[0]
    empty = momentum.run_batch("rosenbrock", [], [], max_iter=800)
    assert empty.iterations.size == 0


def test_divergence_is_reported_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = momentum.run("rosenbrock", 0.5, 0.9)
        b = momentum.run_batch("rosenbrock", [0.5, 1e-4], [0.9, 0.5])
    assert r.status == "diverged" and math.isnan(r.final_value) and math.isnan(r.distance_to_optimum)
    assert r.iterations < 50
    assert b.status == ["diverged", "max_iter"]
    assert math.isnan(b.final_value[0]) and math.isfinite(b.final_value[1])


def test_non_finite_start_is_diverged_at_zero_iterations():
    r = momentum.run("sphere", 0.1, 0.5, x0=(math.inf, 0.0))
    assert (r.status, r.iterations) == ("diverged", 0)
    b = momentum.run_batch("sphere", [0.1], [0.5], x0=(math.inf, 0.0))
    assert (b.status[0], b.iterations[0]) == ("diverged", 0)


def test_nd_rosenbrock_converges_and_records_trajectory():
    x0 = np.full(6, 0.5)
    r = momentum.run("rosenbrock", 1e-3, 0.9, x0=x0, max_iter=20000, record_every=100)
    assert r.status == "converged"
    assert r.distance_to_optimum < 1e-2
    assert r.trajectory.shape[1] == 6 + 2
    assert r.trajectory[-1, 0] == r.iterations
    b = momentum.run_batch("rosenbrock", [1e-3], [0.9], x0=x0, max_iter=20000)
    assert b.iterations[0] == r.iterations
    assert b.final_value[0] == pytest.approx(r.final_value, rel=1e-9)


def test_distance_uses_nearest_minimiser():
    r = momentum.run("himmelblau", 1e-3, 0.5, x0=(-3.0, 3.0))
    assert r.status == "converged"
    assert r.distance_to_optimum < 1e-3  # it lands in the (-2.805, 3.131) basin


def test_random_start_is_seeded_and_in_box():
    a = momentum.random_start(3)
    assert a == momentum.random_start(3) and a != momentum.random_start(4)
    assert all(-2 <= v <= 2 for v in a)


def _nd(name, x0, a, b, max_iter=3000, tol=momentum.DEFAULT_TOL, knobs=NO_KNOBS):
    """run_nd called directly, so that d = 2 takes the N-D path too."""
    fid = OBJECTIVES[name].fid
    x = np.array(x0, dtype=np.float64)
    st, t, xf, f, best, _ = kernels.run_nd(fid, x, a, b, max_iter, tol, *knobs, 0, np.empty((0, x.size + 2)))
    return kernels.STATUS_NAMES[st], t, xf, f, best


KNOBS = [{}, dict(nesterov=True), dict(lr_decay=0.01), dict(grad_clip=1.0),
         dict(nesterov=True, lr_decay=0.01, grad_clip=1.0)]


@pytest.mark.parametrize("kn", KNOBS, ids=lambda kn: "+".join(kn) or "plain")
@pytest.mark.parametrize("name", ["sphere", "quadratic", "rosenbrock"])
def test_nd_path_at_d2_equals_2d_path(name, kn):
    """Same stop rule, same arithmetic: the N-D kernel at d = 2 gives run2's result, with
    the knobs too (clip_nd's norm at d = 2 is clip2's)."""
    alphas, betas = _random_configs(200 if not kn else 60, seed=3)
    alphas = np.concatenate([alphas, [0.3, 0.9, 1.0, 1e-9]])
    betas = np.concatenate([betas, [0.0, 0.99, 0.5, 0.5]])
    seen = set()
    for a, b in zip(alphas.tolist(), betas.tolist(), strict=False):
        st, t, xf, f, best = _nd(name, momentum.DEFAULT_X0, a, b, knobs=kernel_knobs(**kn))
        r = momentum.run(name, a, b, max_iter=3000, **kn)  # d = 2: run2
        seen.add(st)
        assert (st, t) == (r.status, r.iterations), (a, b)
        if st == "diverged":
            continue
        assert tuple(xf.tolist()) == r.x_final
        if name == "quadratic" or kn:
            # fg_nd's reassoc may compute c x^2 as c (x x) rather than (c x) x (Rosenbrock's
            # 100 w^2 too, on points the knobs' runs visit): f, not the gradient (so not
            # the path), can differ in the last bit
            assert best == pytest.approx(r.best_value, rel=1e-15, abs=0)
        else:
            assert (f, best) == (r.final_value, r.best_value)
    assert len(seen) >= 2


def test_nd_stop_rule_is_the_squared_one_at_the_boundary():
    """||v|| < tol is decided as ||v||^2 < tol^2 in every path, also where that differs
    from sqrt(||v||^2) < tol (one rounding apart). Sphere, beta = 0, alpha = 1/4 from
    x0 = (2 vx, 2 vy): the first update is exactly v = -(vx, vy), the second halves it,
    so the run converges at t = 1 if vx^2 + vy^2 < tol^2, else at t = 2."""
    rng = np.random.default_rng(5)
    disagree = 0
    for _ in range(300):
        vx, vy = rng.uniform(3e-7, 1e-6, 2).tolist()
        r = math.sqrt(vx * vx + vy * vy)
        for tol in (r, math.nextafter(r, 1.0), math.nextafter(r, 0.0)):
            expected = 1 if vx * vx + vy * vy < tol * tol else 2
            disagree += (expected == 1) != (math.sqrt(vx * vx + vy * vy) < tol)
            x0 = (2.0 * vx, 2.0 * vy)
            r2 = momentum.run("sphere", 0.25, 0.0, x0=x0, tol=tol)
            assert (r2.status, r2.iterations) == ("converged", expected)
            assert _nd("sphere", x0, 0.25, 0.0, tol=tol)[:2] == ("converged", expected)
            # the same problem embedded in 3-D (the third coordinate stays 0)
            r3 = momentum.run("sphere", 0.25, 0.0, x0=x0 + (0.0,), tol=tol)
            assert (r3.status, r3.iterations) == ("converged", expected)
    assert disagree > 0  # the sample really contains values the two tests decide differently


def test_nd_divergence_beats_max_iter():
    # a huge step from a large start: f(x_1) overflows on the last allowed update
    r = momentum.run("sphere", 1e150, 0.0, x0=(1e153, 1e153, 1e153), max_iter=1)
    assert (r.status, r.iterations) == ("diverged", 1) and math.isnan(r.final_value)
    r = momentum.run("sphere", 1e-3, 0.5, x0=(1.0, 1.0, 1.0), max_iter=3)
    assert (r.status, r.iterations) == ("max_iter", 3)


def test_start_point():
    assert momentum.start_point() == momentum.default_start() == momentum.DEFAULT_X0
    assert momentum.start_point("paper", seed=9, dim=5) == momentum.default_start(5)
    assert momentum.start_point("random", seed=4, dim=3) == momentum.random_start(4, 3)
    with pytest.raises(ValueError, match="unknown start point"):
        momentum.start_point("origin")


def test_momentum_doctests():
    import doctest

    failed, attempted = doctest.testmod(momentum)
    assert attempted >= 3 and failed == 0


def test_reassoc_in_run_nd_reorders_only_the_sums():
    """run_nd compiled without reassoc follows the same path (x after every update is
    equal bit for bit; tol = 0 keeps the stop out of it) at a d where the loop vectorises,
    and stops at the same update for ordinary runs."""
    plain = nb.njit(kernels.run_nd.py_func)  # same source, no fastmath flag
    fid = OBJECTIVES["rosenbrock"].fid
    x0 = np.array(momentum.default_start(101))
    empty = np.empty((0, x0.size + 2))
    for kn in KNOBS:  # the knobs' arithmetic (look-ahead point, decayed rate) is not regrouped either
        args = (fid, x0, 1e-4, 0.9, 300, 0.0, *kernel_knobs(**kn), 0, empty)
        fast, slow = kernels.run_nd(*args), plain(*args)
        assert fast[:2] == slow[:2] == (kernels.MAX_ITER, 300)
        np.testing.assert_array_equal(fast[2], slow[2])
        assert fast[3] == slow[3]
    for a, b in [(1e-3, 0.9), (5e-4, 0.5), (2e-3, 0.8), (0.05, 0.9)]:
        fast = kernels.run_nd(fid, np.full(16, 0.5), a, b, 20000, 1e-6, *NO_KNOBS, 0, np.empty((0, 18)))
        slow = plain(fid, np.full(16, 0.5), a, b, 20000, 1e-6, *NO_KNOBS, 0, np.empty((0, 18)))
        assert fast[:2] == slow[:2], (a, b)
