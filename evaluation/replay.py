"""Re-running a session from its record: an agent session with the recorded model
replies in place of the model (no network, no model load), a classical one by
re-evaluating its recorded proposals; then comparing what came out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneloop.agent.resume import recorded_replies
from tuneloop.agent.scripted import ScriptedChatModel
from tuneloop.agent.session_config import config_from_manifest
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.evaluation.strategies import LLM_METHODS
from tuneloop.tools.record import Trace, TraceError, read_trace
from tuneloop.tools.space import params_of, proposed_arguments
from tuneloop.tools.trials import Evaluator, InvalidProposal

REPLAY_FIELDS = ("trial", "source", "learning_rate", "momentum", "status", "final_value", "iterations", "score",
                 "repeat", "charged", "budget_left")


def _first_difference(old: list[dict], new: list[dict], what: str) -> dict | None:
    for i, (a, b) in enumerate(zip(old, new, strict=False)):
        for k in REPLAY_FIELDS:
            if a.get(k) != b.get(k):
                return {"where": f"{what} {i + 1}", "field": k, "recorded": a.get(k), "replayed": b.get(k)}
        if params_of(a) != params_of(b):  # (a trace from before typed spaces records no params)
            return {"where": f"{what} {i + 1}", "field": "params", "recorded": params_of(a), "replayed": params_of(b)}
    if len(old) != len(new):
        return {"where": f"{what} count", "field": "count", "recorded": len(old), "replayed": len(new)}
    return None


def _rerun_with_recorded_replies(t: Trace, workdir: Path, recorded: list[dict]) -> dict | None:
    """An LLM method (the agent, Centaur): the same spec with the recorded model replies in
    place of the model; its trials, final answer and stop reason must come out the same."""
    try:
        spec = MethodSpec.from_manifest(t.manifest or {}, runs_dir=workdir)
    except ValueError as e:  # pydantic's ValidationError: a manifest this release cannot run
        raise TraceError(f"{t.run_dir}: its manifest cannot be run again here: {str(e).splitlines()[-1].strip()}") \
            from None
    model = ScriptedChatModel(script=recorded_replies(t.events), strict=True)
    res = run_method(spec, session_id=t.session_id, chat_model=model)
    new = read_trace(workdir / t.session_id)
    diff = _first_difference(recorded, new.of("trial_evaluated"), "trial")
    if diff is None:
        a, b = (t.finished or {}).get("recommendation"), (new.finished or {}).get("recommendation")
        if a != b:
            diff = {"where": "final answer", "field": "recommendation", "recorded": a, "replayed": b}
    if diff is None and (t.finished or {}).get("stop_reason") != res.stop_reason:
        diff = {"where": "end", "field": "stop_reason", "recorded": (t.finished or {}).get("stop_reason"),
                "replayed": res.stop_reason}
    return diff


def replay(t: Trace, workdir: Path) -> dict[str, Any]:
    """Re-run a session from its record: an agent session with the recorded model replies
    in place of the model (no network, no model load); a classical one by re-evaluating
    its recorded proposals. Returns whether everything matched, else the first divergence."""
    if not t.manifest:
        raise TraceError(f"{t.run_dir} has no manifest.json: a replay needs the session's settings")
    if t.finished is None:
        raise TraceError(f"{t.run_dir} has no session_finished event: replay a finished session "
                         "(or resume this one with `tuneloop run --resume`)")
    if t.of("session_resumed"):
        raise TraceError(f"{t.run_dir} was resumed; replay covers sessions that ran in one piece")
    recorded = t.of("trial_evaluated")
    if t.method in LLM_METHODS:
        diff = _rerun_with_recorded_replies(t, workdir, recorded)
    else:
        ev = Evaluator(config_from_manifest(t.manifest).evaluator)
        new_rows = []
        for e in t.events:
            if e.get("event") == "trial_evaluated":
                new_rows.append(ev.evaluate(params_of(e), source=e.get("source", "?")).model_dump())
            elif e.get("event") == "tool_error" and "source" in e:
                try:
                    ev.evaluate(proposed_arguments(e), source=e["source"])
                except InvalidProposal:
                    pass
        diff = _first_difference(recorded, new_rows, "trial")
    return {"identical": diff is None, "trials": len(recorded), "first_divergence": diff}
