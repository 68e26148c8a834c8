"""Tables and plots (PNG). matplotlib is imported here only, and lazily by the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator, PercentFormatter  # noqa: E402

from tuneloop.evaluation.landscape import search_landscape  # noqa: E402
from tuneloop.tools.scoring import DIVERGED_SCORE, best_so_far  # noqa: E402
from tuneloop.tools.space import CategoricalParam, FloatParam, IntParam, SearchSpace  # noqa: E402
from tuneloop.tools.sweep import Landscape  # noqa: E402

GAP_CEILING = 1e100  # the colour scale's top (f_final - f*)


def draw_landscape(ax, land: Landscape, colorbar: bool = True):
    """Heatmap of f_final - f* on the (log10 alpha, beta) grid; diverged cells grey."""
    # no known minimum (an objective from a file): colour by the value above the grid's lowest
    floor = land.f_star if math.isfinite(land.f_star) else float(np.nanmin(land.final_value, initial=np.inf))
    gap = land.final_value - floor
    # a run that ended near overflow without diverging (1e302 on a steep quadratic) is drawn
    # at the ceiling: log ticks up to 1e308 overflow inside matplotlib
    gap = np.where(np.isnan(gap), np.nan, np.clip(gap, 1e-16, GAP_CEILING))
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#bdbdbd")
    finite = gap[np.isfinite(gap)]
    vmin = max(float(finite.min()), 1e-16) if finite.size else 1e-16
    vmax = max(float(finite.max()), vmin * 10) if finite.size else 1.0
    extent = (land.log10_alphas[0], land.log10_alphas[-1], land.betas[0], land.betas[-1])
    im = ax.imshow(np.ma.masked_invalid(gap), origin="lower", aspect="auto", extent=extent,
                   cmap=cmap, norm=LogNorm(vmin=vmin, vmax=vmax), interpolation="nearest")
    # plain Unicode, not mathtext: parsing $...$ labels costs a sweep more than its scoring
    ax.set_xlabel("log₁₀ α (learning rate)")
    ax.set_ylabel("β (momentum)")
    if colorbar:
        cb = ax.figure.colorbar(im, ax=ax, format=LogFormatter())  # "1e-08": no mathtext either
        cb.set_label("f(x_final) − f* (grey: diverged)")
    return im


def plot_landscape(land: Landscape, path: Path | str, title: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5.5), dpi=120)
    draw_landscape(ax, land)
    x0 = ", ".join(f"{v:g}" for v in land.x0)
    ax.set_title(title or f"{land.objective}: final value after momentum GD (x0 = ({x0}), T = {land.max_iter})")
    fig.subplots_adjust(left=0.1, right=0.97, bottom=0.1, top=0.93)  # fixed: tight_layout measures every label
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


METHOD_STYLE = {
    "grid": ("s", "#1f77b4"), "refined": ("D", "#17becf"), "random": ("o", "#ff7f0e"),
    "cmaes": ("^", "#2ca02c"), "tpe": ("v", "#d62728"), "llm": ("*", "#9467bd"), "centaur": ("P", "#8c564b"),
    "sllmbo": ("X", "#e377c2"), "llambo": ("h", "#bcbd22"), "hollm": ("p", "#393b79"),
}


VARIANT_COLOURS = ("#e377c2", "#bcbd22", "#7f7f7f", "#17becf", "#9edae5", "#c5b0d5", "#ff9896", "#98df8a")


def _style(label: str):
    """Marker and colour of an arm: its method's, and for an arm with a prompt or model
    of its own (`llm [paper, openai:gpt-4o]`) the method's marker in a colour of its own.
    An arm of the null model (`hollm [uniform]`) is drawn in a pale shade of the arm it
    ablates, so that each LLM arm and its ablation read as a pair.

    >>> _style("hollm")
    ('p', '#393b79')
    >>> _style("hollm [uniform]")
    ('p', '#a6a7c3')
    >>> _style("centaur [uniform, r=1]") == ("P", _pale(_style("centaur [r=1]")[1]))
    True
    """
    from tuneloop.agent.models import UNIFORM_MODEL

    method, _, rest = label.partition(" [")
    parts = [p.strip() for p in rest.rstrip("]").split(",")] if rest else []
    if UNIFORM_MODEL in parts:
        others = [p for p in parts if p != UNIFORM_MODEL]
        marker, colour = _style(f"{method} [{', '.join(others)}]" if others else method)
        return marker, _pale(colour)
    # a method without a style of its own: a colour from its name, so that two such never look alike
    marker, colour = METHOD_STYLE.get(method, ("x", VARIANT_COLOURS[sum(map(ord, method)) % len(VARIANT_COLOURS)]))
    if label == method:
        return marker, colour
    return marker, VARIANT_COLOURS[sum(map(ord, label)) % len(VARIANT_COLOURS)]


def _pale(colour: str, white: float = 0.55) -> str:
    """The colour mixed with `white` parts of white."""
    from matplotlib.colors import to_hex, to_rgb

    r, g, b = (c + (1 - c) * white for c in to_rgb(colour))
    return to_hex((r, g, b))


def plot_anytime(curves: dict[str, list[list[float]]], path: Path | str, title: str, ylabel: str) -> Path:
    """Best score so far against evaluations: median over seeds, 25-75 % band (`ylabel`: what the score is)."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    from tuneloop.evaluation.harness import pad_curves

    for m, cs in curves.items():
        arr = pad_curves(cs)
        k = arr.shape[1]
        if k == 0:
            continue
        arr = np.where(arr >= DIVERGED_SCORE, np.nan, arr)  # diverged-only prefixes (and empty cells) are not drawn
        ks = np.arange(1, k + 1)
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                med = np.nanmedian(arr, axis=0)
                lo, hi = np.nanpercentile(arr, 25, axis=0), np.nanpercentile(arr, 75, axis=0)
        marker, color = _style(m)
        ax.plot(ks, med, marker=marker, color=color, label=m, ms=4)
        ax.fill_between(ks, lo, hi, color=color, alpha=0.15)
    ax.set_xlabel("charged evaluations")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_ecdf(curves: dict[str, list[list[float]]], path: Path | str, title: str, relative: bool = False) -> Path:
    """The runtime ECDF (evaluation/stats.py runtime_ecdf): per arm, the share of (seed,
    target) pairs reached after k charged evaluations, a step per evaluation."""
    from tuneloop.evaluation.stats import ECDF_RELATIVE_TAUS, ECDF_TAUS, runtime_ecdf

    taus = ECDF_RELATIVE_TAUS if relative else ECDF_TAUS
    ks, share = runtime_ecdf(curves, taus, relative)
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    for i, (m, y) in enumerate(share.items()):
        marker, color = _style(m)
        lw = 1.5 + 0.6 * (len(share) - 1 - i)  # the first arms widest: a line under another still shows
        ax.step(ks, y, where="post", color=color, lw=lw, alpha=0.85, label=m, marker=marker, ms=5)
    ax.set_xlim(0.5, max(len(ks), 1) + 0.5)
    ax.set_ylim(-0.03, 1.03)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("charged evaluations k")
    ax.set_ylabel("(seed, target) pairs reached")
    target = ("best + τ·|best|, τ ∈ {" if relative else "best + τ, τ ∈ {") + ", ".join(f"{t:g}" for t in taus) + (
        "}" if relative else "} decades of the gap")
    ax.set_title(f"{title}\ntargets per seed: {target}\n(best: the lowest score any arm reached on that seed)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return save_figure(fig, path)


def plot_landscape_proposals(land: Landscape, proposals: dict[str, list[tuple[float, float]]],
                             path: Path | str, title: str) -> Path:
    """The (log10 alpha, beta) landscape with every method's proposals on top."""
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    draw_landscape(ax, land)
    for m, pts in proposals.items():
        if not pts:
            continue
        a = np.log10(np.array([p[0] for p in pts]))
        b = np.array([p[1] for p in pts])
        marker, color = _style(m)
        # a white rim sets a filled marker off the landscape; a line marker ("x") has no face to rim
        rim = None if marker in ("x", "+", "1", "2", "3", "4", "|", "_") else "white"
        ax.scatter(a, b, marker=marker, s=28, facecolor=color, edgecolors=rim, linewidth=0.5, label=m, alpha=0.85)
    ax.set_xlim(land.log10_alphas[0], land.log10_alphas[-1])
    ax.set_ylim(land.betas[0], land.betas[-1])
    # below the axes, so the legend never hides a proposal
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=min(len(proposals), 4), frameon=False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_per_seed(values: dict[str, list[float | None]], seeds: list[int], path: Path | str, title: str,
                  f_star: float | None = 0.0) -> Path:
    """Grouped bars: each method's best final value per seed, as the gap to the minimum on
    a log axis scaled to the finite bars; a diverged cell has no bar but a hatched,
    labelled slot (a bar's height would be made up)."""
    methods = list(values)
    n = len(methods)
    fig, ax = plt.subplots(figsize=(max(7, 0.35 * len(seeds) * n), 4.5), dpi=120)
    width = 0.8 / max(n, 1)
    if f_star is None:  # no known minimum: bars from the lowest value shown
        f_star = min((v for vs in values.values() for v in vs if v is not None), default=0.0)
    finite = [max(v - f_star, 1e-16) for vs in values.values() for v in vs if v is not None]
    lo = min(finite, default=1e-3) / 3
    hi = max(finite, default=1.0) * 3
    any_diverged = False
    for j, m in enumerate(methods):
        marker, color = _style(m)
        xs = np.arange(len(seeds)) + (j - (n - 1) / 2) * width
        gaps = [np.nan if v is None else max(v - f_star, 1e-16) for v in values[m]]
        ax.bar(xs, gaps, width, color=color, label=m)
        for x, v in zip(xs, values[m], strict=False):
            if v is None:
                any_diverged = True
                ax.bar(x, hi - lo, width, bottom=lo, facecolor="none", edgecolor=color, hatch="//", lw=0.8)
                ax.text(x, lo * 1.15, "diverged", rotation=90, ha="center", va="bottom", fontsize=7, color=color)
    ax.set_yscale("log")
    ax.set_ylim(lo, hi)
    ax.set_xticks(np.arange(len(seeds)))
    ax.set_xticklabels([str(s) for s in seeds], fontsize=7)
    ax.set_xlabel("seed")
    ax.set_ylabel("best f(x_final) − f*" + (" (hatched: diverged)" if any_diverged else ""))
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=min(n, 4))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def plot_trajectories(objective: str, configs: dict[str, tuple[float, float]], x0, max_iter: int,
                      path: Path | str, title: str) -> Path:
    """The objective's contours with the GD path of each method's best configuration."""
    from tuneloop.tools.momentum import run
    from tuneloop.tools.objectives import get_objective

    obj = get_objective(objective)
    lo, hi = obj.domain
    xs = np.linspace(lo, hi, 240)
    X, Y = np.meshgrid(xs, xs)
    Z = np.vectorize(lambda a, b: obj.value(np.array([a, b])))(X, Y) - obj.minimum(2)
    fig, ax = plt.subplots(figsize=(7, 6), dpi=120)
    ax.contourf(X, Y, np.log10(Z + 1e-3), levels=30, cmap="Greys_r")
    for m, (a, b) in configs.items():
        r = run(obj, a, b, x0=x0, max_iter=max_iter, record_every=max(1, max_iter // 400))
        traj = r.trajectory
        assert traj is not None  # record_every >= 1 records one
        ok = np.all(np.isfinite(traj[:, 1:3]), axis=1) & (np.abs(traj[:, 1:3]) < 10 * max(abs(lo), abs(hi))).all(axis=1)
        marker, color = _style(m)
        ax.plot(traj[ok, 1], traj[ok, 2], "-", color=color, lw=1.2,
                label=f"{m}: lr={a:.3g}, mom={b:.2f} ({r.status})")
        if ok.any():
            ax.plot(traj[ok, 1][-1], traj[ok, 2][-1], marker=marker, color=color, ms=7)
    for i, mn in enumerate(obj.minimisers(2)):
        ax.plot(*mn, "w*", ms=12, mec="k", ls="none", label="global minimum" if i == 0 else None)
    ax.plot(x0[0], x0[1], "ko", ms=6, ls="none", label=f"start ({x0[0]:.3g}, {x0[1]:.3g})")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def eval_plots(cfg, out_dir: Path, resolution: int = 96) -> dict[str, list[str]]:
    """All of `tuneloop eval`'s figures, per function."""
    from tuneloop.evaluation.harness import function_slug, read_proposal, start_point
    from tuneloop.evaluation.summary import load_cells, score_meaning
    from tuneloop.tools.objectives import get_objective

    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for f in cfg.functions:
        cells = {a.label: load_cells(cfg, a, f) for a in cfg.arms()}
        slug = function_slug(f)  # an objective file is a path: its stem names the figures
        files = []
        files.append(str(plot_anytime({m: [c["anytime"] for c in cs] for m, cs in cells.items()},
                                      plots_dir / f"anytime_{slug}.png",
                                      f"{f}: best so far (median, 25-75 %), {len(cfg.seeds)} seeds",
                                      f"best score so far\n({score_meaning(cfg)})")))
        files.append(str(plot_ecdf({m: [c["anytime"] for c in cs] for m, cs in cells.items()},
                                   plots_dir / f"ecdf_{slug}.png",
                                   f"{f}: runtime ECDF over {len(cfg.seeds)} seeds", relative=cfg.task is not None)))
        vals = {m: [c["row"]["best_value"] for c in cs] for m, cs in cells.items()}
        if cfg.task is not None:  # a task: no landscape, no minimum, no GD path to draw
            files.append(str(plot_per_seed(vals, cfg.seeds, plots_dir / f"per_seed_{slug}.png",
                                           f"{f}: best value per seed", None)))
            made[f] = files
            continue
        x0 = start_point(cfg, cfg.seeds[0])
        land = search_landscape(f, x0, cfg.max_iter, resolution, tol=cfg.tol)
        props = {m: [(p["learning_rate"], p["momentum"]) for c in cs for p in map(read_proposal, c["proposals"])]
                 for m, cs in cells.items()}
        files.append(str(plot_landscape_proposals(
            land, props, plots_dir / f"landscape_{slug}.png",
            f"{f}: proposals of every method over all seeds on the landscape from seed {cfg.seeds[0]}'s start")))
        obj = get_objective(f)
        vals = {m: [c["row"]["best_value"] for c in cs] for m, cs in cells.items()}
        files.append(str(plot_per_seed(vals, cfg.seeds, plots_dir / f"per_seed_{slug}.png",
                                       f"{f}: best value per seed", obj.minimum(cfg.dim))))
        best_cfg = {m: (cs[0]["row"]["best_alpha"], cs[0]["row"]["best_beta"]) for m, cs in cells.items()
                    if cs and cs[0]["row"]["best_alpha"] is not None}
        if cfg.dim == 2:  # paths over the objective's contours: a picture of the plane, 2-D only
            files.append(str(plot_trajectories(
                f, best_cfg, x0, cfg.max_iter, plots_dir / f"trajectories_{slug}.png",
                f"{f}: GD path of each method's best configuration (seed {cfg.seeds[0]})")))
        made[f] = files
    return made


def _label_groups(xy: np.ndarray, span: tuple[float, float], near: float = 0.035) -> list[list[int]]:
    """Indices of points that lie within `near` (a fraction of the axes) of each other,
    so their numbers are written once, together, instead of on top of each other."""
    groups: list[list[int]] = []
    for i, p in enumerate(xy):
        for g in groups:
            q = xy[g[0]]
            if abs(p[0] - q[0]) / span[0] < near and abs(p[1] - q[1]) / span[1] < near:
                g.append(i)
                break
        else:
            groups.append([i])
    return groups


def plot_trace(objective: str, x0, max_iter: int, trials: list[dict], path: Path | str, title: str,
               resolution: int = 96) -> Path:
    """A session's proposals, numbered in order, on the (log10 alpha, beta) landscape
    (its colours: the final value's gap, with their own colour bar), beside the
    best-so-far curve of the score."""
    charged = [t for t in trials if t["charged"] and t["learning_rate"] and t["learning_rate"] > 0]
    land = search_landscape(objective, x0, max_iter, resolution)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), dpi=110, gridspec_kw={"width_ratios": [1.6, 1]})
    draw_landscape(ax, land, colorbar=True)
    lo, hi = (land.log10_alphas[0], land.betas[0]), (land.log10_alphas[-1], land.betas[-1])
    span = _frame(ax, lo, hi)
    finite = _finite(charged)
    if charged:
        xy = np.column_stack([np.log10([t["learning_rate"] for t in charged]), [t["momentum"] for t in charged]])
        ax.plot(xy[:, 0], xy[:, 1], "-", color="white", lw=0.8, alpha=0.6)
        ax.scatter(xy[finite, 0], xy[finite, 1], s=70, color="white", edgecolor="black", zorder=3, label="finite")
        _draw_numbered(ax, xy, finite, charged, span)
    ax.set_title(title, fontsize=10)
    _draw_best_so_far(ax2, charged, finite)
    return save_figure(fig, path)


