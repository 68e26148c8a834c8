"""The momentum-GD kernels, compiled with numba: one run (2-D, N-D), many runs in
parallel (2-D, N-D). Plain arrays and scalars in and out; the Python API over them is
tools/momentum.py.


The update (docs/protocol.md, heavy-ball form, v_0 = 0):

    v_{t+1} = beta * v_t - alpha * grad f(x_t)
    x_{t+1} = x_t + v_{t+1}

A run stops at the first t (1-based: the number of updates made) where
  - x_{t+1} or f(x_{t+1}) is non-finite       -> "diverged" (final value reported as nan),
  - ||v_{t+1}||_2 < tol                       -> "converged",
or after max_iter updates                     -> "max_iter".
Diverged beats converged beats max_iter, and ||v|| < tol is tested as ||v||^2 < tol^2.
That rule lives in one place, `_status`, which every path calls: the 2-D paths through
`_classify`, the N-D path directly. The 2-D single-run and batch paths also share
`_step2`, so the batch gives the single-run result bit for bit.

Every kernel takes the knobs of tools/knobs.py after tol; off, it does the plain update's
operations and no others (the same bits as before the knobs: tested), and run2's plain
path, its loop with the knobs as constants, compiles to the code it had before them.

fastmath's nnan, ninf and nsz flags are never enabled: they would let LLVM fold away the
finiteness checks (x * 0 -> 0, isfinite -> true). The 2-D kernels use no fastmath flag at
all. The N-D kernel `run_nd` enables `reassoc` alone, so that its two per-update sums,
||v||^2 = sum v_i^2 and the probe sum x_i * 0, vectorise (several partial sums, added at
the end); without it the d = 1000 Rosenbrock run costs about twice as much per dimension.
What that flag may and may not change in `run_nd`:
  - it permits regrouping float adds and multiplies; the loop vectoriser uses it to
    reorder those two sums. The per-coordinate values (v_i = beta v_i - alpha g_i,
    x_i + v_i, v_i^2, x_i * 0) have no product chain to regroup, and regrouping adds
    into other expressions also needs nsz in LLVM, so they are computed as written
    (a copy compiled without the flag follows the same path bit for bit: tested);
  - it makes no assumption about nan or inf: x * 0 stays nan for a non-finite x, nan
    propagates through any order of additions and a sum of +-0 is +-0, so the probe is
    non-finite iff some x_i is, in whatever order it is summed; isfinite and the
    comparisons are not arithmetic and are untouched. Divergence is detected exactly;
  - ||v||^2 may differ from the coordinate-order sum by a few ulps (at most about
    2 d 2^-53 relative), and with it the comparison with tol^2: a run whose ||v||^2
    lands that close to tol^2 may stop one update apart on a CPU with other vector
    widths. Below the vector loop's minimum trip count (d = 2 and 3 among them) the sum
    runs in coordinate order, so at d = 2 `run_nd` stops where run2 does (tested).
tools/objectives.py compiles the N-D objectives with reassoc as well; there it also
regroups products (the quadratic's c x_i x_i), so f, not the gradient, can differ from
the 2-D formula in the last bit.

"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import numba as nb
import numpy as np
import numpy.typing as npt

from tuneloop.tools.knobs import NO_KNOBS, clip2, clip_nd, decayed, knobs_on, look_ahead
from tuneloop.tools.objectives import BEALE, HIMMELBLAU, QUADRATIC, ROSENBROCK, SPHERE, STYBLINSKI_TANG, fg2, fg_nd

RUNNING, CONVERGED, DIVERGED, MAX_ITER = 0, 1, 2, 3
Status = Literal["converged", "max_iter", "diverged"]
STATUS_NAMES: dict[int, Status] = {CONVERGED: "converged", DIVERGED: "diverged", MAX_ITER: "max_iter"}
LANES = 32  # configs each batch worker steps in lockstep (vectorised across lanes)

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Fn = Callable[[F64], float]  # a user objective's jitted f(x)
GradFn = Callable[[F64], F64]  # and its grad(x)
Knobs = tuple[bool, float, float]  # (nesterov, gamma, clip): tools/knobs.py


# ----------------------------------------------------------------------- kernels
@nb.njit(cache=True, inline="always")
def _step2(fid: int, x: float, y: float, vx: float, vy: float, gx: float, gy: float, a: float,
           b: float) -> tuple[float, float, float, float, float, float, float]:
    """One momentum update from (x, v) with gradient g at x; returns the new state."""
    vx = b * vx - a * gx
    vy = b * vy - a * gy
    x = x + vx
    y = y + vy
    f, gx, gy = fg2(fid, x, y)
    return x, y, vx, vy, f, gx, gy


@nb.njit(cache=True, inline="always")
def _step2k(fid: int, x: float, y: float, vx: float, vy: float, gx: float, gy: float, a: float, b: float, t: int,
            kn: Knobs) -> tuple[float, float, float, float, float, float, float]:
    """_step2 as update t (1-based) with the knobs: g clipped, alpha decayed, and with nesterov
    the next g taken at the look-ahead point (LLVM drops the unused halves of the fg2)."""
    nesterov, gamma, clip = kn
    gx, gy = clip2(gx, gy, clip)  # with clip = inf, n > clip folds to false
    x, y, vx, vy, f, gx, gy = _step2(fid, x, y, vx, vy, gx, gy, decayed(a, gamma, t), b)
    if nesterov:
        _, gx, gy = fg2(fid, x + b * vx, y + b * vy)
    return x, y, vx, vy, f, gx, gy


@nb.njit(cache=True, inline="always")
def _status(finite: bool, vnorm2: float, t: int, max_iter: int, tol: float) -> int:
    """The stop rule, after update t with ||v_{t+1}||^2 = vnorm2 and `finite` telling
    whether x_{t+1} and f(x_{t+1}) are all finite: diverged beats converged beats
    max_iter. Written as selects (no branches) so the batch kernel's lane loop
    vectorises. ||v|| < tol is tested as ||v||^2 < tol^2: no sqrt, whose vector
    throughput would dominate."""
    st = MAX_ITER if t >= max_iter else RUNNING
    st = CONVERGED if vnorm2 < tol * tol else st
    return st if finite else DIVERGED


@nb.njit(cache=True, inline="always")
def _classify(x: float, y: float, f: float, vx: float, vy: float, t: int, max_iter: int, tol: float) -> int:
    """Status of a 2-D run after update t (the rule is `_status`)."""
    finite = math.isfinite(x) and math.isfinite(y) and math.isfinite(f)
    return _status(finite, vx * vx + vy * vy, t, max_iter, tol)


@nb.njit(cache=True, inline="always")
def _record2(rec: F64, n_rec: int, t: int, x: float, y: float, f: float) -> int:
    """Write the row (t, x, y, f) into rec[n_rec]; returns the new row count."""
    rec[n_rec, 0] = t
    rec[n_rec, 1] = x
    rec[n_rec, 2] = y
    rec[n_rec, 3] = f
    return n_rec + 1


@nb.njit(cache=True, inline="always")
def _loop2(fid: int, x: float, y: float, f: float, gx: float, gy: float, best: float, status: int, a: float, b: float,
           max_iter: int, tol: float, kn: Knobs, every: int, rec: F64,
           n_rec: int) -> tuple[int, int, float, float, float, float, int]:
    """run2's updates, from the start point's state (v_0 = 0)."""
    vx = 0.0
    vy = 0.0
    t = 0
    while status == RUNNING:
        t += 1
        x, y, vx, vy, f, gx, gy = _step2k(fid, x, y, vx, vy, gx, gy, a, b, t, kn)
        status = _classify(x, y, f, vx, vy, t, max_iter, tol)
        if status != DIVERGED and f < best:
            best = f
        if every > 0 and (t % every == 0 or status != RUNNING):
            n_rec = _record2(rec, n_rec, t, x, y, f)
    return status, t, x, y, f, best, n_rec


@nb.njit(cache=True)
def run2(fid: int, x: float, y: float, a: float, b: float, max_iter: int, tol: float, nesterov: bool, gamma: float,
         clip: float, every: int, rec: F64) -> tuple[int, int, float, float, float, float, int]:
    """One 2-D run. Records (t, x, y, f) every `every` updates into rec when every > 0
    (rec needs max_iter // every + 2 rows). Returns (status, t, x, y, f, best, n_rec)."""
    f, gx, gy = fg2(fid, x, y)
    best = f if math.isfinite(f) else math.inf
    n_rec = _record2(rec, 0, 0, x, y, f) if every > 0 else 0
    status = DIVERGED if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(f)) else RUNNING
    if max_iter <= 0 and status == RUNNING:
        status = MAX_ITER
    kn = (nesterov, gamma, clip)
    if knobs_on(kn):
        return _loop2(fid, x, y, f, gx, gy, best, status, a, b, max_iter, tol, kn, every, rec, n_rec)
    # the plain update: the knobs as constants, so their code is compiled out
    return _loop2(fid, x, y, f, gx, gy, best, status, a, b, max_iter, tol, NO_KNOBS, every, rec, n_rec)


