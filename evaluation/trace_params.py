"""A run's parameters as the trace views read them: the run's search space (from its
manifest, or its trials), a value as tables write it, the recommendation's configuration,
the flat attributes of a configuration, and which two parameters `trace plot` draws.

A trial row carries the GD values `learning_rate` and `momentum` as the event records
them (momentum 0 when the space has none) and each other parameter under its own name
(`extra_params`); a run of the default space has only the two, as before typed spaces.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from tuneloop.tools.errors import UserError
from tuneloop.tools.formatting import PARAM_DIGITS, fmt_param, spoken_list
from tuneloop.tools.gd_space import DEFAULT_SPACE, FULL_SPACE, run_kwargs
from tuneloop.tools.record import Trace
from tuneloop.tools.space import FloatParam, SearchSpace, params_of
from tuneloop.tools.trials import EvaluatorConfig

GD_FIELDS = ("learning_rate", "momentum")  # every trial event's own fields, whatever the space


# ------------------------------------------------------------------ the run's space
def run_space(t: Trace) -> SearchSpace:
    """The space the run searched: the manifest's `space` (or, written before typed spaces,
    its `bounds`), read through EvaluatorConfig, the one reader of both forms. A trace
    without a usable manifest: the parameters its trials name, with FULL_SPACE's ranges."""
    m = t.manifest or {}
    recorded = {k: m[k] for k in ("space", "bounds") if m.get(k) is not None}
    if recorded:
        try:
            return EvaluatorConfig.model_validate(recorded).space
        except ValidationError:  # a space this tuneloop cannot run: its names still show
            pass
    return _space_from_trials(t)


def _space_from_trials(t: Trace) -> SearchSpace:
    names: dict[str, list[Any]] = {}
    for e in t.of("trial_evaluated"):
        for k, v in params_of(e).items():
            names.setdefault(k, []).append(v)
    if not names:
        return DEFAULT_SPACE
    return SearchSpace.model_validate({n: FULL_SPACE[n].model_dump() if n in FULL_SPACE.names else _seen(vs)
                                       for n, vs in names.items()})


def _seen(values: list[Any]) -> dict[str, Any]:
    """A parameter no space of ours names, as the categorical of the values it took."""
    choices = {json.dumps(v): v for v in values if isinstance(v, (bool, int, float, str))}
    return {"type": "categorical", "choices": list(choices.values()) or ["?"]}


def extra_params(names: Iterable[str]) -> list[str]:
    """The parameters beyond learning_rate and momentum (the rows' own GD fields)."""
    return [n for n in names if n not in GD_FIELDS]


def union(lists: Iterable[Iterable[str]]) -> list[str]:
    """Names in the order they first appear (the columns of runs with different spaces)."""
    return list(dict.fromkeys(n for names in lists for n in names))


def param_text(v: Any, spec: str | None = None) -> str:
    """A parameter's value in a table or a line: numbers as trials are listed (fmt_param,
    or `spec`; a number that would read 1e+01 there in plain digits), booleans as JSON
    writes them (the space's own notation), "-" when absent."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return json.dumps(v)
    if isinstance(v, (int, float)):
        text = format(v, spec) if spec else fmt_param(v)
        return f"{v:.{PARAM_DIGITS}g}" if "e+" in text else text
    return str(v)


def recommended_params(rec: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """A recommendation's configuration: its `params`, else (written before typed spaces, or
    with the parameters as fields of their own) the fields named like the space's."""
    params = rec.get("params")
    if isinstance(params, dict):
        return params
    return {n: rec[n] for n in (*GD_FIELDS, *extra_params(names)) if n in rec}


# ------------------------------------------------------------------ exports
def gd_values(e: Mapping[str, Any]) -> dict[str, Any]:
    """learning_rate and momentum of a trial, or of a rejected proposal: its own fields
    (written before typed spaces), else those of its raw `arguments`."""
    raw = e.get("arguments")
    args: dict[str, Any] = raw if isinstance(raw, dict) else {}
    return {k: e.get(k, args.get(k)) for k in GD_FIELDS}


def float_params(space: SearchSpace) -> frozenset[str]:
    """The space's float parameters (numbers that stay doubles wherever they are exported)."""
    return frozenset(n for n in space.names if isinstance(space[n], FloatParam))


def flat_params(prefix: str, params: Mapping[str, Any], floats: Collection[str],
                skip: Collection[str] = GD_FIELDS) -> dict[str, Any]:
    """`prefix + name` for each parameter not among the `skip`ped fields (by default the
    two every trial has as fields of its own), a float parameter's value a float even
    where JSON wrote 1 (one attribute, one type, in OTLP)."""
    return {f"{prefix}{k}": float(v) if k in floats and isinstance(v, int) and not isinstance(v, bool) else v
            for k, v in params.items() if k not in skip}


# ------------------------------------------------------------------ plot
def plot_axes(space: SearchSpace, axes: Sequence[str] | None = None) -> tuple[str, str]:
    """The two parameters `trace plot` draws: `axes` checked (two different continuous
    parameters of the space), or by default learning_rate and momentum when the space
    has both, else its first two continuous parameters. A bad choice is one UserError."""
    cont = space.continuous
    if axes is None:
        if "learning_rate" in cont and "momentum" in cont:
            return "learning_rate", "momentum"
        if len(cont) < 2:
            raise UserError(f"the plot needs two continuous parameters; this run's space has "
                            f"{spoken_list(list(cont)) if cont else 'none'} ({space.describe()})")
        return cont[0], cont[1]
    x, y = axes
    for n in (x, y):
        if n not in space.names:
            raise UserError(f"--axes: this run's space has no parameter {n!r} (it has {', '.join(space.names)})")
        if n not in cont:
            raise UserError(f"--axes: {n} is categorical; name two of the continuous parameters "
                            f"{', '.join(cont) or '(none)'}")
    if x == y:
        raise UserError(f"--axes names {x} twice; name two different parameters")
    return x, y


def on_landscape(space: SearchSpace, axes: tuple[str, str], rows: list[dict[str, Any]]) -> bool:
    """Whether the (log alpha, beta) landscape is the backdrop of these proposals: the axes
    are learning_rate and momentum, and every charged trial ran plain momentum GD (the
    space's other parameters absent, or off: no Nesterov, no decay, no clipping), as the
    landscape's sweep does."""
    if axes != ("learning_rate", "momentum"):
        return False
    rest = extra_params(space.names)
    return all(run_kwargs({k: r[k] for k in (*GD_FIELDS, *rest) if r.get(k) is not None})
               == run_kwargs({k: r[k] for k in GD_FIELDS}) for r in rows if r["charged"] and r.get("learning_rate"))
