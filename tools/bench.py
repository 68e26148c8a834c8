"""Kernel benchmarks behind `tuneloop bench`: timings only, no printing.

The NumPy reference steps all still-running configs as arrays and drops the finished
ones each step: the fair vectorised baseline the numba batch kernel is compared with,
measured in the same process on the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numba as nb
import numpy as np
import numpy.typing as npt

from tuneloop.tools import kernels, momentum
from tuneloop.tools.defaults import DEFAULT_MAX_ITER, DEFAULT_TOL, DEFAULT_X0, SWEEP_LR, SWEEP_MOMENTUM
from tuneloop.tools.objectives import get_objective

_T = TypeVar("_T")
F64 = npt.NDArray[np.float64]
# The knobs' rows of `tuneloop bench`: each knob alone, on the plain row's run. grad_clip = 1
# clips at nearly every update of it (the gradient's norm stays above 1).
BENCH_KNOBS: dict[str, dict[str, Any]] = {"nesterov": {"nesterov": True}, "lr_decay": {"lr_decay": 1e-3},
                                          "grad_clip": {"grad_clip": 1.0}}


def _numpy_fg(name: str, x: F64, y: F64) -> tuple[F64, F64, F64]:
    if name == "rosenbrock":
        u = 1.0 - x
        w = y - x * x
        return u * u + 100.0 * w * w, -2.0 * u - 400.0 * x * w, 200.0 * w
    if name == "rastrigin":
        tp = 2.0 * np.pi
        f = 20.0 + (x * x - 10.0 * np.cos(tp * x)) + (y * y - 10.0 * np.cos(tp * y))
        return f, 2.0 * x + 10.0 * tp * np.sin(tp * x), 2.0 * y + 10.0 * tp * np.sin(tp * y)
    raise ValueError(f"the NumPy reference covers rosenbrock and rastrigin, not {name}")


def numpy_batch(
    name: str, alphas: F64, betas: F64, x0: Sequence[float] = DEFAULT_X0, max_iter: int = DEFAULT_MAX_ITER,
    tol: float = DEFAULT_TOL,
) -> tuple[npt.NDArray[np.int_], npt.NDArray[np.int_], F64]:
    """Vectorised NumPy momentum GD; returns (status codes, iterations, final values)."""
    n = alphas.size
    status = np.full(n, kernels.MAX_ITER)
    iters = np.full(n, max_iter)
    final = np.empty(n)
    idx = np.arange(n)
    x = np.full(n, x0[0])
    y = np.full(n, x0[1])
    vx = np.zeros(n)
    vy = np.zeros(n)
    a, b = alphas.copy(), betas.copy()
    with np.errstate(all="ignore"):
        f, gx, gy = _numpy_fg(name, x, y)
        for t in range(1, max_iter + 1):
            vx = b * vx - a * gx
            vy = b * vy - a * gy
            x = x + vx
            y = y + vy
            f, gx, gy = _numpy_fg(name, x, y)
            div = ~(np.isfinite(x) & np.isfinite(y) & np.isfinite(f))
            conv = ~div & (np.sqrt(vx * vx + vy * vy) < tol)
            done = div | conv
            if done.any():
                ids = idx[done]
                status[ids] = np.where(div[done], kernels.DIVERGED, kernels.CONVERGED)
                iters[ids] = t
                final[ids] = np.where(div[done], np.nan, f[done])
                keep = ~done
                idx, x, y, vx, vy, gx, gy, f, a, b = (
                    arr[keep] for arr in (idx, x, y, vx, vy, gx, gy, f, a, b)
                )
                if idx.size == 0:
                    break
        final[idx] = f
    return status, iters, final


@dataclass(frozen=True)
class BenchRow:
    name: str
    seconds: float
    updates: int  # iteration-updates performed
    configs: int

    @property
    def updates_per_s(self) -> float:
        return self.updates / self.seconds

    @property
    def configs_per_s(self) -> float:
        return self.configs / self.seconds


def _best_of(repeats: int, fn: Callable[[], _T]) -> tuple[float, _T | None]:
    """The fastest of `repeats` calls and the last call's result (None when repeats < 1)."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def single_ns_per_iter(name: str, iters: int = 2_000_000, repeats: int = 3, dim: int = 2, nesterov: bool = False,
                       lr_decay: float = 0.0, grad_clip: float | None = None) -> float:
    """ns per update of one long run (tol = 0 so it never stops early), with the knobs
    given; for dim > 2, ns per update per dimension."""
    obj = get_objective(name)
    x0 = np.array(momentum.default_start(dim))

    def one(max_iter: int) -> momentum.GDResult:
        return momentum.run(obj, 1e-7, 0.5, x0=x0, max_iter=max_iter, tol=0.0, nesterov=nesterov, lr_decay=lr_decay,
                            grad_clip=grad_clip)

    one(10)  # compile / load cache
    secs, res = _best_of(repeats, lambda: one(iters))
    assert res is not None, "repeats must be at least 1"
    if res.status != "max_iter":
        raise RuntimeError(f"benchmark run stopped early ({res.status}); pick a smaller alpha")
    return secs / iters / dim * 1e9


def random_workload(n: int, seed: int = 0) -> tuple[F64, F64]:
    """The benchmark's workload: alpha log-uniform and beta uniform over the sweep's
    default box (alpha in [1e-5, 1e-1], beta in [0, 0.99])."""
    rng = np.random.default_rng(seed)
    lo, hi = np.log10(SWEEP_LR)
    return 10.0 ** rng.uniform(lo, hi, n), rng.uniform(*SWEEP_MOMENTUM, n)


def batch_rows(name: str, n: int, max_iter: int = DEFAULT_MAX_ITER, repeats: int = 3,
               numpy_ref: bool = True) -> tuple[list[BenchRow], bool, int]:
    """Throughput of the batch paths on the random workload, plus a sorted-grid check."""
    a, b = random_workload(n)
    momentum.run_batch(name, a[:64], b[:64], max_iter=10)  # compile / load cache
    secs, par = _best_of(repeats, lambda: momentum.run_batch(name, a, b, max_iter=max_iter))
    assert par is not None, "repeats must be at least 1"
    updates = int(par.iterations.sum())
    rows = [BenchRow("numba parallel (lockstep lanes)", secs, updates, n)]
    threads = nb.get_num_threads()
    nb.set_num_threads(1)
    try:
        secs1, ser = _best_of(repeats, lambda: momentum.run_batch(name, a, b, max_iter=max_iter))
    finally:
        nb.set_num_threads(threads)
    assert ser is not None
    rows.append(BenchRow("numba serial (1 thread)", secs1, updates, n))
    order = np.argsort(a, kind="stable")
    secs_s, _ = _best_of(repeats, lambda: momentum.run_batch(name, a[order], b[order], max_iter=max_iter))
    rows.append(BenchRow("numba parallel, input sorted by alpha", secs_s, updates, n))
    same = bool(np.array_equal(par.iterations, ser.iterations))
    if numpy_ref:
        secs_np, reference = _best_of(1, lambda: numpy_batch(name, a, b, max_iter=max_iter))
        assert reference is not None  # one repeat: always a result
        st, it, fv = reference
        rows.append(BenchRow("NumPy vectorised reference", secs_np, int(it.sum()), n))
        same = same and bool(np.array_equal(it, par.iterations) and np.array_equal(st, par.status_code))
    return rows, same, threads
