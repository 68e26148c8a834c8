"""Analysing traces: summary, compare, state audit, plot data, export.

Traces are read with agent.tracing.read_trace (the format's one home); see
docs/design.md for the run directory and the events.

Every view shows every parameter of the run's search space (trace_params.run_space): a
trial row carries the GD values `learning_rate` and `momentum` as the event records them
(momentum 0 when the space has none) and, beside them, each other parameter under its own
name. A run of the default space (learning_rate, momentum), and every run written before
typed spaces, gives the same rows, columns and text as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tuneloop.evaluation.strategies import AGENT_METHOD, CLASSICAL, LLM_METHODS, LLM_SOURCES
from tuneloop.evaluation.trace_params import extra_params, gd_values, run_space, union
from tuneloop.tools.formatting import spoken_list
from tuneloop.tools.gd_space import SYMBOLS
from tuneloop.tools.record import Trace
from tuneloop.tools.scoring import best_so_far, is_failed
from tuneloop.tools.space import CategoricalParam, FloatParam, IntParam, SearchSpace, params_of
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
    """One row per answered proposal: the GD fields, then each other parameter of the
    trial under its own name (GD parameter names never clash with the row's fields)."""
    rows, best = [], math.inf
    best_value = None
    for e in t.of("trial_evaluated"):
        if e.get("charged", True) and e.get("score") is not None and e["score"] < best:
            best, best_value = e["score"], e.get("final_value")
        params = params_of(e)
        rows.append({
            "trial": e.get("trial"), "source": e.get("source"),
            "learning_rate": e.get("learning_rate", params.get("learning_rate")),
            "momentum": e.get("momentum", params.get("momentum")),
        } | {k: params[k] for k in extra_params(params)} | {
            "status": e.get("status"), "final_value": e.get("final_value"),
            "iterations": e.get("iterations"), "score": e.get("score"), "repeat": bool(e.get("repeat")),
            "charged": bool(e.get("charged", True)), "best_score_so_far": None if best == math.inf else best,
            "best_value_so_far": best_value,
        })
    return rows


def invalid_rows(t: Trace) -> list[dict[str, Any]]:
    """The rejected proposals. A record written before typed spaces holds learning_rate and
    momentum; a newer one its raw `arguments` (kept whole), from which the two are read."""
    out = []
    for e in t.of("tool_error"):
        row = {"source": e.get("source"), "error": e.get("error")} | gd_values(e)
        out.append(row | ({"arguments": e["arguments"]} if "arguments" in e else {}))
    return out


def summary(t: Trace) -> dict[str, Any]:
    calls = t.of("model_called")
    lat = [float(c.get("latency_s", 0.0)) for c in calls]
    fin = t.finished
    rows = trial_rows(t)
    # a task's run: its name and direction (GD's start point, iterations and tolerance are not its)
    keys = ("method", "objective", "budget", "seed") if t.manifest and t.manifest.get("task") else (
        "method", "objective", "x0", "max_iter", "tol", "budget", "seed")
    settings = {k: t.manifest.get(k) for k in keys} if t.manifest else {}
    if t.manifest and t.manifest.get("task"):
        settings["direction"] = t.manifest["task"].get("direction")
    if t.manifest and t.manifest.get("model"):
        settings["model"] = t.manifest["model"].get("model")
    if t.manifest and t.manifest.get("prompt"):
        settings["prompt"] = t.manifest["prompt"].get("name")
    return {
        "run_dir": str(t.run_dir),
        "session_id": t.session_id,
        "settings": settings,
        "parameters": list(run_space(t).names),  # the space's, in its order: the table's columns
        "trials": rows,
        "invalid": invalid_rows(t),
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


def best_columns(names: Iterable[str]) -> list[str]:
    """compare's columns of the best trial's configuration: best_lr and best_momentum as
    ever, then best_<name> for each other parameter."""
    return ["best_lr", "best_momentum", *(f"best_{n}" for n in extra_params(names))]


def compare(traces: list[Trace]) -> list[dict[str, Any]]:
    """One row per run, grouped by (method, prompt, model), arms in the order they first
    appear, so the runs of one arm sit together. A run's row holds best_<name> for each
    parameter of its space beyond the two (see best_columns)."""
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
        } | {f"best_{n}": b.get(n) if b else None for n in extra_params(s["parameters"])} | {
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


def seed_pairs(traces: list[Trace]) -> list[dict[str, Any]]:
    """The runs paired by seed: per objective, for every pair of arms (labelled as a study's
    tables label them) that ran on at least one common seed, the paired wins, ties and
    losses on the best score (lower wins), the Wilcoxon p-value, its Holm correction over
    that objective's pairs and the rank-biserial r (evaluation/stats.py paired_table).
    A run without a recorded seed is left out; of several runs of one arm on one
    (objective, seed), the first given counts. Empty when no two arms share a seed."""
    from tuneloop.evaluation.arms import Arm
    from tuneloop.evaluation.stats import paired_table

    by_objective: dict[str, dict[str, dict[Any, float | None]]] = {}
    for t in traces:
        m = t.manifest or {}
        if m.get("seed") is None:
            continue
        prompt = (m.get("prompt") or {}).get("name") if t.method == AGENT_METHOD else None
        ratio = (m.get("centaur") or {}).get("ratio") if t.method == "centaur" else None
        label = Arm(t.method, prompt, (m.get("model") or {}).get("model"), ratio=ratio).label
        best = min((r["score"] for r in trial_rows(t) if r["charged"] and r["score"] is not None), default=None)
        by_objective.setdefault(t.objective, {}).setdefault(label, {}).setdefault(m["seed"], best)
    return [{"objective": f} | r.__dict__ for f, arms in by_objective.items() for r in paired_table(arms) if r.n]


# ------------------------------------------------------------------ state audit
# Where the audit measures, per kind of axis: in decades on a log axis; on a linear axis in
# fractions of its magnitude, the power of ten at or above its span (1 for momentum's
# [0, 0.99], 0.01 for [0, 0.01], 10 for an integer in [1, 4]); a categorical axis adds 0
# when the choices are equal, else 1 (one step), and a failed region needs the same choice.
# These are the space's unit coordinates (to_unit's cube) with each axis scaled by its own
# step rather than by its range: the cube itself would weigh a decade of the default alpha
# as 1/3 and 0.1 of beta as 0.101 (the audit weighs them 1 : 1), would move flags of
# default runs, and its rounding would flip box edges (beta 0.99 against 0.94, 28 such pairs
# of two-decimal betas).
LOG_STEP, LOG_BOX = 1.0, 0.1  # one unit of distance: a decade; a failed region: +-0.1 decade
LINEAR_STEP, LINEAR_BOX = 0.1, 0.05  # a tenth of the magnitude; +-5 % of it (0.1 and 0.05 of beta)


@dataclass(frozen=True)
class AuditAxis:
    """One parameter as the state audit measures it. Continuous axes are read in the
    coordinate to_unit scales to [0, 1] (log10 on a log axis, the value on a linear one),
    in units of `step`; a categorical axis is 0 apart when equal, else 1 (one step)."""

    name: str
    kind: Literal["log", "linear", "categorical"]
    step: float = 1.0  # one unit of audit distance, in the axis' coordinate
    box: float = 0.0  # the failed region's half-width, in the axis' coordinate

    @classmethod
    def of(cls, name: str, p: FloatParam | IntParam | CategoricalParam) -> AuditAxis:
        if isinstance(p, CategoricalParam):
            return cls(name, "categorical")
        if p.log:
            return cls(name, "log", LOG_STEP, LOG_BOX)
        magnitude = 10.0 ** math.ceil(math.log10(p.high - p.low))
        return cls(name, "linear", LINEAR_STEP * magnitude, LINEAR_BOX * magnitude)

    def coord(self, v: Any) -> Any:
        """The value where it is measured; a choice by its JSON text (true is not 1)."""
        if self.kind == "categorical":
            return json.dumps(v)
        if v is None:
            return math.nan
        return math.log10(v) if self.kind == "log" else float(v)

    def gap(self, a: Any, b: Any) -> float:
        """a - b in steps (categorical: 0 or 1)."""
        if self.kind == "categorical":
            return 0.0 if a == b else 1.0
        return (a - b) / self.step

    def near(self, a: Any, b: Any) -> bool:
        """Within the failed region's box of each other (categorical: the same choice)."""
        return a == b if self.kind == "categorical" else abs(a - b) <= self.box

    def describe(self) -> str:
        label = SYMBOLS.get(self.name, self.name)
        if self.kind == "categorical":
            return f"the same {label}"
        return f"{self.box:g} decade of {label}" if self.kind == "log" else f"{self.box:g} of {label}"


@dataclass(frozen=True)
class AuditGeometry:
    """Distances and failed regions over a whole space: Euclidean over the axes' steps.
    On the default space this is the audit as it always was: 1 decade of alpha weighs as
    0.1 of beta, a failed region is +-0.1 decade of alpha and +-0.05 of beta (the same
    arithmetic, so not one flag moves)."""

    axes: tuple[AuditAxis, ...]

    @classmethod
    def of(cls, space: SearchSpace) -> AuditGeometry:
        return cls(tuple(AuditAxis.of(n, space[n]) for n in space.names))

    def coords(self, values: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(ax.coord(v) for ax, v in zip(self.axes, values, strict=True))

    def distance(self, a: Sequence[Any], b: Sequence[Any]) -> float:
        return math.hypot(*(ax.gap(x, y) for ax, x, y in zip(self.axes, a, b, strict=True)))

    def near(self, a: Sequence[Any], b: Sequence[Any]) -> bool:
        return all(ax.near(x, y) for ax, x, y in zip(self.axes, a, b, strict=True))

    def describe(self) -> str:
        """The failed region in words: '0.1 decade of alpha and 0.05 of beta'."""
        return spoken_list([ax.describe() for ax in self.axes])


def proposal_values(space: SearchSpace, e: Mapping[str, Any]) -> tuple[Any, ...]:
    """A trial's configuration as a tuple in the space's order (floats as floats, as the
    events' numbers were read before typed spaces)."""
    params = params_of(e)
    return tuple(_typed(space[n], params.get(n)) for n in space.names)


def _typed(p: FloatParam | IntParam | CategoricalParam, v: Any) -> Any:
    return float(v) if isinstance(p, FloatParam) and isinstance(v, (int, float)) else v


class _Memory:
    """What the run knew before each trial: configurations tried, failed ones, the incumbent."""

    def __init__(self, geo: AuditGeometry, f_star: float | None) -> None:
        self.geo, self.f_star = geo, f_star
        self.tried: list[tuple[Any, ...]] = []
        self.failed: list[tuple[Any, ...]] = []
        self.incumbent: tuple[Any, ...] | None = None  # the configuration's values, then its score

    def judge(self, e: Mapping[str, Any], p: tuple[Any, ...], previous: tuple[Any, ...] | None = None,
              at_bound: list[str] | None = None) -> dict[str, Any]:
        """One model proposal's turn: the state it saw and the flags it earns; against the
        model's previous proposal, whether it moved toward the incumbent (now closer to it)
        and away from the failures (now farther from the nearest one)."""
        geo, c = self.geo, self.geo.coords(p)
        failed = [geo.coords(q) for q in self.failed]
        repeat = p in self.tried or bool(e.get("repeat"))
        ignored = bool(self.incumbent and failed and min(geo.distance(c, q) for q in failed)
                       < geo.distance(c, geo.coords(self.incumbent[:-1])))
        toward = away = None
        if previous is not None:
            before = geo.coords(previous)
            if self.incumbent is not None:
                inc = geo.coords(self.incumbent[:-1])
                toward = geo.distance(c, inc) < geo.distance(before, inc)
            if failed:
                away = min(geo.distance(c, q) for q in failed) > min(geo.distance(before, q) for q in failed)
        return {"seq": e["seq"], "trial": e.get("trial"), "proposal": p, "invalid": False,
                "incumbent": self.incumbent, "failed_so_far": len(failed), "repeat_tried": repeat,
                "repeat_failed": repeat and p in self.failed, "in_failed_region": any(geo.near(c, q) for q in failed),
                "ignored_incumbent": ignored, "at_bound": at_bound or [], "toward_incumbent": toward,
                "away_from_failures": away}

    def learn(self, e: Mapping[str, Any], p: tuple[Any, ...]) -> None:
        if p not in self.tried:
            self.tried.append(p)
        if is_failed(e.get("status", ""), e.get("final_value"), self.f_star) and p not in self.failed:
            self.failed.append(p)
        score = e.get("score")
        if e.get("charged", True) and score is not None and (self.incumbent is None or score < self.incumbent[-1]):
            self.incumbent = (*p, score)


def state_audit(t: Trace) -> dict[str, Any]:
    """For every proposal the model made, what was true at that moment, and whether the
    proposal (a) repeated a configuration already tried, (b) fell in a failed region (near,
    in AuditGeometry's box, a trial that diverged or stopped away from the minimum), or
    (c) ignored the incumbent (it lies closer to a failed trial than to the incumbent).
    A proposal and the incumbent are tuples of the space's parameters in its order
    (`parameters`), the incumbent's score last."""
    space = run_space(t)
    memory = _Memory(AuditGeometry.of(space), _f_star(t))
    turns = []
    previous: tuple[Any, ...] | None = None  # the model's previous (valid) proposal
    model_sources = {*LLM_METHODS, *LLM_SOURCES} | ({t.method} if t.method not in CLASSICAL else set())
    for e in t.events:
        if e.get("event") == "tool_error" and e.get("source") in model_sources:
            turns.append({"seq": e["seq"], "invalid": True, "error": e.get("error")})
        elif e.get("event") == "trial_evaluated":
            p = proposal_values(space, e)
            if e.get("source") in model_sources:
                turns.append(memory.judge(e, p, previous, bounds_hit(space, p)))
                previous = p
            memory.learn(e, p)
    return _rates(turns, list(space.names)) | {"parameters": list(space.names)}


def bounds_hit(space: SearchSpace, values: Sequence[Any]) -> list[str]:
    """The numeric parameters whose value is at an end of their range (within 1e-9, in
    search units: log10 on a log axis)."""
    hit = []
    for name, v in zip(space.names, values, strict=True):
        prm = space[name]
        if isinstance(prm, CategoricalParam) or not isinstance(v, (int, float)) or isinstance(v, bool):
            continue
        lo, hi, x = float(prm.low), float(prm.high), float(v)
        if prm.log and x > 0:
            lo, hi, x = math.log10(lo), math.log10(hi), math.log10(x)
        tol = 1e-9 * max(1.0, abs(hi - lo))
        if abs(x - lo) <= tol or abs(x - hi) <= tol:
            hit.append(name)
    return hit


def _rates(turns: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    valid = [x for x in turns if not x["invalid"]]
    n = len(valid)

    def rate(k: str) -> float | None:
        return (sum(x[k] for x in valid) / n) if n else None

    def rate_of_known(k: str) -> float | None:  # over the turns where it could be judged
        known = [x[k] for x in valid if x[k] is not None]
        return sum(known) / len(known) if known else None

    return {"turns": turns, "n_turns": len(turns), "n_valid": n,
            "invalid_rate": (len(turns) - n) / len(turns) if turns else None,
            "repeat_tried_rate": rate("repeat_tried"), "repeat_failed_rate": rate("repeat_failed"),
            "failed_region_rate": rate("in_failed_region"), "ignored_incumbent_rate": rate("ignored_incumbent"),
            "at_bound_rate": (sum(bool(x["at_bound"]) for x in valid) / n) if n else None,
            "at_bound_by_parameter": {m: (sum(m in x["at_bound"] for x in valid) / n) if n else None for m in names},
            "distinct_by_parameter": {m: len({x["proposal"][i] for x in valid}) for i, m in enumerate(names)},
            "toward_incumbent_rate": rate_of_known("toward_incumbent"),
            "away_from_failures_rate": rate_of_known("away_from_failures")}


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


def export_fields(extra: Iterable[str] = ()) -> list[str]:
    """EXPORT_FIELDS with a column for each parameter beyond the two, after momentum."""
    i = EXPORT_FIELDS.index("momentum") + 1
    return [*EXPORT_FIELDS[:i], *extra, *EXPORT_FIELDS[i:]]


def export_columns(traces: list[Trace]) -> list[str]:
    """The export's columns for these runs: every parameter of any of their spaces."""
    return export_fields(extra_params(union(run_space(t).names for t in traces)))


def export_rows(traces: list[Trace]) -> list[dict[str, Any]]:
    """One row per trial across runs, with the parameters of its own run's space."""
    rows = []
    for t in traces:
        seed = (t.manifest or {}).get("seed")
        fields = export_fields(extra_params(run_space(t).names))
        for r in trial_rows(t):
            rows.append({"run": t.run_dir.name, "method": t.method, "objective": t.objective, "seed": seed}
                        | {k: r[k] for k in fields if k in r})
    return rows
