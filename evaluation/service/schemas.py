"""The service's request and response bodies (pydantic: FastAPI validates them and
/docs shows them)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneloop.evaluation.strategies import METHODS
from tuneloop.tools.defaults import DEFAULT_MAX_ITER, DEFAULT_TOL

Finite = Annotated[float, Field(allow_inf_nan=False)]
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"  # built-in names only: a path would read the server's files


def builtin_objective(name: str) -> str:
    from tuneloop.tools.objectives import UnknownObjectiveError, get_objective

    try:
        return get_objective(name).name
    except UnknownObjectiveError as e:
        raise ValueError(str(e)) from None


class SessionRequest(BaseModel):
    """A session to start: any method, on a built-in objective, with a built-in prompt."""

    model_config = ConfigDict(extra="forbid")
    method: str = Field(description=f"one of {', '.join(METHODS)}")
    function: str = Field(pattern=NAME_PATTERN, description="a built-in objective (see /api/functions)")
    budget: int = Field(gt=0, le=10_000, description="charged evaluations")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)
    model: str = Field(default="local", max_length=200)
    prompt: str = Field(default="default", pattern=NAME_PATTERN, description="a built-in template")
    x0: Literal["paper", "random"] | list[Finite] = "paper"
    max_iter: int = Field(default=DEFAULT_MAX_ITER, gt=0, le=1_000_000)
    temperature: Finite | None = Field(default=None, ge=0.0, le=2.0)
    base_url: str | None = Field(default=None, max_length=500, pattern=r"^https?://")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,100}$")

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown method {v!r}; known: {', '.join(METHODS)}")
        return v

    @field_validator("function")
    @classmethod
    def _known_function(cls, v: str) -> str:
        return builtin_objective(v)

    @field_validator("model")
    @classmethod
    def _no_local_files(cls, v: str) -> str:
        # a path would make the server load any file it can read: gguf:PATH is the CLI's
        if v.strip().startswith("gguf:"):
            raise ValueError("gguf:PATH models run from the command line (tuneloop run), not over HTTP")
        return v

    @field_validator("x0")
    @classmethod
    def _start(cls, v):
        if isinstance(v, list) and len(v) < 2:
            raise ValueError("x0 needs at least two numbers (or 'paper' / 'random')")
        return v


class Accepted(BaseModel):
    id: str
    status: Literal["queued", "running"]


class SessionRow(BaseModel):
    id: str
    method: str | None
    function: str | None
    status: Literal["queued", "running", "finished", "interrupted", "failed"]
    budget: int | None
    trials_charged: int
    best_value: float | None
    created: str | None


class SessionList(BaseModel):
    sessions: list[SessionRow]


class SessionDetail(BaseModel):
    id: str
    status: str
    manifest: dict[str, Any] | None
    summary: dict[str, Any] | None  # the numbers of `tuneloop trace summary --json`


class EvaluateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str = Field(pattern=NAME_PATTERN)
    learning_rate: Finite = Field(gt=0.0, le=1.0)
    momentum: Finite = Field(ge=0.0, lt=1.0)
    max_iter: int = Field(default=DEFAULT_MAX_ITER, gt=0, le=1_000_000)
    x0: Literal["paper", "random"] | list[Finite] = "paper"
    tol: Finite = Field(default=DEFAULT_TOL, ge=0.0)

    @field_validator("function")
    @classmethod
    def _known_function(cls, v: str) -> str:
        return builtin_objective(v)

