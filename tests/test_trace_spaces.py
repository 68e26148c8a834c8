"""Trace views of a run over a typed search space: summary, compare, state, export, plot,
the Optuna and OTLP exports and the eval's cell records carry every parameter of the run's
space, while a run of the default space reads exactly as before (the state audit's
geometry against the formula it replaced)."""

import csv
import json
import math
import random
from pathlib import Path

import optuna
import pytest

from tuneloop.evaluation.cli import main
from tuneloop.evaluation.harness import best_params, csv_columns, proposal_record, read_proposal, write_csv
from tuneloop.evaluation.optuna_storage import distribution, record_cell, trial_params
from tuneloop.evaluation.otlp import otlp_request
from tuneloop.evaluation.trace_params import on_landscape, plot_axes, run_space
from tuneloop.evaluation.traces import AuditGeometry, compare, export_rows, state_audit, summary, trial_rows
from tuneloop.tools.errors import UserError
from tuneloop.tools.gd_space import DEFAULT_SPACE, FULL_SPACE
from tuneloop.tools.record import read_trace
from tuneloop.tools.space import IntParam, SearchSpace
from tuneloop.tools.trials import CurveSummary, TrialResult

# the five-parameter space, written as a manifest records it
SPACE = {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
         "momentum": {"type": "float", "low": 0.0, "high": 0.99},
         "nesterov": {"type": "categorical", "choices": [False, True]},
         "lr_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
         "grad_clip": {"type": "float", "low": 0.1, "high": 100.0, "log": True}}
NAMES = list(SPACE)
EXTRA = ["nesterov", "lr_decay", "grad_clip"]
MANIFEST = {"method": "llm", "objective": "rosenbrock", "x0": [-1.5, 2.0], "max_iter": 5000, "tol": 1e-6,
            "budget": 4, "seed": 0, "space": SPACE}


