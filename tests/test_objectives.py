import math

import numpy as np
import pytest

from tests.reference import f_ref
from tuneloop.tools.objectives import OBJECTIVES, UnknownObjectiveError, get_objective


def _points(obj, dim, n=12, seed=0):
    rng = np.random.default_rng(seed)
    lo, hi = obj.domain
    return rng.uniform(lo * 0.8, hi * 0.8, size=(n, dim))


@pytest.mark.parametrize("name", list(OBJECTIVES))
@pytest.mark.parametrize("dim", [2, 5])
def test_value_matches_formula_and_gradient_matches_finite_differences(name, dim):
    obj = get_objective(name)
    if dim != 2 and not obj.any_dim:
        pytest.skip("2-D only objective")
    for x in _points(obj, dim):
        assert obj.value(x) == pytest.approx(f_ref(name, list(x)), rel=1e-12, abs=1e-12)
        g = obj.gradient(x)
        h = 1e-6
        for i in range(dim):
            e = np.zeros(dim)
            e[i] = h * max(1.0, abs(x[i]))
            fd = (f_ref(name, list(x + e)) - f_ref(name, list(x - e))) / (2 * e[i])
            assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-5), (name, x, i)


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_minimisers_attain_the_minimum(name):
    obj = get_objective(name)
    dims = (2, 4) if obj.any_dim else (2,)
    for d in dims:
        for m in obj.minimisers(d):
            assert obj.value(m) == pytest.approx(obj.minimum(d), abs=1e-9)
            assert np.abs(obj.gradient(m)).max() < 1e-6


def test_study_objectives_exactly_as_protocol():
    ros, ras = get_objective("rosenbrock"), get_objective("rastrigin")
    x, y = -1.5, 2.0
    assert ros.value([x, y]) == (1 - x) ** 2 + 100 * (y - x * x) ** 2
    expected = 20 + (x * x - 10 * math.cos(2 * math.pi * x)) + (y * y - 10 * math.cos(2 * math.pi * y))
    assert ras.value([x, y]) == pytest.approx(expected, rel=1e-15)


def test_registry_lookup_and_unknown_names():
    assert get_objective("Styblinski-Tang").name == "styblinski_tang"
    with pytest.raises(UnknownObjectiveError, match="known: rosenbrock, rastrigin"):
        get_objective("griewank")
    with pytest.raises(ValueError, match="dimension 2 only"):
        get_objective("beale").check_dim(3)
    assert all(o.formula and o.latex and o.domain[0] < o.domain[1] for o in OBJECTIVES.values())
