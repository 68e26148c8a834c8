"""The service's request and response bodies (pydantic: FastAPI validates them and
/docs shows them), the error bodies, and the server's cost limits. The OpenAPI document
built from them is the contract: every value it allows is accepted, every status the
server returns is in it."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal, TypeVar

from annotated_types import Interval
from pydantic import (
    AllowInfNan,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)
from pydantic.config import JsonDict

from tuneloop.agent.prompts import list_templates
from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.strategies import METHODS, known_method
from tuneloop.tools.defaults import DEFAULT_MAX_ITER, DEFAULT_TOL
from tuneloop.tools.gd_space import check_gd_space
from tuneloop.tools.objectives import OBJECTIVES
from tuneloop.tools.space import SearchSpace


def _a_number(v: Any) -> Any:
    # JSON numbers only: pydantic's lax mode would also take "1e-3" or true, which the
    # OpenAPI document (type: number) does not allow
    if isinstance(v, (str, bool)):
        raise ValueError("expected a JSON number")
    return v


def _enum(values: Iterable[str]) -> JsonDict:
    """A `json_schema_extra` that lists the values a field takes (in this order)."""
    return {"enum": list(values)}


Finite = Annotated[float, BeforeValidator(_a_number), AllowInfNan(False)]
Integer = Annotated[int, BeforeValidator(_a_number)]
StartPoint = Literal["paper", "random"] | Annotated[list[Finite], Field(min_length=2, max_length=D.MAX_DIM)]
# the objectives defined in 2-D only take a start point of two numbers: said in the schema
# too (JSON Schema's if/then), so that the document allows exactly what the server takes
TWO_D_ONLY: JsonDict = {"allOf": [{
    "if": {"properties": {"function": _enum(sorted(n for n, o in OBJECTIVES.items() if not o.any_dim))},
           "required": ["function"]},
    "then": {"properties": {"x0": {"anyOf": [{"enum": ["paper", "random"]}, {"type": "array", "maxItems": 2}]},
                            "dim": {"anyOf": [{"type": "integer", "maximum": 2}, {"type": "null"}]}}}},
    # an explicit start point is its own dimension: `dim` goes with "paper" or "random"
    {"if": {"properties": {"x0": {"type": "array"}}, "required": ["x0"]},
     "then": {"not": {"required": ["dim"]}}}]}
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # built-in names only: a path would read the server's files
# the models a server runs (a gguf:PATH would read its files); ASCII classes only, so that
# Python's re and JSON Schema's regex dialect agree on every string (their \S do not)
MODEL_PATTERN = r"^(local|openai:[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,190})$"
MAX_BUDGET = D.SERVE_MAX_BUDGET  # `tuneloop serve --max-budget`
MAX_ITER_CAP = D.SERVE_MAX_ITER  # `--max-iter-cap`


class Limits(BaseModel):
    """What one request may cost: the server refuses more with a 422 (and says so in its
    OpenAPI document)."""

    max_budget: int = Field(default=MAX_BUDGET, ge=1)
    max_iter: int = Field(default=MAX_ITER_CAP, ge=1)


class Problem(BaseModel):
    """An error: what went wrong, in one sentence."""

    detail: str


class FieldProblem(BaseModel):
    field: str = Field(description="the body field (dotted path), query or path parameter")
    reason: str


class ValidationProblem(BaseModel):
    """A request the server refuses as it is: one entry per field at fault."""

    detail: list[FieldProblem]


def start_fits(x0: Any, info: ValidationInfo) -> Any:
    """An explicit start point has as many numbers as the objective takes dimensions."""
    from tuneloop.tools.objectives import get_objective

    function = info.data.get("function")
    if isinstance(x0, list) and function is not None:
        get_objective(function).check_dim(len(x0))  # a ValueError: 422 on x0
    return x0


def builtin_objective(name: str) -> str:
    from tuneloop.tools.objectives import UnknownObjectiveError, get_objective

    try:
        return get_objective(name).name
    except UnknownObjectiveError as e:
        raise ValueError(str(e)) from None


def builtin_prompt(name: str) -> str:
    """`name` if it is a built-in template, else a ValueError listing them."""
    if name not in list_templates():
        raise ValueError(f"unknown prompt {name!r}; built-in: {', '.join(list_templates())}")
    return name


def served_model(spec: str) -> str:
    """`spec` if this server may run it: 'local' or 'openai:NAME'. A gguf:PATH would make
    the server load any file it can read: that is the command line's (tuneloop run)."""
    if spec.strip().startswith("gguf:"):
        raise ValueError("gguf:PATH models run from the command line (tuneloop run), not over HTTP")
    if not re.fullmatch(MODEL_PATTERN, spec):
        raise ValueError(f"unknown model {spec!r}: use 'local' or 'openai:<model>' (e.g. openai:gpt-4o-mini)")
    return spec


