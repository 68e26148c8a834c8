"""Gradient descent with momentum: one run, a batch of runs, and the start points, over
the numba kernels of tools/kernels.py (which states the update and the stop rule).

Example:

    >>> from tuneloop.tools.momentum import run
    >>> r = run("rosenbrock", alpha=1e-3, beta=0.9)
    >>> r.status, r.iterations
    ('converged', 2020)

Three knobs of the update, all off by default (tools/knobs.py defines them): Nesterov's
look-ahead gradient, a learning rate decaying as alpha / (1 + lr_decay t), and clipping
the gradient's norm at grad_clip.

    >>> r = run("rosenbrock", alpha=1e-3, beta=0.9, nesterov=True, lr_decay=1e-4, grad_clip=10.0)
    >>> r.status, r.nesterov, r.lr_decay, r.grad_clip
    ('converged', True, 0.0001, 10.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt

from tuneloop.tools.defaults import (
    DEFAULT_GRAD_CLIP,
    DEFAULT_LR_DECAY,
    DEFAULT_MAX_ITER,
    DEFAULT_NESTEROV,
    DEFAULT_TOL,
    DEFAULT_X0,
    START_SPECS,
)
from tuneloop.tools.kernels import DIVERGED, STATUS_NAMES, Status, batch2, batch_fn, batch_nd, run2, run_fn, run_nd
from tuneloop.tools.objectives import USER_FID, Objective, UserObjective, get_objective

__all__ = ["DEFAULT_MAX_ITER", "DEFAULT_TOL", "DEFAULT_X0", "BatchResult", "GDResult", "default_start",
           "kernel_knobs", "random_start", "run", "run_batch", "start_point"]


# ------------------------------------------------------------------ Python API
RANDOM_START_BOX = (-2.0, 2.0)


def random_start(seed: int, dim: int = 2) -> tuple[float, ...]:
    """The start point a seed draws (docs/protocol.md: uniform in [-2, 2]^dim). Its own RNG
    stream, so every method run under one seed starts from the same point."""
    rng = np.random.default_rng([int(seed), 0x57A27])
    return tuple(float(v) for v in rng.uniform(*RANDOM_START_BOX, size=dim))


def default_start(dim: int = 2) -> tuple[float, ...]:
    """(-1.5, 2) in 2-D; the same pattern repeated in N-D."""
    return tuple(DEFAULT_X0[i % 2] for i in range(dim))


def start_point(spec: str = "paper", seed: int = 0, dim: int = 2) -> tuple[float, ...]:
    """The project's one way to name a start point: "paper" is the study's
    (`default_start`), "random" the seed's draw (`random_start`; seed is ignored for
    "paper").

    >>> start_point()
    (-1.5, 2.0)
    >>> start_point("paper", dim=3)
    (-1.5, 2.0, -1.5)
    >>> start_point("random", seed=3) == random_start(3)
    True
    """
    if spec == "paper":
        return default_start(dim)
    if spec == "random":
        return random_start(seed, dim)
    raise ValueError(f"unknown start point {spec!r}: expected one of {', '.join(START_SPECS)}")


@dataclass(frozen=True)
class GDResult:
    """One momentum-GD run. final_value is nan when the run diverged."""

    objective: str
    alpha: float
    beta: float
    x0: tuple[float, ...]
    status: Status  # converged | max_iter | diverged
    iterations: int
    final_value: float
    x_final: tuple[float, ...]
    best_value: float
    distance_to_optimum: float  # to the nearest known global minimiser; nan if diverged
    trajectory: np.ndarray | None = None  # rows (t, x_1..x_d, f), every k-th update
    nesterov: bool = DEFAULT_NESTEROV  # the knobs the run used (tools/knobs.py)
    lr_decay: float = DEFAULT_LR_DECAY
    grad_clip: float | None = DEFAULT_GRAD_CLIP


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
    nesterov: bool = DEFAULT_NESTEROV  # the knobs every run used (tools/knobs.py)
    lr_decay: float = DEFAULT_LR_DECAY
    grad_clip: float | None = DEFAULT_GRAD_CLIP

    @property
    def status(self) -> list[str]:
        return [STATUS_NAMES[int(c)] for c in self.status_code]


def _resolve(objective: Objective | str, x0: npt.ArrayLike | None) -> tuple[Objective, np.ndarray]:
    obj = get_objective(objective) if isinstance(objective, str) else objective
    start = np.array(DEFAULT_X0 if x0 is None else x0, dtype=np.float64).ravel()
    obj.check_dim(start.size)
    return obj, start


def kernel_knobs(nesterov: bool = DEFAULT_NESTEROV, lr_decay: float = DEFAULT_LR_DECAY,
                 grad_clip: float | None = DEFAULT_GRAD_CLIP,
                 names: tuple[str, str, str] = ("nesterov", "lr_decay", "grad_clip")) -> tuple[bool, float, float]:
    """Check the knobs and return them as the kernels take them: (nesterov, gamma, clip),
    clip = inf for no clipping. A bad value is a ValueError naming it by `names` (a bool
    other than True/False a TypeError).

    >>> kernel_knobs(), kernel_knobs(True, 0.01, 5)
    ((False, 0.0, inf), (True, 0.01, 5.0))
    >>> kernel_knobs(lr_decay=-1)
    Traceback (most recent call last):
    ...
    ValueError: lr_decay must be a finite number >= 0, got -1 (0: no decay)
    """
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"{names[0]} must be True or False, got {nesterov!r}")
    gamma = _as_float(lr_decay)
    if not (math.isfinite(gamma) and gamma >= 0.0):
        raise ValueError(f"{names[1]} must be a finite number >= 0, got {lr_decay!r} (0: no decay)")
    if grad_clip is None:
        return bool(nesterov), gamma, math.inf
    clip = _as_float(grad_clip)
    if not (math.isfinite(clip) and clip > 0.0):
        raise ValueError(f"{names[2]} must be a finite number > 0, got {grad_clip!r} (leave it unset: no clipping)")
    return bool(nesterov), gamma, clip


def _as_float(value: object) -> float:
    """float(value) for a real number; nan (which every check rejects) for anything else."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        return math.nan
    return float(value)


