"""Near-repeats: configurations so close to a tried one that they would teach little more.

The embedded model, asked for "a configuration not tried before", nudges its last number
by one step of its notation (momentum 0.981, 0.982, 0.983, ...), trial after trial: exact
repeats are already kept out of the decoder (agent/decoding.py `exhausted`), these are
kept out too, within a radius measured on each number's axis (`unit_coordinate`).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tuneloop.agent.gbnf import is_log_scale, value_sentences
from tuneloop.tools.space import json_key


def unit_coordinate(prop: dict, value: Any) -> float | None:
    """Where a number lies on its property's axis, in [0, 1] (log10 on a log-scale range,
    as agent.gbnf writes it); None for a value that is not a bounded number.

    >>> unit_coordinate({"type": "number", "minimum": 1e-4, "maximum": 0.1}, 1e-3)
    0.3333333333333333
    >>> unit_coordinate({"type": "number", "minimum": 0, "maximum": 0.99}, 0.495), unit_coordinate({"enum": [1, 2]}, 1)
    (0.5, None)
    """
    lo, hi = prop.get("minimum"), prop.get("maximum")
    if prop.get("type") not in ("number", "integer") or isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not isinstance(lo, (int, float)) or not isinstance(hi, (int, float)) or not lo < hi:
        return None
    if is_log_scale(prop) and lo > 0 and value > 0:
        return (math.log10(value) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    return (float(value) - lo) / (hi - lo)


def _near(prop: dict, a: Any, b: Any, radius: float) -> bool:
    ua, ub = unit_coordinate(prop, a), unit_coordinate(prop, b)
    return json_key(a) == json_key(b) if ua is None or ub is None else abs(ua - ub) < radius


def near_repeats(avoid: Sequence[dict[str, Any]], chosen: dict[str, Any], props: dict, name: str,
                 radius: float) -> list[Any]:
    """The values of the last property `name` (a bounded number) that, with the values
    already `chosen`, would land within `radius` of an `avoid` argument set on every
    number's axis (unit_coordinate; a choice must be equal): a near-repeat, a trial that
    would teach little more than the one it neighbours. Without it a small model nudges
    its last number by one step, trial after trial (docs/sessions.md). [] for a property
    that is not a bounded number.

    >>> props = {"lr": {"type": "number", "minimum": 1e-4, "maximum": 0.1},
    ...          "m": {"type": "number", "minimum": 0, "maximum": 1}}
    >>> near = near_repeats([{"lr": 1e-3, "m": 0.5}], {"lr": 1.1e-3}, props, "m", 0.02)
    >>> len(near), min(near), max(near)
    (39, 0.481, 0.519)
    >>> near_repeats([{"lr": 1e-3, "m": 0.5}], {"lr": 1e-2}, props, "m", 0.02)
    []
    """
    prop = props[name]
    if prop.get("type") not in ("number", "integer"):
        return []
    axis = _axis(json.dumps(prop, sort_keys=True))
    if axis is None:
        return []
    values, coords = axis
    centres = [unit_coordinate(prop, a[name]) for a in avoid
               if name in a and set(a) - {name} == set(chosen)
               and all(_near(props[k], a[k], v, radius) for k, v in chosen.items())]
    centres_u = np.array([c for c in centres if c is not None])
    if not centres_u.size:
        return []
    near = (np.abs(coords[:, None] - centres_u[None, :]) < radius).any(axis=1)
    return [v for v, hit in zip(values, near, strict=True) if hit]


@functools.lru_cache(maxsize=64)
def _axis(prop_json: str) -> tuple[list[Any], np.ndarray] | None:
    """A number property's values (its language's sentences, as JSON values) and their
    unit coordinates, computed once per property (a session asks every call)."""
    prop = json.loads(prop_json)
    sentences = value_sentences(prop)
    if sentences is None:
        return None
    values = [json.loads(x) for x in sentences]
    coords = [unit_coordinate(prop, v) for v in values]
    return values, np.array([np.nan if c is None else c for c in coords])
