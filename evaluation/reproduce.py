"""Study 1 (docs/protocol.md), reproduced: grid, refined grid, random search and LLM-guided,
with the study's tables and figures.

Choices the study left open, made here (and in docs/protocol.md, which the README links):
  - the allowed ranges told to random search and the LLM: alpha in [1e-4, 0.1] (the
    grid's span), beta in [0, 0.99]; random search draws alpha uniformly, as the study did;
  - each seed draws the start point uniformly from [-2, 2]^2 (tools.momentum.start_point),
    shared by random search and the LLM under that seed; the grids use (-1.5, 2);
  - the LLM gets the `paper` prompt and a budget of one proposal per seed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tuneloop.agent.models import ModelFactory, ModelSettings, make_chat_model
from tuneloop.agent.session_config import SessionConfig
from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.runner import run_strategy
from tuneloop.evaluation.strategies import GridSearch, RandomSearch, RefinedGrid
from tuneloop.tools.defaults import DEFAULT_MAX_ITER
from tuneloop.tools.formatting import fmt_value
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.momentum import DEFAULT_X0, start_point
from tuneloop.tools.objectives import get_objective
from tuneloop.tools.run_result import SessionResult
from tuneloop.tools.scoring import GOOD_GAP, study_label
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trials import EvaluatorConfig, TrialResult

FUNCTIONS = D.FUNCTIONS  # the study's two objectives
SEEDS = D.SEEDS  # its three seeds
GRID_T = DEFAULT_MAX_ITER  # T of the grids
RANDOM_T = D.MAX_ITER  # T of random search and the LLM
RANDOM_SAMPLES = 4
GRID_SIZE = len(GridSearch().points)  # 12
# the ranges told to random search and the LLM: the grid's span of alpha, beta up to 0.99
# (tuneloop's default ranges are the study's)
STUDY_SPACE = DEFAULT_SPACE
# the grids' runs: the refinement may step past the grid's span (1.4 x 0.1, 0.8 x 1e-4)
GRID_SPACE = SearchSpace.model_validate({"learning_rate": {"type": "float", "low": 1e-6, "high": 1.0, "log": True},
                                         "momentum": {"type": "float", "low": 0.0, "high": 0.999}})


def _label(t: TrialResult, f_star: float, best_score: float) -> str:
    return study_label(t.status, t.final_value, f_star, t.score == best_score)


def _cfg(out: Path, function: str, x0, max_iter: int, budget: int, method: str, seed: int,
         model: ModelSettings | None = None, prompt: str = "paper") -> SessionConfig:
    return SessionConfig(evaluator=EvaluatorConfig(objective=function, x0=x0, max_iter=max_iter, budget=budget,
                                                   space=STUDY_SPACE if method in ("random", "llm") else GRID_SPACE),
                         model=model or ModelSettings(), prompt=prompt, seed=seed, method=method,
                         x0_spec="random" if method in ("random", "llm") else "paper", runs_dir=out / "runs")


def reproduce(out: Path, models: list[str], no_llm: bool = False, model_settings: ModelSettings | None = None,
              progress: Callable[[str], None] | None = None, model_factory: ModelFactory = make_chat_model) -> dict:
    """Run the study's protocol; returns every table's rows (and writes the run dirs)."""
    say = progress or (lambda _m: None)
    tables: dict = {"grid": {}, "refined": {}, "random": {}, "llm": {}}
    for f in FUNCTIONS:
        obj = get_objective(f)
        f_star = obj.minimum(2)
        say(f"grid on {f}")
        g = run_strategy(GridSearch(GRID_SPACE), _cfg(out, f, DEFAULT_X0, GRID_T, GRID_SIZE, "grid", 0), f"grid-{f}")
        best_score = min(t.score for t in g.trials)
        tables["grid"][f] = [dict(lr=t.learning_rate, momentum=t.momentum, final=t.final_value,
                                  iterations=t.iterations, status=_label(t, f_star, best_score)) for t in g.trials]
        say(f"refined grid on {f}")
        r = run_strategy(RefinedGrid(space=GRID_SPACE), _cfg(out, f, DEFAULT_X0, GRID_T, 2 * GRID_SIZE, "refined", 0),
                         f"refined-{f}")
        refinement = [t for t in r.trials[GRID_SIZE:] if t.charged]
        best = min(refinement or r.trials, key=lambda t: t.score)
        tables["refined"][f] = dict(lr=best.learning_rate, momentum=best.momentum, final=best.final_value,
                                    iterations=best.iterations,
                                    # one row per objective: "Best" would say nothing; how good it is does
                                    status=study_label(best.status, best.final_value, f_star, is_best=False),
                                    improves_on_grid=best.score < best_score)
        rows, bests = [], []
        for s in SEEDS:
            say(f"random search on {f}, seed {s}")
            x0 = start_point("random", s)
            rr = run_strategy(RandomSearch(STUDY_SPACE, seed=s, uniform_alpha=True),
                              _cfg(out, f, x0, RANDOM_T, RANDOM_SAMPLES, "random", s), f"random-{f}-s{s}")
            b = rr.best
            assert b is not None  # the first point a random search draws is charged, never a repeat
            bests.append(b)
            rows.append(dict(seed=s, x0=x0, lr=b.learning_rate, momentum=b.momentum, final=b.final_value,
                             iterations=b.iterations))
        for row, b in zip(rows, bests, strict=False):  # Best: the lowest score of the table
            row["status"] = _label(b, f_star, min(t.score for t in bests))
        tables["random"][f] = rows
        if no_llm:
            continue
        from tuneloop.agent.session import run_session

        rows = []
        llm_bests: list[TrialResult | None] = []  # None: the session made no valid proposal
        for m in models:
            settings = (model_settings or ModelSettings()).model_copy(update={"model": m})
            for s in SEEDS:
                say(f"LLM {m} on {f}, seed {s}")
                cfg = _cfg(out, f, start_point("random", s), RANDOM_T, 1, "llm", s,
                           model=settings.model_copy(update={"seed": settings.seed + s}))
                res: SessionResult = run_session(
                    cfg, model_factory=model_factory, session_id=f"llm-{m.replace(':', '_')}-{f}-s{s}"
                )
                b = res.best
                llm_bests.append(b)
                rows.append(dict(seed=s, model=m, lr=b.learning_rate if b else None, momentum=b.momentum if b else None,
                                 final=b.final_value if b else None, iterations=b.iterations if b else None,
                                 status=None if b else (f"no valid proposal ({res.invalid_proposals} invalid, "
                                                        f"stop: {res.stop_reason})"),
                                 invalid=res.invalid_proposals))
        top = min((b.score for b in llm_bests if b is not None), default=None)
        for row, b in zip(rows, llm_bests, strict=False):
            if b is not None:
                assert top is not None  # b's score is one of those min() took
                row["status"] = _label(b, f_star, top)
        tables["llm"][f] = rows
    return tables


def study_markdown(tables: dict, figures: dict[str, list[str]], seconds: float) -> str:
    L = ["# Study 1 reproduced: LLM-guided tuning of momentum gradient descent", "",
         f"Regenerated by `tuneloop reproduce` in {seconds:.1f} s. Protocol: docs/protocol.md; choices the study left "
         "open are listed there and in the README (allowed ranges alpha in [1e-4, 0.1], beta in [0, 0.99]; "
         "seeded start points in [-2, 2]^2 for random search and the LLM).", "",
         f"Status labels: Best = lowest score in the table; Good = within {GOOD_GAP:g} of the minimum; Slow = not, and "
         "still moving at T; Poor = stopped away from the minimum; Diverged = non-finite.", ""]
    for f, rows in tables["grid"].items():
        L += [f"## Grid search on {f} (T = {GRID_T}, x0 = (-1.5, 2))", "",
              "| learning rate | momentum | final f(x) | iterations | status |", "|---:|---:|---:|---:|---|"]
        L += [
            f"| {r['lr']:g} | {r['momentum']:g} | {fmt_value(r['final'], 6)} | {r['iterations']} | {r['status']} |"
            for r in rows
        ]
        L.append("")
    L += ["## Refined grid: best per objective", "",
          "| objective | learning rate | momentum | final f(x) | iterations | status | better than the grid's best |",
          "|---|---:|---:|---:|---:|---|---|"]
    for f, r in tables["refined"].items():
        L.append(f"| {f} | {r['lr']:.4g} | {r['momentum']:.4g} | {fmt_value(r['final'], 6)} | {r['iterations']} | "
                 f"{r['status']} | {'yes' if r['improves_on_grid'] else 'no'} |")
    L.append("")
    for f, rows in tables["random"].items():
        L += [
            f"## Random search on {f} (T = {RANDOM_T}, {RANDOM_SAMPLES} samples per seed)",
            "",
            "| seed | x0 | best lr | momentum | final value | iterations | status |",
            "|---:|---|---:|---:|---:|---:|---|",
        ]
        L += [f"| {r['seed']} | ({r['x0'][0]:.3f}, {r['x0'][1]:.3f}) | {r['lr']:.4g} | {r['momentum']:.4g} | "
              f"{fmt_value(r['final'], 6)} | {r['iterations']} | {r['status']} |" for r in rows]
        L.append("")
    for f, rows in tables["llm"].items():
        L += [
            f"## LLM-guided on {f} (T = {RANDOM_T}, one proposal per seed, prompt `paper`)",
            "",
            "| seed | model | lr | momentum | final value | iterations | status |",
            "|---:|---|---:|---:|---:|---:|---|",
        ]
        for r in rows:
            lr = "-" if r["lr"] is None else f"{r['lr']:.4g}"
            mom = "-" if r["momentum"] is None else f"{r['momentum']:.4g}"
            L.append(f"| {r['seed']} | {r['model']} | {lr} | {mom} | {fmt_value(r['final'], 6)} | "
                     f"{r['iterations'] if r['iterations'] is not None else '-'} | {r['status']} |")
        L.append("")
    if not tables["llm"]:
        L += ["## LLM-guided", "", "Skipped (`--no-llm`).", ""]
    for figs in figures.values():
        L += [f"![{Path(p).stem}](plots/{Path(p).name})" for p in figs]
    return "\n".join(L) + "\n"


def study_figures(tables: dict, out: Path) -> dict[str, list[str]]:
    from tuneloop.evaluation.landscape import search_landscape
    from tuneloop.evaluation.report import plot_landscape_proposals, plot_per_seed

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    made: dict[str, list[str]] = {}
    for f in tables["grid"]:
        land = search_landscape(f, DEFAULT_X0, GRID_T)
        props = {"grid": [(r["lr"], r["momentum"]) for r in tables["grid"][f]],
                 "refined": [(tables["refined"][f]["lr"], tables["refined"][f]["momentum"])],
                 "random": [(r["lr"], r["momentum"]) for r in tables["random"][f]],
                 "llm": [(r["lr"], r["momentum"]) for r in tables["llm"].get(f, []) if r["lr"] is not None]}
        files = [str(plot_landscape_proposals(land, props, plots / f"study_landscape_{f}.png",
                                              f"{f}: grid, refined best, random bests and LLM proposals "
                                              "(landscape from x0 = (-1.5, 2), T = 5000)"))]
        vals = {"random": [r["final"] for r in tables["random"][f]]}
        for r in tables["llm"].get(f, []):
            vals.setdefault(f"llm {r['model']}", []).append(r["final"])
        shown = "random search" + (" vs " + ", ".join(k for k in vals if k != "random") if len(vals) > 1 else "")
        files.append(str(plot_per_seed(vals, list(SEEDS), plots / f"study_per_seed_{f}.png",
                                       f"{f}: {shown}, best value per seed", get_objective(f).minimum(2))))
        made[f] = files
    return made