def _distance(obj: Objective, x_final: np.ndarray) -> np.ndarray:
    """Distance from each row of x_final (n, d) to its nearest known global minimiser."""
    mins = obj.minimisers(x_final.shape[1])
    if mins.shape[0] == 0:  # an objective from a file that names no minimiser
        return np.full(x_final.shape[0], np.nan)
    with np.errstate(all="ignore"):
        d = np.sqrt(((x_final[:, None, :] - mins[None, :, :]) ** 2).sum(axis=2)).min(axis=1)
    return np.where(np.isfinite(d), d, np.nan)


def run(
    objective: Objective | str,
    alpha: float,
    beta: float,
    x0: npt.ArrayLike | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    record_every: int = 0,
    nesterov: bool = DEFAULT_NESTEROV,
    lr_decay: float = DEFAULT_LR_DECAY,
    grad_clip: float | None = DEFAULT_GRAD_CLIP,
) -> GDResult:
    """Run momentum GD once. record_every > 0 keeps every k-th point (and the last). The
    knobs (nesterov, lr_decay, grad_clip) are checked by `kernel_knobs`."""
    knobs = kernel_knobs(nesterov, lr_decay, grad_clip)
    obj, start = _resolve(objective, x0)
    d = start.size
    every = int(record_every)
    rows = max_iter // every + 2 if every > 0 else 0
    rec = np.empty((rows, d + 2))
    if obj.fid == USER_FID:
        assert isinstance(obj, UserObjective)  # the only objectives with USER_FID
        st, t, xf, f, best, n_rec = run_fn(obj.f, obj.grad, start, float(alpha), float(beta), int(max_iter),
                                           float(tol), *knobs, every, rec)
    elif d == 2:
        st, t, x, y, f, best, n_rec = run2(
            obj.fid, start[0], start[1], float(alpha), float(beta), int(max_iter), float(tol), *knobs, every, rec
        )
        xf = np.array([x, y])
    else:
        st, t, xf, f, best, n_rec = run_nd(
            obj.fid, start, float(alpha), float(beta), int(max_iter), float(tol), *knobs, every, rec
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
        nesterov=knobs[0],
        lr_decay=knobs[1],
        grad_clip=None if grad_clip is None else knobs[2],
    )


def run_batch(
    objective: Objective | str,
    alphas: npt.ArrayLike,
    betas: npt.ArrayLike,
    x0: npt.ArrayLike | None = None,
    max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
    nesterov: bool = DEFAULT_NESTEROV,
    lr_decay: float = DEFAULT_LR_DECAY,
    grad_clip: float | None = DEFAULT_GRAD_CLIP,
) -> BatchResult:
    """Run momentum GD for every (alphas[i], betas[i]) pair, in parallel threads, each run
    with the same knobs; every run's result is the one `run` gives, bit for bit."""
    knobs = kernel_knobs(nesterov, lr_decay, grad_clip)
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
        if obj.fid == USER_FID:
            assert isinstance(obj, UserObjective)  # the only objectives with USER_FID
            batch_fn(obj.f, obj.grad, start, a, b, int(max_iter), float(tol), *knobs, n_workers, status, iters, xf,
                     f, best)
        elif d == 2:
            xs, ys = np.empty(n), np.empty(n)
            batch2(obj.fid, start[0], start[1], a, b, int(max_iter), float(tol), *knobs, n_workers, status, iters, xs,
                   ys, f, best)
            xf[:, 0], xf[:, 1] = xs, ys
        else:
            batch_nd(obj.fid, start, a, b, int(max_iter), float(tol), *knobs, n_workers, status, iters, xf, f, best)
    diverged = status == DIVERGED
    f[diverged] = np.nan
    dist = _distance(obj, xf)
    dist[diverged] = np.nan
    return BatchResult(obj.name, tuple(start.tolist()), a, b, status, iters, f, xf, best, dist, knobs[0], knobs[1],
                       None if grad_clip is None else knobs[2])
