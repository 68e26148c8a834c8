"""The knobs of momentum GD (tools/knobs.py: nesterov, lr_decay, grad_clip), checked:

- off, every kernel gives the bits it gave before the knobs existed: against a copy of
  those kernels kept below, and against literal results recorded from them;
- each knob, and their combinations, against the plain-Python reference
  (tests/reference.py) to the iteration: status, iterations, final point and value, in
  2-D and N-D, on built-in objectives and objective files, diverging runs included;
- with knobs on, a batch gives each single run's result bit for bit;
- the API's and `tuneloop gd`'s checks of the knobs, and `tuneloop bench`'s knob rows."""

import json
import math

import numba as nb
import numpy as np
import pytest

from tests.reference import f_ref, g_ref, gd_ref
from tests.test_user_objectives import BOOTH  # the same objective file, with its minimiser
from tuneloop.evaluation.cli import main
from tuneloop.tools import kernels, momentum
from tuneloop.tools.kernels import CONVERGED, DIVERGED, MAX_ITER, RUNNING
from tuneloop.tools.knobs import NO_KNOBS
from tuneloop.tools.objectives import OBJECTIVES, fg2, fg_nd, get_objective

F64 = Fn = GradFn = object  # the copied kernels' annotations

KNOBS = [  # each knob alone, at two strengths, and every combination
    dict(nesterov=True), dict(lr_decay=1e-3), dict(lr_decay=0.05), dict(grad_clip=0.5), dict(grad_clip=5.0),
    dict(nesterov=True, lr_decay=0.01), dict(nesterov=True, grad_clip=2.0), dict(lr_decay=0.01, grad_clip=2.0),
    dict(nesterov=True, lr_decay=0.01, grad_clip=2.0),
]
KNOB_IDS = ["+".join(f"{k}={v}" for k, v in kn.items()) for kn in KNOBS]
ND_CASES = [("rosenbrock", 3), ("rosenbrock", 20), ("rastrigin", 3), ("quadratic", 4), ("styblinski_tang", 3),
            ("sphere", 20)]

QUARTIC = """
import numpy as np


def f(x):
    return np.sum(x * x * x * x) / 4.0 - np.sum(x * x) + np.sum(x)


def grad(x):
    return x * x * x - 2.0 * x + 1.0
"""
STEEP_PLANE = """
import numpy as np


def f(x):
    return -1e300 * np.sum(x)


def grad(x):
    return np.full(x.size, -1e300)
"""


def booth_f(x):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def booth_g(x):
    a, b = x[0] + 2 * x[1] - 7, 2 * x[0] + x[1] - 5
    return [2 * a + 4 * b, 4 * a + 2 * b]


def quartic_f(x):
    return sum(v * v * v * v for v in x) / 4.0 - sum(v * v for v in x) + sum(x)


def quartic_g(x):
    return [v * v * v - 2.0 * v + 1.0 for v in x]


def steep_f(x):
    return -1e300 * sum(x)


def steep_g(x):
    return [-1e300] * len(x)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("objectives")
    out = {}
    for name, text in (("booth", BOOTH), ("quartic", QUARTIC), ("steep", STEEP_PLANE)):
        (d / f"{name}.py").write_text(text)
        out[name] = str(d / f"{name}.py")
    return out


def configs(n, seed, hi=-0.5):
    rng = np.random.default_rng(seed)
    return list(zip((10 ** rng.uniform(-5, hi, n)).tolist(), rng.uniform(0, 0.99, n).tolist(), strict=True))


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def assert_same_run(r, s):
    """Two GDResults (or a GDResult and a batch row) agree bit for bit."""
    assert (r.status, r.iterations) == (s.status, s.iterations)
    np.testing.assert_array_equal(np.array(r.x_final), np.array(s.x_final))
    assert same_float(r.final_value, s.final_value) and r.best_value == s.best_value


def batch_rows(b):
    return [momentum.GDResult(b.objective, float(b.alphas[i]), float(b.betas[i]), b.x0, b.status[i],
                              int(b.iterations[i]), float(b.final_value[i]), tuple(b.x_final[i].tolist()),
                              float(b.best_value[i]), float(b.distance_to_optimum[i])) for i in range(b.alphas.size)]


# --------------------------------------------- the kernels as they were before the knobs
# Copied verbatim from tools/kernels.py before the knobs (only renamed, docstrings
# dropped, not cached): off, the kernels must give exactly these results.
@nb.njit(inline="always")
def old_step2(fid: int, x: float, y: float, vx: float, vy: float, gx: float, gy: float, a: float,
              b: float) -> tuple[float, float, float, float, float, float, float]:
    vx = b * vx - a * gx
    vy = b * vy - a * gy
    x = x + vx
    y = y + vy
    f, gx, gy = fg2(fid, x, y)
    return x, y, vx, vy, f, gx, gy


