"""Centaur's LLM proposer: CMA-ES's state rendered through a prompt template, the model's
answer taken as JSON (a forced tool call) and passed on unchecked, so that the Evaluator
reports an out-of-range value instead of anyone silently fixing it."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import numpy as np
from langchain_core.messages import HumanMessage, SystemMessage

from tuneloop.agent.langchain_tools import args_schema
from tuneloop.agent.models import classify_error
from tuneloop.agent.prompt_state import history_table, prompt_space, prompt_values, untried_text
from tuneloop.agent.prompts import PromptTemplate, load_template
from tuneloop.evaluation.strategies import CentaurError, LLMProposer
from tuneloop.tools.formatting import fmt_value
from tuneloop.tools.gd_space import SHORT_LABELS
from tuneloop.tools.scoring import is_failed
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trials import Evaluator, TrialResult
from tuneloop.tools.usage import Usage

PROPOSAL_TOOL = "CentaurProposal"
CANDIDATES_TOOL = "Candidates"
TOP_K = 5
RECENT = 20


def proposal_tool(ev: Evaluator) -> dict:
    """The tool the LLM must call: its schema carries the Evaluator's bounds (shown to the
    model and enforced by the embedded model's grammar), the same schema an agent sees."""
    return {"type": "function", "function": {
        "name": PROPOSAL_TOOL,
        "description": "Your proposal: one configuration expected to beat the incumbent.",
        "parameters": args_schema(ev.config.space)}}


def candidates_tool(box: SearchSpace, k: int) -> dict:
    """The tool for k candidates in one call (LLAMBO's, HOLLM's): each parameter once per
    candidate, `learning_rate_1, momentum_1, learning_rate_2, ...`, every range the box's
    (HOLLM's region), so that the embedded model's grammar keeps each inside it."""
    one = args_schema(box)["properties"]
    props = {f"{n}_{i}": schema for i in range(1, k + 1) for n, schema in one.items()}
    return {"type": "function", "function": {
        "name": CANDIDATES_TOOL,
        "description": f"Your {k} candidate configurations, each parameter suffixed with the candidate's number.",
        "parameters": {"type": "object", "properties": props, "required": list(props)}}}


def split_candidates(args: dict[str, Any], names: tuple[str, ...], k: int) -> list[dict[str, Any]]:
    """The k raw candidates in a Candidates call's arguments (unchecked: the strategy
    validates each); a missing value stays missing.

    >>> split_candidates({"lr_1": 1, "m_1": 2, "lr_2": 3}, ("lr", "m"), 2)
    [{'lr': 1, 'm': 2}, {'lr': 3}]
    """
    return [{n: args[f"{n}_{i}"] for n in names if f"{n}_{i}" in args} for i in range(1, k + 1)]


def target_text(ev: Evaluator, score: float | None) -> str:
    """A target score (LLAMBO's f*) as the value the prompt's table shows: a final value on
    GD (score ~ log10 of the gap to the minimum, tools/scoring.py), a task's value."""
    if score is None:
        return "the best value you can"
    if ev.task is not None:
        return f"a value of {fmt_value(score if ev.task.direction == 'minimize' else -score, 3)}"
    return f"a final_value of {fmt_value((ev.f_star or 0.0) + 10.0 ** score, 2)}"


def trial_text(t: TrialResult, f_star: float | None, space: SearchSpace) -> str:
    """One trial for the prompt; FAILED where the study would call it Diverged or Poor."""
    tag = " FAILED" if is_failed(t.status, t.final_value, f_star) else ""
    return f"({space.format(t.params, SHORT_LABELS)}, score={t.score:.3f}, by {t.source}){tag}"


