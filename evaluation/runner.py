"""Run one non-agent strategy through the Evaluator, traced exactly like an agent session
(manifest.json + trace.jsonl with the same events), and the Centaur LLM proposer."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from agent.models import classify_error
from agent.prompt_state import prompt_values
from agent.prompts import load_template
from agent.session import SessionConfig, SessionResult, _Tee, finish_session, manifest_for
from agent.tracing import TraceWriter
from evaluation.strategies import Centaur, CentaurError, Strategy
from tools.trials import BudgetExhausted, Evaluator, InvalidProposal

MAX_PROPOSALS_PER_TRIAL = 10  # a strategy that keeps re-proposing cached points still ends


def run_strategy(strategy: Strategy, cfg: SessionConfig, session_id: str,
                 extra_manifest: dict[str, Any] | None = None, llm_stats: dict | None = None) -> SessionResult:
    writer = TraceWriter(cfg.runs_dir, session_id)
    ev = Evaluator(cfg.evaluator, logger=_Tee(writer, None))
    if hasattr(strategy, "bind_evaluator"):
        strategy.bind_evaluator(ev)
    t0 = time.perf_counter()
    stop, error = "budget_spent", None
    is_centaur = isinstance(strategy, Centaur)
    template = load_template(cfg.prompt) if is_centaur else None
    try:
        writer.write_manifest(manifest_for(
            cfg, session_id, template.name if template else None, template.sha256 if template else None,
            template.text if template else None, extra=extra_manifest, with_model=is_centaur))
        writer.emit("session_started", method=cfg.method, objective=ev.objective.name, budget=cfg.evaluator.budget,
                    model=cfg.model.model if is_centaur else None, prompt=template.name if template else None,
                    x0=list(cfg.evaluator.x0), seed=cfg.seed)
        proposals = 0
        while not ev.exhausted:
            if proposals >= MAX_PROPOSALS_PER_TRIAL * cfg.evaluator.budget:
                stop = "proposal_limit"
                break
            p = strategy.ask()
            proposals += 1
            if p is None:
                stop = "strategy_done"
                break
            source = getattr(strategy, "last_source", strategy.name)
            try:
                r = ev.evaluate(p[0], p[1], source=source)
            except InvalidProposal:
                # reported by the Evaluator (a tool_error event) and counted, not charged
                if not hasattr(strategy, "rejected"):
                    continue
                p = strategy.rejected()
                r = ev.evaluate(p[0], p[1], source=strategy.last_source)
            except BudgetExhausted:
                break
            strategy.tell(r.learning_rate, r.momentum, r.score)
    except CentaurError as e:
        stop, error = "model_error", str(e)
    except KeyboardInterrupt:
        stop = "interrupted"
        raise
    finally:
        st = llm_stats or {}
        result = finish_session(
            writer, ev, cfg, cfg.model.model if is_centaur else "-", template.name if template else "-", stop,
            time.perf_counter() - t0, st.get("model_s", 0.0), 0.0, st.get("calls", 0), st.get("input_tokens", 0),
            st.get("output_tokens", 0), None, error)
    return result


class CentaurProposal(BaseModel):
    """Your proposal: one configuration expected to beat the incumbent."""

    # The bounds are shown to the model in the JSON schema (and enforced by the embedded
    # model's grammar); the answer itself is not validated here but by the Evaluator, so an
    # out-of-range value is reported there, never silently clamped.
    learning_rate: float = Field(description="learning rate alpha, in (0, 1]", json_schema_extra={
        "exclusiveMinimum": 0, "maximum": 1})
    momentum: float = Field(description="momentum beta, in [0, 1)", json_schema_extra={
        "minimum": 0, "exclusiveMaximum": 1})


def _fmt_trial(a: float, b: float, s: float, src: str) -> str:
    tag = " FAILED" if s >= 400 else ""
    return f"(lr={a:.4g}, momentum={b:.4g}, score={s:.3f}, by {src}){tag}"


class CentaurLLM:
    """Asks the chat model for Centaur's proposal, showing CMA-ES's state through the
    `centaur` template (or another). The answer is a forced tool call with the two
    numbers (JSON); anything else is a CentaurError. Model time and tokens are counted."""

    def __init__(self, chat_model, template_name: str) -> None:
        self.model = chat_model.bind_tools([CentaurProposal], tool_choice="any")
        self.template = load_template(template_name)
        self.ev: Evaluator | None = None
        self.stats = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "model_s": 0.0}

    def bind_evaluator(self, ev: Evaluator) -> None:
        """The cell's Evaluator: the prompt shows its objective, ranges and incumbent."""
        self.ev = ev

    def __call__(self, state: dict) -> tuple[float, float]:
        ev = self.ev
        if ev is None:
            raise CentaurError("CentaurLLM used before bind_evaluator()")
        hist = state["history"]
        top = sorted(hist, key=lambda h: h[2])[:5]
        values = prompt_values(ev) | {
            "n_trials": str(state["n_trials"]),
            "sigma": f"{state['sigma']:.4g}",
            "mean": "[" + ", ".join(f"{v:.4g}" for v in state["mean"]) + "]",
            "suggestion": f"learning_rate={state['suggestion'][0]:.4g}, momentum={state['suggestion'][1]:.4g}",
            "covariance": json.dumps([[float(f"{c:.3g}") for c in row] for row in state["cov"]]),
            "top5": "; ".join(_fmt_trial(*h) for h in top) or "(none)",
            "recent": "; ".join(_fmt_trial(*h) for h in hist[-20:]) or "(none)",
        }
        msgs = [SystemMessage(self.template.render_system(**values)), HumanMessage(self.template.render_turn(**values))]
        t0 = time.perf_counter()
        try:
            reply = self.model.invoke(msgs)
        except Exception as e:  # noqa: BLE001 - any model failure is a hard Centaur failure
            raise CentaurError(f"the LLM failed: {classify_error(e)[1]}") from e
        finally:
            self.stats["model_s"] += time.perf_counter() - t0
            self.stats["calls"] += 1
        usage = getattr(reply, "usage_metadata", None) or {}
        self.stats["input_tokens"] += int(usage.get("input_tokens", 0))
        self.stats["output_tokens"] += int(usage.get("output_tokens", 0))
        args = reply.tool_calls[0]["args"] if reply.tool_calls else _json_from_text(str(reply.content))
        if args is None or "learning_rate" not in args or "momentum" not in args:
            raise CentaurError(f"the LLM did not answer with JSON learning_rate/momentum: {str(reply.content)[:200]!r}")
        return args["learning_rate"], args["momentum"]


def _json_from_text(text: str) -> dict | None:
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None