class SessionRequest(BaseModel):
    """A session to start: any method, on a built-in objective, with a built-in prompt."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=TWO_D_ONLY)
    method: str = Field(description=f"one of {', '.join(METHODS)}", json_schema_extra=_enum(METHODS))
    function: str = Field(pattern=NAME_PATTERN, description="a built-in objective (see /api/functions)",
                          json_schema_extra=_enum(sorted(OBJECTIVES)))
    budget: Integer = Field(gt=0, le=MAX_BUDGET, description="charged evaluations (at most the server's --max-budget)")
    seed: Integer = Field(default=0, ge=0, le=2**31 - 1)
    model: str = Field(default="local", max_length=200, json_schema_extra={"pattern": MODEL_PATTERN},
                       description="local | openai:NAME (the server's key variable must be set)")
    prompt: str = Field(default="default", pattern=NAME_PATTERN, description="a built-in template (agent sessions)",
                        json_schema_extra=_enum(list_templates()))
    x0: StartPoint = "paper"
    dim: Annotated[int, Interval(ge=2, le=D.MAX_DIM), BeforeValidator(_a_number)] | None = Field(
        default=None, description="the dimension of a 'paper' or 'random' start (default 2; not with a "
                                "list: a list is its own dimension)")
    max_iter: Integer = Field(default=DEFAULT_MAX_ITER, gt=0, le=MAX_ITER_CAP,
                          description="iteration cap T (at most the server's --max-iter-cap)")
    space: SearchSpace | None = Field(
        default=None, description="the parameters to tune, as a space file holds them (default: learning_rate "
                                  "log [1e-4, 0.1] and momentum [0, 0.99]); momentum GD's: learning_rate, momentum, "
                                  "nesterov, lr_decay, grad_clip")
    # a union member's bounds go before its validator, or the schema would not state them
    temperature: Annotated[float, AllowInfNan(False), Interval(ge=0.0, le=2.0),
                           BeforeValidator(_a_number)] | None = None
    base_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        return known_method(v)

    @field_validator("function")
    @classmethod
    def _known_function(cls, v: str) -> str:
        return builtin_objective(v)

    @field_validator("x0")
    @classmethod
    def _fits_the_objective(cls, v: Any, info: ValidationInfo) -> Any:
        return start_fits(v, info)

    @field_validator("dim")
    @classmethod
    def _dim_fits(cls, v: int | None, info: ValidationInfo) -> int | None:
        if v is None:
            return v
        if isinstance(info.data.get("x0"), list):
            raise ValueError("give dim with x0 'paper' or 'random'; a list of numbers is its own dimension")
        if info.data.get("function") is not None:
            from tuneloop.tools.objectives import get_objective

            get_objective(info.data["function"]).check_dim(v)
        return v

    @field_validator("space")
    @classmethod
    def _gd_takes_it(cls, v: SearchSpace | None) -> SearchSpace | None:
        return None if v is None else check_gd_space(v)

    @field_validator("prompt")
    @classmethod
    def _known_prompt(cls, v: str) -> str:
        return builtin_prompt(v)

    @field_validator("model")
    @classmethod
    def _no_local_files(cls, v: str) -> str:
        return served_model(v)



SessionStatus = Literal["queued", "running", "finished", "interrupted", "failed"]


class Accepted(BaseModel):
    id: str
    status: Literal["queued", "running"]


class SessionRow(BaseModel):
    id: str
    method: str | None
    function: str | None
    status: SessionStatus
    budget: int | None
    trials_charged: int
    best_value: float | None
    created: str | None
    reason: str | None = None  # why a failed session failed
    model: str | None = None  # an LLM method's model
    prompt: str | None = None  # an agent's prompt template


class SessionList(BaseModel):
    sessions: list[SessionRow]
    total: int = Field(description="sessions matching the filters, every page together")
    next: str | None = Field(default=None, description="the cursor of the next page (pass it as `cursor`); "
                                                       "null on the last page")


class SessionDetail(BaseModel):
    id: str
    status: str
    manifest: dict[str, Any] | None
    summary: dict[str, Any] | None  # the numbers of `tuneloop trace summary --json`


class EvaluateRequest(BaseModel):
    """One momentum-GD run of a built-in objective."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=TWO_D_ONLY)
    function: str = Field(pattern=NAME_PATTERN, description="a built-in objective (see /api/functions)",
                          json_schema_extra=_enum(sorted(OBJECTIVES)))
    learning_rate: Finite = Field(gt=0.0, le=1.0)
    momentum: Finite = Field(ge=0.0, lt=1.0)
    max_iter: Integer = Field(default=DEFAULT_MAX_ITER, gt=0, le=MAX_ITER_CAP,
                          description="iteration cap T (at most the server's --max-iter-cap)")
    x0: StartPoint = "paper"
    tol: Finite = Field(default=DEFAULT_TOL, ge=0.0)

    @field_validator("function")
    @classmethod
    def _known_function(cls, v: str) -> str:
        return builtin_objective(v)

    @field_validator("x0")
    @classmethod
    def _fits_the_objective(cls, v: Any, info: ValidationInfo) -> Any:
        return start_fits(v, info)



M = TypeVar("M", bound=BaseModel)


def capped(model: type[M], limits: Limits) -> type[M]:
    """`model` with this server's limits on budget and max_iter, so that its OpenAPI
    schema states exactly what the server accepts."""
    fields: dict[str, Any] = {}
    for name, cap in (("budget", limits.max_budget), ("max_iter", limits.max_iter)):
        f = model.model_fields.get(name)
        if f is not None:
            fields[name] = (Integer, Field(default=f.default, gt=0, le=cap, description=f.description))
    return create_model(model.__name__, __base__=model, __doc__=model.__doc__, **fields)
