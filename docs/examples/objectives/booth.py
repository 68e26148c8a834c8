"""A held-out objective, one the agent's prompt was not tuned on (docs/sessions.md, "Where
the agent's numbers come from")."""

import numpy as np

NAME = "booth"
MINIMUM = 0.0
MINIMISERS = [(1.0, 3.0)]
DOMAIN = (-10.0, 10.0)
FORMULA = "f(x, y) = (x + 2y - 7)^2 + (2x + y - 5)^2"


def f(x):
    return (x[0] + 2 * x[1] - 7) ** 2 + (2 * x[0] + x[1] - 5) ** 2


def grad(x):
    a, b = x[0] + 2 * x[1] - 7, 2 * x[0] + x[1] - 5
    return np.array([2 * a + 4 * b, 4 * a + 2 * b])
