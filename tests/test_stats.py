"""evaluation/stats.py checked against scipy and hand computations, and the statistics a
real study's summary.md, ECDF plot and `trace compare` show."""

import csv
import math

import numpy as np
import pytest
from scipy import stats as sps

from tuneloop.evaluation.stats import (
    BOOTSTRAP_RESAMPLES,
    bootstrap_median_ci,
    diversity,
    failed_share,
    holm,
    mean_pairwise_distance,
    paired_table,
    rank_biserial,
    runtime_ecdf,
    wilcoxon_p,
)
from tuneloop.tools.space import SearchSpace

SEEDS = list(range(10))
A = [-6.0, -5.5, -4.0, -7.25, -3.5, -8.0, -2.0, -6.75, -5.0, -4.5]  # binary fractions: differences exact
DIFF = [1.0, 2.0, 0.0, 3.0, -1.0, 4.0, 0.0, 5.0, 6.0, 7.0]  # b - a: a lower on 7 seeds, 2 ties, b lower on 1
B = [a + d for a, d in zip(A, DIFF, strict=True)]
C = list(A)  # a and c tie on every seed


def table():
    return {"a": dict(zip(SEEDS, A, strict=True)), "b": dict(zip(SEEDS, B, strict=True)),
            "c": dict(zip(SEEDS, C, strict=True))}


# ------------------------------------------------------------------ paired tests
def test_paired_table_counts_tests_and_effect_sizes_against_scipy():
    rows = {(r.a, r.b): r for r in paired_table(table())}
    assert list(rows) == [("a", "b"), ("a", "c"), ("b", "c")]
    ab, ac, bc = rows["a", "b"], rows["a", "c"], rows["b", "c"]
    assert (ab.n, ab.wins, ab.ties, ab.losses) == (10, 7, 2, 1)  # a lower on the 7 positive differences
    assert (ac.wins, ac.ties, ac.losses) == (0, 10, 0)
    assert (bc.wins, bc.ties, bc.losses) == (1, 2, 7)
    ref = sps.wilcoxon(A, B, zero_method="zsplit")
    assert ab.p == pytest.approx(ref.pvalue, rel=1e-12)
    assert bc.p == pytest.approx(sps.wilcoxon(B, C, zero_method="zsplit").pvalue, rel=1e-12)
    assert ac.p == 1.0  # every difference zero: no evidence, p = 1 (scipy itself divides by zero here)
    # |d| ranks by hand: the zeros 1.5 each, the two 1s 3.5 each, then 2..7 -> 5..10;
    # W+ (a lower) = 3.5 + 5 + 6 + 7 + 8 + 9 + 10 + 1.5 = 50, W- = 3.5 + 1.5 = 5
    assert ref.statistic == 5.0  # scipy's zsplit statistic min(W+, W-): the same ranks
    assert ab.r == pytest.approx((50 - 5) / 55)
    assert bc.r == pytest.approx(-(50 - 5) / 55)
    assert ac.r == 0.0
    # Holm by hand over the three pairs: p_ab = p_bc (mirror images) and 1
    p = ab.p
    assert ab.p_holm == pytest.approx(min(1.0, 3 * p)) and bc.p_holm == pytest.approx(min(1.0, 3 * p))
    assert ac.p_holm == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04, 0.5 -> 4 x 0.01, 3 x 0.03, max(0.09, 2 x 0.04), max(0.09, 0.5)
    got = holm([0.04, 0.01, 0.5, None, 0.03])
    assert got[3] is None
    assert got[:3] + got[4:] == pytest.approx([0.09, 0.04, 0.5, 0.09])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def test_too_few_seeds_missing_results_and_unshared_seeds():
    assert wilcoxon_p([1.0], [2.0]) is None and rank_biserial([1.0], [2.0]) == 1.0  # a lower: r = 1
    row = paired_table({"a": {0: 1.0}, "b": {0: 2.0}})[0]
    assert (row.n, row.wins, row.p, row.p_holm) == (1, 1, None, None)
    # a missing score (None or inf: a cell without a result) loses to every finite one, ties another
    row = paired_table({"a": {0: None, 1: 1.0, 2: math.inf}, "b": {0: 5.0, 1: 2.0, 2: None}})[0]
    assert (row.wins, row.ties, row.losses) == (1, 1, 1)
    # pairs only on the seeds both arms ran
    row = paired_table({"a": {0: 1.0, 1: 2.0}, "b": {1: 3.0, 2: 0.0}})[0]
    assert (row.n, row.wins) == (1, 1)


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_median_ci_is_seeded_percentile_and_contains_the_median():
    values = [3.2, 1.0, 7.5, 2.2, 9.9, 4.1, 5.0, 0.3, None, 6.6]
    med, lo, hi = bootstrap_median_ci(values)
    assert med == float(np.median([v for v in values if v is not None]))
    assert lo <= med <= hi and lo < hi
    assert bootstrap_median_ci(values) == (med, lo, hi)  # the same seed, the same interval
    assert bootstrap_median_ci(values, seed=1) != (med, lo, hi)
    # the method, redone by hand: 2000 resamples from default_rng(0), the 2.5 and 97.5 % quantiles
    x = np.array([v for v in values if v is not None])
    rng = np.random.default_rng(0)
    meds = np.median(x[rng.integers(0, x.size, size=(BOOTSTRAP_RESAMPLES, x.size))], axis=1)
    assert (lo, hi) == tuple(np.quantile(meds, [0.025, 0.975]))
    assert bootstrap_median_ci([None, math.inf]) is None


