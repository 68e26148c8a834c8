"""Run one strategy through the Evaluator, traced exactly like an agent session
(manifest.json + trace.jsonl with the same events)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tuneloop.agent.models import api_key_for
from tuneloop.agent.pricing import session_cost
from tuneloop.agent.prompts import template_for
from tuneloop.agent.session_config import SessionConfig, manifest_for
from tuneloop.evaluation.strategies import CentaurError, Strategy
from tuneloop.tools.record import TraceWriter
from tuneloop.tools.run_result import EventSink, SessionResult, StopReason, finish_session
from tuneloop.tools.trial_pool import Demand, TrialPool
from tuneloop.tools.trials import BudgetExhausted, Evaluator, InvalidProposal, TrialResult
from tuneloop.tools.usage import Usage

MAX_PROPOSALS_PER_TRIAL = 10  # a strategy that keeps re-proposing cached points still ends


def run_strategy(strategy: Strategy, cfg: SessionConfig, session_id: str, *,
                 extra_manifest: dict[str, Any] | None = None, usage: Usage | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 on_trial: Callable[[dict], None] | None = None, demand: Demand | None = None) -> SessionResult:
    """Ask, evaluate, tell until the budget is spent (or the strategy has nothing left).
    The bill of any model the strategy calls is the trace callback's (`usage` overrides it).
    With a `demand` (an ask/tell study) trials run in worker threads, as many at once as
    the user has asked for (tools/trial_pool.py)."""
    writer = TraceWriter(cfg.runs_dir, session_id, secrets_to_hide=[api_key_for(cfg.model) or ""])
    ev = Evaluator(cfg.evaluator, logger=EventSink(writer, on_trial))
    strategy.bind_evaluator(ev)
    bill = Usage()
    if strategy.uses_llm:  # a strategy that calls a model (Centaur) traces its calls; LangChain only then
        from tuneloop.agent.tracing import TraceCallbackHandler

        handler = TraceCallbackHandler(writer, cfg.model.model)
        strategy.bind_trace(handler)
        bill = handler.usage
    t0 = time.perf_counter()
    stop: StopReason = "budget_spent"
    error: str | None = None
    template = template_for(cfg.prompt, cfg.prompt_text) if strategy.uses_llm else None
    model = cfg.model.model if strategy.uses_llm else None
    try:
        writer.write_manifest(manifest_for(
            cfg, session_id, template.name if template else None, template.sha256 if template else None,
            template.text if template else None, extra=cfg.manifest_extra | (extra_manifest or {}),
            with_model=strategy.uses_llm))
        writer.emit("session_started", method=cfg.method, objective=ev.objective.name, budget=cfg.evaluator.budget,
                    model=model, prompt=template.name if template else None,
                    x0=list(cfg.evaluator.x0), seed=cfg.seed)
        if demand is None:
            stop = _sequential(strategy, ev, cfg.evaluator.budget, should_stop)
        else:
            stop = _pooled(strategy, TrialPool(ev, demand), cfg.evaluator.budget, should_stop)
    except CentaurError as e:
        stop, error = "model_error", str(e)
    except KeyboardInterrupt:
        stop = "interrupted"
        raise
    finally:
        spent = usage or bill
        result = finish_session(writer=writer, ev=ev, method=cfg.method, model=model or "-",
                                prompt=template.name if template else "-", stop=stop, wall_s=time.perf_counter() - t0,
                                usage=spent, error=error, cost_usd=session_cost(spent, cfg.model))
    return result


def _sequential(strategy: Strategy, ev: Evaluator, budget: int,
                should_stop: Callable[[], bool] | None) -> StopReason:
    """One trial at a time: ask, evaluate, tell."""
    proposals = 0
    while not ev.exhausted:
        if should_stop is not None and should_stop():
            return "interrupted"
        if proposals >= MAX_PROPOSALS_PER_TRIAL * budget:
            return "proposal_limit"
        p = strategy.ask()
        proposals += 1
        if p is None:
            return "strategy_done"
        try:
            r = ev.evaluate(p, source=strategy.source)
        except InvalidProposal:
            # reported by the Evaluator (a tool_error event) and counted, not charged
            p = strategy.rejected()
            if p is None:
                continue
            r = ev.evaluate(p, source=strategy.source)
        except BudgetExhausted:
            break
        strategy.tell(r.params, r.score)
    return "budget_spent"


def _pooled(strategy: Strategy, pool: TrialPool, budget: int,
            should_stop: Callable[[], bool] | None) -> StopReason:
    """Trials out in parallel: propose while the pool has room, tell results as they come
    back (a strategy is told in the order results arrive, the pending ones not yet: TPE's
    constant liar and CMA-ES's generations take care of proposing around them). Every
    result that has come back is told before the next proposal, so with one trial out at
    a time this is the sequential loop."""
    proposals = 0
    stop: StopReason = "budget_spent"
    while True:
        if should_stop is not None and should_stop():
            stop = "interrupted"
            break
        done, room = pool.take()
        _tell(strategy, done)
        if room:
            if proposals >= MAX_PROPOSALS_PER_TRIAL * budget:
                stop = "proposal_limit"
                break
            p = strategy.ask()
            proposals += 1
            if p is None:
                stop = "strategy_done"
                break
            try:
                r = pool.submit(p, strategy.source)
            except InvalidProposal:
                p = strategy.rejected()
                if p is None:
                    continue
                try:
                    r = pool.submit(p, strategy.source)
                except InvalidProposal:
                    continue
            if r is not None:  # a repeat, answered from the cache
                strategy.tell(r.params, r.score)
            continue
        if pool.ev.exhausted and pool.running == 0:
            break
        pool.wait(timeout=0.5)
    pool.wait(until_all=True)  # results still out when it ended are recorded
    _tell(strategy, pool.take()[0])
    return stop


def _tell(strategy: Strategy, results: list[TrialResult]) -> None:
    for r in results:
        strategy.tell(r.params, r.score)
