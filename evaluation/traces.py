"""Analysing traces: summary, compare, state audit, plot data, export.

Traces are read with agent.tracing.read_trace (the format's one home); see
docs/design.md for the run directory and the events.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuneloop.evaluation.strategies import CLASSICAL, LLM_METHODS, Centaur
from tuneloop.tools.record import Trace
from tuneloop.tools.scoring import best_so_far, is_failed
from tuneloop.tools.usage import known_sum


# ------------------------------------------------------------------ summary
def _segment_times(fins: list[dict]) -> dict[str, float | None] | None:
    """The time split summed over a session's segments (a resumed session has several)."""
    if not fins:
        return None
    return {k: known_sum(f.get(k) for f in fins) for k in ("wall_s", "model_s", "tool_s", "retry_wait_s", "overhead_s")}


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def trial_rows(t: Trace) -> list[dict[str, Any]]:
    rows, best = [], math.inf
    best_value = None
    for e in t.of("trial_evaluated"):
        if e.get("charged", True) and e.get("score") is not None and e["score"] < best:
            best, best_value = e["score"], e.get("final_value")
        rows.append({
            "trial": e.get("trial"), "source": e.get("source"), "learning_rate": e.get("learning_rate"),
            "momentum": e.get("momentum"), "status": e.get("status"), "final_value": e.get("final_value"),
            "iterations": e.get("iterations"), "score": e.get("score"), "repeat": bool(e.get("repeat")),
            "charged": bool(e.get("charged", True)), "best_score_so_far": None if best == math.inf else best,
            "best_value_so_far": best_value,
        })
    return rows


def summary(t: Trace) -> dict[str, Any]:
    calls = t.of("model_called")
    lat = [float(c.get("latency_s", 0.0)) for c in calls]
    fin = t.finished
    rows = trial_rows(t)
    settings = {k: t.manifest.get(k) for k in ("method", "objective", "x0", "max_iter", "tol", "budget", "seed")} \
        if t.manifest else {}
    if t.manifest and t.manifest.get("model"):
        settings["model"] = t.manifest["model"].get("model")
    if t.manifest and t.manifest.get("prompt"):
        settings["prompt"] = t.manifest["prompt"].get("name")
    return {
        "run_dir": str(t.run_dir),
        "session_id": t.session_id,
        "settings": settings,
        "trials": rows,
        "invalid": [
            {
                "source": e.get("source"),
                "error": e.get("error"),
                "learning_rate": e.get("learning_rate"),
                "momentum": e.get("momentum"),
            }
            for e in t.of("tool_error")
        ],
        "model_calls": {
            "count": len(calls),
            "input_tokens": known_sum(c.get("input_tokens") for c in calls),
            "output_tokens": known_sum(c.get("output_tokens") for c in calls),
            "latency_p50_s": _pct(lat, 50),
            "latency_p95_s": _pct(lat, 95),
        },
        "retries": len(t.of("retry")),
        "stop_reason": fin.get("stop_reason") if fin else "unfinished (no session_finished event)",
        "time": _segment_times(t.of("session_finished")),
        "segments": len(t.of("session_finished")),
        "cost_usd": fin.get("cost_usd") if fin else None,
        "text_replies": fin.get("text_replies") if fin else None,
        "recommendation": fin.get("recommendation") if fin else None,
        "tool_choice_fallbacks": [{k: e.get(k) for k in ("from", "to", "error")} for e in t.of("tool_choice_fallback")],
        "best": min(
            (r for r in rows if r["charged"] and r["score"] is not None), key=lambda r: r["score"], default=None
        ),
        "warnings": t.warnings,
    }


# ------------------------------------------------------------------ compare
def evals_to_within(rows: list[dict], rel: float = 0.01) -> int | None:
    """Charged evaluations needed to come within `rel` (1 %) of the final best score:
    the first k whose best-so-far score <= best + rel * max(|best|, 1)."""
    charged = [r for r in rows if r["charged"] and r["score"] is not None]
    if not charged:
        return None
    curve = best_so_far([r["score"] for r in charged])
    target = curve[-1] + rel * max(abs(curve[-1]), 1.0)
    return next(k for k, best in enumerate(curve, 1) if best <= target)


