"""The bodies of the ask/tell studies over HTTP (api_studies.py): what a client sends to
create a study and to tell a trial's result, and what the server answers. Like
schemas.py, the OpenAPI document built from them states what the server accepts."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.config import JsonDict

from tuneloop.agent.prompts import list_templates
from tuneloop.evaluation.grids import REFINED_PARAMS, check_refined_space
from tuneloop.evaluation.service.schemas import (
    MAX_BUDGET,
    MODEL_PATTERN,
    NAME_PATTERN,
    Integer,
    builtin_prompt,
    served_model,
)
from tuneloop.evaluation.strategies import METHODS, known_method
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trials import TrialResult

# said in the schema as well: `refined` takes a space of exactly these two parameters
REFINED_SPACE: JsonDict = {"allOf": [{
    "if": {"properties": {"method": {"const": "refined"}}, "required": ["method"]},
    "then": {"properties": {"space": {"required": list(REFINED_PARAMS), "additionalProperties": False,
                                      "properties": {p: {} for p in REFINED_PARAMS}}}}}]}
RESERVED_METRICS = ("status", "error")  # a tell's fields `state` and `error`, not metrics
METRICS_VALUE: JsonDict = {"properties": {"metrics": {"type": "object", "required": ["value"]}}}
# a tell gives its value once: value, metrics.value or state "failed" (said in the schema too)
ONE_VALUE: JsonDict = {
    "anyOf": [{"required": ["value"]}, {"required": ["metrics"], **METRICS_VALUE},
              {"required": ["state"], "properties": {"state": {"const": "failed"}}}],
    "not": {"required": ["value", "metrics"], **METRICS_VALUE}}
# what SearchSpace's own schema leaves out: a parameter or more, identifiers, every parameter's
# type, a log range above 0 (an int's with step 1), distinct choices. (low < high, and an int
# range a multiple of its step, cannot be said in JSON Schema: the server's 422 says them.)
SPACE_SHAPE: JsonDict = {
    "minProperties": 1, "propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
    "additionalProperties": {
        "required": ["type"], "properties": {"choices": {"uniqueItems": True}},
        "if": {"properties": {"log": {"const": True}}, "required": ["log"]},
        "then": {"properties": {"low": {"exclusiveMinimum": 0}, "step": {"const": 1}}}}}


def json_number(v: Any) -> Any:
    """JSON numbers only (no "1e-3" or true, which lax pydantic would take)."""
    if isinstance(v, (str, bool)):
        raise ValueError("expected a JSON number")
    return v


Number = Annotated[float, BeforeValidator(json_number)]
NonFinite = Literal["nan", "inf", "-inf"]  # what JSON cannot write as a number
Metric = Number | bool | str | None


class StudyRequest(BaseModel):
    """An ask/tell study to create: the space to search, the method that proposes, the
    budget of trials. The client evaluates each trial and tells its result."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=REFINED_SPACE)
    method: str = Field(default="tpe", description=f"one of {', '.join(METHODS)}",
                        json_schema_extra={"enum": list(METHODS)})
    space: SearchSpace = Field(description="the parameters to tune, as a space file holds them: "
                                           '{"name": {"type": "float" | "int" | "categorical", ...}}',
                               json_schema_extra=SPACE_SHAPE)
    budget: Integer = Field(gt=0, le=MAX_BUDGET, description="trials (at most the server's --max-budget)")
    seed: Integer = Field(default=0, ge=0, le=2**31 - 1)
    model: str = Field(default="local", max_length=200, json_schema_extra={"pattern": MODEL_PATTERN},
                       description="LLM methods: local | openai:NAME (the server's key variable must be set)")
    prompt: str | None = Field(default=None, pattern=NAME_PATTERN, json_schema_extra={"enum": list(list_templates())},
                               description="LLM methods: a built-in template (default: the method's own)")
    direction: Literal["minimize", "maximize"] = "minimize"
    description: str = Field(default="", max_length=2000, description="what is tuned (the LLM methods read it)")
    name: str = Field(default="study", pattern=NAME_PATTERN, description="how tables and traces name it")
    base_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")

    @field_validator("method")
    @classmethod
    def known(cls, v: str) -> str:
        return known_method(v)

    @field_validator("prompt")
    @classmethod
    def known_prompt(cls, v: str | None) -> str | None:
        return None if v is None else builtin_prompt(v)

    @field_validator("model")
    @classmethod
    def served(cls, v: str) -> str:
        return served_model(v)

    @field_validator("space")
    @classmethod
    def refined_space(cls, v: SearchSpace, info: ValidationInfo) -> SearchSpace:
        if info.data.get("method") == "refined":
            check_refined_space(v)
        return v


