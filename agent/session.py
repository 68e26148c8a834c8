"""One agent session: prompt -> create_agent -> limits -> result, fully traced.

    result = run_session(SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=10)))

The budget lives in the Evaluator; the model-call cap (MODEL_CALLS_PER_TRIAL x budget +
MODEL_CALLS_EXTRA) and the tool-call cap (TOOL_CALLS_PER_TRIAL x budget) make sure a
model that only talks, or only repeats itself, still ends.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Literal

from langchain.agents import create_agent
from langchain.agents.middleware import ModelCallLimitMiddleware, ToolCallLimitMiddleware
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import BaseModel, Field, create_model

from agent.langchain_tools import TOOL_NAME, make_gd_tool
from agent.middleware import CancelMiddleware, RetryMiddleware, TurnMiddleware
from agent.models import ModelError, ModelFactory, ModelSettings, api_key_for, is_local, make_chat_model
from agent.pricing import cost_usd, price_for
from agent.recommendation import vetted
from agent.ratelimit import RateLimitMiddleware, shared_limiter
from agent.prompt_state import prompt_values
from agent.prompts import load_template, parse_template
from agent.resume import restore_into, restored_conversation
from agent.tracing import TraceCallbackHandler, TraceWriter, new_session_id, package_versions
from agent.usage import Usage
from tools.objectives import USER_FID, get_objective
from tools.trials import Bounds, Evaluator, EvaluatorConfig, TrialResult

MODEL_CALLS_PER_TRIAL = 3
MODEL_CALLS_EXTRA = 3
TOOL_CALLS_PER_TRIAL = 3

StopReason = Literal["budget_spent", "final_answer", "model_call_limit", "tool_call_limit",
                     "interrupted", "model_error", "no_tool_call",
                     "strategy_done", "proposal_limit"]  # the last two: classical strategies


class FinalAnswer(BaseModel):
    """Your final recommendation once the evaluation budget is spent."""

    learning_rate: float = Field(description="recommended learning rate alpha")
    momentum: float = Field(description="recommended momentum beta")
    rationale: str = Field(description="one paragraph: why this configuration")


def final_answer_for(bounds: Bounds) -> type[FinalAnswer]:
    """FinalAnswer whose schema carries the session's allowed ranges, as the proposals'
    does (so a constrained model recommends inside them). Out-of-range recommendations
    still validate: agent/recommendation.py reports the best trial instead."""
    props = bounds.args_schema()["properties"]
    return create_model(
        "FinalAnswer", __base__=FinalAnswer, __doc__=FinalAnswer.__doc__,
        **{name: (float, Field(json_schema_extra={k: v for k, v in props[name].items() if k != "type"}))
           for name in ("learning_rate", "momentum")},
    )


class SessionConfig(BaseModel):
    evaluator: EvaluatorConfig = EvaluatorConfig()
    model: ModelSettings = ModelSettings()
    prompt: str = "default"
    seed: int = 0
    prompt_text: str | None = None  # a recorded template's text (replay, resume) instead of a name
    x0_spec: str = "paper"  # how the start point was chosen: paper | random | explicit
    method: str = "llm"
    runs_dir: Path = Path("runs")
    manifest_extra: dict[str, Any] = {}  # recorded in the manifest as well (e.g. where a cell ran)


class SessionResult(BaseModel):
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
    recommendation: FinalAnswer | None
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


def manifest_for(cfg: SessionConfig, session_id: str, template_name: str | None, template_sha: str | None,
                 template_text: str | None, extra: dict[str, Any] | None = None,
                 with_model: bool = True) -> dict[str, Any]:
    """The manifest of any session, LLM or not (`with_model=False` for classical methods)."""
    ev = cfg.evaluator
    model = cfg.model.model_dump() if with_model else None
    obj = get_objective(ev.objective)
    # an objective from a file: which file, and exactly which content
    source = {"objective_file": {"path": obj.path, "sha256": obj.sha256}} if obj.fid == USER_FID else {}
    return (extra or {}) | source | {
        "format": 1,
        "session_id": session_id,
        "method": cfg.method,
        "objective": ev.objective,
        "x0": list(ev.x0),
        "x0_spec": cfg.x0_spec,
        "max_iter": ev.max_iter,
        "tol": ev.tol,
        "budget": ev.budget,
        "bounds": ev.bounds.model_dump(),
        "seed": cfg.seed,
        "model": model,
        "prompt": {"name": template_name, "sha256": template_sha, "text": template_text} if template_name else None,
        "limits": {"model_calls": MODEL_CALLS_PER_TRIAL * ev.budget + MODEL_CALLS_EXTRA,
                   "tool_calls": TOOL_CALLS_PER_TRIAL * ev.budget},
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def config_from_manifest(m: dict[str, Any]) -> SessionConfig:
    """The SessionConfig a manifest describes (the prompt by its recorded text)."""
    ev = EvaluatorConfig(objective=m["objective"], x0=tuple(m["x0"]), max_iter=m["max_iter"], tol=m["tol"],
                         budget=m["budget"], bounds=Bounds(**(m.get("bounds") or {})))
    model = ModelSettings(**{k: v for k, v in (m.get("model") or {}).items() if k in ModelSettings.model_fields})
    prompt = m.get("prompt") or {}
    return SessionConfig(evaluator=ev, model=model, prompt=prompt.get("name") or "default",
                         prompt_text=prompt.get("text"), seed=m.get("seed", 0), x0_spec=m.get("x0_spec", "explicit"),
                         method=m.get("method", "llm"))


def finish_session(*, writer: TraceWriter, ev: Evaluator, cfg: SessionConfig, model: str, prompt: str,
                   stop: str, wall_s: float, usage: Usage, recommendation: FinalAnswer | None = None,
                   error: str | None = None) -> SessionResult:
    """The one place a session of any method ends: builds its result, writes the
    `session_finished` event from it and closes the trace."""
    r = SessionResult(
        session_id=writer.session_id, run_dir=str(writer.dir), method=cfg.method, objective=ev.objective.name,
        model=model, prompt=prompt, budget=cfg.evaluator.budget, best=ev.incumbent, trials=ev.trials,
        trials_charged=ev.charged, invalid_proposals=ev.invalid, repeated_proposals=ev.repeats,
        recommendation=recommendation, stop_reason=stop, error=error, model_calls=usage.calls,
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cost_usd=cost_usd(usage.input_tokens, usage.output_tokens,
                          price_for(cfg.model.model, cfg.model.price_in, cfg.model.price_out)) if usage.calls else None,
        text_replies=usage.text_replies, retries=usage.retries, wall_s=wall_s, model_s=usage.model_s,
        tool_s=usage.tool_s, retry_wait_s=usage.retry_wait_s,
        overhead_s=max(wall_s - usage.model_s - usage.tool_s - usage.retry_wait_s, 0.0),
    )
    writer.emit(
        "session_finished",
        **r.model_dump(include={"stop_reason", "error", "trials_charged", "invalid_proposals", "repeated_proposals",
                                "model_calls", "input_tokens", "output_tokens", "cost_usd", "text_replies",
                                "retries", "recommendation"}),
        best_trial=r.best.trial if r.best else None,
        best=r.best.model_dump(exclude={"curve"}) if r.best else None,
        **{k: round(getattr(r, k), 4) for k in ("wall_s", "model_s", "tool_s", "retry_wait_s", "overhead_s")},
    )
    writer.close()
    return r


class EventSink:
    """The Evaluator's logger: every event to the trace, trials also to a callback."""

    def __init__(self, writer: TraceWriter, on_trial: Callable[[dict], None] | None = None) -> None:
        self.writer = writer
        self.on_trial = on_trial

    def info(self, event: str, **fields: Any) -> None:
        self.writer.emit(event, **fields)
        if event == "trial_evaluated" and self.on_trial is not None:
            self.on_trial(fields)


