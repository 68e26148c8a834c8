"""The trace's event kinds, typed: one TypedDict per `event` name, with the fields every
writer puts in it (tools/record.py writes the head of each line; the writers named below
write the rest). Readers index events by these names; tests validate every line a real
run writes against its type (`EVENT_TYPES`), so a field renamed in one writer fails there.

    >>> from pydantic import TypeAdapter
    >>> e = {"event": "rate_limited", "timestamp": "2026-01-01T00:00:00.000000+00:00",
    ...      "session_id": "s", "seq": 3, "format": 1, "wait_s": 0.5}
    >>> TypeAdapter(EVENT_TYPES["rate_limited"]).validate_python(e)["wait_s"]
    0.5
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

# typing_extensions' TypedDict: pydantic validates it on Python 3.11 too (typing's only from 3.12)
from typing_extensions import TypedDict


class EventHead(TypedDict):
    """What every line starts with (TraceWriter)."""

    event: str
    timestamp: str
    session_id: str
    seq: int
    format: int


class SessionStarted(EventHead):
    """A run began (any method; agent/session.py, evaluation/runner.py)."""

    method: str
    objective: str
    budget: int
    model: str | None
    prompt: str | None
    x0: list[float]
    seed: int


class SessionResumed(EventHead):
    """An interrupted agent session goes on (agent/session.py)."""

    trials_restored: int
    charged_restored: int
    budget_left: int
    messages_restored: int


class TrialEvaluated(EventHead):
    """An answered proposal: charged or a repeat (tools/trials.py, TrialResult's fields)."""

    trial: int
    source: str
    learning_rate: float | None  # GD's (None on a task)
    momentum: float | None
    status: Literal["converged", "max_iter", "diverged", "ok", "failed"]
    final_value: float | None
    iterations: int
    x_final: list[float | None]
    distance_to_optimum: float | None
    best_value: float | None
    score: float
    repeat: bool
    repeat_of: int | None
    charged: bool
    budget_left: int
    curve: dict[str, Any]
    params: NotRequired[dict[str, Any]]  # every parameter of the space (absent before typed spaces)
    metrics: NotRequired[dict[str, Any]]  # a task's, beside its value
    error: NotRequired[str | None]  # why a task's trial failed


class ToolError(EventHead):
    """A rejected proposal (tools/trials.py: with `source`) or a failed tool call
    (agent/tracing.py: with `tool`)."""

    error: str
    source: NotRequired[str]
    arguments: NotRequired[dict[str, Any]]  # as proposed: strings, NaN as text, missing or extra names
    learning_rate: NotRequired[Any]  # (the same, in a record written before typed spaces)
    momentum: NotRequired[Any]
    tool: NotRequired[str]
    input: NotRequired[Any]


class ModelCalled(EventHead):
    """One model call (agent/tracing.py)."""

    model: str
    n_messages: int
    messages_sha256: str
    last_message: str
    reply: str
    tool_calls: list[dict[str, Any]]
    input_tokens: int | None
    input_tokens_cached: int | None
    output_tokens: int | None
    latency_s: float
    tool_choice: NotRequired[str]


class ToolCalled(EventHead):
    """One tool call's input and output (agent/tracing.py)."""

    tool: str
    input: Any
    output: str
    latency_s: float


# "from" is a keyword, so this part is spelled the functional way
FallbackStep = TypedDict("FallbackStep", {"from": str, "to": str, "error": str})


class ToolChoiceFallback(EventHead, FallbackStep):
    """A server refused a tool-choice form; the next is tried (agent/openai_compat.py)."""

    model: str


class Retry(EventHead):
    """A failed model call is retried after a wait (agent/middleware.py)."""

    attempt: int
    wait_s: float
    error: str


class RateLimited(EventHead):
    """A call waited for the rpm/tpm limiter (agent/ratelimit.py)."""

    wait_s: float


class RecommendationVetted(EventHead):
    """The model's final answer was replaced by the facts (agent/session.py)."""

    model_recommendation: dict[str, Any]
    reported: dict[str, Any]


class SessionFinished(EventHead):
    """The run's end (tools/run_result.py finish_session): once per run or resumed segment."""

    stop_reason: str
    error: str | None
    trials_charged: int
    invalid_proposals: int
    repeated_proposals: int
    model_calls: int
    input_tokens: int | None
    output_tokens: int | None
    cost_usd: float | None
    text_replies: int
    retries: int
    recommendation: dict[str, Any] | None
    recommended_by: NotRequired[str | None]  # written since the run record left LangChain
    best_trial: int | None
    best: dict[str, Any] | None
    wall_s: float
    model_s: float
    tool_s: float
    retry_wait_s: float
    overhead_s: float


Event = (SessionStarted | SessionResumed | TrialEvaluated | ToolError | ModelCalled | ToolCalled | ToolChoiceFallback
         | Retry | RateLimited | RecommendationVetted | SessionFinished)

EVENT_TYPES: dict[str, type] = {
    "session_started": SessionStarted,
    "session_resumed": SessionResumed,
    "trial_evaluated": TrialEvaluated,
    "tool_error": ToolError,
    "model_called": ModelCalled,
    "tool_called": ToolCalled,
    "tool_choice_fallback": ToolChoiceFallback,
    "retry": Retry,
    "rate_limited": RateLimited,
    "recommendation_vetted": RecommendationVetted,
    "session_finished": SessionFinished,
}
