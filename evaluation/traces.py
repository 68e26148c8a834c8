"""Reading and analysing traces: summary, compare, state audit, plot data, export.

A run directory holds manifest.json and trace.jsonl (DESIGN.md). Readers are forgiving
where a killed process is the likely cause (a cut last line: a warning, the events
before it are used) and strict otherwise (an empty file, a file that is not a trace, a
newer format: one clear TraceError).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agent.errors import UserError
from agent.tracing import TRACE_FORMAT
from tools.scoring import is_failed


class TraceError(UserError):
    """A trace that cannot be read; the message says why."""


@dataclass
class Trace:
    run_dir: Path
    manifest: dict[str, Any] | None
    events: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.events[0].get("session_id", self.run_dir.name) if self.events else self.run_dir.name

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    @property
    def finished(self) -> dict[str, Any] | None:
        f = self.of("session_finished")
        return f[-1] if f else None

    @property
    def method(self) -> str:
        if self.manifest:
            return str(self.manifest.get("method", "?"))
        s = self.of("session_started")
        return str(s[0].get("method", "?")) if s else "?"

    @property
    def objective(self) -> str:
        if self.manifest:
            return str(self.manifest.get("objective", "?"))
        s = self.of("session_started")
        return str(s[0].get("objective", "?")) if s else "?"


def read_trace(path: Path | str) -> Trace:
    p = Path(path)
    run_dir = p if p.is_dir() else p.parent
    tfile = p / "trace.jsonl" if p.is_dir() else p
    if not tfile.exists():
        raise TraceError(f"no trace found: {tfile} does not exist")
    raw = tfile.read_bytes()
    if not raw.strip():
        raise TraceError(f"{tfile} is empty: the session wrote no events")
    lines = raw.split(b"\n")
    ends_clean = raw.endswith(b"\n")
    if ends_clean:
        lines = lines[:-1]
    events: list[dict] = []
    warnings: list[str] = []
    try:  # orjson (a langsmith dependency) parses 3-4x faster; json is the fallback
        from orjson import JSONDecodeError as _OrjsonError
        from orjson import loads
        decode_errors: tuple = (_OrjsonError, json.JSONDecodeError, UnicodeDecodeError)
    except ImportError:  # pragma: no cover
        loads = json.loads
        decode_errors = (json.JSONDecodeError, UnicodeDecodeError)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = loads(line)
        except decode_errors:
            if i == len(lines) and not ends_clean and events:
                warnings.append(f"the last line of {tfile} is cut off (the process was killed?); "
                                f"using the {len(events)} events before it")
                break
            raise TraceError(f"{tfile} is not a tuneloop trace: line {i} is not JSON") from None
        if not isinstance(ev, dict) or "event" not in ev or "seq" not in ev:
            raise TraceError(f"{tfile} is not a tuneloop trace: line {i} has no 'event'/'seq'")
        fmt = ev.get("format", 1)
        if isinstance(fmt, int) and fmt > TRACE_FORMAT:
            raise TraceError(f"{tfile} uses trace format {fmt}, newer than this tuneloop reads "
                             f"({TRACE_FORMAT}): upgrade tuneloop")
        events.append(ev)
    manifest = None
    mfile = run_dir / "manifest.json"
    if mfile.exists():
        try:
            manifest = json.loads(mfile.read_text())
        except json.JSONDecodeError:
            warnings.append(f"{mfile} is not valid JSON; settings are taken from the trace")
    return Trace(run_dir, manifest, events, warnings)


# ------------------------------------------------------------------ summary
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
        "run_dir": str(t.run_dir), "session_id": t.session_id, "settings": settings,
        "trials": rows,
        "invalid": [{"source": e.get("source"), "error": e.get("error"), "learning_rate": e.get("learning_rate"),
                     "momentum": e.get("momentum")} for e in t.of("tool_error")],
        "model_calls": {"count": len(calls), "input_tokens": sum(int(c.get("input_tokens", 0)) for c in calls),
                        "output_tokens": sum(int(c.get("output_tokens", 0)) for c in calls),
                        "latency_p50_s": _pct(lat, 50), "latency_p95_s": _pct(lat, 95)},
        "retries": len(t.of("retry")),
        "stop_reason": fin.get("stop_reason") if fin else "unfinished (no session_finished event)",
        "time": {k: fin.get(k) for k in ("wall_s", "model_s", "tool_s", "overhead_s")} if fin else None,
        "best": min((r for r in rows if r["charged"] and r["score"] is not None), key=lambda r: r["score"], default=None),
        "warnings": t.warnings,
    }


# ------------------------------------------------------------------ compare
def evals_to_within(rows: list[dict], rel: float = 0.01) -> int | None:
    """Charged evaluations needed to come within `rel` (1 %) of the final best score:
    the first k whose best-so-far score <= best + rel * max(|best|, 1)."""
    charged = [r for r in rows if r["charged"] and r["score"] is not None]
    if not charged:
        return None
    best = min(r["score"] for r in charged)
    target = best + rel * max(abs(best), 1.0)
    so_far = math.inf
    for k, r in enumerate(charged, 1):
        so_far = min(so_far, r["score"])
        if so_far <= target:
            return k
    return None


def compare(traces: list[Trace]) -> list[dict[str, Any]]:
    out = []
    for t in traces:
        s = summary(t)
        b = s["best"]
        fin = t.finished or {}
        out.append({
            "run": t.run_dir.name, "method": t.method, "objective": t.objective,
            "best_value": b["final_value"] if b else None, "best_score": b["score"] if b else None,
            "best_lr": b["learning_rate"] if b else None, "best_momentum": b["momentum"] if b else None,
            "evals_to_1pct": evals_to_within(s["trials"]),
            "charged": sum(r["charged"] for r in s["trials"]),
            "invalid": len(s["invalid"]), "repeated": sum(r["repeat"] for r in s["trials"]),
            "tokens": s["model_calls"]["input_tokens"] + s["model_calls"]["output_tokens"],
            "wall_s": fin.get("wall_s"), "stop_reason": s["stop_reason"],
        })
    return out


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
    model_sources = {"llm", "centaur-llm"} | ({t.method} if t.method not in ("grid", "refined", "random", "cmaes", "tpe") else set())
    for e in t.events:
        if e.get("event") == "tool_error" and e.get("source") in model_sources:
            turns.append({"seq": e["seq"], "invalid": True, "error": e.get("error")})
            continue
        if e.get("event") != "trial_evaluated":
            continue
        p = (float(e["learning_rate"]), float(e["momentum"]))
        if e.get("source") in model_sources:
            repeat = p in tried or bool(e.get("repeat"))
            in_failed = any(abs(math.log10(p[0]) - math.log10(q[0])) <= FAILED_BOX[0] and abs(p[1] - q[1]) <= FAILED_BOX[1]
                            for q in failed)
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
    rate = (lambda k: (sum(x[k] for x in valid) / n) if n else None)
    return {"turns": turns, "n_turns": len(turns), "n_valid": n,
            "invalid_rate": (len(turns) - n) / len(turns) if turns else None,
            "repeat_tried_rate": rate("repeat_tried"), "repeat_failed_rate": rate("repeat_failed"),
            "failed_region_rate": rate("in_failed_region"), "ignored_incumbent_rate": rate("ignored_incumbent")}


def _f_star(t: Trace) -> float:
    from tools.objectives import UnknownObjectiveError, get_objective

    try:
        obj = get_objective(t.objective)
    except UnknownObjectiveError:
        return 0.0
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


# ------------------------------------------------------------------ replay
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


def replay(t: Trace, workdir: Path) -> dict[str, Any]:
    """Re-run a session from its record: an agent session with the recorded model replies
    in place of the model (no network, no model load); a classical one by re-evaluating
    its recorded proposals. Returns whether everything matched, else the first divergence."""
    from agent.resume import ReplayChatModel, ReplayDivergence, config_from_manifest, recorded_replies
    from tools.trials import Evaluator, InvalidProposal

    if not t.manifest:
        raise TraceError(f"{t.run_dir} has no manifest.json: a replay needs the session's settings")
    if t.finished is None:
        raise TraceError(f"{t.run_dir} has no session_finished event: replay a finished session "
                         "(or resume this one with `tuneloop run --resume`)")
    if t.of("session_resumed"):
        raise TraceError(f"{t.run_dir} was resumed; replay covers sessions that ran in one piece")
    cfg = config_from_manifest(t.manifest).model_copy(update={"runs_dir": workdir})
    recorded = t.of("trial_evaluated")
    if t.method == "llm":
        from agent.session import run_session

        model = ReplayChatModel(replies=recorded_replies(t.events))
        try:
            res = run_session(cfg, chat_model=model, session_id=t.session_id)
        except ReplayDivergence as e:
            return {"identical": False, "trials": len(recorded), "first_divergence": {"where": "model calls", "field": str(e)}}
        new = read_trace(workdir / t.session_id)
        diff = _first_difference(recorded, new.of("trial_evaluated"), "trial")
        if diff is None:
            a, b = t.finished.get("recommendation"), (new.finished or {}).get("recommendation")
            if a != b:
                diff = {"where": "final answer", "field": "recommendation", "recorded": a, "replayed": b}
        if diff is None and t.finished.get("stop_reason") != res.stop_reason:
            diff = {"where": "end", "field": "stop_reason", "recorded": t.finished.get("stop_reason"),
                    "replayed": res.stop_reason}
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
