"""Independent plain-Python references: objectives written from their textbook formulas
and momentum GD written straight from docs/protocol.md, with the optional knobs written
from their formulas (Nesterov's look-ahead gradient, alpha_t = alpha / (1 + gamma t),
gradient-norm clipping), sharing no code with tools/."""

import math

TP = 2.0 * math.pi


def f_ref(name, x):
    if name == "rosenbrock":
        return sum(100.0 * (x[i + 1] - x[i] ** 2) ** 2 + (1.0 - x[i]) ** 2 for i in range(len(x) - 1))
    if name == "rastrigin":
        return 10.0 * len(x) + sum(xi * xi - 10.0 * math.cos(TP * xi) for xi in x)
    if name == "sphere":
        return sum(xi * xi for xi in x)
    if name == "quadratic":
        d = len(x)
        return sum(100.0 ** (i / (d - 1)) * x[i] ** 2 for i in range(d))
    if name == "ackley":
        d = len(x)
        return (-20.0 * math.exp(-0.2 * math.sqrt(sum(v * v for v in x) / d))
                - math.exp(sum(math.cos(TP * v) for v in x) / d) + 20.0 + math.e)
    if name == "beale":
        a, b = x
        return (1.5 - a + a * b) ** 2 + (2.25 - a + a * b * b) ** 2 + (2.625 - a + a * b ** 3) ** 2
    if name == "himmelblau":
        a, b = x
        return (a * a + b - 11) ** 2 + (a + b * b - 7) ** 2
    if name == "styblinski_tang":
        return 0.5 * sum(v ** 4 - 16 * v * v + 5 * v for v in x)
    raise KeyError(name)


def g_ref(name, x):
    """Hand-derived gradients, any dimension where the objective has one (powers written
    as products: x^3 = x x x)."""
    d = len(x)
    if name == "rosenbrock":  # d/dx_i of sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2
        g = []
        for i in range(d - 1):
            gi = -400.0 * x[i] * (x[i + 1] - x[i] * x[i]) - 2.0 * (1.0 - x[i])
            if i > 0:
                gi += 200.0 * (x[i] - x[i - 1] * x[i - 1])
            g.append(gi)
        return g + [200.0 * (x[d - 1] - x[d - 2] * x[d - 2])]
    if name == "rastrigin":
        return [2.0 * v + 20.0 * math.pi * math.sin(TP * v) for v in x]
    if name == "sphere":
        return [2.0 * v for v in x]
    if name == "quadratic":
        return [2.0 * 100.0 ** (i / (d - 1)) * x[i] for i in range(d)]
    if name == "styblinski_tang":
        return [2.0 * (v * v * v) - 16.0 * v + 2.5 for v in x]
    if name == "ackley":  # r = sqrt(mean x_i^2): 4 e^{-0.2 r} x_i / (d r) + (2 pi / d) e^{mean cos} sin(2 pi x_i)
        r = math.sqrt(sum_sq(x) / d)
        k1 = 0.0 if r == 0.0 else 4.0 * math.exp(-0.2 * r) / (d * r)
        k2 = math.exp(sum(math.cos(TP * v) for v in x) / d) * TP / d
        return [k1 * v + k2 * math.sin(TP * v) for v in x]
    if name == "himmelblau":
        a, b = x
        p, q = a * a + b - 11.0, a + b * b - 7.0
        return [4.0 * a * p + 2.0 * q, 2.0 * p + 4.0 * b * q]
    if name == "beale":
        a, b = x
        b2 = b * b
        b3 = b2 * b
        u1, u2, u3 = 1.5 - a + a * b, 2.25 - a + a * b2, 2.625 - a + a * b3
        return [2.0 * (u1 * (b - 1.0) + u2 * (b2 - 1.0) + u3 * (b3 - 1.0)),
                2.0 * a * (u1 + 2.0 * b * u2 + 3.0 * b2 * u3)]
    raise KeyError(name)


def sum_sq(v):
    """sum_i v_i^2, in coordinate order."""
    s = 0.0
    for vi in v:
        s += vi * vi
    return s


def clip_ref(g, c):
    """g scaled to norm c when ||g|| > c. When the squares overflow (every g_i finite),
    the norm is taken of u = g / max|g_i|: g -> u c / ||u|| when max|g_i| ||u|| > c. A
    non-finite g is returned as it is."""
    n = math.sqrt(sum_sq(g))
    if not n > c:
        return g
    if n < math.inf:
        return [gi * (c / n) for gi in g]
    m = max(abs(gi) for gi in g)
    if not m < math.inf:
        return g
    u = [gi / m for gi in g]
    nu = math.sqrt(sum_sq(u))
    if not m * nu > c:
        return g
    return [ui * (c / nu) for ui in u]


def _finite_or_inf(fn, x):
    """fn(x), or inf when Python raises where the float arithmetic would overflow."""
    try:
        return fn(x)
    except (OverflowError, ValueError):
        return math.inf


def gd_ref(f, grad, alpha, beta, x0, max_iter=5000, tol=1e-6, nesterov=False, lr_decay=0.0, grad_clip=None):
    """Momentum GD on f (a function of a list) with gradient grad, literally:

        g       = grad f(x_t + beta v_t) with nesterov, else grad f(x_t); then clipped
        v_{t+1} = beta v_t - alpha / (1 + lr_decay t) g          (t = 0, 1, ...)
        x_{t+1} = x_t + v_{t+1}

    stopping as docs/protocol.md says. Returns (status, iterations, final value or nan,
    best, x_final)."""
    x = [float(v) for v in x0]
    v = [0.0] * len(x)
    fx = _finite_or_inf(f, x)
    best = fx if math.isfinite(fx) else math.inf
    if not (math.isfinite(fx) and all(math.isfinite(xi) for xi in x)):
        return "diverged", 0, math.nan, best, x
    for t in range(max_iter):
        point = [xi + beta * vi for xi, vi in zip(x, v, strict=True)] if nesterov else x
        try:
            g = grad(point)
        except (OverflowError, ValueError):  # where float arithmetic gives nan or inf
            g = [math.nan] * len(x)
        if grad_clip is not None:
            g = clip_ref(g, grad_clip)
        a = alpha / (1.0 + lr_decay * t)
        v = [beta * vi - a * gi for vi, gi in zip(v, g, strict=True)]
        x = [xi + vi for xi, vi in zip(x, v, strict=True)]
        if not all(math.isfinite(xi) for xi in x):
            return "diverged", t + 1, math.nan, best, x
        fx = _finite_or_inf(f, x)
        if not math.isfinite(fx):
            return "diverged", t + 1, math.nan, best, x
        best = min(best, fx)
        if sum_sq(v) < tol * tol:  # ||v|| < tol, compared squared
            return "converged", t + 1, fx, best, x
    return "max_iter", max_iter, fx, best, x


def momentum_gd_ref(name, alpha, beta, x0=(-1.5, 2.0), max_iter=5000, tol=1e-6, **knobs):
    """gd_ref on a built-in objective: returns (status, iterations, final value or nan, best)."""
    return gd_ref(lambda x: f_ref(name, x), lambda x: g_ref(name, x), alpha, beta, x0, max_iter, tol, **knobs)[:4]
