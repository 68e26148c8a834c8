"""`tuneloop trace tokens`: what the model would have written at one of a recorded
session's calls, as probabilities, next to what it wrote.

The call's prompt is rebuilt from the record (the manifest's settings and prompt text, the
trials before it restored into an Evaluator, rendered as the session rendered it: the
system prompt and the turn), and the local model that ran the session is asked for the
distribution of each argument under its token masks (agent/value_probe.py). The shares at
a bound of the space say whether a habit of proposing a bound is the model's or the
sampling's.
"""

from __future__ import annotations

import json
from typing import Any

from tuneloop.tools.errors import UserError
from tuneloop.tools.record import Trace
from tuneloop.tools.space import CategoricalParam


def tokens_at(t: Trace, trial: int, floor: float | None = None) -> dict[str, Any]:
    """The distributions at the call that proposed charged trial number `trial` (as the
    run's output and `trace summary` number them), each
    argument given the values written before it, the values written, and each argument's
    probability at a bound of the space."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from tuneloop.agent.langchain_tools import make_gd_tool
    from tuneloop.agent.models import is_local, make_chat_model
    from tuneloop.agent.prompt_state import prompt_values
    from tuneloop.agent.prompts import template_for
    from tuneloop.agent.resume import restore_into
    from tuneloop.agent.session_config import config_from_manifest
    from tuneloop.agent.tracing import messages_digest
    from tuneloop.agent.value_probe import FLOOR
    from tuneloop.tools.trials import Evaluator, TrialResult

    m = t.manifest or {}
    if m.get("method") != "llm" or m.get("task"):
        raise UserError(f"{t.run_dir}: trace tokens reads an agent session on GD (method llm); this run is "
                        f"{m.get('method')}{' on a task' if m.get('task') else ''}")
    cfg = config_from_manifest(m)
    if not is_local(cfg.model.model):
        raise UserError(f"{t.run_dir}: trace tokens needs the local model the session ran on (the embedded one or a "
                        f"GGUF file); this session used {cfg.model.model}")
    events = t.events
    charged = [i for i, e in enumerate(events) if e.get("event") == "trial_evaluated" and e.get("charged")]
    at = next((i for i in charged if events[i].get("trial") == trial), None)
    if at is None:
        numbers = ", ".join(str(events[i].get("trial")) for i in charged)
        raise UserError(f"--trial {trial}: " + (f"the session's charged trials are {numbers}" if numbers
                                                else "the session has no charged trial"))
    written = TrialResult.from_event(events[at]).params
    # the call that proposed it: the last one before it whose tool call wrote these values
    # (with trials out in parallel, the last call before a result may be a later trial's)
    call = next((i for i in range(at - 1, -1, -1) if events[i].get("event") == "model_called"
                 and any(c.get("args") == written for c in events[i].get("tool_calls") or [])), None)
    if call is None:
        raise UserError(f"--trial {trial}: no recorded model call proposed it (a trial restored from an earlier "
                        "run, or a trace without its model calls)")
    ev = Evaluator(cfg.evaluator)
    restore_into(ev, events[:call])
    template = template_for(cfg.prompt, cfg.prompt_text)
    values = prompt_values(ev)
    messages = [SystemMessage(template.render_system(**values)), HumanMessage(template.render_turn(**values))]
    model = make_chat_model(cfg.model)
    dists = model.argument_distributions(messages, make_gd_tool(ev),  # type: ignore[attr-defined]
                                         FLOOR if floor is None else floor, given=written)
    space = cfg.evaluator.space
    # the rebuilt prompt against the one recorded (a trace of an earlier release may render
    # differently); None: the trace records no digest to compare with
    digest = events[call].get("messages_sha256")
    same = None if digest is None else digest == messages_digest(messages)
    out: dict[str, Any] = {"trial": trial, "turn": messages[1].content, "prompt_as_recorded": same, "parameters": {}}
    for name, dist in dists.items():
        p = space[name]
        ends = [] if isinstance(p, CategoricalParam) else [float(p.low), float(p.high)]
        out["parameters"][name] = {
            "written": written.get(name),
            "distribution": [{"value": v, "p": round(q, 4)} for v, q in dist],
            "p_written": round(sum(q for v, q in dist if _same(v, written.get(name))), 4),
            "p_at_bound": round(sum(q for v, q in dist if any(_same(v, b) for b in ends)), 4),
            "p_shown": round(sum(q for _, q in dist), 4),
        }
    return out


def _same(text: str, value: Any) -> bool:
    try:
        return value is not None and json.loads(text) == value
    except ValueError:
        return False
