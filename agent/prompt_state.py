"""The search state as text for prompts: history table, incumbent, tried, failed."""

from __future__ import annotations

import json
from typing import Any

from tuneloop.tools.formatting import fmt_value, spoken_list
from tuneloop.tools.gd_space import DEFAULT_SPACE, SHORT_LABELS, space_text
from tuneloop.tools.scoring import is_failed
from tuneloop.tools.space import CategoricalParam, IntParam, SearchSpace
from tuneloop.tools.trials import Evaluator, TrialResult


def history_table(trials: list[TrialResult], space: SearchSpace = DEFAULT_SPACE,
                  pending: list[dict[str, Any]] | None = None, task: bool | None = None) -> str:
    """The charged trials in the order tried, then any out being tried (parallel ask/tell:
    status "pending", no result yet). The table only grows, so a prompt that shows it
    before what changes (the incumbent, the budget left) keeps a stable prefix, which
    llama.cpp and API servers reuse instead of reading it again."""
    rows = [t for t in trials if not t.repeat]
    pending = pending or []
    if not rows and not pending:
        return "(none yet)"
    if task if task is not None else all(t.status in ("ok", "failed") for t in rows):  # value and metrics
        return _task_table(rows, space, pending)
    lines = [" | ".join(["trial", *space.names, "status", "final_value", "iterations"])]
    lines += [
        " | ".join([str(t.trial), *(space.fmt(n, t.params[n]) for n in space), t.status,
                    fmt_value(t.final_value), str(t.iterations)])
        for t in rows
    ]
    lines += [" | ".join(["-", *(space.fmt(n, p[n]) for n in space), "pending", "-", "-"]) for p in pending]
    return "\n".join(lines)


def _task_table(rows: list[TrialResult], space: SearchSpace, pending: list[dict[str, Any]]) -> str:
    metrics = list(dict.fromkeys(k for t in rows for k in t.metrics))
    lines = [" | ".join(["trial", *space.names, "status", "value", *metrics])]
    lines += [" | ".join([str(t.trial), *(space.fmt(n, t.params[n]) for n in space), t.status,
                          fmt_value(t.final_value), *(_metric(t.metrics.get(k)) for k in metrics)]) for t in rows]
    lines += [" | ".join(["-", *(space.fmt(n, p[n]) for n in space), "pending", "-", *("-" for _ in metrics)])
              for p in pending]
    return "\n".join(lines)


def _metric(v: Any) -> str:
    return fmt_value(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v if v is not None else "-")


def incumbent_text(ev: Evaluator) -> str:
    inc = ev.incumbent
    if inc is None:
        return "(none yet)"
    if ev.task is not None:
        return f"trial {inc.trial}: {ev.config.space.format(inc.params)}, value={fmt_value(inc.final_value)}"
    return (f"trial {inc.trial}: {ev.config.space.format(inc.params)}, "
            f"final_value={fmt_value(inc.final_value)}, iterations={inc.iterations}, status={inc.status}")


def best_text(ev: Evaluator) -> str:
    """The incumbent by its trial and result, not its values: 'trial 3 (converged,
    final_value=1.2e-09)'. A small model copies the values it reads last; naming the trial
    leaves the values to the table (docs/sessions.md)."""
    inc = ev.incumbent
    if inc is None:
        return "(none yet)"
    if ev.task is not None:
        return f"trial {inc.trial} (value={fmt_value(inc.final_value)})"
    return f"trial {inc.trial} ({inc.status}, final_value={fmt_value(inc.final_value)})"


def _order(v: Any) -> tuple[int, Any]:
    """Sort numbers by value, anything else (a choice) by its JSON text, after them."""
    return (0, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, json.dumps(v))


def tried_text(trials: list[TrialResult], space: SearchSpace = DEFAULT_SPACE,
               pending: list[dict[str, Any]] | None = None) -> str:
    """Every configuration tried or being tried, sorted."""
    seen = {space.key(p): p for p in [*(t.params for t in trials), *(pending or [])]}
    rows = sorted(seen.values(), key=lambda p: tuple(_order(p[n]) for n in space))
    return ", ".join("(" + ", ".join(space.fmt(n, p[n]) for n in space) + ")" for p in rows) or "(none)"


def failed_text(trials: list[TrialResult], f_star: float | None, space: SearchSpace = DEFAULT_SPACE) -> str:
    bad = [t for t in trials if not t.repeat and is_failed(t.status, t.final_value, f_star)]
    if not bad:
        return "(none)"
    return ", ".join(f"({space.format(t.params, SHORT_LABELS)}: "
                     f"{'diverged' if t.status == 'diverged' else 'poor, ' + fmt_value(t.final_value)})" for t in bad)


GAP_DIGITS = 2  # a widest gap's middle as a model writes it: two significant digits


