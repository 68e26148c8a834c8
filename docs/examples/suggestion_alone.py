"""The suggestion alone: does the embedded agent add anything to the example its prompt gives?

Runs, without a model, the configuration the `untried` prompt (the default until 2026-11-30)
offers as its one example (`$untried`: the middle of the widest untried stretch of each parameter,
`tuneloop.agent.prompt_state.widest_gaps`) for every trial of every cell of a study, from the
same start points, and pairs it by seed with the study's own arms (docs/sessions.md, "Where
the agent's numbers come from").

    python docs/examples/suggestion_alone.py STUDY_DIR

STUDY_DIR: the --out folder of a `tuneloop eval ... --methods random tpe llm --budget 24 --x0
random` study on GD objectives with the default space and iteration cap.
"""

from __future__ import annotations

import csv
import sys
from collections import Counter, defaultdict
from pathlib import Path

from tuneloop.agent.prompt_state import widest_gaps
from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.harness import EvalConfig, start_point
from tuneloop.evaluation.stats import paired_table
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.trials import Evaluator, EvaluatorConfig


def main(study: Path) -> None:
    rows = list(csv.DictReader((study / "results.csv").open()))
    scores: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    budget, max_iter = 24, D.MAX_ITER  # a study of `tuneloop eval`'s defaults but --budget 24
    for r in rows:
        scores[(r["method"], r["function"])][int(r["seed"])] = float(r["score"])
    functions = list(dict.fromkeys(r["function"] for r in rows))
    cfg = EvalConfig(x0="random", functions=functions)
    totals: Counter[tuple[str, str, str]] = Counter()
    for f in functions:
        alone: dict[int, float] = {}
        for seed in sorted(scores[("llm", f)]):
            ev = Evaluator(EvaluatorConfig(objective=f, x0=start_point(cfg, seed), max_iter=max_iter, budget=budget))
            while not ev.exhausted:
                if ev.evaluate(widest_gaps(ev.trials, DEFAULT_SPACE)).repeat:
                    break  # the middles met a tried value (two digits): nothing new to try
            alone[seed] = min(t.score for t in ev.trials if t.charged)
        for r in paired_table({"llm": scores[("llm", f)], "suggestion alone": alone, "random": scores[("random", f)]}):
            totals[(r.a, r.b, "w")] += r.wins
            totals[(r.a, r.b, "t")] += r.ties
            totals[(r.a, r.b, "l")] += r.losses
            p = "n/a" if r.p is None else round(r.p, 3)
            print(f"{f}: {r.a} vs {r.b} {r.wins}-{r.ties}-{r.losses} (Wilcoxon p {p})")
    for a, b in (("llm", "suggestion alone"), ("llm", "random"), ("suggestion alone", "random")):
        print(f"all: {a} vs {b} {totals[(a, b, 'w')]}-{totals[(a, b, 't')]}-{totals[(a, b, 'l')]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
