"""Independent plain-Python references: objectives written from their textbook formulas
and momentum GD written straight from docs/protocol.md, sharing no code with tools/."""

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


def g_ref_2d(name, x, y):
    """Hand-derived 2-D gradients for the two study objectives."""
    if name == "rosenbrock":
        return -2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)
    if name == "rastrigin":
        return 2.0 * x + 20.0 * math.pi * math.sin(TP * x), 2.0 * y + 20.0 * math.pi * math.sin(TP * y)
    raise KeyError(name)


def momentum_gd_ref(name, alpha, beta, x0=(-1.5, 2.0), max_iter=5000, tol=1e-6):
    """docs/protocol.md, literally: returns (status, iterations, final value or nan, best)."""
    x, y = x0
    vx = vy = 0.0
    best = f_ref(name, [x, y])
    for t in range(1, max_iter + 1):
        gx, gy = g_ref_2d(name, x, y)
        vx = beta * vx - alpha * gx
        vy = beta * vy - alpha * gy
        x, y = x + vx, y + vy
        try:
            f = f_ref(name, [x, y])
        except OverflowError:
            f = math.inf
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(f)):
            return "diverged", t, math.nan, best
        best = min(best, f)
        if vx * vx + vy * vy < tol * tol:  # ||v|| < tol, compared squared
            return "converged", t, f, best
    return "max_iter", max_iter, f, best