@nb.njit(inline="always")
def old_status(finite: bool, vnorm2: float, t: int, max_iter: int, tol: float) -> int:
    st = MAX_ITER if t >= max_iter else RUNNING
    st = CONVERGED if vnorm2 < tol * tol else st
    return st if finite else DIVERGED


@nb.njit(inline="always")
def old_classify(x: float, y: float, f: float, vx: float, vy: float, t: int, max_iter: int, tol: float) -> int:
    finite = math.isfinite(x) and math.isfinite(y) and math.isfinite(f)
    return old_status(finite, vx * vx + vy * vy, t, max_iter, tol)


@nb.njit()
def old_run2(fid: int, x: float, y: float, a: float, b: float, max_iter: int, tol: float, every: int,
             rec: F64) -> tuple[int, int, float, float, float, float, int]:
    vx = 0.0
    vy = 0.0
    f, gx, gy = fg2(fid, x, y)
    best = f if math.isfinite(f) else math.inf
    n_rec = 0
    if every > 0:
        rec[0, 0] = 0.0
        rec[0, 1] = x
        rec[0, 2] = y
        rec[0, 3] = f
        n_rec = 1
    status = DIVERGED if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(f)) else RUNNING
    if max_iter <= 0 and status == RUNNING:
        status = MAX_ITER
    t = 0
    while status == RUNNING:
        t += 1
        x, y, vx, vy, f, gx, gy = old_step2(fid, x, y, vx, vy, gx, gy, a, b)
        status = old_classify(x, y, f, vx, vy, t, max_iter, tol)
        if status != DIVERGED and f < best:
            best = f
        if every > 0 and (t % every == 0 or status != RUNNING):
            rec[n_rec, 0] = t
            rec[n_rec, 1] = x
            rec[n_rec, 2] = y
            rec[n_rec, 3] = f
            n_rec += 1
    return status, t, x, y, f, best, n_rec


@nb.njit(fastmath={"reassoc"})
def old_run_nd(fid: int, x0: F64, a: float, b: float, max_iter: int, tol: float, every: int,
               rec: F64) -> tuple[int, int, F64, float, float, int]:
    d = x0.size
    x = x0.copy()
    v = np.zeros(d)
    g = np.empty(d)
    f = fg_nd(fid, x, g)
    finite = math.isfinite(f)
    for i in range(d):
        finite = finite and math.isfinite(x[i])
    best = f if finite else math.inf
    n_rec = 0
    if every > 0:
        rec[0, 0] = 0.0
        rec[0, 1 : d + 1] = x
        rec[0, d + 1] = f
        n_rec = 1
    status = RUNNING if finite else DIVERGED
    if max_iter <= 0 and status == RUNNING:
        status = MAX_ITER
    t = 0
    while status == RUNNING:
        t += 1
        vn = 0.0
        xs = 0.0  # a sum of x_i * 0: nan iff some x_i is non-finite, else +-0
        for i in range(d):
            vi = b * v[i] - a * g[i]
            v[i] = vi
            x[i] += vi
            vn += vi * vi
            xs += x[i] * 0.0
        f = fg_nd(fid, x, g)
        status = old_status(math.isfinite(xs) and math.isfinite(f), vn, t, max_iter, tol)
        if status != DIVERGED and f < best:
            best = f
        if every > 0 and (t % every == 0 or status != RUNNING):
            rec[n_rec, 0] = t
            rec[n_rec, 1 : d + 1] = x
            rec[n_rec, d + 1] = f
            n_rec += 1
    return status, t, x, f, best, n_rec


@nb.njit()
def old_run_fn(f: Fn, grad: GradFn, x0: F64, a: float, b: float, max_iter: int, tol: float, every: int,
               rec: F64) -> tuple[int, int, F64, float, float, int]:
    d = x0.size
    x = x0.copy()
    v = np.zeros(d)
    fx = f(x)
    g = grad(x)
    finite = math.isfinite(fx)
    for i in range(d):
        finite = finite and math.isfinite(x[i])
    best = fx if finite else math.inf
    n_rec = 0
    if every > 0:
        rec[0, 0] = 0.0
        rec[0, 1 : d + 1] = x
        rec[0, d + 1] = fx
        n_rec = 1
    status = RUNNING if finite else DIVERGED
    if max_iter <= 0 and status == RUNNING:
        status = MAX_ITER
    t = 0
    while status == RUNNING:
        t += 1
        vn = 0.0
        xs = 0.0  # a sum of x is non-finite iff some x_i is
        for i in range(d):
            vi = b * v[i] - a * g[i]
            v[i] = vi
            x[i] += vi
            vn += vi * vi
            xs += x[i] * 0.0
        fx = f(x)
        status = old_status(math.isfinite(xs) and math.isfinite(fx), vn, t, max_iter, tol)
        if status != DIVERGED:
            g = grad(x)
            if fx < best:
                best = fx
        if every > 0 and (t % every == 0 or status != RUNNING):
            rec[n_rec, 0] = t
            rec[n_rec, 1 : d + 1] = x
            rec[n_rec, d + 1] = fx
            n_rec += 1
    return status, t, x, fx, best, n_rec