def plot_trace_params(trials: list[dict], space: SearchSpace, axes: tuple[str, str], path: Path | str,
                      title: str) -> Path:
    """A session's proposals, numbered in order, on two parameters of its space (log10 on a
    log parameter), coloured by score, beside the best-so-far curve. No landscape: the
    sweep behind one is plain momentum GD on (alpha, beta), which these trials are not; the
    title names the space's other parameters, which vary from trial to trial."""
    charged = [t for t in trials if t["charged"] and all(t.get(n) is not None for n in axes)]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5), dpi=110, gridspec_kw={"width_ratios": [1.6, 1]})
    params = [continuous_param(space, n) for n in axes]
    span = _frame(ax, (search_coord(params[0], params[0].low), search_coord(params[1], params[1].low)),
                  (search_coord(params[0], params[0].high), search_coord(params[1], params[1].high)))
    finite = _finite(charged)
    if charged:
        xy = np.array([[search_coord(p, t[n]) for p, n in zip(params, axes, strict=True)] for t in charged], float)
        ax.plot(xy[:, 0], xy[:, 1], "-", color="grey", lw=0.8, alpha=0.6)
        scores = np.array([t["score"] for t, f in zip(charged, finite, strict=True) if f], float)
        im = ax.scatter(xy[finite, 0], xy[finite, 1], s=70, c=scores, cmap="viridis", edgecolor="black", zorder=3,
                        label="finite")
        if finite.any():
            ax.figure.colorbar(im, ax=ax).set_label("score (log10 of the gap to the minimum)")
        _draw_numbered(ax, xy, finite, charged, span)
    ax.set_xlabel(axis_label(axes[0], params[0]))
    ax.set_ylabel(axis_label(axes[1], params[1]))
    others = [n for n in space.names if n not in axes]
    ax.set_title(title + (f"\n(other parameters vary: {', '.join(others)})" if others else ""), fontsize=10)
    ax.grid(alpha=0.3)
    _draw_best_so_far(ax2, charged, finite)
    return save_figure(fig, path)