@nb.njit(cache=True, inline="always")
def _sweep(fid: int, lx: F64, ly: F64, lvx: F64, lvy: F64, lgx: F64, lgy: F64, lf: F64, lbest: F64, la: F64,
           lb: F64, lt: I64, lst: I64, lidx: I64, max_iter: int, tol: float) -> None:
    """Step every lane until at least one loaded lane stops.

    State is stored unconditionally: the sweep in which a lane stops is the last one
    before the caller collects its result, so its arrays hold exactly the state at the
    stopping update (what run2 returns). Parked lanes (no config left) have alpha = beta
    = 0 and stay put. No select on stores, so the loop vectorises across lanes."""
    n_stop = 0
    while n_stop == 0:
        for lane in range(LANES):
            t = lt[lane] + 1
            x, y, vx, vy, f, gx, gy = _step2(
                fid, lx[lane], ly[lane], lvx[lane], lvy[lane], lgx[lane], lgy[lane], la[lane], lb[lane]
            )
            st = _classify(x, y, f, vx, vy, t, max_iter, tol)
            lbest[lane] = f if (st != DIVERGED and f < lbest[lane]) else lbest[lane]
            lx[lane] = x
            ly[lane] = y
            lvx[lane] = vx
            lvy[lane] = vy
            lgx[lane] = gx
            lgy[lane] = gy
            lf[lane] = f
            lt[lane] = t
            lst[lane] = st
        for lane in range(LANES):
            n_stop += (lst[lane] != RUNNING) & (lidx[lane] >= 0)