def write_run(d: Path, events: list[dict], manifest: dict | None = MANIFEST) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"timestamp": f"2026-01-01T00:00:{i:02d}.000000+00:00", "session_id": d.name, "seq": i,
                         "format": 1} | e) for i, e in enumerate(events, 1)]
    (d / "trace.jsonl").write_text("\n".join(lines) + "\n")
    if manifest is not None:
        (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def trial(n: int, params: dict, status: str, fv: float | None, score: float, source: str = "llm",
          repeat: bool = False) -> dict:
    return {"event": "trial_evaluated", "trial": n, "source": source, "learning_rate": params["learning_rate"],
            "momentum": params.get("momentum", 0.0), "params": params, "status": status, "final_value": fv,
            "iterations": 100, "score": score, "repeat": repeat, "charged": not repeat, "budget_left": 0}


P1 = {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "lr_decay": 1e-3, "grad_clip": 1}  # 1: JSON int
P2 = {"learning_rate": 1e-3, "momentum": 0.5, "nesterov": False, "lr_decay": 1e-4, "grad_clip": 10.0}
P3 = P1 | {"nesterov": False}  # P1's numbers, the other choice: not P1's failed region
P4 = P1 | {"learning_rate": 0.049}  # within 0.1 decade of P1, same choice: in it
REC = {"learning_rate": 1e-3, "momentum": 0.5, "params": P2, "rationale": "trial 2 converged"}
EVENTS = [
    {"event": "session_started", "method": "llm", "objective": "rosenbrock"},
    trial(1, P1, "diverged", None, 400.0),
    {"event": "tool_error", "source": "llm", "error": "nesterov: must be one of {false, true}, got 'maybe'",
     "arguments": P2 | {"nesterov": "maybe"}},
    trial(2, P2, "converged", 1e-9, -9.0),
    trial(3, P3, "max_iter", 1e-2, -2.0),
    trial(4, P4, "diverged", None, 400.0),
    {"event": "session_finished", "stop_reason": "budget_spent", "wall_s": 2.0, "model_s": 1.0, "tool_s": 0.5,
     "overhead_s": 0.5, "recommendation": REC, "best_trial": 2, "best": trial(2, P2, "converged", 1e-9, -9.0)},
]


@pytest.fixture
def run(tmp_path) -> Path:
    return write_run(tmp_path / "five", EVENTS)


@pytest.fixture
def default_run(tmp_path) -> Path:
    two = [{k: v for k, v in e.items() if k != "params"} for e in EVENTS if e["event"] == "trial_evaluated"]
    return write_run(tmp_path / "two", two, {k: v for k, v in MANIFEST.items() if k != "space"})


def out_of(capsys) -> str:
    return capsys.readouterr().out


# ------------------------------------------------------------------ the run's space
def test_the_space_comes_from_the_manifest_its_bounds_or_the_trials(run, default_run, tmp_path):
    assert run_space(read_trace(run)).names == tuple(NAMES)
    assert run_space(read_trace(default_run)) == DEFAULT_SPACE
    old = write_run(tmp_path / "old", EVENTS[:2], MANIFEST | {"space": None, "bounds": {"alpha_max": 1.0}})
    assert run_space(read_trace(old))["learning_rate"].high == 1.0  # EvaluatorConfig read the bounds
    bare = write_run(tmp_path / "bare", EVENTS, None)
    assert run_space(read_trace(bare)) == FULL_SPACE  # no manifest: the trials' names, FULL_SPACE's ranges


# ------------------------------------------------------------------ summary, compare, export
def test_summary_has_every_parameter_in_json_and_table(run, capsys):
    s = summary(read_trace(run))
    assert s["parameters"] == NAMES
    assert [{n: r[n] for n in NAMES} for r in s["trials"]] == [P1, P2, P3, P4]
    assert s["invalid"][0]["arguments"]["nesterov"] == "maybe" and s["invalid"][0]["learning_rate"] == 1e-3
    assert main(["trace", "summary", str(run)]) == 0
    text = out_of(capsys)
    header = next(line for line in text.splitlines() if "alpha" in line)
    assert all(col in header for col in ("beta", *EXTRA))
    row2 = next(line for line in text.splitlines() if line.strip().startswith("2 "))
    assert all(v in row2 for v in ("0.001", "0.5", "false", "0.0001", "10", "converged"))
    assert "recommendation: lr=0.001 momentum=0.5 nesterov=false lr_decay=0.0001 grad_clip=10: trial 2" in text
    assert main(["trace", "summary", str(run), "--json"]) == 0
    assert json.loads(out_of(capsys))["trials"][0]["nesterov"] is True


def test_compare_has_a_best_column_per_parameter(run, default_run, capsys):
    five, two = compare([read_trace(run), read_trace(default_run)])
    assert (five["best_lr"], five["best_momentum"]) == (1e-3, 0.5)
    assert (five["best_nesterov"], five["best_lr_decay"], five["best_grad_clip"]) == (False, 1e-4, 10.0)
    assert not any(k in two for k in ("best_nesterov", "best_lr_decay", "best_grad_clip"))
    assert main(["trace", "compare", str(run), str(default_run)]) == 0
    lines = out_of(capsys).splitlines()
    assert all(f"best {n}" in lines[0] for n in ("lr", "momentum", "nesterov", "lr decay", "grad clip"))
    assert "…" not in lines[0]  # piped: room for the three more columns
    assert "false" in lines[2] and lines[3].count(" - ") >= 3  # the default run has none of the three


def test_export_has_a_column_per_parameter_of_any_run(run, default_run, tmp_path, capsys):
    rows = export_rows([read_trace(run)])
    assert [{n: r[n] for n in NAMES} for r in rows] == [P1, P2, P3, P4]
    out = tmp_path / "t.csv"
    assert main(["trace", "export", str(default_run), str(run), "--out", str(out)]) == 0
    with out.open() as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[6:11] == ["learning_rate", "momentum", *EXTRA]
    assert table[0]["nesterov"] == "" and table[4]["nesterov"] == "True" and table[4]["grad_clip"] == "1"
    assert main(["trace", "export", str(run), "--format", "jsonl", "--out", str(tmp_path / "t.jsonl")]) == 0
    first = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])
    assert {n: first[n] for n in NAMES} == P1


