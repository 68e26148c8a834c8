"""A held-out objective, one the agent's prompt was not tuned on (docs/sessions.md, "Where
the agent's numbers come from")."""

import numpy as np

NAME = "three_hump_camel"
MINIMUM = 0.0
MINIMISERS = [(0.0, 0.0)]
DOMAIN = (-5.0, 5.0)
FORMULA = "f(x, y) = 2 x^2 - 1.05 x^4 + x^6 / 6 + x y + y^2"


def f(x):
    return 2 * x[0] ** 2 - 1.05 * x[0] ** 4 + x[0] ** 6 / 6 + x[0] * x[1] + x[1] ** 2


def grad(x):
    return np.array([4 * x[0] - 4.2 * x[0] ** 3 + x[0] ** 5 + x[1], x[0] + 2 * x[1]])