def continuous_param(space: SearchSpace, name: str) -> FloatParam | IntParam:
    p = space[name]
    assert not isinstance(p, CategoricalParam), f"{name} is categorical"  # plot_axes lets none through
    return p


def search_coord(p: FloatParam | IntParam, v: float) -> float:
    return math.log10(v) if p.log else float(v)


def axis_label(name: str, p: FloatParam | IntParam) -> str:
    return f"log₁₀ {name}" if p.log else name  # plain Unicode, as draw_landscape's labels


def _frame(ax, lo: tuple[float, float], hi: tuple[float, float]) -> tuple[float, float]:
    """Axes limits with a margin, so proposals on the box's edge are drawn whole, numbers
    included; returns the box's span."""
    span = (hi[0] - lo[0], hi[1] - lo[1])
    ax.set_xlim(lo[0] - 0.04 * span[0], hi[0] + 0.04 * span[0])
    ax.set_ylim(lo[1] - 0.04 * span[1], hi[1] + 0.04 * span[1])
    return span


def _finite(charged: list[dict]) -> np.ndarray:
    return np.array([t["score"] is not None and t["score"] < DIVERGED_SCORE for t in charged], bool)


def _draw_numbered(ax, xy: np.ndarray, finite: np.ndarray, charged: list[dict], span: tuple[float, float]) -> None:
    """The diverged proposals as red crosses, and every proposal's trial number (nearby
    ones written together)."""
    ax.scatter(xy[~finite, 0], xy[~finite, 1], s=80, color="#d62728", edgecolor="white", marker="X", zorder=3,
               label="diverged")
    for g in _label_groups(xy, span):
        ax.annotate(", ".join(str(charged[i]["trial"]) for i in g), xy[g[0]], xytext=(6, 5),
                    textcoords="offset points", color="white", fontsize=8, weight="bold", clip_on=False,
                    bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.55, lw=0))
    ax.legend(loc="best", fontsize=8, framealpha=0.8)  # "best" keeps clear of the points


def _draw_best_so_far(ax2, charged: list[dict], finite: np.ndarray) -> None:
    """The best-so-far curve of the score, or a sentence saying why there is none."""
    if finite.any():
        sc = np.array([t["score"] if f else np.inf for t, f in zip(charged, finite, strict=False)], float)
        best = np.array(best_so_far(sc))
        ks = np.arange(1, len(charged) + 1)
        ax2.step(ks, np.where(np.isfinite(best), best, np.nan), where="post", color="#9467bd", label="best so far")
        ax2.scatter(ks, np.where(np.isfinite(sc), sc, np.nan), s=14, color="grey", label="each trial")
        ax2.set_xlabel("charged evaluation")
        ax2.set_ylabel("score (log10 of the gap to the minimum)")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
        ax2.set_title("best so far")
    else:
        ax2.axis("off")
        ax2.text(0.5, 0.5, "no charged trial had a finite result:\n" +
                 ("every one diverged" if charged else "no trial was charged"),
                 ha="center", va="center", fontsize=12, transform=ax2.transAxes)


def save_figure(fig, path: Path | str) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)