def run_session(
    cfg: SessionConfig,
    *,
    chat_model: BaseChatModel | None = None,
    model_factory: ModelFactory = make_chat_model,
    on_trial: Callable[[dict], None] | None = None,
    session_id: str | None = None,
    resume_events: list[dict] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SessionResult:
    """Run one agent session to its end; always leaves a complete trace.

    With `resume_events` (the events of an interrupted session, same session_id and
    runs_dir), its trials are restored into the Evaluator without being re-run or
    re-charged, its tool calls into the conversation, and the trace is appended to.
    The model is `chat_model` if given, else `model_factory(cfg.model)`. Once
    `should_stop()` returns True the session ends before its next model call, as
    interrupted."""
    template = parse_template(cfg.prompt, cfg.prompt_text) if cfg.prompt_text else load_template(cfg.prompt)
    model = chat_model if chat_model is not None else model_factory(cfg.model)
    sid = session_id or new_session_id(cfg.method)
    writer = TraceWriter(cfg.runs_dir, sid, secrets_to_hide=[api_key_for(cfg.model) or ""],
                         append=resume_events is not None)
    t_start = time.perf_counter()
    handler = TraceCallbackHandler(writer, cfg.model.model)
    ev = Evaluator(cfg.evaluator, logger=EventSink(writer, on_trial))
    history: list = []
    if resume_events is not None:
        restore_into(ev, resume_events)
        history = restored_conversation(resume_events)
    recommendation: FinalAnswer | None = None
    stop: StopReason = "budget_spent"
    error: str | None = None
    try:
        values = prompt_values(ev)
        system = template.render_system(**values)
        first_turn = template.render_turn(**values)
        if resume_events is None:
            writer.write_manifest(manifest_for(cfg, sid, template.name, template.sha256, template.text,
                                               extra=cfg.manifest_extra))
        else:
            writer.emit("session_resumed", trials_restored=len(ev.trials), charged_restored=ev.charged,
                        budget_left=ev.budget_left, messages_restored=len(history))
        writer.emit("session_started", method=cfg.method, objective=ev.objective.name, budget=cfg.evaluator.budget,
                    model=cfg.model.model, prompt=template.name, x0=list(cfg.evaluator.x0), seed=cfg.seed)
        budget = cfg.evaluator.budget
        local = is_local(cfg.model.model)
        limiter = shared_limiter(cfg.model.rpm, cfg.model.tpm)
        model_cap = MODEL_CALLS_PER_TRIAL * budget + MODEL_CALLS_EXTRA
        tool_cap = TOOL_CALLS_PER_TRIAL * budget
        agent = create_agent(
            model,
            tools=[make_gd_tool(ev, source=cfg.method)],
            system_prompt=system,
            response_format=ToolStrategy(final_answer_for(cfg.evaluator.bounds)),
            middleware=[
                *([CancelMiddleware(should_stop)] if should_stop else []),
                TurnMiddleware(ev, lambda: template.render_turn(**prompt_values(ev)),
                               lambda: template.render_final(**prompt_values(ev)), cfg.model.temperature,
                               max_temperature=2.0 if local else 1.5, compact=local, avoid_repeats=local,
                               usage=handler.usage),
                ModelCallLimitMiddleware(run_limit=model_cap, exit_behavior="end"),
                ToolCallLimitMiddleware(tool_name=TOOL_NAME, run_limit=tool_cap, exit_behavior="end"),
                RetryMiddleware(writer.emit, usage=handler.usage, attempts=cfg.model.retry_attempts,
                                initial_s=cfg.model.retry_initial_s, total_s=cfg.model.retry_total_s),
                *([RateLimitMiddleware(limiter, writer.emit)] if limiter else []),
            ],
        )
        # The first turn is already in the conversation; TurnMiddleware adds the fresh
        # state before every later call.
        state = agent.invoke(
            {"messages": [HumanMessage(first_turn), *history]},
            config={"callbacks": [handler], "recursion_limit": 10 * model_cap + 20},
        )
        model_answer = state.get("structured_response")
        recommendation, changed = vetted(model_answer, ev)
        if changed:
            writer.emit("recommendation_vetted", model_recommendation=model_answer.model_dump(),
                        reported=recommendation.model_dump())
        if recommendation is not None:
            stop = "budget_spent" if ev.exhausted else "final_answer"
        elif ev.exhausted:
            stop = "budget_spent"
        elif handler.usage.calls >= model_cap:
            stop = "model_call_limit"
        elif len(ev.trials) + ev.invalid >= tool_cap:
            stop = "tool_call_limit"
        else:
            stop = "no_tool_call"
    except KeyboardInterrupt:
        stop = "interrupted"
    except ModelError as e:
        stop, error = "model_error", str(e)
    finally:
        result = finish_session(writer=writer, ev=ev, cfg=cfg, model=cfg.model.model, prompt=template.name, stop=stop,
                                wall_s=time.perf_counter() - t_start, usage=handler.usage,
                                recommendation=recommendation, error=error)
    return result