# ------------------------------------------------------------------ state audit
def test_state_audit_measures_every_axis_a_choice_0_or_1_apart(run, capsys):
    a = state_audit(read_trace(run))
    assert a["parameters"] == NAMES
    t3, t4 = [x for x in a["turns"] if not x["invalid"]][2:]
    assert t3["proposal"] == tuple(P3[n] for n in NAMES) and t3["incumbent"][-1] == -9.0
    assert not t3["in_failed_region"]  # P1's numbers, but the other nesterov
    assert t4["in_failed_region"] and not t4["repeat_tried"]
    assert t4["ignored_incumbent"]  # one step (the choice) from P3 ... but P1, failed, is nearer still
    assert main(["trace", "state", str(run)]) == 0
    text = out_of(capsys)
    assert "proposed lr=0.05 mom=0.9 nesterov=false lr_decay=0.001 grad_clip=1  | incumbent lr=0.001" in text
    assert "within 0.1 decade of alpha, 0.05 of beta, the same nesterov, 0.1 decade of gamma and 0.1 decade of c" \
        in text


def test_the_geometry_of_a_categorical_and_an_integer_axis():
    space = SearchSpace.model_validate({"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                                        "layers": {"type": "int", "low": 1, "high": 4},
                                        "act": {"type": "categorical", "choices": ["relu", "tanh"]}})
    geo = AuditGeometry.of(space)
    a, b = geo.coords((1e-3, 2, "relu")), geo.coords((1e-2, 3, "tanh"))
    assert geo.distance(a, b) == pytest.approx(math.sqrt(1 + 1 + 1))  # a decade, one integer, another choice
    assert geo.near(a, geo.coords((1.2e-3, 2, "relu"))) and not geo.near(a, geo.coords((1e-3, 2, "tanh")))
    assert geo.describe() == "0.1 decade of lr, 0.5 of layers and the same act"


def old_audit_flags(events: list[dict], f_star: float = 0.0) -> list[tuple[bool, bool, bool]]:
    """The audit as it was written for (alpha, beta) only: the reference for default runs."""
    from tuneloop.tools.scoring import is_failed

    def dist(a, b):
        return math.hypot(math.log10(a[0]) - math.log10(b[0]), (a[1] - b[1]) / 0.1)

    tried, failed, inc, out = [], [], None, []
    for e in events:
        p = (float(e["learning_rate"]), float(e["momentum"]))
        box = any(abs(math.log10(p[0]) - math.log10(q[0])) <= 0.1 and abs(p[1] - q[1]) <= 0.05 for q in failed)
        ignored = bool(inc and failed and min(dist(p, q) for q in failed) < dist(p, inc[:2]))
        out.append((p in tried, box, ignored))
        tried += [p] if p not in tried else []
        failed += [p] if is_failed(e["status"], e["final_value"], f_star) and p not in failed else []
        inc = (p[0], p[1], e["score"]) if inc is None or e["score"] < inc[2] else inc
    return out


def test_the_audit_of_default_runs_is_the_one_it_replaced(tmp_path):
    rng = random.Random(7)
    for k in range(6):
        events, tried = [], []
        for n in range(1, 30):
            if tried and rng.random() < 0.4:  # near or on a tried configuration: on the box's edges too
                lr, mom = rng.choice(tried)
                lr *= rng.choice([1, 10 ** 0.1, 10 ** -0.1, 10 ** rng.uniform(-0.2, 0.2)])
                mom = min(0.99, max(0.0, round(mom + rng.choice([0, 0.05, -0.05, 0.1, rng.uniform(-.1, .1)]), 2)))
            else:
                lr, mom = round(10 ** rng.uniform(-4, -1), 4), round(rng.uniform(0, 0.99), 2)
            tried.append((lr, mom))
            status = rng.choice(["converged", "max_iter", "diverged"])
            fv = None if status == "diverged" else 10 ** rng.uniform(-12, 1)
            events.append({"event": "trial_evaluated", "trial": n, "source": "llm", "learning_rate": lr,
                           "momentum": mom, "status": status, "final_value": fv, "iterations": 10,
                           "score": 400.0 if fv is None else rng.uniform(-12, 1), "repeat": False, "charged": True})
        d = write_run(tmp_path / f"r{k}", events, {k: v for k, v in MANIFEST.items() if k != "space"})
        turns = state_audit(read_trace(d))["turns"]
        new = [(x["repeat_tried"], x["in_failed_region"], x["ignored_incumbent"]) for x in turns]
        assert new == old_audit_flags(events)


