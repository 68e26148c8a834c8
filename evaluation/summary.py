"""A study's summary: per function, each arm's statistics over seeds, paired wins, the
median anytime curve, the cost, and the paired tests, intervals and search diversity of
evaluation/stats.py; written as summary.md beside results.csv."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.evaluation.arms import Arm
from tuneloop.evaluation.harness import EvalConfig, cell_dir, pad_curves, read_proposal
from tuneloop.evaluation.stats import (
    BOOTSTRAP_RESAMPLES,
    ECDF_RELATIVE_TAUS,
    ECDF_TAUS,
    ZERO_METHOD,
    bootstrap_median_ci,
    diversity,
    failed_share,
    paired_table,
)
from tuneloop.evaluation.strategies import AGENT_METHOD
from tuneloop.tools.files import atomic_write_text
from tuneloop.tools.formatting import fmt_cell
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.scoring import DIVERGED_SCORE
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.tasks import FAILED_SCORE
from tuneloop.tools.trials import EvaluatorConfig
from tuneloop.tools.usage import known_sum


def score_meaning(cfg) -> str:
    """What a study's score is, in the words its summary and its plots both use."""
    return ("the task's value, negated when it maximises" if cfg.task is not None
            else "log10 of the gap to the minimum, binned")

def load_cells(cfg: EvalConfig, arm: Arm, function: str) -> list[dict]:
    """The finished cells (result.json) of one arm on one function, in seed order."""
    return [json.loads((cell_dir(cfg, (arm, function, s)) / "result.json").read_text()) for s in cfg.seeds]


def study_space(cfg: EvalConfig) -> SearchSpace:
    """The space the study searched: --space, else the one its first finished cell
    recorded in its manifest (a task's SPACE), else GD's default."""
    if cfg.space is not None:
        return cfg.space
    for cell in cfg.cells():
        path = cell_dir(cfg, cell) / "manifest.json"
        manifest = json.loads(path.read_text()) if path.exists() else {}
        recorded = {k: manifest[k] for k in ("space", "bounds") if manifest.get(k) is not None}
        if recorded:
            return EvaluatorConfig.model_validate(recorded).space
    return DEFAULT_SPACE


def summarize(cfg: EvalConfig) -> dict[str, dict[str, dict]]:
    """Per function and arm (by label): stats over seeds, wins against each other arm
    (paired by seed, on score), the median anytime curve, the median's bootstrap interval,
    the search diversity and the share of failed trials (evaluation/stats.py)."""
    out: dict[str, dict[str, dict]] = {}
    space = study_space(cfg)
    failed_at = FAILED_SCORE if cfg.task is not None else DIVERGED_SCORE
    for f in cfg.functions:
        per: dict[str, dict] = {}
        data = {a.label: load_cells(cfg, a, f) for a in cfg.arms()}
        for m, cells in data.items():
            vals = np.array(
                [np.nan if c["row"]["best_value"] is None else c["row"]["best_value"] for c in cells], float
            )
            scores = np.array([np.inf if c["row"]["score"] is None else c["row"]["score"] for c in cells], float)
            iters = np.array([c["row"]["iterations"] or 0 for c in cells], float)
            med_curve = np.median(pad_curves([c["anytime"] for c in cells]), axis=0).tolist()
            finite = vals[np.isfinite(vals)]
            proposals = [read_proposal(p) for c in cells for p in c["proposals"]]  # the charged trials
            charged = len(proposals)
            repeated = sum(c["row"]["repeated"] or 0 for c in cells)
            per[m] = {
                # shares of what the method proposed: charged trials that diverged, and
                # proposals that repeated a tried configuration (answered free)
                "diverged_share": sum(p["score"] >= DIVERGED_SCORE for p in proposals) / charged if charged else None,
                "repeat_share": repeated / (charged + repeated) if charged + repeated else None,
                "n": len(cells), "diverged": int(np.sum(~np.isfinite(vals))),
                "mean": float(finite.mean()) if finite.size else None,
                "median": float(np.median(finite)) if finite.size else None,
                "std": float(finite.std(ddof=1)) if finite.size > 1 else (0.0 if finite.size else None),
                "mean_iterations": float(iters.mean()) if iters.size else None,
                "scores": scores.tolist(), "anytime_median": med_curve,
                "mean_tokens": float(np.mean([c["row"]["tokens"] or 0 for c in cells])),
                "cost_usd": known_sum(c["row"].get("cost_usd") for c in cells),  # cells with a known price
                "mean_wall_s": float(np.mean([c["row"]["wall_s"] for c in cells])),
                "median_ci": bootstrap_median_ci(finite.tolist()),  # (median, low, high) or None
                "diversity": diversity(space, [[read_proposal(p)["params"] for p in c["proposals"]] for c in cells]),
                "failed_share": failed_share([p["score"] for p in proposals], failed_at),
            }
        for m in per:
            per[m]["wins"] = {o: int(sum(a < b for a, b in zip(per[m]["scores"], per[o]["scores"], strict=False)))
                              for o in per if o != m}
        out[f] = per
    return out


