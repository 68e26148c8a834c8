"""The search state as text for prompts: history table, incumbent, tried, failed."""

from __future__ import annotations

from tuneloop.tools.formatting import fmt_lr, fmt_param, fmt_value
from tuneloop.tools.scoring import is_failed
from tuneloop.tools.trials import Evaluator, TrialResult


def history_table(trials: list[TrialResult]) -> str:
    """The charged trials in the order tried. The table only grows, so a prompt that shows
    it before what changes (the incumbent, the budget left) keeps a stable prefix, which
    llama.cpp and API servers reuse instead of reading it again."""
    rows = [t for t in trials if not t.repeat]
    if not rows:
        return "(none yet)"
    lines = ["trial | learning_rate | momentum | status | final_value | iterations"]
    lines += [
        f"{t.trial} | {fmt_lr(t.learning_rate)} | {fmt_param(t.momentum)} | {t.status} | "
        f"{fmt_value(t.final_value)} | {t.iterations}"
        for t in rows
    ]
    return "\n".join(lines)


def incumbent_text(ev: Evaluator) -> str:
    inc = ev.incumbent
    if inc is None:
        return "(none yet)"
    return (f"trial {inc.trial}: learning_rate={fmt_lr(inc.learning_rate)}, momentum={fmt_param(inc.momentum)}, "
            f"final_value={fmt_value(inc.final_value)}, iterations={inc.iterations}, status={inc.status}")


def tried_text(trials: list[TrialResult]) -> str:
    seen = {(t.learning_rate, t.momentum) for t in trials}
    return ", ".join(f"({fmt_lr(a)}, {fmt_param(b)})" for a, b in sorted(seen)) or "(none)"


def failed_text(trials: list[TrialResult], f_star: float | None) -> str:
    bad = [t for t in trials if not t.repeat and is_failed(t.status, t.final_value, f_star)]
    if not bad:
        return "(none)"
    return ", ".join(f"(lr={fmt_lr(t.learning_rate)}, momentum={fmt_param(t.momentum)}: "
                     f"{'diverged' if t.status == 'diverged' else 'poor, ' + fmt_value(t.final_value)})" for t in bad)


def prompt_values(ev: Evaluator) -> dict[str, str]:
    """Every template variable an agent session can fill (Centaur adds its own)."""
    c = ev.config
    return dict(
        objective_name=ev.objective.title,
        formula=ev.objective.formula,
        x0="(" + ", ".join(f"{v:g}" for v in c.x0) + ")",
        max_iter=str(c.max_iter),
        tol=f"{c.tol:g}",
        alpha_range=c.bounds.alpha_text(),
        beta_range=c.bounds.beta_text(),
        budget=str(c.budget),
        budget_left=str(ev.budget_left),
        history=history_table(ev.trials),
        incumbent=incumbent_text(ev),
        tried=tried_text(ev.trials),
        failed=failed_text(ev.trials, ev.f_star),
        n_trials=str(len(ev.trials)), sigma="", mean="", suggestion="", covariance="", top5="", recent="",
    )