# ------------------------------------------------------------------ plot
def test_plot_axes_defaults_and_choices():
    assert plot_axes(FULL_SPACE) == ("learning_rate", "momentum")
    no_mom = SearchSpace.model_validate({n: SPACE[n] for n in ("nesterov", "learning_rate", "grad_clip")})
    assert plot_axes(no_mom) == ("learning_rate", "grad_clip")
    assert plot_axes(FULL_SPACE, ["grad_clip", "lr_decay"]) == ("grad_clip", "lr_decay")
    for bad, says in ((["learning_rate", "depth"], "no parameter 'depth'"), (["nesterov", "momentum"], "categorical"),
                      (["momentum", "momentum"], "twice")):
        with pytest.raises(UserError, match=says):
            plot_axes(FULL_SPACE, bad)
    with pytest.raises(UserError, match="two continuous parameters"):
        plot_axes(SearchSpace.model_validate({n: SPACE[n] for n in ("learning_rate", "nesterov")}))


def test_the_landscape_only_under_plain_momentum_gd(run, tmp_path):
    rows = trial_rows(read_trace(run))
    assert not on_landscape(FULL_SPACE, ("learning_rate", "momentum"), rows)  # nesterov, decay, clipping on
    three = {n: SPACE[n] for n in ("learning_rate", "momentum", "nesterov")}
    off = write_run(tmp_path / "off", [trial(1, P2 | {"nesterov": False}, "converged", 1e-9, -9.0)],
                    MANIFEST | {"space": three})
    t = read_trace(off)
    assert on_landscape(run_space(t), ("learning_rate", "momentum"), trial_rows(t))  # nesterov off throughout
    assert not on_landscape(run_space(t), ("momentum", "learning_rate"), trial_rows(t))