@nb.njit(cache=True)
def _lane_worker(w: int, n_workers: int, fid: int, x0: float, y0: float, alphas: F64, betas: F64, max_iter: int,
                 tol: float, kn: Knobs, o_status: I64, o_iter: I64, o_x: F64, o_y: F64, o_f: F64, o_best: F64) -> None:
    """Worker w of batch2: configs w, w + n_workers, ..., LANES at a time in lockstep."""
    n = alphas.size
    if knobs_on(kn):  # no lanes: one run2 after another (see batch2)
        every = int(np.int64(0))  # not the literal 0, for which numba would compile run2 once more
        for j in range(w, n, n_workers):
            o_status[j], o_iter[j], o_x[j], o_y[j], o_f[j], o_best[j], _ = run2(
                fid, x0, y0, alphas[j], betas[j], max_iter, tol, kn[0], kn[1], kn[2], every, np.empty((0, 4)))
        return
    f0, gx0, gy0 = fg2(fid, x0, y0)
    bad0 = not (math.isfinite(x0) and math.isfinite(y0) and math.isfinite(f0))
    best0 = f0 if math.isfinite(f0) else math.inf
    lx = np.empty(LANES)
    ly = np.empty(LANES)
    lvx = np.empty(LANES)
    lvy = np.empty(LANES)
    lgx = np.empty(LANES)
    lgy = np.empty(LANES)
    lf = np.empty(LANES)
    lbest = np.empty(LANES)
    la = np.empty(LANES)
    lb = np.empty(LANES)
    lt = np.zeros(LANES, dtype=np.int64)
    lst = np.full(LANES, MAX_ITER, dtype=np.int64)
    lidx = np.full(LANES, -1, dtype=np.int64)  # -1: the lane holds no config
    nxt = np.int64(w)  # prange hands out unsigned ints; int64 keeps i integral when unified
    step = np.int64(n_workers)
    active = 0
    while True:
        # (re)fill every stopped lane: write its result out, load the next config
        for lane in range(LANES):
            if lst[lane] == RUNNING and lidx[lane] >= 0:
                continue
            i = lidx[lane]
            if i >= 0:
                o_status[i] = lst[lane]
                o_iter[i] = lt[lane]
                o_x[i] = lx[lane]
                o_y[i] = ly[lane]
                o_f[i] = lf[lane]
                o_best[i] = lbest[lane]
                lidx[lane] = -1
                active -= 1
            # park the lane: zero step sizes keep it still (no denormals, no NaN)
            lx[lane] = x0
            ly[lane] = y0
            lvx[lane] = 0.0
            lvy[lane] = 0.0
            lgx[lane] = gx0
            lgy[lane] = gy0
            lbest[lane] = best0
            la[lane] = 0.0
            lb[lane] = 0.0
            lt[lane] = 0
            while nxt < n:
                i = nxt
                nxt += step
                if bad0 or max_iter <= 0:  # nothing to step: finished at the start
                    o_status[i] = DIVERGED if bad0 else MAX_ITER
                    o_iter[i] = 0
                    o_x[i] = x0
                    o_y[i] = y0
                    o_f[i] = f0
                    o_best[i] = best0
                    continue
                lidx[lane] = i
                lx[lane] = x0
                ly[lane] = y0
                lvx[lane] = 0.0
                lvy[lane] = 0.0
                lgx[lane] = gx0
                lgy[lane] = gy0
                lf[lane] = f0
                lbest[lane] = best0
                la[lane] = alphas[i]
                lb[lane] = betas[i]
                lt[lane] = 0
                lst[lane] = RUNNING
                active += 1
                break
        if active == 0:
            return
        # Dispatch on the objective once per round, outside the lane loop: each call
        # below inlines _sweep with a constant fid, so LLVM drops the other objectives'
        # branches (and their libm calls) and vectorises the lane loop.
        if fid == ROSENBROCK:
            _sweep(ROSENBROCK, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)
        elif fid == SPHERE:
            _sweep(SPHERE, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)
        elif fid == QUADRATIC:
            _sweep(QUADRATIC, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)
        elif fid == BEALE:
            _sweep(BEALE, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)
        elif fid == HIMMELBLAU:
            _sweep(HIMMELBLAU, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)
        elif fid == STYBLINSKI_TANG:
            _sweep(STYBLINSKI_TANG, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)
        else:  # objectives with libm calls (cos, exp) do not vectorise anyway
            _sweep(fid, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol)