def old_result(obj, x0, a, b, max_iter, every=0):
    """(status, t, x, f, best, rec) of the old kernel for this run."""
    x = np.array(x0, dtype=np.float64)
    rec = np.empty((max_iter // every + 2 if every else 0, x.size + 2))
    if obj.fid == -1:
        st, t, xf, f, best, n = old_run_fn(obj.f, obj.grad, x, a, b, max_iter, 1e-6, every, rec)
    elif x.size == 2:
        st, t, px, py, f, best, n = old_run2(obj.fid, x[0], x[1], a, b, max_iter, 1e-6, every, rec)
        xf = np.array([px, py])
    else:
        st, t, xf, f, best, n = old_run_nd(obj.fid, x, a, b, max_iter, 1e-6, every, rec)
    return st, t, xf, f, best, rec[:n]


def check_against_old(obj, x0, cfgs, max_iter):
    batch = batch_rows(momentum.run_batch(obj, [a for a, _ in cfgs], [b for _, b in cfgs], x0=x0, max_iter=max_iter))
    seen = set()
    for (a, b), row in zip(cfgs, batch, strict=True):
        st, t, xf, f, best, _ = old_result(obj, x0, a, b, max_iter)
        r = momentum.run(obj, a, b, x0=x0, max_iter=max_iter)
        seen.add(st)
        assert (r.status, r.iterations) == (kernels.STATUS_NAMES[st], t), (a, b)
        np.testing.assert_array_equal(np.array(r.x_final), xf)
        assert same_float(r.final_value, math.nan if st == DIVERGED else f) and r.best_value == best
        assert_same_run(r, row)
    return seen


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_off_is_the_old_kernel_bit_for_bit_in_2d(name):
    seen = set()
    for x0 in [(-1.5, 2.0), (0.7, -1.1)]:
        seen |= check_against_old(OBJECTIVES[name], x0, configs(30, 7) + [(0.5, 0.9), (1e-3, 0.9), (2.5, 0.0)], 1500)
    assert len(seen) >= 2 and (DIVERGED in seen or name == "ackley")


@pytest.mark.slow  # numba compiles each objective file and N-D shape: the full suite's
@pytest.mark.parametrize("name", [n for n, o in OBJECTIVES.items() if o.any_dim])
@pytest.mark.parametrize("d", [3, 20])  # 20: run_nd's sums vectorise
def test_off_is_the_old_kernel_bit_for_bit_in_nd(name, d):
    seen = set()
    for x0 in [momentum.default_start(d), tuple(np.linspace(-1.2, 1.3, d).tolist())]:
        seen |= check_against_old(OBJECTIVES[name], x0, configs(12, 8) + [(0.5, 0.9), (1e-3, 0.9), (2.5, 0.0)], 1200)
    assert len(seen) >= 2 and (DIVERGED in seen or name == "ackley")


@pytest.mark.slow  # numba compiles each objective file and N-D shape: the full suite's
def test_off_is_the_old_kernel_bit_for_bit_on_objective_files(files):
    for name, x0 in (("booth", (-1.5, 2.0)), ("quartic", (0.5, -1.5, 1.0, 2.0))):
        seen = check_against_old(get_objective(files[name]), x0, configs(12, 9) + [(0.3, 0.9)], 2000)
        assert DIVERGED in seen and len(seen) >= 2


@pytest.mark.slow  # compiles the old kernels' trajectory paths
def test_off_records_the_old_trajectories():
    for name, x0 in (("rosenbrock", (-1.5, 2.0)), ("rosenbrock", (-1.5, 2.0, -1.5, 2.0)), ("rastrigin", (1.2, 0.3))):
        for a, b in ((1e-3, 0.9), (0.5, 0.9)):
            *_, rec = old_result(OBJECTIVES[name], x0, a, b, 3000, every=7)
            np.testing.assert_array_equal(momentum.run(name, a, b, x0=x0, max_iter=3000, record_every=7).trajectory,
                                          rec)


# Recorded with the kernels before the knobs: objectives of plain float arithmetic (no
# libm call, no vectorised sum), whose bits are the same on every IEEE machine.
# (objective, x0, alpha, beta, max_iter, status, iterations, final value, best, x_final)
ANCHORS = [
    ("rosenbrock", (-1.5, 2.0), 0.001, 0.9, 5000, "converged", 2020,
     "0x1.8ae4a16e1d787p-27", "0x1.8ae4a16e1d787p-27", ("0x1.fff1f5acfdd88p-1", "0x1.ffe3dd5a3fe60p-1")),
    ("rosenbrock", (-1.5, 2.0), 0.002, 0.5, 3000, "max_iter", 3000,
     "0x1.014991e66d2fap-20", "0x1.014991e66d2fap-20", ("0x1.ff7fc802eeaffp-1", "0x1.feff2cb4e2155p-1")),
    ("rosenbrock", (-1.5, 2.0), 0.5, 0.9, 5000, "diverged", 4,
     "nan", "0x1.9000000000000p+3", ("-0x1.00973c1b891c9p+268", "0x1.2984bdcff8d6dp+180")),
    ("rosenbrock", (0.7, -1.1), 0.0004, 0.95, 800, "max_iter", 800,
     "0x1.d229e065658ecp-5", "0x1.d229e065658ecp-5", ("0x1.85ffddd37e015p-1", "0x1.287e7f3273e53p-1")),
    ("sphere", (-1.5, 2.0), 0.1, 0.8, 5000, "converged", 115,
     "0x1.87011120fbdcfp-35", "0x1.009e6c0e2275ep-44", ("0x1.0c7556bac39ccp-18", "-0x1.65f1c8f904d15p-18")),
    ("quadratic", (-1.5, 2.0), 0.009, 0.9, 5000, "converged", 238,
     "0x1.5733bc89c3af9p-28", "0x1.88241ec1be091p-33", ("-0x1.a338244dbdb6cp-21", "-0x1.da3ab5e947276p-18")),
    ("quadratic", (-1.5, 2.0), 0.02, 0.9, 5000, "diverged", 866,
     "nan", "0x1.9240000000000p+8", ("0x1.35938f5878ac0p-66", "0x1.fd5e14fdb5295p+508")),
    ("beale", (1.0, 1.0), 0.01, 0.7, 4000, "converged", 793,
     "0x1.7a2d3315fe318p-30", "0x1.7a2d3315fe318p-30", ("0x1.7ffcf67782914p+1", "0x1.fff9ef5dd34ddp-2")),
    ("himmelblau", (-3.0, 3.0), 0.001, 0.5, 5000, "converged", 61,
     "0x1.c0164860ff740p-31", "0x1.c0164860ff740p-31", ("-0x1.670e45f892fb4p+1", "0x1.90cedc57d33cbp+1")),
    ("styblinski_tang", (-1.5, 2.0), 0.01, 0.9, 5000, "converged", 243,
     "-0x1.00c84e9b3032ap+6", "-0x1.00c84e9b32b70p+6", ("-0x1.73a71a906d392p+1", "0x1.5f97457139aeap+1")),
    ("rosenbrock", (-1.5, 2.0, -1.5), 0.001, 0.9, 6000, "diverged", 10,
     "nan", "0x1.8a08814862812p+8", ("0x1.a3ad69ef47f8bp+373", "0x1.81a4fecddd340p+247", "0x1.22ea6eb621253p+161")),
    ("rosenbrock", (-1.5, 2.0, -1.5), 0.05, 0.9, 6000, "diverged", 4,
     "nan", "0x1.7bd0000000000p+11", ("-0x1.efe69ce9f2777p+150", "0x1.650ec223caa57p+265", "0x1.58405363e95a1p+177")),
    ("sphere", (0.5, -1.0, 2.0), 0.05, 0.5, 5000, "converged", 41,
     "0x1.5473396fbcbc0p-55", "0x1.5473396fbcbc0p-55",
     ("-0x1.6c6da2d43b800p-30", "0x1.6c6da2d43b800p-29", "-0x1.6c6da2d43b800p-28")),
    ("styblinski_tang", (-1.5, 2.0, -1.5), 0.01, 0.5, 5000, "converged", 42,
     "-0x1.9d7275f2d0cc3p+6", "-0x1.9d7275f2d0ed8p+6",
     ("-0x1.73a6fc43cfbffp+1", "0x1.5f973edf219eep+1", "-0x1.73a6fc43cfbffp+1")),
]


@pytest.mark.parametrize("case", ANCHORS, ids=lambda c: f"{c[0]}-{len(c[1])}d-{c[2]}-{c[3]}")
def test_off_gives_the_recorded_bits(case):
    name, x0, a, b, max_iter, status, iters, f, best, xf = case
    r = momentum.run(name, a, b, x0=x0, max_iter=max_iter)
    expected = (status, iters, float.fromhex(f), float.fromhex(best), tuple(float.fromhex(v) for v in xf))
    assert (r.status, r.iterations) == expected[:2]
    assert same_float(r.final_value, expected[2]) and r.best_value == expected[3] and r.x_final == expected[4]
    assert_same_run(r, batch_rows(momentum.run_batch(name, [a], [b], x0=x0, max_iter=max_iter))[0])


def test_neutral_knobs_take_the_knob_path_and_keep_the_bits():
    """Knobs on but changing nothing: Nesterov at beta = 0 (x + 0 v = x), a decay too small
    to move 1 + gamma t off 1, a clip no gradient of a finite run reaches. The knob code
    runs (in run2's second loop, batch2's run2 per config, the N-D branches) and gives the
    plain bits."""
    for name, x0 in (("rosenbrock", (-1.5, 2.0)), ("rastrigin", (-1.5, 2.0)), ("himmelblau", (0.3, 0.2)),
                     ("rosenbrock", (-1.5, 2.0, -1.5, 2.0)), ("quadratic", tuple(np.linspace(-1, 1, 20).tolist()))):
        cfgs = configs(25, 10)
        a, b = np.array([c[0] for c in cfgs]), np.array([c[1] for c in cfgs])
        plain = momentum.run_batch(name, a, b, x0=x0, max_iter=1500)
        for kn, beta in ((dict(nesterov=True), 0.0 * b), (dict(lr_decay=5e-324), b), (dict(grad_clip=1e300), b)):
            ref = batch_rows(momentum.run_batch(name, a, beta, x0=x0, max_iter=1500))
            rows = batch_rows(momentum.run_batch(name, a, beta, x0=x0, max_iter=1500, **kn))
            for i, (r, s) in enumerate(zip(ref, rows, strict=True)):
                if "grad_clip" in kn and plain.status[i] == "diverged":
                    continue  # a diverging run's gradient may pass 1e300 before x overflows
                assert_same_run(r, s)
                assert_same_run(s, momentum.run(name, a[i], beta[i], x0=x0, max_iter=1500, **kn))


# ------------------------------------------------------- the knobs against the reference
def check_against_reference(obj, f, grad, x0, cfgs, max_iter, kn, exact_x=True):
    seen = set()
    for a, b in cfgs:
        status, iters, fv, best, xf = gd_ref(f, grad, a, b, x0, max_iter, **kn)
        r = momentum.run(obj, a, b, x0=x0, max_iter=max_iter, **kn)
        seen.add(status)
        assert (r.status, r.iterations) == (status, iters), (a, b, kn)
        if status == "diverged":
            assert math.isnan(r.final_value)
            continue
        if exact_x:  # the same float operations in the same order
            assert r.x_final == tuple(xf), (a, b, kn)
        else:
            assert r.x_final == pytest.approx(xf, rel=1e-12, abs=1e-300)
        # f may be summed in another order (and x^2 taken as pow): a few ulps of its terms
        assert r.final_value == pytest.approx(fv, rel=1e-12, abs=1e-15)
        assert r.best_value == pytest.approx(best, rel=1e-12, abs=1e-15)
    return seen


@pytest.mark.parametrize("kn", KNOBS, ids=KNOB_IDS)
@pytest.mark.parametrize("name", [n if n in ("rosenbrock", "rastrigin") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in OBJECTIVES])  # the study's two in the fast layer
def test_knobs_match_the_reference_in_2d(name, kn):
    x0 = (1.0, 1.0) if name == "beale" else (-1.5, 2.0)
    check_against_reference(name, lambda x: f_ref(name, x), lambda x: g_ref(name, x), x0,
                            configs(20, 11) + [(1e-3, 0.9), (0.5, 0.9), (2.5, 0.0)], 1500, kn)


@pytest.mark.slow  # numba compiles each objective file and N-D shape: the full suite's
@pytest.mark.parametrize("kn", KNOBS, ids=KNOB_IDS)
@pytest.mark.parametrize("name,d", ND_CASES, ids=[f"{n}-{d}" for n, d in ND_CASES])
def test_knobs_match_the_reference_in_nd(name, d, kn):
    check_against_reference(name, lambda x: f_ref(name, x), lambda x: g_ref(name, x), momentum.default_start(d),
                            configs(10, 12) + [(1e-3, 0.9), (2.5, 0.0)], 1500, kn, exact_x=False)


@pytest.mark.slow  # numba compiles each objective file and N-D shape: the full suite's
@pytest.mark.parametrize("kn", KNOBS, ids=KNOB_IDS)
def test_knobs_match_the_reference_on_objective_files(files, kn):
    seen = check_against_reference(files["booth"], booth_f, booth_g, (-1.5, 2.0),
                                   configs(12, 13) + [(0.3, 0.9), (0.05, 0.95)], 2000, kn)
    seen |= check_against_reference(files["quartic"], quartic_f, quartic_g, (0.5, -1.5, 1.0, 2.0),
                                    configs(12, 14) + [(0.3, 0.9)], 2000, kn)
    assert len(seen) >= 2


# Runs that diverge with a knob on, each compared with the reference to the iteration.
# `changed`: the knob changes the outcome (status, iteration or final point) of the run
# without it, so the diverging path really goes through the knob's arithmetic.
DIVERGING = [  # (objective, dimension, alpha, beta, knobs)
    ("rosenbrock", 2, 0.002, 0.9, dict(nesterov=True)),  # without: converges
    ("rosenbrock", 5, 0.002, 0.9, dict(nesterov=True)),
    ("sphere", 2, 1.2, 0.5, dict(nesterov=True)),  # without: converges
    ("sphere", 20, 1.2, 0.5, dict(nesterov=True)),
    ("rosenbrock", 2, 0.003, 0.9, dict(lr_decay=1e-3)),
    ("quadratic", 2, 0.025, 0.5, dict(lr_decay=1e-3)),
    ("quadratic", 5, 0.025, 0.5, dict(lr_decay=1e-3)),
    ("rosenbrock", 2, 1.0, 0.9, dict(grad_clip=1e80)),  # the last step clipped
    ("rosenbrock", 5, 1.0, 0.9, dict(grad_clip=1e80)),
    ("quadratic", 2, 0.0199, 0.9, dict(nesterov=True, lr_decay=1e-4)),
    ("quadratic", 4, 0.0199, 0.9, dict(nesterov=True, lr_decay=1e-4)),
    ("rosenbrock", 2, 1.0, 0.5, dict(nesterov=True, grad_clip=1e80)),
    ("rosenbrock", 3, 1.0, 0.5, dict(lr_decay=0.1, grad_clip=1e80)),
    ("rosenbrock", 2, 1.0, 0.5, dict(nesterov=True, lr_decay=0.1, grad_clip=1e80)),
    ("rosenbrock", 20, 1.0, 0.5, dict(nesterov=True, lr_decay=0.1, grad_clip=1e80)),
]


@pytest.mark.parametrize("case", DIVERGING, ids=lambda c: f"{c[0]}-{c[1]}d-{'+'.join(c[4])}")
def test_diverging_runs_with_knobs_match_the_reference(case):
    name, d, a, b, kn = case
    x0 = momentum.default_start(d)
    status, iters, *_ = gd_ref(lambda x: f_ref(name, x), lambda x: g_ref(name, x), a, b, x0, 3000, **kn)
    r = momentum.run(name, a, b, x0=x0, max_iter=3000, **kn)
    assert (r.status, r.iterations) == (status, iters) == ("diverged", iters)
    assert math.isnan(r.final_value) and math.isnan(r.distance_to_optimum)
    without = momentum.run(name, a, b, x0=x0, max_iter=3000)
    assert (without.status, without.iterations, without.x_final) != (r.status, r.iterations, r.x_final)
    assert_same_run(r, batch_rows(momentum.run_batch(name, [a], [b], x0=x0, max_iter=3000, **kn))[0])


@pytest.mark.slow  # numba compiles each objective file and N-D shape: the full suite's
def test_diverging_runs_on_objective_files(files):
    cases = [("booth", booth_f, booth_g, (-1.5, 2.0), 0.3, 0.9, kn)
             for kn in (dict(nesterov=True), dict(lr_decay=1e-4), dict(nesterov=True, lr_decay=1e-4))]
    # a plane falling at 1e300 per unit: clipped at 1e7, x gains up to 1e8 an update until
    # f overflows; unclipped, the first update overflows it
    cases += [("steep", steep_f, steep_g, x0, 1.0, 0.9, kn) for x0 in [(0.0, 0.0), (0.0,) * 5]
              for kn in (dict(grad_clip=1e7), dict(grad_clip=1e7, nesterov=True, lr_decay=0.01))]
    for name, f, g, x0, a, b, kn in cases:
        status, iters, *_ = gd_ref(f, g, a, b, x0, 2000, **kn)
        r = momentum.run(files[name], a, b, x0=x0, max_iter=2000, **kn)
        assert (r.status, r.iterations) == (status, iters) == ("diverged", iters), (name, kn)
        assert_same_run(r, batch_rows(momentum.run_batch(files[name], [a], [b], x0=x0, max_iter=2000, **kn))[0])
        if name == "steep":
            assert iters > 1 == momentum.run(files[name], a, b, x0=x0, max_iter=2000).iterations


@pytest.mark.slow  # numba compiles each objective file and N-D shape: the full suite's
# ---------------------------------------------------- batch == single, with knobs on
@pytest.mark.parametrize("kn", KNOBS, ids=KNOB_IDS)
def test_batch_is_bit_identical_to_single_runs_with_knobs(kn, files):
    cases = [(name, (1.0, 1.0) if name == "beale" else (-1.5, 2.0)) for name in OBJECTIVES]
    cases += [(name, momentum.default_start(d)) for name, d in ND_CASES] + [("ackley", (0.3, -0.2, 0.1))]
    cases += [(files["booth"], (-1.5, 2.0)), (files["quartic"], (0.5, -1.5, 1.0, 2.0))]
    cfgs = configs(40, 15) + [(0.9, 0.99), (1.0, 0.0), (1e-9, 0.5)]
    a, b = np.array([c[0] for c in cfgs]), np.array([c[1] for c in cfgs])
    for name, x0 in cases:
        rows = batch_rows(momentum.run_batch(name, a, b, x0=x0, max_iter=1200, **kn))
        for i, row in enumerate(rows):
            assert_same_run(momentum.run(name, a[i], b[i], x0=x0, max_iter=1200, **kn), row)


# ------------------------------------------------------------ the knobs' rules by hand
def test_each_knob_by_hand_on_the_sphere():
    # sphere from (1, 0), alpha 0.1, beta 0.5: g = 2x, so v1 = -0.2 and x1 = 0.8 for all
    one = [momentum.run("sphere", 0.1, 0.5, x0=(1.0, 0.0), max_iter=1, **kn).x_final for kn in KNOBS[:3]]
    assert one[0] == one[1] == one[2] == momentum.run("sphere", 0.1, 0.5, x0=(1.0, 0.0), max_iter=1).x_final
    # lr_decay 1: the second update uses alpha / 2, v2 = 0.5 (-0.2) - 0.05 (1.6) = -0.18
    r = momentum.run("sphere", 0.1, 0.5, x0=(1.0, 0.0), max_iter=2, lr_decay=1.0)
    assert r.x_final == pytest.approx((0.62, 0.0), rel=1e-15)
    # nesterov: the gradient at 0.8 + 0.5 (-0.2) = 0.7, v2 = -0.1 - 0.1 (1.4) = -0.24
    r = momentum.run("sphere", 0.1, 0.5, x0=(1.0, 0.0), max_iter=2, nesterov=True)
    assert r.x_final == pytest.approx((0.56, 0.0), rel=1e-15)
    # grad_clip 1 from (3, 4): g = (6, 8), norm 10, clipped to (0.6, 0.8)
    r = momentum.run("sphere", 0.5, 0.0, x0=(3.0, 4.0), max_iter=1, grad_clip=1.0)
    assert r.x_final == pytest.approx((2.7, 3.6), rel=1e-15)
    r = momentum.run("sphere", 0.5, 0.0, x0=(3.0, 4.0), max_iter=1, grad_clip=10.0)  # not above c: untouched
    assert r.x_final == (0.0, 0.0)


@pytest.mark.parametrize("x0", [(1e51, 1e51), (1e51, 1e51, 1e51)])
def test_clipping_a_gradient_whose_squares_overflow(x0):
    """Rosenbrock's gradient at 1e51 is about 4e155: its squares overflow, and the norm
    is measured on g / max|g_i| instead of collapsing the step to 0: the first update
    moves x by alpha c along -g (up to the spacing of floats near 1e51)."""
    for kn in (dict(grad_clip=1e40), dict(grad_clip=1e40, nesterov=True, lr_decay=0.5)):
        status, iters, _, _, xf = gd_ref(lambda x: f_ref("rosenbrock", x), lambda x: g_ref("rosenbrock", x), 1e-3,
                                         0.5, x0, 1, **kn)
        r = momentum.run("rosenbrock", 1e-3, 0.5, x0=x0, max_iter=1, **kn)
        assert (r.status, r.iterations, r.x_final) == (status, iters, tuple(xf)) == ("max_iter", 1, r.x_final)
        assert r.x_final[0] - x0[0] == pytest.approx(-1e37, rel=0.3)
        assert_same_run(r, batch_rows(momentum.run_batch("rosenbrock", [1e-3], [0.5], x0=x0, max_iter=1, **kn))[0])


@pytest.mark.slow  # an objective file: numba compiles it
def test_a_non_finite_gradient_is_not_clipped_into_a_finite_one(tmp_path):
    p = tmp_path / "wall.py"
    p.write_text("import numpy as np\n\ndef f(x):\n    return float(x[0])\n\n"
                 "def grad(x):\n    return np.array([np.inf, 0.0])\n")
    for kn in (dict(), dict(grad_clip=1.0), dict(grad_clip=1.0, nesterov=True, lr_decay=0.1)):
        r = momentum.run(str(p), 0.1, 0.5, x0=(1.0, 1.0), **kn)
        assert (r.status, r.iterations) == ("diverged", 1)


def test_the_kernels_status_codes_are_unchanged():
    assert (RUNNING, CONVERGED, DIVERGED, MAX_ITER) == (0, 1, 2, 3) and NO_KNOBS == (False, 0.0, math.inf)


# --------------------------------------------------------------- API, CLI and bench
def test_results_record_the_knobs():
    r = momentum.run("rosenbrock", 1e-3, 0.9, max_iter=10)
    assert (r.nesterov, r.lr_decay, r.grad_clip) == (False, 0.0, None)
    r = momentum.run("rosenbrock", 1e-3, 0.9, max_iter=10, nesterov=True, lr_decay=1, grad_clip=3)
    assert (r.nesterov, r.lr_decay, r.grad_clip) == (True, 1.0, 3.0)
    b = momentum.run_batch("rosenbrock", [1e-3], [0.9], max_iter=10, grad_clip=2.5)
    assert (b.nesterov, b.lr_decay, b.grad_clip) == (False, 0.0, 2.5)


@pytest.mark.parametrize("kn,message", [
    (dict(lr_decay=-1.0), "lr_decay must be a finite number >= 0, got -1.0"),
    (dict(lr_decay=math.nan), "lr_decay must be a finite number >= 0"),
    (dict(lr_decay=math.inf), "lr_decay must be a finite number >= 0"),
    (dict(lr_decay="0.1"), "lr_decay must be a finite number >= 0, got '0.1'"),
    (dict(grad_clip=0.0), "grad_clip must be a finite number > 0, got 0.0"),
    (dict(grad_clip=-2), "grad_clip must be a finite number > 0, got -2"),
    (dict(grad_clip=math.inf), "grad_clip must be a finite number > 0, got inf (leave it unset: no clipping)"),
    (dict(grad_clip=math.nan), "grad_clip must be a finite number > 0"),
])
def test_bad_knobs_are_clear_errors(kn, message):
    for call in (lambda: momentum.run("rosenbrock", 1e-3, 0.9, **kn),
                 lambda: momentum.run_batch("rosenbrock", [1e-3], [0.9], **kn)):
        with pytest.raises(ValueError) as e:
            call()
        assert str(e.value).startswith(message)
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        momentum.run("rosenbrock", 1e-3, 0.9, nesterov="yes")


def test_gd_reports_the_knobs_and_matches_the_reference(capsys, files):
    assert main(["gd", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["nesterov"], d["lr_decay"], d["grad_clip"]) == (False, 0.0, None)
    assert list(d)[:9] == ["function", "learning_rate", "momentum", "x0", "max_iter", "tol", "nesterov", "lr_decay",
                           "grad_clip"]
    for fn, f, g, x0 in (("rosenbrock", lambda x: f_ref("rosenbrock", x), lambda x: g_ref("rosenbrock", x),
                          (-1.5, 2.0)), (files["booth"], booth_f, booth_g, (-1.5, 2.0))):
        for lr, kn_args, kn in ((1e-3, ["--nesterov"], dict(nesterov=True)),
                                (2e-3, ["--lr-decay", "0.001"], dict(lr_decay=1e-3)),
                                (0.5, ["--grad-clip", "2"], dict(grad_clip=2.0)),
                                (0.3, ["--nesterov", "--lr-decay", "0.01", "--grad-clip", "1e80"],
                                 dict(nesterov=True, lr_decay=0.01, grad_clip=1e80))):
            assert main(["gd", "--function", fn, "--lr", str(lr), "--momentum", "0.9", "--json", *kn_args]) == 0
            d = json.loads(capsys.readouterr().out)
            status, iters, fv, _, _ = gd_ref(f, g, lr, 0.9, x0, **kn)
            assert (d["status"], d["iterations"]) == (status, iters)
            assert (d["nesterov"], d["lr_decay"], d["grad_clip"]) == (kn.get("nesterov", False),
                                                                      kn.get("lr_decay", 0.0), kn.get("grad_clip"))
            assert d["final_value"] == (None if status == "diverged" else pytest.approx(fv, rel=1e-12, abs=1e-300))
    assert main(["gd", "--nesterov", "--lr-decay", "0.001", "--grad-clip", "5"]) == 0
    assert "nesterov  lr_decay=0.001  grad_clip=5" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [
    ["--lr-decay", "-1"], ["--lr-decay", "nan"], ["--lr-decay", "inf"], ["--lr-decay", "abc"],
    ["--grad-clip", "0"], ["--grad-clip", "-3"], ["--grad-clip", "inf"], ["--grad-clip", "nan"], ["--grad-clip", "x"],
    ["--nesterov", "yes"],
])
def test_gd_bad_knob_is_one_error_line_and_exit_2(capsys, argv):
    assert main(["gd", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    if argv[1] not in ("abc", "x", "yes"):
        assert err.startswith(f"error: {argv[0]} must be a finite number"), err


def test_gd_knob_options_have_help(capsys):
    assert main(["gd", "--help"]) == 0
    out = capsys.readouterr().out
    for option, words in (("--nesterov", "Nesterov momentum"), ("--lr-decay G", "learning rate"),
                          ("--grad-clip C", "Euclidean norm")):
        assert option in out
        assert words in " ".join(out.split(option, 1)[1].split()[:12]), out


def test_bench_reports_the_knobs_rows(capsys):
    assert main(["bench", "--configs", "200", "--max-iter", "200", "--repeats", "1", "--no-model", "--no-numpy",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    rows = d["single_ns_per_iter"]
    old = ["rosenbrock 2-D", "rastrigin 2-D", "rosenbrock d=1000 (per dim)"]
    new = [f"{row} {knob}" for row in (old[0], old[2]) for knob in ("nesterov", "lr_decay", "grad_clip")]
    assert set(rows) == set(old + new) and all(rows[k] > 0 for k in rows)
    assert list(rows)[:4] == ["rosenbrock 2-D", "rosenbrock 2-D nesterov", "rosenbrock 2-D lr_decay",
                              "rosenbrock 2-D grad_clip"]
    assert d["knob_settings"]["grad_clip"] == {"grad_clip": 1.0} and d["identical_results"] is True