def test_plot_draws_any_two_parameters_and_a_bad_axes_is_one_line(run, tmp_path, capsys):
    for axes in ([], ["--axes", "lr_decay", "grad_clip"]):
        png = tmp_path / f"p{len(axes)}.png"
        assert main(["trace", "plot", str(run), "--out", str(png), *axes]) == 0
        assert png.read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    for axes in (["learning_rate", "depth"], ["nesterov", "momentum"], ["momentum", "momentum"], ["momentum"]):
        assert main(["trace", "plot", str(run), "--out", str(tmp_path / "x.png"), "--axes", *axes]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------ Optuna and OTLP
def test_optuna_study_has_the_spaces_distributions(run, default_run):
    storage = optuna.storages.RDBStorage("sqlite:///:memory:")
    assert record_cell(storage, "five", run) == 4
    t = optuna.load_study(study_name="five", storage=storage).trials[0]
    assert t.params == P1 and t.user_attrs["source"] == "llm"
    d = t.distributions
    assert d["learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)
    assert d["momentum"] == optuna.distributions.FloatDistribution(0.0, 0.99)
    assert d["nesterov"] == optuna.distributions.CategoricalDistribution([False, True])
    assert d["grad_clip"].log and d["lr_decay"].log
    assert record_cell(storage, "two", default_run) == 4  # the two-parameter form, as ever
    t = optuna.load_study(study_name="two", storage=storage).trials[1]
    assert t.params == {"log10_learning_rate": pytest.approx(-3.0), "momentum": 0.5}


def test_optuna_int_and_categorical_distributions_hold_every_value():
    space = SearchSpace.model_validate({"lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                                        "depth": {"type": "int", "low": 2, "high": 10, "step": 2},
                                        "width": {"type": "int", "low": 1, "high": 64, "log": True},
                                        "act": {"type": "categorical", "choices": ["relu", "tanh"]}})
    rows = [{"lr": 1e-3, "depth": 4, "width": 8, "act": "relu"}, {"lr": 0.1, "depth": 10, "width": 64, "act": "tanh"}]
    dists, params = trial_params(space, rows)
    assert dists["depth"] == optuna.distributions.IntDistribution(2, 10, step=2)
    assert dists["width"] == optuna.distributions.IntDistribution(1, 64, log=True)
    assert params == rows
    for p in params:
        optuna.trial.create_trial(params=p, distributions=dists, value=0.0)  # Optuna takes each
    assert distribution(space["act"], ["gelu"]).choices == ("relu", "tanh", "gelu")
    assert distribution(IntParam(low=2, high=10, step=2), [1]) == optuna.distributions.IntDistribution(1, 10)


def attributes(span: dict) -> dict:
    return {a["key"]: a["value"] for a in span["attributes"]}


def test_otlp_spans_carry_every_parameter(run):
    spans = [s for rs in otlp_request([read_trace(run)])["resourceSpans"] for s in rs["scopeSpans"][0]["spans"]]
    root, evaluate = spans[0], [attributes(s) for s in spans[1:]]
    assert [a["tuneloop.status"]["stringValue"] for a in evaluate] == ["diverged", "error", "converged", "max_iter",
                                                                        "diverged"]
    first = evaluate[0]
    assert first["tuneloop.nesterov"] == {"boolValue": True}
    assert first["tuneloop.lr_decay"] == {"doubleValue": 1e-3}
    assert first["tuneloop.grad_clip"] == {"doubleValue": 1.0}  # a float parameter: a double, though JSON wrote 1
    assert json.loads(evaluate[1]["tuneloop.arguments"]["stringValue"])["nesterov"] == "maybe"
    ra = attributes(root)
    assert ra["tuneloop.best_nesterov"] == {"boolValue": False} and ra["tuneloop.best_grad_clip"]["doubleValue"] == 10
    assert ra["tuneloop.recommendation.lr_decay"] == {"doubleValue": 1e-4}


# ------------------------------------------------------------------ the eval's cell records
def result(params: dict) -> TrialResult:
    return TrialResult(trial=1, source="tpe", learning_rate=params["learning_rate"],
                       momentum=params.get("momentum", 0.0), status="converged", final_value=1e-9, iterations=10,
                       x_final=[1.0, 1.0], distance_to_optimum=0.0, best_value=1e-9, score=-9.0, repeat=False,
                       charged=True, budget_left=0, curve=CurveSummary(checkpoints=[], increases=0, oscillating=False),
                       params=params)


def test_cell_rows_and_proposals_carry_every_parameter(tmp_path):
    b = best_params(result(P2))
    assert b == {"best_alpha": 1e-3, "best_beta": 0.5, "best_nesterov": False, "best_lr_decay": 1e-4,
                 "best_grad_clip": 10.0}
    plain = best_params(result({"learning_rate": 1e-3, "momentum": 0.9}))
    assert plain == {"best_alpha": 1e-3, "best_beta": 0.9} and best_params(None) == {"best_alpha": None,
                                                                                         "best_beta": None}
    rows = [{"method": "grid", **plain}, {"method": "tpe", **b}]
    cols = csv_columns(rows)
    assert cols[cols.index("best_beta") + 1:][:3] == ["best_nesterov", "best_lr_decay", "best_grad_clip"]
    assert csv_columns(rows[:1]) == csv_columns([])  # the default space: the header as ever
    write_csv(rows, tmp_path / "results.csv")
    with (tmp_path / "results.csv").open() as f:
        got = list(csv.DictReader(f))
    assert got[0]["best_nesterov"] == "" and got[1]["best_grad_clip"] == "10.0"
    rec = json.loads(json.dumps(proposal_record(result(P2))))
    assert read_proposal(rec)["params"] == P2 and read_proposal(rec)["score"] == -9.0
    old = read_proposal([1e-3, 0.9, -6.0, "grid"])  # a cell written before typed spaces
    assert old == {"learning_rate": 1e-3, "momentum": 0.9, "score": -6.0, "source": "grid",
                   "params": {"learning_rate": 1e-3, "momentum": 0.9}}


def test_a_landscape_with_a_run_near_overflow_is_drawn(tmp_path):
    """A run that ends near 1e308 without diverging (a steep quadratic from a random start)
    broke matplotlib's log ticks (OverflowError) and with it an eval's plots."""
    import dataclasses

    import numpy as np

    from tuneloop.evaluation.report import GAP_CEILING, plot_landscape, plot_landscape_proposals
    from tuneloop.tools.sweep import sweep

    land = sweep("quadratic", resolution=6, max_iter=50)
    fv = land.final_value.copy()
    fv[0, 0] = 5.6e302
    land = dataclasses.replace(land, final_value=fv)
    assert plot_landscape(land, tmp_path / "l.png").read_bytes()[:4] == b"\x89PNG"
    out = plot_landscape_proposals(land, {"llm": [(1e-3, 0.5)]}, tmp_path / "p.png", "t")
    assert out.read_bytes()[:4] == b"\x89PNG" and GAP_CEILING < np.finfo(float).max