@nb.njit(cache=True, parallel=True, nogil=True)  # nogil: other threads work meanwhile
def batch2(fid: int, x0: float, y0: float, alphas: F64, betas: F64, max_iter: int, tol: float, nesterov: bool,
           gamma: float, clip: float, n_workers: int, o_status: I64, o_iter: I64, o_x: F64, o_y: F64, o_f: F64,
           o_best: F64) -> None:
    """Many 2-D runs in parallel, written into the o_* arrays (length n).

    Work is split into n_workers strided streams (worker w takes configs w, w + W, ...) so a grid
    sorted by alpha is spread evenly over threads; each worker steps LANES configs in
    lockstep (vectorised across lanes) and refills a lane as soon as its config stops.
    With a knob on, each worker calls run2 config by config (the knobs' branches would
    keep the lane loop from vectorising, and double its compile time)."""
    for w in nb.prange(n_workers):
        _lane_worker(w, n_workers, fid, x0, y0, alphas, betas, max_iter, tol, (nesterov, gamma, clip),
                     o_status, o_iter, o_x, o_y, o_f, o_best)


@nb.njit(cache=True, inline="always")
def _move(x: F64, v: F64, g: F64, a: float, b: float) -> tuple[float, float]:
    """The N-D update in place, with the caller's flags; returns ||v||^2 and a probe sum of
    x_i * 0, nan iff some x_i is non-finite, else +-0."""
    vn = 0.0
    xs = 0.0
    for i in range(x.size):
        vi = b * v[i] - a * g[i]
        v[i] = vi
        x[i] += vi
        vn += vi * vi
        xs += x[i] * 0.0
    return vn, xs


@nb.njit(cache=True, inline="always")
def _record_nd(rec: F64, n_rec: int, t: int, x: F64, f: float) -> int:
    """Write the row (t, x_1..x_d, f) into rec[n_rec]; returns the new row count."""
    rec[n_rec, 0] = t
    rec[n_rec, 1 : x.size + 1] = x
    rec[n_rec, x.size + 1] = f
    return n_rec + 1


@nb.njit(cache=True, inline="always")
def _start_nd(x: F64, f: float, max_iter: int, every: int, rec: F64) -> tuple[int, float, int]:
    """An N-D run at t = 0: (status, best, n_rec), with x_0 recorded when every > 0."""
    finite = math.isfinite(f)
    for i in range(x.size):
        finite = finite and math.isfinite(x[i])
    status = (MAX_ITER if max_iter <= 0 else RUNNING) if finite else DIVERGED
    return status, (f if finite else math.inf), (_record_nd(rec, 0, 0, x, f) if every > 0 else 0)


