"""Typed search spaces: named parameters in Optuna's vocabulary, validated by pydantic,
written as JSON, and the one place that knows how a parameter maps to the unit interval.

A space file is a JSON object of parameters:

    {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": true},
     "momentum": {"type": "float", "low": 0, "high": 0.99},
     "nesterov": {"type": "categorical", "choices": [false, true]},
     "lr_decay": {"type": "float", "low": 0, "high": 0.01},
     "grad_clip": {"type": "float", "low": 0.1, "high": 100, "log": true}}

    >>> space = SearchSpace.model_validate({"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    ...                                     "layers": {"type": "int", "low": 1, "high": 4},
    ...                                     "act": {"type": "categorical", "choices": ["relu", "tanh"]}})
    >>> space.names, space.continuous
    (('lr', 'layers', 'act'), ('lr', 'layers'))
    >>> space.check({"lr": 1e-2, "layers": 5, "act": "relu"})
    'layers=5 is outside the allowed range [1, 4] (integer)'
    >>> space.coerce({"lr": "0.01", "layers": 2.0, "act": "tanh"})
    {'lr': 0.01, 'layers': 2, 'act': 'tanh'}
    >>> [round(float(v), 3) for v in space.to_unit({"lr": 1e-2, "layers": 2, "act": "tanh"})]
    [0.667, 0.333]

Unit coordinates (`to_unit`, `from_unit`) cover the continuous part (float and int
parameters, in order): log10 for a log parameter, then scaled to [0, 1]. CMA-ES searches
there; diversity and KD-trees measure there.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, model_validator

from tuneloop.tools.errors import UserError
from tuneloop.tools.formatting import fmt_lr, fmt_param

Choice = bool | int | float | str  # a categorical value: what JSON can write as a literal


class FloatParam(BaseModel):
    """A real number in [low, high]; `log`: searched on a log scale (low > 0)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["float"] = "float"
    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-scale range needs low > 0, got {self.low:g}")
        return self

    def range_text(self, sci: bool = True) -> str:
        """'[1e-4, 1e-1]'; with sci=False a log-scale range in plain decimals, '[0.0001, 0.1]'."""
        fmt = fmt_lr if self.log and sci else (
            (lambda v: np.format_float_positional(v, trim="-")) if self.log else (lambda v: f"{v:g}"))
        return f"[{fmt(self.low)}, {fmt(self.high)}]"

    def json_schema(self) -> dict[str, Any]:
        return {"type": "number", "minimum": self.low, "maximum": self.high}


class IntParam(BaseModel):
    """An integer in [low, high], on the grid low, low + step, ...; `log`: searched on a
    log scale (low >= 1, step 1, as Optuna requires)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["int"] = "int"
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("a log-scale integer range needs low >= 1 and step 1")
        if (self.high - self.low) % self.step:
            raise ValueError(f"high - low ({self.high - self.low}) must be a multiple of step ({self.step})")
        return self

    def range_text(self, sci: bool = True) -> str:
        """'[1, 4] (integer)'; `sci` is taken for one signature with FloatParam's (an integer has one notation)."""
        step = f" step {self.step}" if self.step != 1 else ""
        return f"[{self.low}, {self.high}]{step} (integer)"

    def json_schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer", "minimum": self.low, "maximum": self.high}
        if self.step != 1:
            out["multipleOf"] = self.step  # exact when low is on the step's grid, else shown in the text
        return out


class CategoricalParam(BaseModel):
    """One of `choices` (JSON literals: booleans, numbers, strings)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["categorical"] = "categorical"
    choices: tuple[Choice, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> CategoricalParam:
        keys = [json.dumps(c) for c in self.choices]
        if len(set(keys)) != len(keys):
            raise ValueError("choices must be distinct")
        return self

    def range_text(self, sci: bool = True) -> str:
        """'{"relu", "tanh"}'; `sci` is taken for one signature with FloatParam's (a choice has one notation)."""
        return "{" + ", ".join(json.dumps(c) for c in self.choices) + "}"

    def json_schema(self) -> dict[str, Any]:
        return {"enum": list(self.choices)}