# ------------------------------------------------------------------ diversity, failures, ECDF
SPACE = SearchSpace.model_validate({
    "learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
    "momentum": {"type": "float", "low": 0.0, "high": 0.99},
    "nesterov": {"type": "categorical", "choices": [False, True]},
})


def test_diversity_on_a_hand_made_set():
    p1 = {"learning_rate": 1e-4, "momentum": 0.0, "nesterov": False}
    p2 = {"learning_rate": 1e-1, "momentum": 0.0, "nesterov": False}  # 3 decades = the whole log axis: 1
    p3 = {"learning_rate": 1e-4, "momentum": 0.99, "nesterov": True}  # momentum's whole axis + a choice: sqrt(2)
    p4 = {"learning_rate": 10 ** -2.5, "momentum": 0.495, "nesterov": False}  # the centre
    assert mean_pairwise_distance(SPACE, [p1, p2, p3]) == pytest.approx((1 + math.sqrt(2) + math.sqrt(3)) / 3)
    assert mean_pairwise_distance(SPACE, [p1, p4]) == pytest.approx(math.sqrt(0.5))
    assert mean_pairwise_distance(SPACE, [p1, p1]) == 0.0
    assert mean_pairwise_distance(SPACE, [p1]) is None
    assert mean_pairwise_distance(SPACE, [p1, {"learning_rate": 1e-3}]) is None  # incomplete: left out
    # per run, then averaged over the runs with two or more proposals
    assert diversity(SPACE, [[p1, p2], [p1, p4], [p3]]) == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert diversity(SPACE, [[p1]]) is None


def test_failed_share():
    assert failed_share([-3.0, 400.0, 400.0, -1.0], 400.0) == 0.5
    assert failed_share([0.1, 1e300, None, 0.2], 1e300) == 0.5


def test_runtime_ecdf_by_hand():
    # seed 0: best -5 (a); seed 1: best -4 (b). targets best + {0, 1}
    curves = {"a": [[-3.0, -5.0], [-2.0, -3.5]], "b": [[-4.5, -4.5], [-4.0]]}
    ks, share = runtime_ecdf(curves, taus=(0.0, 1.0))
    assert ks.tolist() == [1, 2]
    # a: k=1 nothing (-3 > -4, -2 > -3); k=2 seed 0 both targets, seed 1 tau 1 (-3.5 <= -3)
    assert share["a"].tolist() == [0.0, 0.75]
    # b: seed 0 tau 1 (-4.5 <= -4) at both k; seed 1 both targets from k=1 (short curve kept)
    assert share["b"].tolist() == [0.75, 0.75]
    _, rel = runtime_ecdf({"a": [[-10.0]], "b": [[-9.5]]}, taus=(0.0, 0.1), relative=True)
    assert rel["b"].tolist() == [0.5]  # -9.5 <= -10 + 0.1 * 10


