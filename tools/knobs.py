"""The optional knobs of momentum GD, as every kernel of tools/kernels.py applies them.
Each is off by default, and off means exactly the plain update (the same bits).

    nesterov        the gradient is taken at the look-ahead point x_t + beta v_t:
                        v_{t+1} = beta v_t - alpha_t grad f(x_t + beta v_t)
                    (v_0 = 0, so the first update takes it at x_0)
    lr_decay gamma  alpha_t = alpha / (1 + gamma t), t = 0, 1, ... the update's 0-based
                    index: the first update uses alpha. gamma = 0: no decay
    grad_clip c     g <- g (c / ||g||) when ||g|| > c, ||g|| = sqrt(sum_i g_i^2) summed in
                    coordinate order. c = inf: no clipping

One update, in order: the gradient g (at x_t, or at the look-ahead point), clipped; then
v_{t+1} = beta v_t - alpha_t g and x_{t+1} = x_t + v_{t+1}. The stop rule and the
divergence test are the plain ones, on x_{t+1}, f(x_{t+1}) and v_{t+1}.

Clipping, at the edges of the floats:
  - when the squares overflow (sum g_i^2 = inf, every g_i finite), the norm is measured
    on u = g / m, m = max_i |g_i|: g <- u (c / ||u||) when m ||u|| > c. Without that, a
    huge but finite gradient would be scaled by c / inf = 0 and the run would stall;
  - a non-finite gradient (some g_i nan or inf) is left as it is: the update then makes x
    non-finite and the run diverges, as it does without clipping.

The kernels take the knobs as three plain values after tol, (nesterov, gamma, clip),
`NO_KNOBS` being all off. run2 tests `knobs_on` once per run, and its plain path has the
knobs as constants, so LLVM drops their code from it; batch2's lanes run only the plain
update (with a knob on, its workers call run2 config by config); the N-D kernels test the
knobs once per update, outside their loops over coordinates.

numba's cache keys a kernel on its own file only: after editing this file, delete the
cached kernels (kernels.*.nbi and .nbc in the __pycache__ next to the installed
kernels.py), or they keep the old code of the functions here.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
NO_KNOBS = (False, 0.0, math.inf)  # (nesterov, gamma, clip): the plain update


@nb.njit(cache=True, inline="always")
def knobs_on(kn: tuple[bool, float, float]) -> bool:
    """Whether any of the knobs (nesterov, gamma, clip) differs from `NO_KNOBS`."""
    nesterov, gamma, clip = kn
    return nesterov or gamma != 0.0 or clip != math.inf


@nb.njit(cache=True, inline="always")
def decayed(a: float, gamma: float, t: int) -> float:
    """The learning rate of update t (1-based, as the kernels count updates):
    alpha / (1 + gamma (t - 1)); alpha itself when gamma = 0."""
    return a if gamma == 0.0 else a / (1.0 + gamma * (t - 1))


@nb.njit(cache=True, inline="always")
def clip2(gx: float, gy: float, c: float) -> tuple[float, float]:
    """The 2-D gradient (gx, gy) clipped to norm c (the rule in the module docstring)."""
    n = math.sqrt(gx * gx + gy * gy)
    if n > c:  # false for a nan norm, and always for c = inf
        if n < math.inf:
            s = c / n
            return gx * s, gy * s
        m = max(abs(gx), abs(gy))
        if m < math.inf:  # the squares overflowed: measure g / m instead
            ux = gx / m
            uy = gy / m
            nu = math.sqrt(ux * ux + uy * uy)
            if m * nu > c:
                s = c / nu
                return ux * s, uy * s
    return gx, gy


@nb.njit(cache=True, fastmath=False)  # explicit: else a callee inherits its caller's flags
def look_ahead(x: F64, v: F64, b: float, out: F64) -> F64:
    """Nesterov's look-ahead point x + beta v, written into out (returned)."""
    for i in range(x.size):
        out[i] = x[i] + b * v[i]
    return out


# Not inlined by numba, and fastmath=False set explicitly (a callee compiled for a caller
# inherits the caller's flags unless it sets its own), so that run_nd's reassoc does not
# reach these sums: they stay in coordinate order, the same bits on every CPU and, at
# d = 2, the same as clip2's.
@nb.njit(cache=True, fastmath=False)
def clip_nd(g: F64, c: float, out: F64) -> bool:
    """Clip g to norm c (the rule in the module docstring). Writes the clipped gradient
    into out (which may be g itself) and returns True when it clipped; else leaves out
    alone and returns False."""
    d = g.size
    n2 = 0.0
    for i in range(d):
        n2 += g[i] * g[i]
    n = math.sqrt(n2)
    if not n > c:
        return False
    if n < math.inf:
        s = c / n
        for i in range(d):
            out[i] = g[i] * s
        return True
    m = 0.0
    for i in range(d):
        m = max(m, abs(g[i]))
    if not m < math.inf:  # an infinite component: left as it is
        return False
    nu2 = 0.0
    for i in range(d):
        u = g[i] / m
        nu2 += u * u
    nu = math.sqrt(nu2)
    if not m * nu > c:
        return False
    s = c / nu
    for i in range(d):
        out[i] = (g[i] / m) * s
    return True
