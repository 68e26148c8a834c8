"""Re-running a session from its record: an agent session with the recorded model
replies in place of the model (no network, no model load), a classical one by
re-evaluating its recorded proposals; then comparing what came out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.resume import recorded_replies
from agent.scripted import ScriptedChatModel
from agent.session import config_from_manifest, run_session
from agent.tracing import Trace, TraceError, read_trace
from evaluation.strategies import AGENT_METHOD, STRATEGIES, SearchSpace, StrategyContext, make_strategy
from tools.trials import Evaluator, InvalidProposal

REPLAY_FIELDS = ("trial", "source", "learning_rate", "momentum", "status", "final_value", "iterations", "score",
                 "repeat", "charged", "budget_left")


def _first_difference(old: list[dict], new: list[dict], what: str) -> dict | None:
    for i, (a, b) in enumerate(zip(old, new)):
        for k in REPLAY_FIELDS:
            if a.get(k) != b.get(k):
                return {"where": f"{what} {i + 1}", "field": k, "recorded": a.get(k), "replayed": b.get(k)}
    if len(old) != len(new):
        return {"where": f"{what} count", "field": "count", "recorded": len(old), "replayed": len(new)}
    return None


def _replay_hybrid(t: Trace, cfg, recorded: list[dict]) -> dict | None:
    """A Centaur cell: the same strategy (seed, ratio, warm-up from the manifest) with the
    recorded model replies in place of the model; its trials must come out the same."""
    from agent.prompts import parse_template
    from evaluation.centaur import CentaurLLM
    from evaluation.runner import run_strategy

    m = t.manifest
    settings = m.get(t.method) or {}
    prompt = m.get("prompt") or {}
    template = parse_template(prompt.get("name") or "centaur", prompt["text"]) if prompt.get("text") else \
        (prompt.get("name") or "centaur")
    proposer = CentaurLLM(ScriptedChatModel(script=recorded_replies(t.events), strict=True), template)
    space = SearchSpace(**{k: tuple(v) for k, v in (m.get("search_space") or {}).items()})
    strategy = make_strategy(t.method, StrategyContext(budget=cfg.evaluator.budget, seed=cfg.seed, space=space,
                                                       propose_llm=proposer,
                                                       centaur_ratio=settings.get("ratio", 0.3),
                                                       centaur_warmup=settings.get("warmup")))
    res = run_strategy(strategy, cfg, t.session_id)
    new = read_trace(Path(res.run_dir))
    diff = _first_difference(recorded, new.of("trial_evaluated"), "trial")
    if diff is None and t.finished.get("stop_reason") != res.stop_reason:
        diff = {"where": "end", "field": "stop_reason", "recorded": t.finished.get("stop_reason"),
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
    cfg = config_from_manifest(t.manifest).model_copy(update={"runs_dir": workdir})
    recorded = t.of("trial_evaluated")
    if t.method == AGENT_METHOD:
        model = ScriptedChatModel(script=recorded_replies(t.events), strict=True)
        res = run_session(cfg, chat_model=model, session_id=t.session_id)
        new = read_trace(workdir / t.session_id)
        diff = _first_difference(recorded, new.of("trial_evaluated"), "trial")
        if diff is None:
            a, b = t.finished.get("recommendation"), (new.finished or {}).get("recommendation")
            if a != b:
                diff = {"where": "final answer", "field": "recommendation", "recorded": a, "replayed": b}
        if diff is None and t.finished.get("stop_reason") != res.stop_reason:
            diff = {"where": "end", "field": "stop_reason", "recorded": t.finished.get("stop_reason"),
                    "replayed": res.stop_reason}
    elif t.method in STRATEGIES and STRATEGIES[t.method].uses_llm:
        diff = _replay_hybrid(t, cfg, recorded)
    else:
        ev = Evaluator(cfg.evaluator)
        new_rows = []
        for e in t.events:
            if e.get("event") == "trial_evaluated":
                new_rows.append(ev.evaluate(e["learning_rate"], e["momentum"], source=e.get("source", "?")).model_dump())
            elif e.get("event") == "tool_error" and "source" in e:
                try:
                    ev.evaluate(e.get("learning_rate"), e.get("momentum"), source=e["source"])
                except InvalidProposal:
                    pass
        diff = _first_difference(recorded, new_rows, "trial")
    return {"identical": diff is None, "trials": len(recorded), "first_divergence": diff}