# ------------------------------------------------------------------ a real study
@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from tuneloop.evaluation.cli import main

    out = tmp_path_factory.mktemp("study")
    code = main(["eval", "--functions", "rosenbrock", "--methods", "random", "tpe", "--seeds", "0-3", "--budget", "6",
                 "--max-iter", "300", "--workers", "1", "--out", str(out)])
    assert code == 0
    return out


def test_summary_has_the_paired_tests_intervals_diversity_and_ecdf(study):
    md = (study / "summary.md").read_text()
    assert "| arm A | arm B | A wins | ties | A losses | Wilcoxon p | Holm p | rank-biserial r |" in md
    assert "| method | median best value | 95 % CI | diversity | failed trials | cell time (s) |" in md
    assert "the cells' own times add up to" in md
    assert "zero_method=zsplit" in md and "percentile-bootstrap" in md
    assert "![ecdf_rosenbrock](plots/ecdf_rosenbrock.png)" in md and "runtime ECDF" in md
    assert (study / "plots" / "ecdf_rosenbrock.png").read_bytes()[:4] == b"\x89PNG"
    assert (study / "plots" / "anytime_rosenbrock.png").exists()  # kept
    # the pair's row agrees with scipy on results.csv's scores
    with open(study / "results.csv") as f:
        rows = list(csv.DictReader(f))
    score = {m: [float(r["score"]) for r in rows if r["method"] == m] for m in ("random", "tpe")}
    wins = sum(a < b for a, b in zip(score["random"], score["tpe"], strict=True))
    ties = sum(a == b for a, b in zip(score["random"], score["tpe"], strict=True))
    p = sps.wilcoxon(score["random"], score["tpe"], zero_method="zsplit").pvalue
    line = next(ln for ln in md.splitlines() if ln.startswith("| random | tpe |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2:5] == [str(wins), str(ties), str(4 - wins - ties)]
    assert float(cells[5]) == pytest.approx(p, rel=1e-2) and float(cells[6]) == pytest.approx(p, rel=1e-2)
    # per arm: the median inside its interval, a diversity in [0, sqrt(2)]
    for m in ("random", "tpe"):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {m} | ") and "[" in ln)
        cells = [c.strip() for c in line.strip("|").split("|")]
        lo, hi = (float(v) for v in cells[2].strip("[]").split(","))
        assert lo <= float(cells[1]) <= hi
        wall = [float(r["wall_s"]) for r in rows if r["method"] == m]
        assert float(cells[5]) == pytest.approx(sum(wall) / len(wall), abs=0.051)  # the cells' mean wall time
        assert 0 <= float(cells[3]) <= math.sqrt(2)


def test_trace_compare_adds_the_paired_table_only_for_runs_paired_by_seed(study, capsys):
    from tuneloop.evaluation.cli import main
    from tuneloop.evaluation.traces import seed_pairs
    from tuneloop.tools.record import read_trace

    runs = sorted((study / "runs").iterdir())
    pairs = seed_pairs([read_trace(d) for d in runs])
    assert [(p["objective"], p["a"], p["b"], p["n"]) for p in pairs] == [("rosenbrock", "random", "tpe", 4)]
    assert main(["trace", "compare", *map(str, runs)]) == 0
    out = capsys.readouterr().out
    assert "paired by seed" in out and "Wilcoxon" in out
    one_arm = [d for d in runs if d.name.startswith("random-")]
    assert seed_pairs([read_trace(d) for d in one_arm]) == []
    assert main(["trace", "compare", *map(str, one_arm)]) == 0
    assert "paired by seed" not in capsys.readouterr().out
    assert main(["trace", "compare", *map(str, runs), "--json"]) == 0
    assert capsys.readouterr().out.lstrip().startswith("[")  # --json: the runs' rows, as before


def test_every_method_has_a_plot_style_of_its_own():
    """Each method's curves are told apart in every plot: its own marker and colour."""
    from tuneloop.evaluation.report import METHOD_STYLE
    from tuneloop.evaluation.strategies import METHODS

    assert set(METHODS) <= set(METHOD_STYLE)
    styles = [METHOD_STYLE[m] for m in METHODS]
    assert len({c for _, c in styles}) == len(styles) and len({m for m, _ in styles}) == len(styles)