class TellRequest(BaseModel):
    """A trial's result: `value` (a number), or `metrics` holding "value" and any other
    metrics, or `state: "failed"`. A value JSON cannot carry ("nan", "inf", "-inf") or
    null is a failed trial, charged, as NaN is in Python."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=ONE_VALUE)
    trial: Integer = Field(ge=1, description="the trial's id, as ask gave it")
    value: Number | NonFinite | None = Field(default=None, description='the objective\'s value; "nan" or null: '
                                                                       "a failed trial")
    metrics: dict[str, Metric] | None = Field(default=None, max_length=100,
                                              json_schema_extra={"propertyNames": {"not": {"enum": list(
                                                  RESERVED_METRICS)}}},
                                              description='any metrics beside the value (and "value" itself when '
                                                          "the field value is not given)")
    state: Literal["ok", "failed"] = "ok"
    error: str | None = Field(default=None, max_length=2000, description="why the trial failed")

    @model_validator(mode="before")
    @classmethod
    def one_value(cls, data: Any) -> Any:
        if isinstance(data, dict):
            in_metrics = isinstance(data.get("metrics"), dict) and "value" in data["metrics"]
            if "value" in data and in_metrics:
                raise ValueError("give the value once: as value or as metrics.value")
            if "value" not in data and not in_metrics and data.get("state") != "failed":
                raise ValueError('give value, metrics with a "value", or state "failed"')
        return data

    @field_validator("metrics")
    @classmethod
    def not_reserved(cls, v: dict[str, Metric] | None) -> dict[str, Metric] | None:
        for key in RESERVED_METRICS:
            if v is not None and key in v:
                raise ValueError(f"{key!r} is not a metric: use the field {'state' if key == 'status' else key}")
        return v

    def result(self) -> dict[str, Any]:
        """The result as a task's evaluate returns it (tools/tasks.py's outcome_of reads it)."""
        metrics = dict(self.metrics or {})
        value: Any = metrics.pop("value", None) if "value" not in self.model_fields_set else self.value
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):
            value = float(value)
        if self.state == "ok" and (value is None or isinstance(value, float) and not math.isfinite(value)):
            shown = "null (JSON's NaN)" if value is None else value
            return {**metrics, "status": "failed", "error": f"the value was {shown}: not a finite number"}
        return {"value": value, **metrics, "status": self.state, "error": self.error}


class StudyCreated(BaseModel):
    id: str
    status: Literal["running"]


class AskedTrial(BaseModel):
    """A configuration to evaluate; tell its result with its id."""

    trial: int
    params: dict[str, Any]


class Waiting(BaseModel):
    """The method has not proposed yet: ask again (after Retry-After seconds)."""

    detail: str
    retry_after: int


class Told(BaseModel):
    """How the server read a tell (a NaN, null or "nan" is a failed trial)."""

    trial: int
    status: Literal["ok", "failed"]
    value: float | None
    error: str | None


class Closed(BaseModel):
    """How a closed study's run ended (null while the method finishes its proposal: 202)."""

    id: str
    stop_reason: str | None


StudyStatus = Literal["running", "finished", "interrupted", "failed"]


class StudyRow(BaseModel):
    id: str
    name: str | None
    method: str | None
    status: StudyStatus
    budget: int | None
    trials: int = Field(description="trials charged so far")
    best: float | None = Field(description="the best value so far")
    created: str | None


class StudyList(BaseModel):
    studies: list[StudyRow]


class StudyDetail(BaseModel):
    id: str
    name: str | None
    method: str | None
    status: StudyStatus
    budget: int | None
    direction: str | None
    created: str | None
    trials: list[TrialResult] = Field(description="the charged trials, in order, as the trace records them")
    best: TrialResult | None
    pending: list[AskedTrial] = Field(description="the trials out now: asked, not yet told (several with "
                                                  "parallel workers)")
    stop_reason: str | None
    reason: str | None = Field(default=None, description="why a failed study failed")