def widest_gaps(trials: list[TrialResult], space: SearchSpace = DEFAULT_SPACE,
                pending: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per parameter, the middle of the widest stretch no trial has tried: on a number's
    axis (log10 on a log axis, as the space searches it) the widest interval between two
    values tried or out, or between one and a bound; of a choice, the first one untried.
    A parameter whose choices (or integers) were all tried is left out. Rounded to
    GAP_DIGITS significant digits, more if a narrow range needs them to stay strictly
    inside the stretch (never a bound, never a tried value), so the value is one the model
    can write.

    >>> widest_gaps([], DEFAULT_SPACE)
    {'learning_rate': 0.0032, 'momentum': 0.49}
    >>> widest_gaps([], DEFAULT_SPACE, [{"learning_rate": 1e-4, "momentum": 0.99}])
    {'learning_rate': 0.0032, 'momentum': 0.49}
    >>> widest_gaps([], DEFAULT_SPACE, [{"learning_rate": 3e-4, "momentum": 0.5}])
    {'learning_rate': 0.0055, 'momentum': 0.25}
    >>> narrow = SearchSpace.model_validate({"w": {"type": "float", "low": 1000, "high": 1010},
    ...                                      "k": {"type": "int", "low": 1, "high": 4}})
    >>> widest_gaps([], narrow), widest_gaps([], narrow, [{"w": 1005.0, "k": k} for k in (1, 2, 3, 4)])
    ({'w': 1005.0, 'k': 3}, {'w': 1002.0})
    """
    tried = [t.params for t in trials if not t.repeat] + list(pending or [])
    out: dict[str, Any] = {}
    for name in space:
        p = space[name]
        if isinstance(p, CategoricalParam):
            seen = {json.dumps(params[name]) for params in tried if name in params}
            rest = [c for c in p.choices if json.dumps(c) not in seen]
            if rest:
                out[name] = rest[0]
            continue
        z = _axis_points(space, name, tried)
        lo, hi = max(zip(z, z[1:], strict=False), key=lambda ab: ab[1] - ab[0])  # the first of equals
        middle = _inside(space, name, lo, hi)
        if middle is not None:
            out[name] = middle
    return out


def _axis_points(space: SearchSpace, name: str, tried: list[dict[str, Any]]) -> list[float]:
    """The bounds and every tried value of a number parameter, as sorted unit coordinates."""
    return sorted({0.0, 1.0, *(space.unit_of(name, params[name]) for params in tried if name in params)})


def _inside(space: SearchSpace, name: str, lo: float, hi: float) -> float | int | None:
    """The middle of the unit interval (lo, hi) of parameter `name` as a value strictly
    inside it (so never a bound or a tried value: (lo, hi) lies between two neighbouring
    _axis_points): a float with the fewest significant digits from GAP_DIGITS on that keep
    it there (a narrow range needs more); an integer, the point of its step's grid nearest
    the middle (the lower of two as near), or None when the interval holds none."""
    p = space[name]
    middle = space.value_at(name, (lo + hi) / 2)
    if isinstance(p, IntParam):
        assert isinstance(middle, int)
        below = above = middle  # outward from the middle's grid point, the lower side first
        while True:
            for v in dict.fromkeys((below, above)):
                if p.low <= v <= p.high and lo < space.unit_of(name, v) < hi:
                    return v
            if (below < p.low or space.unit_of(name, below) <= lo) and \
                    (above > p.high or space.unit_of(name, above) >= hi):
                return None  # past both ends of the interval
            below, above = below - p.step, above + p.step
    for digits in range(GAP_DIGITS, 16):
        rounded = float(f"{middle:.{digits}g}")
        if lo < space.unit_of(name, rounded) < hi:
            return rounded
    return float(middle)


CONVERGED = ("converged", "ok")  # a GD run that met its tolerance; a task's trial that returned a value


def near_best_gaps(ev: Evaluator) -> dict[str, Any]:
    """Per parameter, a step from the incumbent into the untried: the middle of the wider of
    the two stretches next to the incumbent's value (between it and the nearest value
    tried, or a bound), on the space's own scale; a choice keeps the incumbent's. Nothing
    tried yet, or a best trial that did not converge (every run so far stopped at the
    iteration cap or diverged: no neighbourhood has done well yet): widest_gaps. (A history
    of small, slow learning rates otherwise offered a step between two of them, and the
    embedded model copied it.)

    >>> from tuneloop.tools.trials import EvaluatorConfig
    >>> ev = Evaluator(EvaluatorConfig(objective="sphere", budget=3, max_iter=300))
    >>> _ = [ev.evaluate({"learning_rate": lr, "momentum": m}) for lr, m in ((1e-3, 0.5), (1e-2, 0.9))]
    >>> ev.incumbent.params, ev.incumbent.status, near_best_gaps(ev)
    ({'learning_rate': 0.01, 'momentum': 0.9}, 'converged', {'learning_rate': 0.032, 'momentum': 0.7})
    """
    space, inc = ev.config.space, ev.incumbent
    if inc is None or inc.status not in CONVERGED:
        return widest_gaps(ev.trials, space, ev.pending)
    out: dict[str, Any] = {}
    for name in space:
        if isinstance(space[name], CategoricalParam):
            out[name] = inc.params[name]
            continue
        u = space.unit_of(name, inc.params[name])
        z = _axis_points(space, name, ev.known_params)
        sides = [(u - lo, lo, u) for lo in z if lo < u][-1:] + [(hi - u, u, hi) for hi in z if hi > u][:1]
        step = _inside(space, name, *max(sides)[1:]) if sides else None
        out[name] = inc.params[name] if step is None else step
    return out


def untried_text(trials: list[TrialResult], space: SearchSpace = DEFAULT_SPACE,
                 pending: list[dict[str, Any]] | None = None) -> str:
    """'learning_rate=3.2e-3, momentum=0.49': widest_gaps, written as a configuration.

    >>> untried_text([])
    'learning_rate=3.2e-3, momentum=0.49'
    """
    return space.format(widest_gaps(trials, space, pending)) or "(every choice tried)"


def cma_names(space: SearchSpace) -> str:
    """CMA-ES's coordinates by name: 'log10 lr, momentum'."""
    return ", ".join(f"log10 {SHORT_LABELS.get(n, n)}" if getattr(space[n], "log", False) else n
                     for n in space.continuous)


