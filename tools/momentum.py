"""Gradient descent with momentum, compiled with numba: one run, a batch of runs.

The update (PROTOCOL.md, heavy-ball form, v_0 = 0):

    v_{t+1} = beta * v_t - alpha * grad f(x_t)
    x_{t+1} = x_t + v_{t+1}

A run stops at the first t (1-based: the number of updates made) where
  - x_{t+1} or f(x_{t+1}) is non-finite       -> "diverged" (final value reported as nan),
  - ||v_{t+1}||_2 < tol                       -> "converged",
or after max_iter updates                     -> "max_iter".

Both the single-run and the batch path call the same `_step2` and `_classify`, so the
batch gives the single-run result bit for bit. fastmath is never on for these kernels:
its nnan/ninf flags would let LLVM fold away the finiteness checks.

Example:

    >>> from tools.momentum import run
    >>> r = run("rosenbrock", alpha=1e-3, beta=0.9)
    >>> r.status, r.iterations
    ('converged', 1768)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np

from tools.objectives import (
    BEALE, HIMMELBLAU, QUADRATIC, ROSENBROCK, SPHERE, STYBLINSKI_TANG,
    Objective, fg2, fg_nd, get_objective,
)

RUNNING, CONVERGED, DIVERGED, MAX_ITER = 0, 1, 2, 3
STATUS_NAMES = {CONVERGED: "converged", DIVERGED: "diverged", MAX_ITER: "max_iter"}
DEFAULT_X0 = (-1.5, 2.0)
DEFAULT_MAX_ITER = 5000
DEFAULT_TOL = 1e-6
LANES = 32  # configs each batch worker steps in lockstep (vectorised across lanes)


# ----------------------------------------------------------------------- kernels
@nb.njit(cache=True, inline="always")
def _step2(fid, x, y, vx, vy, gx, gy, a, b):
    """One momentum update from (x, v) with gradient g at x; returns the new state."""
    vx = b * vx - a * gx
    vy = b * vy - a * gy
    x = x + vx
    y = y + vy
    f, gx, gy = fg2(fid, x, y)
    return x, y, vx, vy, f, gx, gy


@nb.njit(cache=True, inline="always")
def _classify(x, y, f, vx, vy, t, max_iter, tol):
    """Status after update t: diverged beats converged beats max_iter. Written as
    selects (no branches) so the batch kernel's lane loop vectorises. ||v|| < tol is
    tested as ||v||^2 < tol^2: no sqrt, whose vector throughput would dominate."""
    finite = math.isfinite(x) and math.isfinite(y) and math.isfinite(f)
    st = MAX_ITER if t >= max_iter else RUNNING
    st = CONVERGED if vx * vx + vy * vy < tol * tol else st
    return st if finite else DIVERGED


@nb.njit(cache=True)
def run2(fid, x, y, a, b, max_iter, tol, every, rec):
    """One 2-D run. Records (t, x, y, f) every `every` updates into rec when every > 0
    (rec needs max_iter // every + 2 rows). Returns (status, t, x, y, f, best, n_rec)."""
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
        x, y, vx, vy, f, gx, gy = _step2(fid, x, y, vx, vy, gx, gy, a, b)
        status = _classify(x, y, f, vx, vy, t, max_iter, tol)
        if status != DIVERGED and f < best:
            best = f
        if every > 0 and (t % every == 0 or status != RUNNING):
            rec[n_rec, 0] = t
            rec[n_rec, 1] = x
            rec[n_rec, 2] = y
            rec[n_rec, 3] = f
            n_rec += 1
    return status, t, x, y, f, best, n_rec


@nb.njit(cache=True, inline="always")
def _sweep(fid, lx, ly, lvx, lvy, lgx, lgy, lf, lbest, la, lb, lt, lst, lidx, max_iter, tol):
    """Step every lane until at least one loaded lane stops.

    State is stored unconditionally: the sweep in which a lane stops is the last one
    before the caller collects its result, so its arrays hold exactly the state at the
    stopping update (what run2 returns). Parked lanes (no config left) have alpha = beta
    = 0 and stay put. No select on stores, so the loop vectorises across lanes."""
    n_stop = 0
    while n_stop == 0:
        for l in range(LANES):
            t = lt[l] + 1
            x, y, vx, vy, f, gx, gy = _step2(fid, lx[l], ly[l], lvx[l], lvy[l], lgx[l], lgy[l], la[l], lb[l])
            st = _classify(x, y, f, vx, vy, t, max_iter, tol)
            lbest[l] = f if (st != DIVERGED and f < lbest[l]) else lbest[l]
            lx[l] = x
            ly[l] = y
            lvx[l] = vx
            lvy[l] = vy
            lgx[l] = gx
            lgy[l] = gy
            lf[l] = f
            lt[l] = t
            lst[l] = st
        for l in range(LANES):
            n_stop += (lst[l] != RUNNING) & (lidx[l] >= 0)


@nb.njit(cache=True)
def _lane_worker(w, n_workers, fid, x0, y0, alphas, betas, max_iter, tol,
                 o_status, o_iter, o_x, o_y, o_f, o_best):
    """Worker w of batch2: configs w, w + n_workers, ..., LANES at a time in lockstep."""
    n = alphas.size
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
        for l in range(LANES):
            if lst[l] == RUNNING and lidx[l] >= 0:
                continue
            i = lidx[l]
            if i >= 0:
                o_status[i] = lst[l]
                o_iter[i] = lt[l]
                o_x[i] = lx[l]
                o_y[i] = ly[l]
                o_f[i] = lf[l]
                o_best[i] = lbest[l]
                lidx[l] = -1
                active -= 1
            # park the lane: zero step sizes keep it still (no denormals, no NaN)
            lx[l] = x0
            ly[l] = y0
            lvx[l] = 0.0
            lvy[l] = 0.0
            lgx[l] = gx0
            lgy[l] = gy0
            lbest[l] = best0
            la[l] = 0.0
            lb[l] = 0.0
            lt[l] = 0
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
                lidx[l] = i
                lx[l] = x0
                ly[l] = y0
                lvx[l] = 0.0
                lvy[l] = 0.0
                lgx[l] = gx0
                lgy[l] = gy0
                lf[l] = f0
                lbest[l] = best0
                la[l] = alphas[i]
                lb[l] = betas[i]
                lt[l] = 0
                lst[l] = RUNNING
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


@nb.njit(cache=True, parallel=True)
def batch2(fid, x0, y0, alphas, betas, max_iter, tol, n_workers, o_status, o_iter, o_x, o_y, o_f, o_best):
    """Many 2-D runs in parallel, written into the o_* arrays (length n).

    Work is split into n_workers strided streams (worker w takes configs w, w + W, ...) so a grid
    sorted by alpha is spread evenly over threads; each worker steps LANES configs in
    lockstep (vectorised across lanes) and refills a lane as soon as its config stops.
    """
    for w in nb.prange(n_workers):
        _lane_worker(w, n_workers, fid, x0, y0, alphas, betas, max_iter, tol,
                     o_status, o_iter, o_x, o_y, o_f, o_best)


@nb.njit(cache=True, fastmath={"reassoc"})
def run_nd(fid, x0, a, b, max_iter, tol, every, rec):
    """One N-D run (d = x0.size). Same rules as run2; rec rows are (t, x_1..x_d, f).
    Returns (status, t, x, f, best, n_rec)."""
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
        xs = 0.0  # a sum of x is non-finite iff some x_i is (inf - inf is nan)
        for i in range(d):
            vi = b * v[i] - a * g[i]
            v[i] = vi
            x[i] += vi
            vn += vi * vi
            xs += x[i] * 0.0
        f = fg_nd(fid, x, g)
        if not (math.isfinite(xs) and math.isfinite(f)):
            status = DIVERGED
        elif math.sqrt(vn) < tol:
            status = CONVERGED
        elif t >= max_iter:
            status = MAX_ITER
        if status != DIVERGED and f < best:
            best = f
        if every > 0 and (t % every == 0 or status != RUNNING):
            rec[n_rec, 0] = t
            rec[n_rec, 1 : d + 1] = x
            rec[n_rec, d + 1] = f
            n_rec += 1
    return status, t, x, f, best, n_rec


@nb.njit(cache=True, parallel=True)
def batch_nd(fid, x0, alphas, betas, max_iter, tol, n_workers, o_status, o_iter, o_x, o_f, o_best):
    """Many N-D runs in parallel (one config per task, strided for balance)."""
    n = alphas.size
    empty = np.empty((0, x0.size + 2))
    for w in nb.prange(n_workers):
        for i in range(w, n, n_workers):
            st, t, x, f, best, _ = run_nd(fid, x0, alphas[i], betas[i], max_iter, tol, 0, empty)
            o_status[i] = st
            o_iter[i] = t
            o_x[i, :] = x
            o_f[i] = f
            o_best[i] = best


# ------------------------------------------------------------------ Python API
RANDOM_START_BOX = (-2.0, 2.0)


def random_start(seed: int, dim: int = 2) -> tuple[float, ...]:
    """The start point a seed draws (PROTOCOL.md: uniform in [-2, 2]^dim). Its own RNG
    stream, so every method run under one seed starts from the same point."""
    rng = np.random.default_rng([int(seed), 0x57A27])
    return tuple(float(v) for v in rng.uniform(*RANDOM_START_BOX, size=dim))


def default_start(dim: int = 2) -> tuple[float, ...]:
    """(-1.5, 2) in 2-D; the same pattern repeated in N-D."""
    return tuple(DEFAULT_X0[i % 2] for i in range(dim))


@dataclass(frozen=True)
class GDResult:
    """One momentum-GD run. final_value is nan when the run diverged."""

    objective: str
    alpha: float
    beta: float
    x0: tuple[float, ...]
    status: str  # converged | max_iter | diverged
    iterations: int
    final_value: float
    x_final: tuple[float, ...]
    best_value: float
    distance_to_optimum: float  # to the nearest known global minimiser; nan if diverged
    trajectory: np.ndarray | None = None  # rows (t, x_1..x_d, f), every k-th update


@dataclass(frozen=True)
class BatchResult:
    """Many runs from one start point; arrays of length n (x_final is (n, d))."""

    objective: str
    x0: tuple[float, ...]
    alphas: np.ndarray
    betas: np.ndarray
    status_code: np.ndarray  # CONVERGED / DIVERGED / MAX_ITER
    iterations: np.ndarray
    final_value: np.ndarray  # nan where diverged
    x_final: np.ndarray
    best_value: np.ndarray
    distance_to_optimum: np.ndarray

    @property
    def status(self) -> list[str]:
        return [STATUS_NAMES[int(c)] for c in self.status_code]


def _resolve(objective: Objective | str, x0) -> tuple[Objective, np.ndarray]:
    obj = get_objective(objective) if isinstance(objective, str) else objective
    start = np.array(DEFAULT_X0 if x0 is None else x0, dtype=np.float64).ravel()
    obj.check_dim(start.size)
    return obj, start


def _distance(obj: Objective, x_final: np.ndarray) -> np.ndarray:
    """Distance from each row of x_final (n, d) to its nearest known global minimiser."""
    mins = obj.minimisers(x_final.shape[1])
    with np.errstate(all="ignore"):
        d = np.sqrt(((x_final[:, None, :] - mins[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    return np.where(np.isfinite(d), d, np.nan)


def run(
    objective: Objective | str,
    alpha: float,
    beta: float,
    x0=None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    record_every: int = 0,
) -> GDResult:
    """Run momentum GD once. record_every > 0 keeps every k-th point (and the last)."""
    obj, start = _resolve(objective, x0)
    d = start.size
    every = int(record_every)
    rows = max_iter // every + 2 if every > 0 else 0
    rec = np.empty((rows, d + 2))
    if d == 2:
        st, t, x, y, f, best, n_rec = run2(
            obj.fid, start[0], start[1], float(alpha), float(beta), int(max_iter), float(tol), every, rec
        )
        xf = np.array([x, y])
    else:
        st, t, xf, f, best, n_rec = run_nd(
            obj.fid, start, float(alpha), float(beta), int(max_iter), float(tol), every, rec
        )
    diverged = st == DIVERGED
    return GDResult(
        objective=obj.name,
        alpha=float(alpha),
        beta=float(beta),
        x0=tuple(start.tolist()),
        status=STATUS_NAMES[st],
        iterations=int(t),
        final_value=math.nan if diverged else float(f),
        x_final=tuple(float(v) for v in xf),
        best_value=float(best),
        distance_to_optimum=math.nan if diverged else float(_distance(obj, xf[None, :])[0]),
        trajectory=rec[:n_rec].copy() if every > 0 else None,
    )


def run_batch(
    objective: Objective | str,
    alphas,
    betas,
    x0=None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
) -> BatchResult:
    """Run momentum GD for every (alphas[i], betas[i]) pair, in parallel threads."""
    obj, start = _resolve(objective, x0)
    a = np.ascontiguousarray(alphas, dtype=np.float64).ravel()
    b = np.ascontiguousarray(betas, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"alphas and betas differ in length ({a.size} vs {b.size})")
    n, d = a.size, start.size
    status = np.empty(n, dtype=np.int64)
    iters = np.empty(n, dtype=np.int64)
    f = np.empty(n)
    best = np.empty(n)
    xf = np.empty((n, d))
    # a few streams per thread: strided streams balance sorted grids, several per
    # thread let numba's scheduler even out what is left
    n_workers = max(1, min(n, 4 * nb.get_num_threads()))
    if n:
        if d == 2:
            xs, ys = np.empty(n), np.empty(n)
            batch2(obj.fid, start[0], start[1], a, b, int(max_iter), float(tol), n_workers, status, iters, xs, ys, f, best)
            xf[:, 0], xf[:, 1] = xs, ys
        else:
            batch_nd(obj.fid, start, a, b, int(max_iter), float(tol), n_workers, status, iters, xf, f, best)
    diverged = status == DIVERGED
    f[diverged] = np.nan
    dist = _distance(obj, xf)
    dist[diverged] = np.nan
    return BatchResult(obj.name, tuple(start.tolist()), a, b, status, iters, f, xf, best, dist)