Param = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


class SpaceError(UserError, ValueError):
    """A search space that cannot be used (a bad file, a parameter the objective lacks)."""


class SearchSpace(RootModel[dict[str, Param]]):
    """Named parameters, in the order given (the order prompts, tables and coordinates use)."""

    model_config = ConfigDict(frozen=True)

    @model_validator(mode="after")
    def _not_empty(self) -> SearchSpace:
        if not self.root:
            raise ValueError("a search space needs at least one parameter")
        for name in self.root:
            if not name.isidentifier():
                raise ValueError(f"parameter name {name!r} is not an identifier (letters, digits, _)")
        return self

    # ------------------------------------------------------------ reading
    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        """Read a space file; any problem is one SpaceError naming the file."""
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise SpaceError(f"cannot read the space file {path}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise SpaceError(f"the space file {path} is not JSON: {e.msg} (line {e.lineno})") from None
        return cls.parse(data, where=f"the space file {path}")

    @classmethod
    def parse(cls, data: Any, where: str = "the search space") -> SearchSpace:
        """Validate a space's JSON form; a problem is one SpaceError line."""
        if isinstance(data, SearchSpace):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            loc = ".".join(str(p) for p in err["loc"] if p not in ("float", "int", "categorical"))
            given = err.get("input")
            kind = given.get("type") if isinstance(given, dict) else None
            msg = {"union_tag_invalid": f"unknown type {kind!r}: a parameter's type is float, int or categorical",
                   "union_tag_not_found": "every parameter needs a type: float, int or categorical",
                   "too_short": "needs at least one choice",
                   "dict_type": "must be a JSON object" + (" of parameters" if not loc else ""),
                   "extra_forbidden": "is not a setting of this kind of parameter"}.get(err["type"], err["msg"])
            raise SpaceError(f"{where}: {loc + ': ' if loc else ''}{msg.removeprefix('Value error, ')}") from None

    # ------------------------------------------------------------ shape
    def __iter__(self) -> Iterator[str]:  # type: ignore[override]  # names, as a dict iterates
        return iter(self.root)

    def __getitem__(self, name: str) -> FloatParam | IntParam | CategoricalParam:
        return self.root[name]

    def __len__(self) -> int:
        return len(self.root)

    def __hash__(self) -> int:
        return hash(self.model_dump_json())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.root)

    @property
    def continuous(self) -> tuple[str, ...]:
        """The float and int parameters, in order: the unit cube's axes."""
        return tuple(n for n, p in self.root.items() if not isinstance(p, CategoricalParam))

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(n for n, p in self.root.items() if isinstance(p, CategoricalParam))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = self.model_dump(mode="json")
        return out

    # ------------------------------------------------------------ values
    def coerce(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A proposal as typed values, in the space's order; raises ValueError saying what
        is wrong (missing, unknown, not a number, not an integer, not a choice). Ranges are
        `check`'s business. Numbers may come as text (a model's "0.01"); a choice as its
        JSON text ("true" for true)."""
        problems = []
        unknown = [k for k in raw if k not in self.root]
        if unknown:
            problems.append(f"unexpected argument(s) {', '.join(map(str, unknown))}")
        out: dict[str, Any] = {}
        for name, p in self.root.items():
            if name not in raw or raw[name] is None:
                problems.append(f"{name}: missing")
                continue
            try:
                out[name] = _coerce(p, raw[name])
            except ValueError as e:
                problems.append(f"{name}: {e}")
        if problems:
            raise ValueError("; ".join(problems))
        return out

    def check(self, params: Mapping[str, Any]) -> str | None:
        """None if typed `params` (see coerce) lie in the space, else what is wrong, in words."""
        problems = []
        for name, p in self.root.items():
            v = params[name]
            if isinstance(p, CategoricalParam):
                if not any(_same_choice(v, c) for c in p.choices):
                    problems.append(f"{name}={v!r} is not one of {p.range_text()}")
            elif not p.low <= v <= p.high:
                problems.append(f"{name}={v!r} is outside the allowed range {p.range_text()}")
            elif isinstance(p, IntParam) and (v - p.low) % p.step:
                problems.append(f"{name}={v!r} is not on the range's step {p.range_text()}")
        return "; ".join(problems) or None

    def key(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        """A hashable key of a configuration (the Evaluator's cache); a choice as JSON
        compares it (json_key), so that true and 1 stay apart."""
        return tuple(json_key(params[n]) if isinstance(self.root[n], CategoricalParam) else params[n]
                     for n in self.root)

    def fmt(self, name: str, v: Any, sci: bool = True) -> str:
        """One value as prompts and tables write it: a log-scale float in scientific
        notation (every decade reads alike; with sci=False in its shortest exact form, as
        every other float), an integer as it is, a choice as its JSON literal."""
        p = self.root.get(name)
        if isinstance(p, CategoricalParam) or isinstance(v, (bool, str)):
            return json.dumps(v)
        if isinstance(p, IntParam):
            return str(int(v))
        return fmt_lr(v) if sci and p is not None and p.log else fmt_param(v)

    def format(self, params: Mapping[str, Any], labels: Mapping[str, str] | None = None, sci: bool = True,
               sep: str = ", ") -> str:
        """'learning_rate=1e-3, momentum=0.9': every parameter present, in the space's order,
        each under its label (`labels` may shorten a name)."""
        return sep.join(f"{(labels or {}).get(n, n)}={self.fmt(n, params[n], sci)}" for n in self.root if n in params)

    def describe(self, sci: bool = True) -> str:
        """What the space allows, one parameter per item: 'lr in [1e-4, 1e-1], ...'; with
        sci=False a float's log-scale range in plain decimals, as prompts write it.

        >>> space = SearchSpace.model_validate({"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True}})
        >>> space.describe(), space.describe(sci=False)
        ('lr in [1e-4, 1e0]', 'lr in [0.0001, 1]')
        """
        return ", ".join(f"{n} in {p.range_text(sci)}" for n, p in self.root.items())

    # ------------------------------------------------------------ unit coordinates
    def _axis(self, name: str) -> tuple[float, float, bool]:
        p = self.root[name]
        assert not isinstance(p, CategoricalParam)
        if p.log:
            return math.log10(p.low), math.log10(p.high), True
        return float(p.low), float(p.high), False

    @property
    def lows(self) -> np.ndarray:
        return np.array([self._axis(n)[0] for n in self.continuous])

    @property
    def highs(self) -> np.ndarray:
        return np.array([self._axis(n)[1] for n in self.continuous])

    def from_unit(self, z: np.ndarray) -> dict[str, Any]:
        """[0, 1]^c -> the continuous parameters (log ones as 10 ** x; ints rounded to the
        nearest step and kept in range)."""
        return {name: self.value_at(name, float(zi)) for name, zi in zip(self.continuous, z, strict=True)}

    def value_at(self, name: str, z: float) -> float | int:
        """One continuous parameter's value at unit coordinate `z` (from_unit's, per axis)."""
        lo, hi, log = self._axis(name)
        x = lo + min(1.0, max(0.0, z)) * (hi - lo)
        v = 10.0**x if log else x
        p = self.root[name]
        if isinstance(p, IntParam):
            k = round((float(v) - p.low) / p.step)
            return int(min(p.high, max(p.low, p.low + k * p.step)))
        return float(v)

    def to_unit(self, params: Mapping[str, Any]) -> np.ndarray:
        return np.array([self.unit_of(name, params[name]) for name in self.continuous])

    def unit_of(self, name: str, value: float) -> float:
        """One continuous parameter's unit coordinate (to_unit's, per axis), in [0, 1]."""
        lo, hi, log = self._axis(name)
        x = math.log10(float(value)) if log else float(value)
        return min(1.0, max(0.0, (x - lo) / (hi - lo)))

    def sample(self, rng: np.random.Generator) -> dict[str, Any]:
        """One configuration drawn uniformly (log-uniformly on a log axis), one draw per
        parameter in order."""
        return {name: self.sample_one(name, rng) for name in self.root}

    def sample_one(self, name: str, rng: np.random.Generator) -> Any:
        """One parameter's value, drawn as `sample` draws it."""
        p = self.root[name]
        if isinstance(p, CategoricalParam):
            return p.choices[int(rng.integers(len(p.choices)))]
        if isinstance(p, IntParam):
            if p.log:  # log-uniform over [low - 1/2, high + 1/2], rounded: each integer its share of the log axis
                v = 10.0 ** rng.uniform(math.log10(max(p.low - 0.5, 0.5)), math.log10(p.high + 0.5))
                return int(min(p.high, max(p.low, round(v))))
            return p.low + p.step * int(rng.integers((p.high - p.low) // p.step + 1))
        lo, hi, log = self._axis(name)
        return float(10.0 ** rng.uniform(lo, hi)) if log else float(rng.uniform(lo, hi))

    def args_schema(self, descriptions: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The JSON schema of a proposal object, every range and choice included: what a
        model is shown, whether it answers through a tool or in JSON."""
        props = {}
        for name, p in self.root.items():
            what = (descriptions or {}).get(name, name)
            props[name] = p.json_schema() | {"description": f"{what}, in {p.range_text()}"}
        return {"type": "object", "properties": props, "required": list(self.root)}


def _coerce(p: FloatParam | IntParam | CategoricalParam, v: Any) -> Any:
    if isinstance(p, CategoricalParam):
        for c in p.choices:
            if _same_choice(v, c) or (isinstance(v, str) and v == (c if isinstance(c, str) else json.dumps(c))):
                return c
        raise ValueError(f"must be one of {p.range_text()}, got {v!r}")
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {v!r}")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise ValueError(f"must be a number, got {v!r}") from None
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    if isinstance(p, IntParam):
        if x != int(x):
            raise ValueError(f"must be an integer, got {v!r}")
        return int(x)
    return x


def json_key(value: Any) -> tuple[str, Any]:
    """A value as JSON compares it: 1 and 1.0 are the same number, but true is not 1
    (Python's True == 1 would let a tried `true` stand for the number 1), nor "1" 1.

    >>> json_key(True) == json_key(1), json_key(1) == json_key(1.0), json_key("1") == json_key(1)
    (False, True, False)
    """
    if isinstance(value, (bool, np.bool_)):
        return ("boolean", bool(value))
    if isinstance(value, (int, float, np.integer, np.floating)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    return ("json", json.dumps(value, sort_keys=True))


def _same_choice(v: Any, c: Choice) -> bool:
    """Equal and of the same JSON kind (true is not 1, "1" is not 1)."""
    return json_key(v) == json_key(c)


def proposed_arguments(event: Mapping[str, Any]) -> dict[str, Any]:
    """What an invalid proposal (a `tool_error` event) proposed, as recorded: its
    `arguments`, or for a record written before typed spaces, its learning_rate and
    momentum."""
    args = event.get("arguments")
    if isinstance(args, dict):
        return args
    return {k: event[k] for k in ("learning_rate", "momentum") if k in event}


def params_of(event: Mapping[str, Any]) -> dict[str, Any]:
    """The configuration of a trial event or row: its `params`, or for a record written
    before typed spaces, its learning_rate and momentum."""
    params = event.get("params")
    if isinstance(params, dict):
        return params
    return {k: event[k] for k in ("learning_rate", "momentum") if k in event}
