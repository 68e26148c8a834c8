"""`trace state --plot`: a run's search state as a picture (report.py's helpers draw it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.ticker import PercentFormatter

from tuneloop.evaluation.report import axis_label, continuous_param, plt, save_figure, search_coord
from tuneloop.tools.space import CategoricalParam, SearchSpace


def plot_state(audit: dict, space: SearchSpace, path: Path | str, title: str) -> Path:
    """A run's search state at a glance (`trace state --plot`): left, each numeric
    parameter's proposals in order, on its range scaled to [0, 1] (log10 on a log axis),
    a proposal at an end of its range marked in red; right, the shares of proposals at a
    bound, moving toward the incumbent, away from the failures, repeating a tried
    configuration, and in a failed region, with each parameter's distinct values."""
    turns = [x for x in audit["turns"] if not x["invalid"]]
    names = audit["parameters"]
    numeric = [(i, n) for i, n in enumerate(names) if not isinstance(space[n], CategoricalParam)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.8), dpi=110, gridspec_kw={"width_ratios": [1.6, 1]})
    for k, (i, n) in enumerate(numeric):
        p = continuous_param(space, n)
        lo, hi = search_coord(p, p.low), search_coord(p, p.high)
        xs = np.arange(1, len(turns) + 1)
        ys = np.array([(search_coord(p, float(x["proposal"][i])) - lo) / (hi - lo) for x in turns], float)
        bound = np.array([n in x["at_bound"] for x in turns], bool)
        ax.plot(xs, ys, "-o", ms=4, lw=1, color=f"C{k}", label=axis_label(n, p), zorder=2)
        if bound.any():
            ax.scatter(xs[bound], ys[bound], s=70, facecolor="none", edgecolor="#e53935", lw=1.6, zorder=3)
    ax.axhline(0, color="black", lw=0.6)
    ax.axhline(1, color="black", lw=0.6)
    ax.set_ylim(-0.06, 1.06)
    ax.set_xlabel("model proposal")
    ax.set_ylabel("position in its range (0 = low end, 1 = high end)")
    ax.set_title(title + "\n(red rings: a proposal at an end of its range)", fontsize=10)
    if numeric:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    shares = [("at a bound", audit.get("at_bound_rate")), ("toward the incumbent", audit.get("toward_incumbent_rate")),
              ("away from failures", audit.get("away_from_failures_rate")),
              ("repeats a tried one", audit.get("repeat_tried_rate")),
              ("in a failed region", audit.get("failed_region_rate"))]
    labels = [s for s, _ in shares]
    values = [np.nan if v is None else 100 * v for _, v in shares]
    ax2.barh(labels[::-1], [0 if np.isnan(v) else v for v in values[::-1]], color="#5c6bc0")
    for y, v in enumerate(values[::-1]):
        ax2.text(1, y, "n/a" if np.isnan(v) else f"{v:.0f} %", va="center", fontsize=9, color="white"
                 if not np.isnan(v) and v > 12 else "black")
    ax2.set_xlim(0, 100)
    ax2.xaxis.set_major_formatter(PercentFormatter())
    distinct = ", ".join(f"{n} {c}" for n, c in audit.get("distinct_by_parameter", {}).items())
    ax2.set_title(f"{audit['n_valid']} valid model proposals\ndistinct values: {distinct}", fontsize=10)
    ax2.grid(axis="x", alpha=0.3)
    return save_figure(fig, path)
