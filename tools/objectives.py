"""Benchmark objectives with analytic gradients, compiled with numba, and a registry.

Every objective has a 2-D value-and-gradient function (scalars in, a tuple out, so the
2-D kernel keeps its state in registers) and, where it is defined for any dimension, an
N-D one that writes the gradient into a caller-owned array. The kernels dispatch on an
integer id (`Objective.fid`): a loop-invariant branch that LLVM hoists, which, unlike
passing jitted functions as arguments, keeps numba's on-disk cache (`cache=True`) working.

Formulas follow docs/protocol.md for Rosenbrock and Rastrigin and the usual definitions
(Jamil & Yang 2013, "A literature survey of benchmark functions for global optimisation
problems") for the rest.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numba as nb
import numpy as np
import numpy.typing as npt

from tuneloop.tools.errors import TuneloopError
from tuneloop.tools.pyfiles import load_python_file

TWO_PI = 2.0 * math.pi
# Styblinski-Tang's per-coordinate minimiser: the smallest root of 4x^3 - 32x + 5 = 0.
ST_XSTAR = -2.903534027771178
ST_FSTAR = 0.5 * (ST_XSTAR**4 - 16.0 * ST_XSTAR**2 + 5.0 * ST_XSTAR)
QUAD_KAPPA = 100.0  # condition number of the ill-conditioned quadratic

SPHERE, QUADRATIC, ROSENBROCK, RASTRIGIN, ACKLEY, BEALE, HIMMELBLAU, STYBLINSKI_TANG = range(8)


# --------------------------------------------------------------------------- 2-D
@nb.njit(cache=True, inline="always")
def fg2(fid: int, x: float, y: float) -> tuple[float, float, float]:
    """Value and gradient of objective `fid` at (x, y): returns (f, df/dx, df/dy)."""
    if fid == ROSENBROCK:
        u = 1.0 - x
        w = y - x * x
        return u * u + 100.0 * w * w, -2.0 * u - 400.0 * x * w, 200.0 * w
    elif fid == RASTRIGIN:
        cx = math.cos(TWO_PI * x)
        cy = math.cos(TWO_PI * y)
        f = 20.0 + (x * x - 10.0 * cx) + (y * y - 10.0 * cy)
        return (
            f,
            2.0 * x + 10.0 * TWO_PI * math.sin(TWO_PI * x),
            2.0 * y + 10.0 * TWO_PI * math.sin(TWO_PI * y),
        )
    elif fid == SPHERE:
        return x * x + y * y, 2.0 * x, 2.0 * y
    elif fid == QUADRATIC:
        return x * x + QUAD_KAPPA * y * y, 2.0 * x, 2.0 * QUAD_KAPPA * y
    elif fid == ACKLEY:
        r = math.sqrt(0.5 * (x * x + y * y))
        e1 = math.exp(-0.2 * r)
        cbar = 0.5 * (math.cos(TWO_PI * x) + math.cos(TWO_PI * y))
        e2 = math.exp(cbar)
        f = -20.0 * e1 - e2 + 20.0 + math.e
        # d/dx_i of -20 exp(-0.2 r) = 4 exp(-0.2 r) x_i / (n r); 0 at r = 0 (a subgradient).
        k1 = 0.0 if r == 0.0 else 4.0 * e1 / (2.0 * r)
        k2 = e2 * TWO_PI / 2.0
        return f, k1 * x + k2 * math.sin(TWO_PI * x), k1 * y + k2 * math.sin(TWO_PI * y)
    elif fid == BEALE:
        y2 = y * y
        y3 = y2 * y
        a1 = 1.5 - x + x * y
        a2 = 2.25 - x + x * y2
        a3 = 2.625 - x + x * y3
        f = a1 * a1 + a2 * a2 + a3 * a3
        gx = 2.0 * (a1 * (y - 1.0) + a2 * (y2 - 1.0) + a3 * (y3 - 1.0))
        gy = 2.0 * x * (a1 + 2.0 * y * a2 + 3.0 * y2 * a3)
        return f, gx, gy
    elif fid == HIMMELBLAU:
        p = x * x + y - 11.0
        q = x + y * y - 7.0
        return p * p + q * q, 4.0 * x * p + 2.0 * q, 2.0 * p + 4.0 * y * q
    else:  # STYBLINSKI_TANG
        f = 0.5 * ((x**4 - 16.0 * x * x + 5.0 * x) + (y**4 - 16.0 * y * y + 5.0 * y))
        return f, 2.0 * x**3 - 16.0 * x + 2.5, 2.0 * y**3 - 16.0 * y + 2.5


# --------------------------------------------------------------------------- N-D
# 'reassoc' lets LLVM vectorise the sums; it does not touch NaN/Inf semantics (nnan/ninf
# would break divergence detection, so they are never enabled).
_ND_FLAGS = {"reassoc"}


@nb.njit(cache=True, fastmath=_ND_FLAGS)
def fg_nd(fid: int, x: np.ndarray, g: np.ndarray) -> float:
    """Value of objective `fid` at x; writes the gradient into g (same length as x)."""
    d = x.size
    f = 0.0
    if fid == ROSENBROCK:  # chained: sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2
        t0 = x[1] - x[0] * x[0]
        u0 = 1.0 - x[0]
        f = 100.0 * t0 * t0 + u0 * u0
        g[0] = -400.0 * x[0] * t0 - 2.0 * u0
        for i in range(1, d - 1):
            t = x[i + 1] - x[i] * x[i]
            u = 1.0 - x[i]
            tp = x[i] - x[i - 1] * x[i - 1]
            f += 100.0 * t * t + u * u
            g[i] = -400.0 * x[i] * t - 2.0 * u + 200.0 * tp
        g[d - 1] = 200.0 * (x[d - 1] - x[d - 2] * x[d - 2])
    elif fid == RASTRIGIN:
        f = 10.0 * d
        for i in range(d):
            f += x[i] * x[i] - 10.0 * math.cos(TWO_PI * x[i])
            g[i] = 2.0 * x[i] + 10.0 * TWO_PI * math.sin(TWO_PI * x[i])
    elif fid == SPHERE:
        for i in range(d):
            f += x[i] * x[i]
            g[i] = 2.0 * x[i]
    elif fid == QUADRATIC:
        for i in range(d):
            c = QUAD_KAPPA ** (i / (d - 1))
            f += c * x[i] * x[i]
            g[i] = 2.0 * c * x[i]
    elif fid == ACKLEY:
        s = 0.0
        cs = 0.0
        for i in range(d):
            s += x[i] * x[i]
            cs += math.cos(TWO_PI * x[i])
        r = math.sqrt(s / d)
        e1 = math.exp(-0.2 * r)
        e2 = math.exp(cs / d)
        f = -20.0 * e1 - e2 + 20.0 + math.e
        k1 = 0.0 if r == 0.0 else 4.0 * e1 / (d * r)
        k2 = e2 * TWO_PI / d
        for i in range(d):
            g[i] = k1 * x[i] + k2 * math.sin(TWO_PI * x[i])
    elif fid == STYBLINSKI_TANG:
        for i in range(d):
            xi = x[i]
            f += 0.5 * (xi**4 - 16.0 * xi * xi + 5.0 * xi)
            g[i] = 2.0 * xi**3 - 16.0 * xi + 2.5
    else:  # 2-D-only objectives reach here only with d == 2
        f, gx, gy = fg2(fid, x[0], x[1])
        g[0] = gx
        g[1] = gy
    return f


# ------------------------------------------------------------------ the registry
@dataclass(frozen=True)
class Objective:
    """A benchmark objective: its compiled id, formula, minimisers and default domain."""

    name: str
    fid: int
    formula: str  # plain text, for prompts and the CLI
    latex: str
    domain: tuple[float, float]  # default box per coordinate, for plots and random starts
    any_dim: bool  # False: 2-D only
    description: str
    _minimisers_2d: tuple[tuple[float, float], ...] = field(default=())

    @property
    def title(self) -> str:
        """How prompts and tables name it (a file's NAME; a built-in's name)."""
        return self.name

    def minimisers(self, dim: int = 2) -> np.ndarray:
        """All known global minimisers as a (k, dim) array."""
        if dim == 2 and self._minimisers_2d:
            return np.array(self._minimisers_2d, dtype=np.float64)
        point = {ROSENBROCK: 1.0, STYBLINSKI_TANG: ST_XSTAR}.get(self.fid, 0.0)
        return np.full((1, dim), point)

    def minimum(self, dim: int = 2) -> float:
        """The global minimum value."""
        return ST_FSTAR * dim if self.fid == STYBLINSKI_TANG else 0.0

    def check_dim(self, dim: int) -> None:
        if dim < 2 or (dim != 2 and not self.any_dim):
            allowed = "any dimension >= 2" if self.any_dim else "dimension 2 only"
            raise ValueError(f"{self.name} is defined for {allowed}, not {dim}")

    def value(self, x: np.ndarray | list[float]) -> float:
        """f(x), through the same compiled code the kernel uses."""
        xa = np.ascontiguousarray(x, dtype=np.float64)
        self.check_dim(xa.size)
        if xa.size == 2:
            return fg2(self.fid, xa[0], xa[1])[0]
        return fg_nd(self.fid, xa, np.empty_like(xa))

    def gradient(self, x: np.ndarray | list[float]) -> np.ndarray:
        xa = np.ascontiguousarray(x, dtype=np.float64)
        self.check_dim(xa.size)
        if xa.size == 2:
            _, gx, gy = fg2(self.fid, xa[0], xa[1])
            return np.array([gx, gy])
        g = np.empty_like(xa)
        fg_nd(self.fid, xa, g)
        return g


OBJECTIVES: dict[str, Objective] = {
    o.name: o
    for o in (
        Objective(
            "rosenbrock", ROSENBROCK,
            "f(x, y) = (1 - x)^2 + 100 (y - x^2)^2; N-D: sum_i 100 (x_{i+1} - x_i^2)^2 + (1 - x_i)^2",
            r"f(x,y) = (1-x)^2 + 100\,(y-x^2)^2",
            (-2.0, 2.0), True,
            "narrow curved valley; global minimum 0 at (1, ..., 1)",
        ),
        Objective(
            "rastrigin", RASTRIGIN,
            "f(x, y) = 20 + (x^2 - 10 cos(2 pi x)) + (y^2 - 10 cos(2 pi y)); "
            "N-D: 10 N + sum_i (x_i^2 - 10 cos(2 pi x_i))",
            r"f(x,y) = 20 + (x^2 - 10\cos 2\pi x) + (y^2 - 10\cos 2\pi y)",
            (-5.12, 5.12), True,
            "many regularly spaced local minima; global minimum 0 at the origin",
        ),
        Objective(
            "sphere", SPHERE, "f(x) = sum_i x_i^2", r"f(x) = \sum_i x_i^2",
            (-5.12, 5.12), True, "convex, well conditioned; global minimum 0 at the origin",
        ),
        Objective(
            "quadratic", QUADRATIC,
            "f(x) = sum_i 100^(i/(N-1)) x_i^2  (2-D: x^2 + 100 y^2, condition number 100)",
            r"f(x) = \sum_i 100^{i/(N-1)} x_i^2",
            (-5.0, 5.0), True, "ill-conditioned convex quadratic; global minimum 0 at the origin",
        ),
        Objective(
            "ackley", ACKLEY,
            "f(x) = -20 exp(-0.2 sqrt(mean_i x_i^2)) - exp(mean_i cos(2 pi x_i)) + 20 + e",
            r"f(x) = -20 e^{-0.2\sqrt{\frac1N\sum x_i^2}} - e^{\frac1N\sum\cos 2\pi x_i} + 20 + e",
            (-5.0, 5.0), True, "nearly flat outer region, deep central hole; minimum 0 at the origin",
        ),
        Objective(
            "beale", BEALE,
            "f(x, y) = (1.5 - x + x y)^2 + (2.25 - x + x y^2)^2 + (2.625 - x + x y^3)^2",
            r"f(x,y) = (1.5-x+xy)^2 + (2.25-x+xy^2)^2 + (2.625-x+xy^3)^2",
            (-4.5, 4.5), False, "2-D only; sharp ridges; global minimum 0 at (3, 0.5)",
            ((3.0, 0.5),),
        ),
        Objective(
            "himmelblau", HIMMELBLAU,
            "f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2",
            r"f(x,y) = (x^2+y-11)^2 + (x+y^2-7)^2",
            (-5.0, 5.0), False, "2-D only; four global minima of value 0",
            (
                (3.0, 2.0),
                (-2.805118086952745, 3.131312518250573),
                (-3.779310253377747, -3.283185991286170),
                (3.584428340330492, -1.848126526964404),
            ),
        ),
        Objective(
            "styblinski_tang", STYBLINSKI_TANG,
            "f(x) = 0.5 sum_i (x_i^4 - 16 x_i^2 + 5 x_i)",
            r"f(x) = \tfrac12\sum_i (x_i^4 - 16x_i^2 + 5x_i)",
            (-5.0, 5.0), True,
            "global minimum -39.16617 N at x_i = -2.903534; a local minimum per coordinate at x_i = 2.7468",
        ),
    )
}


class UnknownObjectiveError(TuneloopError, ValueError):
    pass


def get_objective(name: str) -> Objective:
    """Look an objective up by name (case-insensitive; '-' and '_' are the same), or load
    it from a Python file when `name` is a path (see "Objectives from a file" below)."""
    if is_objective_file(name):
        return load_objective_file(name)
    key = name.strip().lower().replace("-", "_")
    try:
        return OBJECTIVES[key]
    except KeyError:
        raise UnknownObjectiveError(
            f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}"
        ) from None


# ------------------------------------------------------------ objectives from a file
# Objectives from a user's Python file: `--function path/to/booth.py`.
#
# The file defines, with NumPy on a 1-D float array x,
#
#     def f(x):    return a float           (required)
#     def grad(x): return an array          (required, the gradient of f)
#     NAME = "booth"                        (optional; else the file's stem)
#     MINIMUM = 0.0                         (optional: the global minimum value)
#     MINIMISERS = [(1.0, 3.0)]             (optional: where it is reached)
#     DOMAIN = (-10.0, 10.0)                (optional: a box per coordinate, for plots)
#     FORMULA = "f(x, y) = ..."             (optional: text for prompts)
#
# tuneloop compiles f and grad with numba and runs them through the function-argument
# kernels (tools/kernels.run_fn, batch_fn), which share the built-ins' update and stop
# rule. Without MINIMUM the score ranks runs by the final value itself (tools/scoring).
# A file that is missing, does not run, lacks f or grad, or whose functions numba cannot
# compile is one ObjectiveFileError naming the problem.
USER_FID = -1  # the id of an objective given as functions: the kernels' run_fn / batch_fn run it
FD_STEP = 1e-6
FD_TOLERANCE = 1e-4  # relative disagreement of the gradient with finite differences that warns


class ObjectiveFileError(UnknownObjectiveError):
    """An objective file that cannot be used; the message says why."""


def is_objective_file(name: str) -> bool:
    """Whether a --function value names a file rather than a built-in objective."""
    return name.endswith(".py") or "/" in name


@dataclass(frozen=True)
class UserObjective(Objective):
    """An objective from a file: its compiled f and grad, and what the file says about it."""

    path: str = ""
    sha256: str = ""
    f: Any = None  # numba dispatchers
    grad: Any = None
    known_minimum: float | None = None
    known_minimisers: tuple[tuple[float, ...], ...] = field(default=())

    @property
    def title(self) -> str:
        return self.description

    def minimisers(self, dim: int = 2) -> np.ndarray:
        pts = [p for p in self.known_minimisers if len(p) == dim]
        return np.array(pts, dtype=np.float64).reshape(len(pts), dim)

    def minimum(self, dim: int = 2) -> float | None:  # type: ignore[override]
        return self.known_minimum

    def check_dim(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"{self.name} needs at least one coordinate")

    def value(self, x: npt.ArrayLike) -> float:
        return float(self.f(np.ascontiguousarray(x, dtype=np.float64)))

    def gradient(self, x: npt.ArrayLike) -> np.ndarray:
        return np.asarray(self.grad(np.ascontiguousarray(x, dtype=np.float64)), dtype=np.float64)

    def gradient_warning(self, x0: npt.ArrayLike) -> str | None:
        """A sentence when grad disagrees with central finite differences of f at x0."""
        x = np.asarray(x0, dtype=np.float64)
        g = self.gradient(x)
        fd = np.empty_like(x)
        for i in range(x.size):
            h = FD_STEP * max(1.0, abs(x[i]))
            up, down = x.copy(), x.copy()
            up[i] += h
            down[i] -= h
            fd[i] = (self.value(up) - self.value(down)) / (2 * h)
        err = float(np.max(np.abs(g - fd)) / max(1.0, float(np.max(np.abs(fd)))))
        if not math.isfinite(err) or err > FD_TOLERANCE:
            return (f"{self.path}: grad(x0) = {np.round(g, 6).tolist()} but finite differences of f give "
                    f"{np.round(fd, 6).tolist()} (relative difference {err:.2g}): check grad")
        return None


_CACHE: dict[tuple[str, str], UserObjective] = {}


def load_objective_file(path_text: str) -> UserObjective:
    """Load, check and compile an objective file (cached by path and content)."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise ObjectiveFileError(f"objective file not found: {path_text}")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = (str(path.resolve()), digest)
    if key in _CACHE:
        return _CACHE[key]
    module = load_python_file(path, path_text, "objective", ObjectiveFileError)
    for name in ("f", "grad"):
        if not callable(getattr(module, name, None)):
            raise ObjectiveFileError(f"{path_text} defines no function {name}(x): it needs f(x) and grad(x)")
    f, grad = _compile(module.f, "f", path_text), _compile(module.grad, "grad", path_text)
    _probe(f, grad, path_text)
    minimum = getattr(module, "MINIMUM", None)
    label = str(getattr(module, "NAME", path.stem))
    obj = UserObjective(
        name=str(path.resolve()), fid=USER_FID, formula=str(getattr(module, "FORMULA", f"{label} (from {path.name})")),
        latex="", domain=cast(tuple[float, float], tuple(float(v) for v in getattr(module, "DOMAIN", (-2.0, 2.0)))),
        any_dim=True,
        description=label, path=str(path.resolve()), sha256=digest, f=f, grad=grad,
        known_minimum=None if minimum is None else float(minimum),
        known_minimisers=tuple(tuple(float(v) for v in p) for p in getattr(module, "MINIMISERS", ())),
    )
    _CACHE[key] = obj
    return obj


def _compile(fn: Callable[..., Any], name: str, shown: str) -> Any:
    import numba as nb

    try:
        return nb.njit(fn)
    except Exception as e:  # noqa: BLE001
        raise ObjectiveFileError(f"numba cannot compile {name} in {shown}: {str(e).splitlines()[0]}") from None


def _probe(f: Callable[..., Any], grad: Callable[..., Any], shown: str) -> None:
    """Compile both functions now, on a 2-D point, so a problem shows before any run."""
    x = np.full(2, 0.5)
    for name, fn in (("f", f), ("grad", grad)):
        try:
            out = fn(x)
        except Exception as e:  # noqa: BLE001 - numba's TypingError, or the function's own error
            first = next((line for line in str(e).splitlines() if line.strip()), type(e).__name__)
            raise ObjectiveFileError(f"numba cannot compile {name} in {shown}: {first[:200]}") from None
        if name == "f" and not isinstance(out, (float, int, np.floating, np.integer)):
            raise ObjectiveFileError(f"f in {shown} must return a float, got {type(out).__name__}")
        if name == "grad" and np.shape(out) != (2,):
            raise ObjectiveFileError(f"grad in {shown} must return an array like x (shape (2,) for a 2-D x), "
                                     f"got shape {np.shape(out)}")
