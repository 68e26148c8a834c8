"""What `tuneloop run` shows a person: a line per trial as it happens, and a closing
summary that says plainly how the session went and what to do next."""

from __future__ import annotations

import json
from typing import Any

from tuneloop.tools.formatting import fmt_cell, fmt_param, fmt_value
from tuneloop.tools.gd_space import SHORT_LABELS
from tuneloop.tools.space import params_of
from tuneloop.tools.usage import known_sum


def config_text(params: dict[str, Any], labels: dict[str, str] = SHORT_LABELS) -> str:
    """A configuration for a person: 'lr=0.001 momentum=0.9 nesterov=true'."""
    def show(v: Any) -> str:
        return fmt_param(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else json.dumps(v)
    return " ".join(f"{labels.get(k, k)}={show(v)}" for k, v in params.items())


def _extras(params: dict[str, Any]) -> str:
    rest = {k: v for k, v in params.items() if k not in ("learning_rate", "momentum")}
    return f" {config_text(rest)}" if rest else ""


class TrialLines:
    """Prints one line per answered proposal, with the best final value so far."""

    def __init__(self) -> None:
        self.best: dict[str, Any] = {}

    def __call__(self, f: dict) -> None:
        if not f["repeat"] and (not self.best or f["score"] < self.best["score"]):
            self.best = dict(f)
        best = self.best.get("final_value")
        tag = "  repeat" if f["repeat"] else ""
        if f["status"] in ("ok", "failed"):  # a task's trial: its configuration, value and metrics
            extra = " ".join(f"{k}={fmt_value(v, 3) if isinstance(v, float) else v}"
                             for k, v in (f.get("metrics") or {}).items())
            value = fmt_value(f["final_value"], 4)
            print(f"#{f['trial']:<3} {config_text(params_of(f))}  {f['status']:<6} value={value}"
                  f"{'  ' + extra if extra else ''}{'  error: ' + f['error'] if f.get('error') else ''}  "
                  f"best={fmt_value(best, 4) if best is not None else '-'}  left={f['budget_left']}{tag}", flush=True)
            return
        print(f"#{f['trial']:<3} lr={fmt_param(f['learning_rate']):<10} mom={fmt_param(f['momentum']):<9}"
              f"{_extras(params_of(f))} "
              f"{f['status']:<9} f={fmt_value(f['final_value'], 3):<9} it={f['iterations']:<5} "
              f"best={fmt_value(best, 3) if best is not None else '-':<9} left={f['budget_left']}{tag}", flush=True)


def earlier_segments(events: list[dict]) -> dict[str, Any]:
    """What the segments of a session before this one spent (from their session_finished
    events): model calls, tokens, wall time, cost; None where a figure is unknown."""
    fins = [e for e in events if e.get("event") == "session_finished"]
    def total(key):
        return known_sum(e.get(key) for e in fins)
    return {"segments": len(fins), "model_calls": total("model_calls") or 0, "input_tokens": total("input_tokens"),
            "output_tokens": total("output_tokens"), "wall_s": total("wall_s") or 0.0, "cost_usd": total("cost_usd")}


def outcome_advice(r) -> str | None:
    """A plain sentence when no charged trial converged, with what to try next."""
    charged = [t for t in r.trials if t.charged]
    if not charged:
        return None
    if all(t.status in ("ok", "failed") for t in charged):  # a task's
        return "every trial failed: see each trial's error (tuneloop trace summary)" \
            if all(t.status == "failed" for t in charged) else None
    if all(t.status == "diverged" for t in charged):
        return (f"every trial diverged: the learning rates tried are too large for {r.objective} from this start. "
                f"Try smaller ones, or a prompt that shows the allowed range (`tuneloop prompts list`), and "
                f"`tuneloop sweep --function {r.objective}` shows where it converges.")
    if not any(t.status == "converged" for t in charged):
        return (f"no trial converged: the best one still moved at the iteration cap or stopped away from the "
                f"minimum. Try a larger --max-iter, or `tuneloop sweep --function {r.objective}` to see which "
                f"(learning rate, momentum) converge.")
    return None


def print_summary(out, r, earlier: dict[str, Any] | None = None) -> None:
    """The closing lines. For a resumed session (`earlier`: the segments before it) the
    figures are the whole session's, with this segment's beside them."""
    b = r.best
    out.print()
    if b is not None:
        fv = "nan (diverged)" if b.final_value is None else f"{b.final_value:.6g}"
        out.print(f"[bold]best[/bold]   trial {b.trial}: {config_text(b.params)} "
                  + (f"-> {b.status}, value={fv}" if b.status in ("ok", "failed") else
                     f"-> {b.status}, f={fv}, {b.iterations} iterations"))
    else:
        out.print("[bold]best[/bold]   no trial was charged")
    advice = outcome_advice(r)
    if advice:
        out.print(f"[bold]note[/bold]   {advice}")
    if r.recommendation is not None:
        rec = r.recommendation
        # whose choice it is, in so many words: the agent's as it came, or tuneloop's in its place
        who = "tuneloop reports" if r.recommended_by == "tuneloop" else "agent recommends"
        rec_params = rec.params(b.params if b is not None else ("learning_rate", "momentum"))
        out.print(f"[bold]{who}[/bold] {config_text(rec_params)}: {rec.rationale}")
        if b is not None and rec_params != b.params:
            picked = next((t for t in r.trials if not t.repeat and t.params == rec_params), None)
            what = (f"trial {picked.trial} (f={fmt_value(picked.final_value)})" if picked is not None
                    else "a configuration it did not try")
            out.print(f"[bold]note[/bold]   the agent's pick is {what}, not the best trial {b.trial} "
                      f"(f={fmt_value(b.final_value)})")
    e = earlier or {"segments": 0, "model_calls": 0, "input_tokens": None, "output_tokens": None, "wall_s": 0.0,
                    "cost_usd": None}
    calls = e["model_calls"] + r.model_calls
    tin, tout = known_sum((e["input_tokens"], r.input_tokens)), known_sum((e["output_tokens"], r.output_tokens))
    cost, wall = known_sum((e["cost_usd"], r.cost_usd)), e["wall_s"] + r.wall_s
    resumed = e["segments"] > 0
    def seg(text):
        return f" (this segment: {text})" if resumed else ""
    tokens = ("none (no model call finished)" if not calls else "unknown (the server reports no usage)") \
        if tin is None and tout is None \
        else f"{fmt_cell(tin)}/{fmt_cell(tout)}" + seg(f"{fmt_cell(r.input_tokens)}/{fmt_cell(r.output_tokens)}")
    talk = f", {r.text_replies} replies without a proposal" if r.text_replies else ""
    out.print(f"{'whole session ' + str(e['segments'] + 1) + ' segments: ' if resumed else ''}"
              f"trials charged {r.trials_charged}/{r.budget}, invalid {r.invalid_proposals}, repeated "
              f"{r.repeated_proposals}; model calls {calls}{seg(str(r.model_calls))}{talk}, tokens in/out {tokens}"
              + ("" if cost is None else f", cost ${cost:.4f}"))
    def pct(x):
        return 100.0 * x / r.wall_s if r.wall_s else 0.0
    waits = f", retry waits {r.retry_wait_s:.1f} s ({r.retries} retries)" if r.retries else ""
    out.print(f"wall {wall:.1f} s{seg(f'{r.wall_s:.1f} s')}; this segment: model {r.model_s:.1f} s, tool "
              f"{r.tool_s:.2f} s{waits}, overhead {r.overhead_s:.2f} s = {pct(r.overhead_s):.1f} %; "
              f"stop: {r.stop_reason}" if resumed else
              f"wall {r.wall_s:.1f} s (model {r.model_s:.1f} s, tool {r.tool_s:.2f} s{waits}, overhead "
              f"{r.overhead_s:.2f} s = {pct(r.overhead_s):.1f} %); stop: {r.stop_reason}")
    out.print(f"run directory: {r.run_dir}")
    if r.stop_reason in ("interrupted", "model_error"):
        out.print(f"resume it with: tuneloop run --resume {r.run_dir}")