# reassoc, and only it: see the module docstring for what it may reorder here
@nb.njit(cache=True, fastmath={"reassoc"})
def run_nd(fid: int, x0: F64, a: float, b: float, max_iter: int, tol: float, nesterov: bool, gamma: float,
           clip: float, every: int, rec: F64) -> tuple[int, int, F64, float, float, int]:
    """One N-D run (d = x0.size). Same rule as run2 (`_status`); rec rows are
    (t, x_1..x_d, f). Returns (status, t, x, f, best, n_rec)."""
    d = x0.size
    x = x0.copy()
    v = np.zeros(d)
    g = np.empty(d)
    f = fg_nd(fid, x, g)
    xl = np.empty(d if nesterov else 0)  # the look-ahead point (first, the unused gradient at x)
    status, best, n_rec = _start_nd(x, f, max_iter, every, rec)
    t = 0
    while status == RUNNING:
        t += 1
        if clip != math.inf:
            clip_nd(g, clip, g)
        vn, xs = _move(x, v, g, decayed(a, gamma, t), b)
        if nesterov:
            f = fg_nd(fid, x, xl)
            fg_nd(fid, look_ahead(x, v, b, xl), g)
        else:
            f = fg_nd(fid, x, g)
        status = _status(math.isfinite(xs) and math.isfinite(f), vn, t, max_iter, tol)
        if status != DIVERGED and f < best:
            best = f
        if every > 0 and (t % every == 0 or status != RUNNING):
            n_rec = _record_nd(rec, n_rec, t, x, f)
    return status, t, x, f, best, n_rec


@nb.njit(cache=True, parallel=True, nogil=True)  # nogil: other threads work meanwhile
def batch_nd(fid: int, x0: F64, alphas: F64, betas: F64, max_iter: int, tol: float, nesterov: bool, gamma: float,
             clip: float, n_workers: int, o_status: I64, o_iter: I64, o_x: F64, o_f: F64, o_best: F64) -> None:
    """Many N-D runs in parallel (one config per task, strided for balance)."""
    n = alphas.size
    empty = np.empty((0, x0.size + 2))
    for w in nb.prange(n_workers):
        for i in range(w, n, n_workers):
            st, t, x, f, best, _ = run_nd(fid, x0, alphas[i], betas[i], max_iter, tol, nesterov, gamma, clip, 0, empty)
            o_status[i] = st
            o_iter[i] = t
            o_x[i, :] = x
            o_f[i] = f
            o_best[i] = best


# ------------------------------------------------ objectives given as functions
# A user's objective arrives as two jitted functions, f(x) -> float and grad(x) -> array.
# numba compiles these kernels once per pair of functions (first-class function
# arguments cannot go to the on-disk cache, hence no cache=True), with the same update
# and the same stop rule (`_status`) as the built-in kernels.
@nb.njit()  # called: numba's stubs type a bare @nb.njit as the decorator factory, not a Dispatcher
def run_fn(f: Fn, grad: GradFn, x0: F64, a: float, b: float, max_iter: int, tol: float, nesterov: bool, gamma: float,
           clip: float, every: int, rec: F64) -> tuple[int, int, F64, float, float, int]:
    """One N-D run of a user objective. Same rules as run_nd; returns (status, t, x, f,
    best, n_rec). The array grad returns is never written to."""
    d = x0.size
    x = x0.copy()
    v = np.zeros(d)
    fx = f(x)
    g = grad(x)
    xl = np.empty(d if nesterov else 0)  # the look-ahead point
    gc = np.empty(d if clip != math.inf else 0)  # the clipped gradient
    status, best, n_rec = _start_nd(x, fx, max_iter, every, rec)
    t = 0
    while status == RUNNING:
        t += 1
        if clip != math.inf and clip_nd(g, clip, gc):
            vn, xs = _move(x, v, gc, decayed(a, gamma, t), b)
        else:
            vn, xs = _move(x, v, g, decayed(a, gamma, t), b)
        fx = f(x)
        status = _status(math.isfinite(xs) and math.isfinite(fx), vn, t, max_iter, tol)
        if status != DIVERGED:
            g = grad(look_ahead(x, v, b, xl)) if nesterov else grad(x)
            if fx < best:
                best = fx
        if every > 0 and (t % every == 0 or status != RUNNING):
            n_rec = _record_nd(rec, n_rec, t, x, fx)
    return status, t, x, fx, best, n_rec


@nb.njit(parallel=True, nogil=True)
def batch_fn(f: Fn, grad: GradFn, x0: F64, alphas: F64, betas: F64, max_iter: int, tol: float, nesterov: bool,
             gamma: float, clip: float, n_workers: int, o_status: I64, o_iter: I64, o_x: F64, o_f: F64,
             o_best: F64) -> None:
    """Many runs of a user objective in parallel (one config per task, strided)."""
    n = alphas.size
    empty = np.empty((0, x0.size + 2))
    for w in nb.prange(n_workers):
        for i in range(w, n, n_workers):
            st, t, x, fx, best, _ = run_fn(f, grad, x0, alphas[i], betas[i], max_iter, tol, nesterov, gamma, clip, 0,
                                           empty)
            o_status[i] = st
            o_iter[i] = t
            o_x[i, :] = x
            o_f[i] = fx
            o_best[i] = best