class CentaurLLM(LLMProposer):
    """Asks the chat model for Centaur's proposal, showing CMA-ES's state through the
    `centaur` template (or another; SLLMBO's, with TPE's suggestion and no CMA-ES state).
    The answer is a forced tool call with the two numbers (JSON); anything else is a
    CentaurError. With the cell's trace callback bound,
    every call is a `model_called` event like an agent's (sent, reply, tokens, latency)
    and is counted in the callback's `usage`; without it, in this proposer's own."""

    def __init__(self, chat_model, template: str | PromptTemplate) -> None:
        self.chat_model = chat_model
        # a name (or path), or a template as recorded in a manifest (replay)
        self.template = template if isinstance(template, PromptTemplate) else load_template(template)
        self.ev: Evaluator | None = None
        self.model = None
        self.usage = Usage()
        self.callbacks: list = []

    def bind_evaluator(self, ev: Evaluator) -> None:
        self.ev = ev
        self.model = self.chat_model.bind_tools([proposal_tool(ev)], tool_choice="any")

    def bind_trace(self, callbacks) -> None:
        self.callbacks = [callbacks]
        self.usage = callbacks.usage  # the callback counts each call; so that is the bill

    def __call__(self, state: dict) -> dict[str, Any]:
        args = self._ask(self._values(state), self.model)
        space = self._evaluator().config.space
        if not set(space.names) <= set(args):
            raise CentaurError(f"the LLM did not answer with JSON {'/'.join(space.names)}: {args!r:.200}")
        return {k: v for k, v in args.items() if k in space.names}

    def candidates(self, state: dict, k: int, box: SearchSpace | None = None) -> list[dict[str, Any]]:
        """k raw configurations in one call, each inside `box` where the model's grammar
        holds it (the space when None): LLAMBO's and HOLLM's candidates, shown `state`'s
        target (`target_score`) and region. Unchecked: the strategy validates each."""
        ev = self._evaluator()
        box = box or ev.config.space
        values = self._values(state) | {
            "n_candidates": str(k), "region": prompt_space(box, ev),
            "target": target_text(ev, state.get("target_score")),
            "untried": untried_text(ev.trials, box, ev.pending)}  # the box's own widest untried stretches
        if state.get("shuffle") is not None:  # LLAMBO: the trials as examples in a seeded order
            rows = [t for t in ev.trials if not t.repeat]
            order = np.random.default_rng(state["shuffle"]).permutation(len(rows))
            values["history"] = history_table([rows[i] for i in order], ev.config.space, ev.pending,
                                              task=ev.task is not None)
        # k configurations in one reply: k times a proposal's allowance of tokens (with five
        # knobs the embedded model's 200 ran out within 25 values and ended a HOLLM cell)
        per = getattr(self.chat_model, "max_tokens", None)
        allowance = {"max_tokens": k * per} if isinstance(per, int) and per > 0 else {}
        model = self.chat_model.bind_tools([candidates_tool(box, k)], tool_choice="any", **allowance)
        return split_candidates(self._ask(values, model), ev.config.space.names, k)

    def _evaluator(self) -> Evaluator:
        if self.ev is None or self.model is None:
            raise CentaurError("CentaurLLM used before bind_evaluator()")
        return self.ev

    def _values(self, state: dict) -> dict[str, str]:
        """The template's variables: the session's, then the strategy's state."""
        ev = self._evaluator()
        told = ev.trials  # every answered proposal, as CMA-ES was told it
        space = ev.config.space
        cma = "sigma" in state  # Centaur shows CMA-ES's state; SLLMBO has TPE's suggestion only
        values = prompt_values(ev) | {
            "n_trials": str(state["n_trials"]),
            "sigma": f"{state['sigma']:.4g}" if cma else "",
            "mean": "[" + ", ".join(f"{v:.4g}" for v in state["mean"]) + "]" if cma else "",
            "suggestion": space.format(state["suggestion"]) if "suggestion" in state else "",
            "covariance": json.dumps([[float(f"{c:.3g}") for c in row] for row in state["cov"]]) if cma else "",
            "top5": "; ".join(trial_text(t, ev.f_star, space) for t in sorted(told, key=lambda t: t.score)[:TOP_K])
            or "(none)",
            "recent": "; ".join(trial_text(t, ev.f_star, space) for t in told[-RECENT:]) or "(none)",
        }
        return values

    def _ask(self, values: dict[str, str], model: Any) -> dict[str, Any]:
        """One model call: the template rendered with `values`, the forced tool call's
        arguments (or a text reply's JSON) back; anything else is a CentaurError."""
        msgs = [SystemMessage(self.template.render_system(**values)), HumanMessage(self.template.render_turn(**values))]
        t0 = time.perf_counter()
        try:
            reply = model.invoke(msgs, config={"callbacks": self.callbacks})
        except Exception as e:  # noqa: BLE001 - any model failure is a hard Centaur failure
            if not self.callbacks:
                self.usage.add_call(time.perf_counter() - t0)
            raise CentaurError(f"the LLM failed: {classify_error(e)[1]}") from e
        if not self.callbacks:
            usage = reply.usage_metadata or {}  # None when the server reports no usage
            self.usage.add_call(time.perf_counter() - t0, usage.get("input_tokens"), usage.get("output_tokens"))
        args = reply.tool_calls[0]["args"] if reply.tool_calls else json_from_text(str(reply.content))
        if args is None:
            raise CentaurError(f"the LLM did not answer with JSON: {str(reply.content)[:200]!r}")
        return dict(args)


def json_from_text(text: str) -> dict | None:
    """The first {...} object in a text reply, if it parses."""
    m = re.search(r"\{.*\}", text, re.S)
    if not m:
        return None
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
