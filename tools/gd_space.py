"""The parameters momentum GD takes, and its default search space (the study's).

    learning_rate  alpha > 0                      (required)
    momentum       beta in [0, 1)                 (absent: 0, plain gradient descent)
    nesterov       true / false                   (absent: false)
    lr_decay       gamma >= 0, alpha_t = alpha / (1 + gamma t)   (absent: 0)
    grad_clip      c > 0, the gradient's norm clipped at c       (absent: no clipping)

tools/knobs.py states what the last three do to the update.

    >>> check_gd_space(DEFAULT_SPACE).describe()
    'learning_rate in [1e-4, 1e-1], momentum in [0, 0.99]'
    >>> run_kwargs({"learning_rate": 1e-3, "nesterov": True})
    {'alpha': 0.001, 'beta': 0.0, 'nesterov': True, 'lr_decay': 0.0, 'grad_clip': None}
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tuneloop.tools.defaults import DEFAULT_GRAD_CLIP, DEFAULT_LR_DECAY, DEFAULT_NESTEROV
from tuneloop.tools.formatting import spoken_list
from tuneloop.tools.space import CategoricalParam, SearchSpace, SpaceError

# what a model is told each parameter is (the tool's argument descriptions)
DESCRIPTIONS = {
    "learning_rate": "learning rate alpha",
    "momentum": "momentum beta",
    "nesterov": "Nesterov look-ahead gradient",
    "lr_decay": "learning-rate decay gamma, alpha_t = alpha / (1 + gamma t)",
    "grad_clip": "gradient-norm clip c",
}
# the short name trial lists give a parameter (prompts, a person's screen): "lr=1e-3"
SHORT_LABELS = {"learning_rate": "lr"}
# how prompts name them: "learning_rate (alpha)"
SYMBOLS = {"learning_rate": "alpha", "momentum": "beta", "lr_decay": "gamma", "grad_clip": "c"}

# The study's ranges, the default: alpha in [1e-4, 0.1] on a log scale (the span of its
# grid: wide enough for every built-in objective's good region, without the decades above
# 0.1 where momentum GD diverges on all of them) and beta in [0, 0.99].
DEFAULT_SPACE = SearchSpace.model_validate({
    "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
})

# every knob of the update: the five-parameter space of the docs' study
FULL_SPACE = SearchSpace.model_validate(DEFAULT_SPACE.to_json() | {
    "nesterov": {"type": "categorical", "choices": [False, True]},
    "lr_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
    "grad_clip": {"type": "float", "low": 0.1, "high": 100.0, "log": True},
})

_VALUE_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "learning_rate": (lambda v: v > 0, "> 0"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "lr_decay": (lambda v: v >= 0, ">= 0"),
    "grad_clip": (lambda v: v > 0, "> 0"),
}


def check_gd_space(space: SearchSpace) -> SearchSpace:
    """`space` if momentum GD can run every configuration in it, else a SpaceError saying
    which parameter it does not take or which range reaches where it cannot run."""
    unknown = [n for n in space if n not in DESCRIPTIONS]
    if unknown:
        raise SpaceError(f"gradient descent with momentum takes no parameter {', '.join(map(repr, unknown))} "
                         f"(it takes {', '.join(DESCRIPTIONS)})")
    if "learning_rate" not in space:
        raise SpaceError("the search space needs a learning_rate")
    for name in space:
        p = space[name]
        if name == "nesterov":
            if not (isinstance(p, CategoricalParam) and all(isinstance(c, bool) for c in p.choices)):
                raise SpaceError('nesterov must be categorical with choices among [false, true]')
            continue
        ok, rule = _VALUE_RULES[name]
        if isinstance(p, CategoricalParam):
            values = list(p.choices)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise SpaceError(f"{name}'s choices must be numbers")
        else:
            values = [p.low, p.high]
        if not all(ok(v) for v in values):
            raise SpaceError(f"{name} must be {rule}: its range {p.range_text()} is not")
    return space


def run_kwargs(params: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration as tools.momentum.run's keyword arguments; a knob the space lacks
    is off."""
    return {
        "alpha": float(params["learning_rate"]),
        "beta": float(params.get("momentum", 0.0)),
        "nesterov": bool(params.get("nesterov", DEFAULT_NESTEROV)),
        "lr_decay": float(params.get("lr_decay", DEFAULT_LR_DECAY)),
        "grad_clip": float(params["grad_clip"]) if "grad_clip" in params else DEFAULT_GRAD_CLIP,
    }


LEGACY_ALPHA_FLOOR = 1e-6  # where a recorded range open at 0, "(0, ...", starts on the log scale
LEGACY_BETA_CEILING = 0.999  # where a recorded range up to 1, "..., 1)", stops


def space_from_bounds(bounds: Mapping[str, float]) -> dict[str, Any]:
    """The space of the `bounds` a manifest written before typed spaces records
    ({alpha_min, alpha_max, beta_min, beta_max}: alpha searched on a log scale then too).

    >>> space_from_bounds({"alpha_min": 0.0, "alpha_max": 1.0, "beta_max": 1.0})["learning_rate"]
    {'type': 'float', 'low': 1e-06, 'high': 1.0, 'log': True}
    """
    d = DEFAULT_SPACE.to_json()
    lr, mom = d["learning_rate"], d["momentum"]
    lo = float(bounds.get("alpha_min", lr["low"]))
    hi = float(bounds.get("beta_max", mom["high"]))
    return {"learning_rate": {"type": "float", "low": lo if lo > 0 else LEGACY_ALPHA_FLOOR,
                              "high": float(bounds.get("alpha_max", lr["high"])), "log": True},
            "momentum": {"type": "float", "low": float(bounds.get("beta_min", mom["low"])),
                         "high": hi if hi < 1 else LEGACY_BETA_CEILING, "log": False}}


def space_text(space: SearchSpace) -> str:
    """The space as prompts say it: 'learning_rate (alpha) in [0.0001, 0.1] and momentum
    (beta) in [0, 0.99]'.

    A log-scale range is written in plain decimals although the model writes and reads
    its values in scientific notation (agent/gbnf.py): the embedded model copies numbers
    it has read, and a bound in its own notation ('1e-4') was the proposal it copied most
    (docs/sessions.md, "Where the agent's numbers come from").

    >>> space_text(FULL_SPACE).count(" in "), space_text(DEFAULT_SPACE)
    (5, 'learning_rate (alpha) in [0.0001, 0.1] and momentum (beta) in [0, 0.99]')
    """
    labels = [f"{n} ({SYMBOLS[n]})" if n in SYMBOLS else n for n in space]
    return spoken_list([f"{label} in {space[n].range_text(sci=False)}" for label, n in zip(labels, space, strict=True)])
