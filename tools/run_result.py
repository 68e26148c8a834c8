"""How any run ends, LLM or classical: its result, the `session_finished` event and the
Evaluator's event sink. No LangChain here, so a classical run never imports it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuneloop.tools.record import TraceWriter
from tuneloop.tools.trials import Evaluator, TrialResult
from tuneloop.tools.usage import Usage

StopReason = Literal["budget_spent", "final_answer", "model_call_limit", "tool_call_limit",
                     "interrupted", "model_error", "no_tool_call",
                     "strategy_done", "proposal_limit"]  # the last two: classical strategies


class Recommendation(BaseModel):
    """A recommended configuration and why; the agent's FinalAnswer extends it with a field
    per parameter of the session's space. The parameters beyond these two are kept as
    extra fields, so a recommendation reads (and is recorded) like a proposal."""

    model_config = ConfigDict(extra="allow")
    learning_rate: float | None = Field(default=None, description="recommended learning rate alpha")  # GD's
    momentum: float | None = Field(default=None, description="recommended momentum beta")
    rationale: str = Field(description="one paragraph: why this configuration")

    def params(self, names: Iterable[str]) -> dict[str, Any]:
        """The recommended value of each of `names` (a space's parameters)."""
        d = self.model_dump()
        return {n: d.get(n) for n in names}


class SessionResult(BaseModel):
    """The result of one run of any method."""

    session_id: str
    run_dir: str
    method: str
    objective: str
    model: str
    prompt: str
    budget: int
    best: TrialResult | None
    trials: list[TrialResult]
    trials_charged: int
    invalid_proposals: int
    repeated_proposals: int
    recommendation: Recommendation | None
    # whose choice the recommendation is: the agent's answer as it came, or tuneloop's
    # report in its place (the agent's pick diverged or was never tried, or its rationale
    # was not text; agent/recommendation.py)
    recommended_by: Literal["agent", "tuneloop"] | None = None
    stop_reason: StopReason
    error: str | None = None
    model_calls: int
    input_tokens: int | None  # None: the server reported no usage
    output_tokens: int | None
    cost_usd: float | None = None  # None: no known price
    text_replies: int = 0  # replies that proposed nothing while budget was left
    retries: int = 0
    wall_s: float
    model_s: float
    tool_s: float
    retry_wait_s: float = 0.0
    overhead_s: float


def finish_session(*, writer: TraceWriter, ev: Evaluator, method: str, model: str, prompt: str,
                   stop: StopReason, wall_s: float, usage: Usage, recommendation: Recommendation | None = None,
                   error: str | None = None, cost_usd: float | None = None,
                   recommended_by: Literal["agent", "tuneloop"] | None = None) -> SessionResult:
    """The one place a session of any method ends: builds its result, writes the
    `session_finished` event from it and closes the trace."""
    r = SessionResult(
        session_id=writer.session_id, run_dir=str(writer.dir), method=method, objective=ev.objective.name,
        model=model, prompt=prompt, budget=ev.config.budget, best=ev.incumbent, trials=ev.trials,
        trials_charged=ev.charged, invalid_proposals=ev.invalid, repeated_proposals=ev.repeats,
        recommendation=recommendation, recommended_by=recommended_by if recommendation is not None else None,
        stop_reason=stop, error=error, model_calls=usage.calls,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost_usd,
        text_replies=usage.text_replies, retries=usage.retries, wall_s=wall_s, model_s=usage.model_s,
        tool_s=usage.tool_s, retry_wait_s=usage.retry_wait_s,
        overhead_s=max(wall_s - usage.model_s - usage.tool_s - usage.retry_wait_s, 0.0),
    )
    writer.emit(
        "session_finished",
        **r.model_dump(include={"stop_reason", "error", "trials_charged", "invalid_proposals", "repeated_proposals",
                                "model_calls", "input_tokens", "output_tokens", "cost_usd", "text_replies",
                                "retries", "recommendation", "recommended_by"}),
        best_trial=r.best.trial if r.best else None,
        best=r.best.model_dump(exclude={"curve"}) if r.best else None,
        **{k: round(getattr(r, k), 4) for k in ("wall_s", "model_s", "tool_s", "retry_wait_s", "overhead_s")},
    )
    writer.close()
    return r


class EventSink:
    """The Evaluator's logger: every event to the trace, trials also to a callback."""

    def __init__(self, writer: TraceWriter, on_trial: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.writer = writer
        self.on_trial = on_trial

    def info(self, event: str, **fields: Any) -> None:
        self.writer.emit(event, **fields)
        if event == "trial_evaluated" and self.on_trial is not None:
            self.on_trial(fields)