def answer_json(space: SearchSpace) -> str:
    """'{"learning_rate": <number>, "momentum": <number>}': what a JSON answer holds."""
    kinds = {"float": "<number>", "int": "<integer>"}
    return "{" + ", ".join(f'"{n}": ' + kinds.get(space[n].type, f"<one of {space[n].range_text()}>")
                           for n in space) + "}"


def cma_axes(space: SearchSpace) -> str:
    """CMA-ES's coordinates as Centaur's prompt lists them, then what it does not search.

    >>> print(cma_axes(DEFAULT_SPACE))
      index 0: log10(learning_rate), learning_rate in [1e-4, 1e-1]
      index 1: momentum, in [0, 0.99]
    """
    lines = [f"  index {i}: log10({n}), {n} in {space[n].range_text()}" if getattr(space[n], "log", False)
             else f"  index {i}: {n}, in {space[n].range_text()}" for i, n in enumerate(space.continuous)]
    others = [f"{n} in {space[n].range_text()}" for n in space if isinstance(space[n], CategoricalParam)]
    if others:
        lines.append(f"  (not searched by CMA-ES, chosen with each proposal: {spoken_list(others)})")
    return "\n".join(lines)


def prompt_space(space: SearchSpace, ev: Evaluator) -> str:
    """`space` as a prompt says it: on GD with its symbols (space_text), on a task by name;
    a log-scale range in plain decimals either way (the embedded model copies a bound it
    reads in its own notation)."""
    return space_text(space) if ev.task is None else space.describe(sci=False)


def prompt_values(ev: Evaluator) -> dict[str, str]:
    """Every template variable an agent session can fill (Centaur adds its own)."""
    c = ev.config
    pending = ev.pending
    return dict(
        objective_name=ev.objective.title,
        formula=ev.objective.formula,
        x0="(" + ", ".join(f"{v:g}" for v in c.x0) + ")",
        max_iter=str(c.max_iter),
        tol=f"{c.tol:g}",
        space=prompt_space(c.space, ev),
        parameters=spoken_list(list(c.space.names)),
        alpha_range=c.space["learning_rate"].range_text() if "learning_rate" in c.space else "-",
        beta_range=c.space["momentum"].range_text() if "momentum" in c.space else "[0, 0]",
        budget=str(c.budget),
        budget_left=str(ev.budget_left),
        history=history_table(ev.trials, c.space, pending, task=ev.task is not None if pending else None),
        incumbent=incumbent_text(ev),
        best=best_text(ev),
        tried=tried_text(ev.trials, c.space, pending),
        failed=failed_text(ev.trials, ev.f_star, c.space),
        untried=untried_text(ev.trials, c.space, pending),
        near_best=c.space.format(near_best_gaps(ev)),
        n_trials=str(len(ev.trials)), sigma="", mean="", suggestion="", covariance="", top5="", recent="",
        n_candidates="", target="", region="",
        cma_axes=cma_axes(c.space), cma_names=cma_names(c.space), answer_json=answer_json(c.space),
        tool=tool_name(ev), direction_text=direction_text(ev),
    )


def tool_name(ev: Evaluator) -> str:
    """The tool a model calls to run a trial: GD's, or a task's."""
    return "run_trial" if ev.task is not None else "run_momentum_gd"


def direction_text(ev: Evaluator) -> str:
    """Which way is better, in words."""
    if ev.task is None:
        return "Lower final value is better; a diverged run is the worst outcome; fewer iterations break ties."
    return f"{'Lower' if ev.task.direction == 'minimize' else 'Higher'} value is better."