def _executors(cfg: EvalConfig) -> list[dict[str, Any] | None]:
    """Where each finished cell ran (backend, node), from its manifest; None where not known."""
    out: list[dict[str, Any] | None] = []
    for cell in cfg.cells():
        path = cell_dir(cfg, cell) / "manifest.json"
        out.append(json.loads(path.read_text()).get("executor") if path.exists() else None)
    return out


def _num(v: float | None, spec: str = ".4g") -> str:
    return fmt_cell(v, spec, missing="n/a")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.0f} %"


def write_summary(cfg: EvalConfig, summary: dict, plots: dict[str, list[str]], seconds: float | None = None) -> Path:
    labels = [a.label for a in cfg.arms()]
    models = [m.model for m in cfg.models]
    lines = [f"# tuneloop eval: {', '.join(labels)} on {', '.join(cfg.functions)}", "",
             f"Budget {cfg.budget} charged evaluations per cell, seeds {cfg.seeds[0]}..{cfg.seeds[-1]} "
             f"({len(cfg.seeds)}), "
             + (f"task {cfg.task}" if cfg.task is not None else
                f"start point: {cfg.x0}{'' if cfg.dim == 2 else f' in {cfg.dim}-D'}, T = {cfg.max_iter}, "
                f"tol = {cfg.tol:g}")
             + (f", model{'s' if len(models) > 1 else ''} {', '.join(models)}" if cfg.uses_llm else "")
             + (f", prompt{'s' if len(cfg.prompts) > 1 else ''} {', '.join(cfg.prompts)}"
                if AGENT_METHOD in cfg.methods else "") + ".",
             ("Best value: the task's value of each cell's best trial (lowest score). Diverged trials: share of "
              "the charged trials that failed; " if cfg.task is not None else
              "Best value: f(x_final) of each cell's best trial (lowest score). Diverged trials: share of the "
              "charged trials that diverged; ")
             + "repeats: share of the proposals that repeated a tried configuration "
             "(answered free). Wins: seeds on which the row's method scored strictly lower than the column's.", ""]
    if seconds is not None:
        # a resumed study runs only its missing cells: the cells' own times are the study's cost
        cell_seconds = sum(per[m]["mean_wall_s"] * per[m]["n"] for per in summary.values() for m in per)
        lines += [f"Wall time of this invocation: {seconds:.1f} s; the cells' own times add up to "
                  f"{cell_seconds:.1f} s (a cell finished by an earlier run of this folder is not run again).", ""]
    ran_on = sorted({f"{e.get('backend')} on {e.get('host') or e.get('node')}" for e in _executors(cfg) if e})
    if ran_on:
        lines += [f"Cells ran on: {'; '.join(ran_on)}.", ""]
    for f, per in summary.items():
        others = labels
        lines += [f"## {f}", "",
                  "| method | mean best value | median | std | cells without a finite trial | diverged trials "
                  "| repeats | mean iterations | mean tokens | cost (USD) | "
                  + " | ".join(f"wins vs {o}" for o in others) + " |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(others)]
        for m in labels:
            s = per[m]
            wins = " | ".join("-" if o == m else str(s["wins"][o]) for o in others)
            lines.append(f"| {m} | {_num(s['mean'])} | {_num(s['median'])} | {_num(s['std'])} | {s['diverged']} | "
                         f"{_pct(s['diverged_share'])} | {_pct(s['repeat_share'])} | "
                         f"{_num(s['mean_iterations'], '.0f')} | {_num(s['mean_tokens'], '.0f')} | "
                         f"{_num(s['cost_usd'], '.4f')} | {wins} |")
        lines += ["", *stats_lines(cfg, per, labels)]
        k_max = max(len(per[m]["anytime_median"]) for m in labels)
        score_rule = f"score = {score_meaning(cfg)}; " + (f"{FAILED_SCORE:g} = failed" if cfg.task is not None
                                                          else f"{DIVERGED_SCORE:g} = diverged")
        lines += [f"Anytime: median over seeds of the best score after k evaluations ({score_rule}).", "",
                  "| method | " + " | ".join(f"k={k + 1}" for k in range(k_max)) + " |",
                  "|---|" + "---:|" * k_max]
        for m in labels:
            c = per[m]["anytime_median"]
            lines.append(f"| {m} | " + " | ".join(_num(c[k], ".2f") if k < len(c) else "" for k in range(k_max)) + " |")
        lines.append("")
        for p in plots.get(f, []):
            lines.append(f"![{Path(p).stem}](plots/{Path(p).name})")
            if Path(p).stem.startswith("ecdf_"):
                lines += ["", ecdf_caption(cfg), ""]
        lines.append("")
    return atomic_write_text(cfg.out / "summary.md", "\n".join(lines))


def _p(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}"


def stats_lines(cfg: EvalConfig, per: dict[str, dict], labels: list[str]) -> list[str]:
    """One objective's paired tests (every pair of arms; none with one arm) and per-arm
    intervals, diversity and failed trials, as markdown."""
    lines = []
    if len(labels) >= 2:
        lines += [f"Paired by seed (score, lower is better): wins, ties and losses of arm A against arm B; the "
                  f"two-sided Wilcoxon signed-rank p-value (scipy, zero_method={ZERO_METHOD}: a tie's rank counts "
                  "half for each side; 1 when every seed ties, n/a below two seeds), the same p Holm-corrected over "
                  "this table's pairs, and the matched-pairs rank-biserial correlation r = (W+ - W-) / (W+ + W-) "
                  "(> 0: A lower).", "",
                  "| arm A | arm B | A wins | ties | A losses | Wilcoxon p | Holm p | rank-biserial r |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for r in paired_table({m: dict(zip(cfg.seeds, per[m]["scores"], strict=True)) for m in labels}):
            lines.append(f"| {r.a} | {r.b} | {r.wins} | {r.ties} | {r.losses} | {_p(r.p)} | {_p(r.p_holm)} | "
                         f"{_num(r.r, '.2f')} |")
        lines.append("")
    lines += [f"Per arm: the median best value with a 95 % percentile-bootstrap interval ({BOOTSTRAP_RESAMPLES} "
              "seeded resamples of the seeds' finite best values); diversity: the mean pairwise distance of a cell's "
              "proposals in the space's unit coordinates (each continuous axis, log10 on a log one, scaled to "
              "[0, 1]; a categorical one adds 1 per differing choice), averaged over the cells; failed trials: "
              "share of the charged trials that " + ("failed" if cfg.task is not None else "diverged")
              + "; cell time: a cell's mean wall time, its model calls included.", "",
              "| method | median best value | 95 % CI | diversity | failed trials | cell time (s) |",
              "|---|---:|---|---:|---:|---:|"]
    for m in labels:
        ci = per[m]["median_ci"]
        interval = "n/a" if ci is None else f"[{ci[1]:.4g}, {ci[2]:.4g}]"
        lines.append(f"| {m} | {_num(None if ci is None else ci[0])} | {interval} | {_num(per[m]['diversity'], '.3f')} "
                     f"| {_pct(per[m]['failed_share'])} | {_num(per[m]['mean_wall_s'], '.1f')} |")
    return [*lines, ""]


def ecdf_caption(cfg: EvalConfig) -> str:
    """What the ECDF figure (report.plot_ecdf) shows, in words."""
    if cfg.task is not None:
        target = f"best + tau |best|, tau in {{{', '.join(f'{t:g}' for t in ECDF_RELATIVE_TAUS)}}}"
    else:
        target = f"best + tau, tau in {{{', '.join(f'{t:g}' for t in ECDF_TAUS)}}} decades of the gap"
    return ("ECDF (runtime ECDF, as COCO and IOHanalyzer draw it): for each arm, the share of (seed, target) pairs "
            "its best score so far has reached after k charged evaluations; a seed's targets are " + target +
            ", best being the lowest score any arm reached on that seed.")
