"""The LangChain tool the agent calls: a thin JSON face over the Evaluator.

The argument schema shows the allowed ranges to the model (JSON-schema bounds) but
accepts any value, so that every proposal, however malformed, reaches the Evaluator,
which validates it, counts it and answers with an error the model can act on. The tool
never raises: errors come back as {"status": "error", ...}.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.tools import StructuredTool

from tuneloop.agent import AGENT_METHOD
from tuneloop.agent.prompt_state import tool_name
from tuneloop.tools.formatting import spoken_list
from tuneloop.tools.gd_space import DESCRIPTIONS
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trial_pool import TrialPool
from tuneloop.tools.trials import BudgetExhausted, Evaluator, InvalidProposal, TrialResult


def args_schema(space: SearchSpace) -> dict[str, Any]:
    """The JSON schema of a proposal, every parameter's range or choices included, each
    described as GD names it: what every model is shown, through a tool or in JSON."""
    return space.args_schema(DESCRIPTIONS)


def task_reply(r: TrialResult, ev: Evaluator) -> dict[str, Any]:
    """What the model reads after a task's trial: its value, metrics, and a failure's reason."""
    inc = ev.incumbent
    reply: dict[str, Any] = {"trial": r.trial, "budget_left": r.budget_left, **r.params, "status": r.status,
                             "value": r.final_value, "metrics": r.metrics, "repeat": r.repeat}
    if r.error:
        reply["error"] = r.error
    if inc is not None:
        reply["incumbent"] = {"trial": inc.trial, **inc.params, "value": inc.final_value}
    return reply


def trial_reply(r: TrialResult, ev: Evaluator) -> dict[str, Any]:
    """The compact JSON the model reads after a trial."""
    if ev.task is not None:
        return _notes(task_reply(r, ev), r, ev)
    inc = ev.incumbent
    reply: dict[str, Any] = {
        "trial": r.trial,
        "budget_left": r.budget_left,
        **r.params,
        "status": r.status,
        "final_value": r.final_value,
        "iterations": r.iterations,
        "distance_to_optimum": r.distance_to_optimum,
        "loss_curve": {"checkpoints": [[t, None if f is None else float(f"{f:.4g}")] for t, f in r.curve.checkpoints],
                       "oscillating": r.curve.oscillating},
        "repeat": r.repeat,
    }
    if inc is not None:
        reply["incumbent"] = {"trial": inc.trial, **inc.params, "final_value": inc.final_value,
                              "iterations": inc.iterations}
    return _notes(reply, r, ev)


def _notes(reply: dict[str, Any], r: TrialResult, ev: Evaluator) -> dict[str, Any]:
    if r.repeat:
        reply["note"] = (f"repeat of trial {r.repeat_of}: not charged, and it teaches nothing new; "
                         "propose a configuration you have not tried")
    if ev.exhausted:
        reply["note"] = (reply.get("note", "") + " The budget is now spent: give your final recommendation.").strip()
    return reply


def pooled_reply(results: list[TrialResult], pool: TrialPool) -> dict[str, Any]:
    """What the model reads when trials run in parallel (ask/tell with several workers):
    the results come back since its last call (possibly none), and the trials still out."""
    ev = pool.ev
    reply: dict[str, Any] = {"results": [trial_reply(r, ev) for r in results], "pending": pool.pending,
                             "budget_left": ev.budget_left}
    if pool.pending and not ev.exhausted:
        reply["note"] = ("your proposal was handed to a worker and is pending (so are the trials under 'pending'): "
                         "propose another configuration, different from these")
    elif ev.exhausted:
        reply["note"] = "The budget is now spent: give your final recommendation."
    return reply


def make_gd_tool(ev: Evaluator, source: str = AGENT_METHOD, pool: TrialPool | None = None) -> StructuredTool:
    """The `run_momentum_gd(learning_rate, momentum, ...)` tool bound to one Evaluator: one
    argument per parameter of its search space. With a `pool` (parallel ask/tell) a
    proposal is handed out and the call returns as soon as another may be proposed, with
    whatever results came back meanwhile; once the budget is spent it waits for them all."""

    def run_momentum_gd(**kwargs: Any) -> str:
        try:  # unknown or missing arguments are the Evaluator's to report and count
            if pool is None:
                return json.dumps(trial_reply(ev.evaluate(kwargs, source=source), ev))
            repeat = pool.submit(kwargs, source)
            pool.wait(until_all=ev.exhausted)
            results = ([repeat] if repeat is not None else []) + pool.take()[0]
        except InvalidProposal as e:
            return json.dumps({"status": "error", "error": str(e), "charged": False,
                               "budget_left": ev.budget_left})
        except BudgetExhausted as e:
            return json.dumps({"status": "error", "error": str(e), "budget_left": 0})
        if len(results) == 1 and not pool.pending:  # one at a time: the reply of a sequential session
            return json.dumps(trial_reply(results[0], ev))
        return json.dumps(pooled_reply(results, pool))

    space = ev.config.space
    given = spoken_list([f"{n} (in {space[n].range_text()})" for n in space])
    what = (f"Run one trial of {ev.objective.name} with the given {given}; returns its status, value and "
            "metrics. Each new configuration spends one evaluation.") if ev.task is not None else (
            f"Run gradient descent with momentum on {ev.objective.name} with the given {given}; returns the "
            "run's status, final value, iterations and a loss-curve summary. Each new configuration spends one "
            "evaluation.")
    return StructuredTool.from_function(
        func=run_momentum_gd,
        name=tool_name(ev),
        description=what,
        # a plain dict, so LangChain does not validate: the Evaluator does, and counts what it rejects
        args_schema=args_schema(space),
    )
