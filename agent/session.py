"""One agent session: prompt -> create_agent -> limits -> result, fully traced.

    result = run_session(SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=10)))

The budget lives in the Evaluator; the model-call and tool-call caps (agent/session_config.py)
make sure a model that only talks, or only repeats itself, still ends.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from langchain.agents import create_agent
from langchain.agents.middleware import AgentMiddleware, ModelCallLimitMiddleware, ToolCallLimitMiddleware
from langchain.agents.structured_output import ToolStrategy
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import HumanMessage
from pydantic import Field, create_model

from tuneloop.agent.langchain_tools import args_schema, make_gd_tool
from tuneloop.agent.middleware import NEAR_REPEAT_RADIUS, CancelMiddleware, RetryMiddleware, TurnMiddleware
from tuneloop.agent.models import UNIFORM_MODEL, ModelError, ModelFactory, api_key_for, is_local, make_chat_model
from tuneloop.agent.pricing import session_cost
from tuneloop.agent.prompt_state import prompt_values, tool_name
from tuneloop.agent.prompts import template_for
from tuneloop.agent.ratelimit import RateLimitMiddleware, shared_limiter
from tuneloop.agent.recommendation import vetted
from tuneloop.agent.resume import restore_into, restored_conversation
from tuneloop.agent.session_config import (
    SessionConfig,
    call_limits,
    manifest_for,
)
from tuneloop.agent.tracing import TraceCallbackHandler
from tuneloop.tools.record import TraceWriter, new_session_id
from tuneloop.tools.run_result import EventSink, Recommendation, SessionResult, StopReason, finish_session
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trial_pool import Demand, TrialPool
from tuneloop.tools.trials import Evaluator


class FinalAnswer(Recommendation):
    """Your final recommendation once the evaluation budget is spent."""


def final_answer_for(space: SearchSpace) -> type[FinalAnswer]:
    """FinalAnswer with a field per parameter of the session's space, whose schema carries
    its range or choices, as the proposals' does (so a constrained model recommends inside
    them). Out-of-range recommendations still validate: agent/recommendation.py reports
    the best trial instead."""
    props = args_schema(space)["properties"]
    kinds: dict[str, Any] = {"float": float, "int": int, "categorical": Any}
    fields: dict[str, Any] = {
        name: (kinds[space[name].type], Field(json_schema_extra={k: v for k, v in props[name].items() if k != "type"}))
        for name in space
    }
    if "learning_rate" not in space:  # a task's parameters, then the rationale: nothing of GD's in the schema
        rationale = Recommendation.model_fields["rationale"]
        return create_model("FinalAnswer", __doc__=FinalAnswer.__doc__, **fields,  # type: ignore[call-overload]
                            rationale=(str, Field(description=rationale.description)))
    return create_model("FinalAnswer", __base__=FinalAnswer, __doc__=FinalAnswer.__doc__, **fields)


def run_session(
    cfg: SessionConfig,
    *,
    chat_model: BaseChatModel | None = None,
    model_factory: ModelFactory = make_chat_model,
    on_trial: Callable[[dict], None] | None = None,
    session_id: str | None = None,
    resume_events: list[dict] | None = None,
    should_stop: Callable[[], bool] | None = None,
    demand: Demand | None = None,
) -> SessionResult:
    """Run one agent session to its end; always leaves a complete trace.

    With `resume_events` (the events of an interrupted session, same session_id and
    runs_dir), its trials are restored into the Evaluator without being re-run or
    re-charged, its tool calls into the conversation, and the trace is appended to.
    The model is `chat_model` if given, else `model_factory(cfg.model)`. Once
    `should_stop()` returns True the session ends before its next model call, as
    interrupted. With a `demand` (an ask/tell study) its tool hands trials out to run in
    parallel, as many at once as the user has asked for (tools/trial_pool.py)."""
    template = template_for(cfg.prompt, cfg.prompt_text)
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
    recommendation: Recommendation | None = None
    recommended_by: Literal["agent", "tuneloop"] = "agent"
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
        model_cap, tool_cap = call_limits(cfg.evaluator.budget)
        pool = TrialPool(ev, demand) if demand is not None else None
        agent = create_agent(
            model,
            tools=[make_gd_tool(ev, source=cfg.method, pool=pool)],
            system_prompt=system,
            response_format=ToolStrategy(final_answer_for(cfg.evaluator.space)),
            middleware=_middleware(cfg, ev, template, handler, writer, should_stop, model_cap, tool_cap),
        )
        # The first turn is already in the conversation; TurnMiddleware adds the fresh
        # state before every later call.
        state = agent.invoke(
            {"messages": [HumanMessage(first_turn), *history]},
            config={"callbacks": [handler], "recursion_limit": 10 * model_cap + 20},
        )
        if pool is not None:  # trials still out when the agent stopped: their results belong to this run
            pool.wait(until_all=True)
            pool.take()
        model_answer = state.get("structured_response")
        vetted_answer, changed = vetted(model_answer, ev)
        # as the record's type: the answer's parameters beyond the two become its extra fields
        recommendation = None if vetted_answer is None else Recommendation.model_validate(vetted_answer.model_dump())
        recommended_by = "tuneloop" if changed else "agent"
        if changed:
            assert model_answer is not None and recommendation is not None  # vetted changes only an answer
            writer.emit("recommendation_vetted", model_recommendation=model_answer.model_dump(),
                        reported=recommendation.model_dump())
        stop = _stop_reason(recommendation is not None, ev, handler.usage.calls, model_cap, tool_cap)
    except KeyboardInterrupt:
        stop = "interrupted"
    except ModelError as e:
        stop, error = "model_error", str(e)
    finally:
        result = finish_session(writer=writer, ev=ev, method=cfg.method, model=cfg.model.model, prompt=template.name,
                                stop=stop, wall_s=time.perf_counter() - t_start, usage=handler.usage,
                                recommendation=recommendation, error=error, recommended_by=recommended_by,
                                cost_usd=session_cost(handler.usage, cfg.model))
    return result


def _middleware(cfg: SessionConfig, ev: Evaluator, template: Any, handler: TraceCallbackHandler, writer: TraceWriter,
                should_stop: Callable[[], bool] | None, model_cap: int,
                tool_cap: int) -> list[AgentMiddleware[Any, Any, Any]]:
    """The session's cross-cutting concerns, in order: cancel, per-turn prompting and the
    final answer, the two limits, retries, the rate limit. (Middlewares with different
    state schemas: AgentMiddleware is invariant in its state, hence the annotation.)"""
    local = is_local(cfg.model.model)
    limiter = shared_limiter(cfg.model.rpm, cfg.model.tpm)
    return [
        *([CancelMiddleware(should_stop)] if should_stop else []),
        TurnMiddleware(ev, lambda: template.render_turn(**prompt_values(ev)),
                       lambda: template.render_final(**prompt_values(ev)), cfg.model.temperature,
                       max_temperature=2.0 if local else 1.5, compact=local,
                       avoid_repeats=local or cfg.model.model == UNIFORM_MODEL,
                       avoid_radius=NEAR_REPEAT_RADIUS if local else 0.0,
                       usage=handler.usage),
        ModelCallLimitMiddleware(run_limit=model_cap, exit_behavior="end"),
        ToolCallLimitMiddleware(tool_name=tool_name(ev), run_limit=tool_cap, exit_behavior="end"),
        RetryMiddleware(writer.emit, usage=handler.usage, attempts=cfg.model.retry_attempts,
                        initial_s=cfg.model.retry_initial_s, total_s=cfg.model.retry_total_s),
        *([RateLimitMiddleware(limiter, writer.emit)] if limiter else []),
    ]


def _stop_reason(answered: bool, ev: Evaluator, model_calls: int, model_cap: int, tool_cap: int) -> StopReason:
    """Why an agent run that returned normally ended."""
    if answered:
        return "budget_spent" if ev.exhausted else "final_answer"
    if ev.exhausted:
        return "budget_spent"
    if model_calls >= model_cap:
        return "model_call_limit"
    if len(ev.trials) + ev.invalid >= tool_cap:
        return "tool_call_limit"
    return "no_tool_call"