def compare(traces: list[Trace]) -> list[dict[str, Any]]:
    """One row per run, grouped by (method, prompt, model), arms in the order they first
    appear, so the runs of one arm sit together."""
    out = []
    for t in traces:
        s = summary(t)
        b = s["best"]
        out.append({
            "run": t.run_dir.name, "method": t.method,
            "prompt": ((t.manifest or {}).get("prompt") or {}).get("name"),
            "model": ((t.manifest or {}).get("model") or {}).get("model"), "objective": t.objective,
            "best_value": b["final_value"] if b else None, "best_score": b["score"] if b else None,
            "best_lr": b["learning_rate"] if b else None, "best_momentum": b["momentum"] if b else None,
            "evals_to_1pct": evals_to_within(s["trials"]),
            "charged": sum(r["charged"] for r in s["trials"]),
            "invalid": len(s["invalid"]), "repeated": sum(r["repeat"] for r in s["trials"]),
            "tokens": known_sum((s["model_calls"]["input_tokens"], s["model_calls"]["output_tokens"])),
            "cost_usd": s["cost_usd"],
            "wall_s": (s["time"] or {}).get("wall_s"), "stop_reason": s["stop_reason"],
        })
    def arm(r):
        return (r["method"], r["prompt"], r["model"])
    first: dict = {}
    for i, r in enumerate(out):
        first.setdefault(arm(r), i)
    return sorted(out, key=lambda r: first[arm(r)])  # stable: runs keep their order inside an arm


# ------------------------------------------------------------------ state audit
FAILED_BOX = (0.1, 0.05)  # |d log10 alpha| <= 0.1 decade and |d beta| <= 0.05 around a failed trial
BETA_UNIT = 0.1  # one unit of normalised distance: 1 decade of alpha or 0.1 of beta


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return math.hypot(math.log10(a[0]) - math.log10(b[0]), (a[1] - b[1]) / BETA_UNIT)


def state_audit(t: Trace) -> dict[str, Any]:
    """For every proposal the model made, what was true at that moment, and whether the
    proposal (a) repeated a configuration already tried, (b) fell in a failed region (within
    FAILED_BOX of a trial that diverged or stopped away from the minimum), or (c) ignored
    the incumbent (it lies closer to a failed trial than to the incumbent)."""
    f_star = _f_star(t)
    tried: list[tuple[float, float]] = []
    failed: list[tuple[float, float]] = []
    incumbent: tuple[float, float, float] | None = None  # lr, mom, score
    turns = []
    model_sources = {*LLM_METHODS, Centaur.LLM_SOURCE} | ({t.method} if t.method not in CLASSICAL else set())
    for e in t.events:
        if e.get("event") == "tool_error" and e.get("source") in model_sources:
            turns.append({"seq": e["seq"], "invalid": True, "error": e.get("error")})
            continue
        if e.get("event") != "trial_evaluated":
            continue
        p = (float(e["learning_rate"]), float(e["momentum"]))
        if e.get("source") in model_sources:
            repeat = p in tried or bool(e.get("repeat"))
            in_failed = any(
                abs(math.log10(p[0]) - math.log10(q[0])) <= FAILED_BOX[0] and abs(p[1] - q[1]) <= FAILED_BOX[1]
                for q in failed
            )
            ignored = bool(incumbent and failed and min(_dist(p, q) for q in failed) < _dist(p, incumbent[:2]))
            turns.append({"seq": e["seq"], "trial": e.get("trial"), "proposal": p, "invalid": False,
                          "incumbent": incumbent, "failed_so_far": len(failed), "repeat_tried": repeat,
                          "repeat_failed": repeat and p in failed, "in_failed_region": in_failed,
                          "ignored_incumbent": ignored})
        if p not in tried:
            tried.append(p)
        fv = e.get("final_value")
        if is_failed(e.get("status", ""), fv, f_star):
            if p not in failed:
                failed.append(p)
        if e.get("charged", True) and e.get("score") is not None and (incumbent is None or e["score"] < incumbent[2]):
            incumbent = (p[0], p[1], e["score"])
    valid = [x for x in turns if not x["invalid"]]
    n = len(valid)
    def rate(k):
        return (sum(x[k] for x in valid) / n) if n else None
    return {"turns": turns, "n_turns": len(turns), "n_valid": n,
            "invalid_rate": (len(turns) - n) / len(turns) if turns else None,
            "repeat_tried_rate": rate("repeat_tried"), "repeat_failed_rate": rate("repeat_failed"),
            "failed_region_rate": rate("in_failed_region"), "ignored_incumbent_rate": rate("ignored_incumbent")}


def _f_star(t: Trace) -> float | None:
    from tuneloop.tools.objectives import UnknownObjectiveError, get_objective

    try:
        obj = get_objective(t.objective)
    except UnknownObjectiveError:  # an objective file that is gone: its minimum is unknown
        return None
    x0 = (t.manifest or {}).get("x0") or [0, 0]
    return obj.minimum(len(x0))


# ------------------------------------------------------------------ export
EXPORT_FIELDS = ["run", "method", "objective", "seed", "trial", "source", "learning_rate", "momentum", "status",
                 "final_value", "iterations", "score", "repeat", "charged", "best_score_so_far"]


def export_rows(traces: list[Trace]) -> list[dict[str, Any]]:
    rows = []
    for t in traces:
        seed = (t.manifest or {}).get("seed")
        for r in trial_rows(t):
            rows.append({"run": t.run_dir.name, "method": t.method, "objective": t.objective, "seed": seed}
                        | {k: r[k] for k in EXPORT_FIELDS if k in r})
    return rows
