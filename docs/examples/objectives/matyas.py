"""A held-out objective, one the agent's prompt was not tuned on (docs/sessions.md, "Where
the agent's numbers come from")."""

import numpy as np

NAME = "matyas"
MINIMUM = 0.0
MINIMISERS = [(0.0, 0.0)]
DOMAIN = (-10.0, 10.0)
FORMULA = "f(x, y) = 0.26 (x^2 + y^2) - 0.48 x y"


def f(x):
    return 0.26 * (x[0] ** 2 + x[1] ** 2) - 0.48 * x[0] * x[1]


def grad(x):
    return np.array([0.52 * x[0] - 0.48 * x[1], 0.52 * x[1] - 0.48 * x[0]])
