import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import ScriptedChatModel
from tuneloop.agent.models import ModelSettings
from tuneloop.agent.session_config import SessionConfig
from tuneloop.evaluation.centaur import CentaurLLM
from tuneloop.evaluation.harness import EvalConfig, run_eval
from tuneloop.evaluation.runner import run_strategy
from tuneloop.evaluation.strategies import (
    Centaur,
    CMAESStrategy,
    GridSearch,
    RandomSearch,
    RefinedGrid,
    TPEStrategy,
    centaur_schedule,
    refinement_points,
)
from tuneloop.evaluation.summary import summarize, write_summary
from tuneloop.tools.formatting import fmt_lr, fmt_param
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.trials import EvaluatorConfig

LR_MOM = ("learning_rate", "momentum")


def pair(p):
    return p["learning_rate"], p["momentum"]


def scfg(tmp_path, budget=12, method="x", **kw):
    return SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=budget, max_iter=1000),
                         method=method, runs_dir=tmp_path, **kw)


def test_grid_is_the_studys_grid_and_subsets_evenly():
    g = GridSearch()
    pts = [g.ask() for _ in range(13)]
    assert pts[-1] is None
    assert [pair(p) for p in pts[:12]] == [(a, b) for a in (1e-4, 1e-3, 1e-2, 1e-1) for b in (0.0, 0.5, 0.9)]
    assert [pair(p) for p in GridSearch(budget=4).points] == [(1e-4, 0.0), (1e-3, 0.5), (1e-2, 0.5), (1e-1, 0.9)]


def test_refinement_follows_protocol():
    pts = refinement_points(1e-3, 0.9)
    assert len(pts) == 12
    assert {round(a / 1e-3, 6) for a, _ in pts} == {0.8, 1.0, 1.2, 1.4}
    assert {b for _, b in pts} == {0.87, 0.9, 0.93}
    # betas outside [0, 1) are dropped
    assert {b for _, b in refinement_points(1e-3, 0.0)} == {0.0, 0.03}
    assert all(b < 1 for _, b in refinement_points(1e-3, 0.98))


def test_every_method_searches_the_allowed_ranges():
    """One box for all: the classical methods' default space is the sessions' default
    space (alpha in [1e-4, 0.1] on a log scale, beta in [0, 0.99]), and refinement points
    outside a space are dropped."""
    space = DEFAULT_SPACE
    assert space == EvaluatorConfig().space
    assert list(space.lows) == [-4.0, 0.0] and list(space.highs) == [-1.0, 0.99]
    assert max(a for a, _ in refinement_points(0.1, 0.5)) == pytest.approx(0.14)  # no space: only alpha <= 1
    assert max(a for a, _ in refinement_points(0.1, 0.5, space)) == 0.1  # 1.2 and 1.4 x 0.1 fall outside
    for s in range(3):  # every strategy's proposals fall inside the bounds
        for strat in (RandomSearch(space, seed=s), CMAESStrategy(space, seed=s)):
            for _ in range(12):
                p = strat.ask()
                assert space.check(p) is None
                strat.tell(p, 1.0)


def test_refined_spends_grid_then_refines_around_its_best(tmp_path):
    r = run_strategy(RefinedGrid(), scfg(tmp_path, budget=23), "refined")
    trials = [t for t in r.trials if t.charged]
    grid_best = min(trials[:12], key=lambda t: t.score)
    assert len(trials) == 23
    expected = [p for p in refinement_points(grid_best.learning_rate, grid_best.momentum)
                if p != (grid_best.learning_rate, grid_best.momentum)]
    assert [(t.learning_rate, t.momentum) for t in trials[12:]] == expected


@pytest.mark.parametrize("make", [
    lambda s: RandomSearch(DEFAULT_SPACE, seed=s),
    lambda s: RandomSearch(DEFAULT_SPACE, seed=s, uniform_alpha=True),
    lambda s: CMAESStrategy(DEFAULT_SPACE, seed=s),
    lambda s: TPEStrategy(DEFAULT_SPACE, seed=s),
])
def test_seeded_strategies_are_reproducible_in_bounds_and_within_budget(tmp_path, make):
    space = DEFAULT_SPACE
    runs = []
    for i, seed in enumerate((3, 3, 4)):
        r = run_strategy(make(seed), scfg(tmp_path / str(i), budget=9), f"s{i}")
        pts = [(t.learning_rate, t.momentum) for t in r.trials]
        assert r.trials_charged == 9 and len([t for t in r.trials if t.charged]) == 9
        for a, b in pts:
            assert space.check({"learning_rate": a, "momentum": b}) is None
        runs.append(pts)
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_centaur_schedule_documented():
    sched = centaur_schedule(20, 6, 0.3)
    # (j + 1) * 0.3 crosses an integer at j = 3, 6, 9, 13, i.e. trials k = j + 6
    assert [i for i, v in enumerate(sched) if v] == [9, 12, 15, 19]
    assert sum(centaur_schedule(30, 5, 0.5)) == 12 and not any(centaur_schedule(10, 10, 0.9))


def centaur_model(proposals):
    return ScriptedChatModel(script=[{"name": "CentaurProposal", "args": {"learning_rate": a, "momentum": b}}
                                     for a, b in proposals])


def test_centaur_calls_llm_on_scheduled_trials_and_tells_cmaes_everything(tmp_path):
    budget = 20
    answers = iter([(1e-3, 0.9), (2e-3, 0.8), (5e-4, 0.95), (1.5e-3, 0.85)])
    prompts = []

    def answer(messages, kwargs):
        prompts.append("\n".join(str(m.content) for m in messages))
        a, b = next(answers)
        return {"name": "CentaurProposal", "args": {"learning_rate": a, "momentum": b}}

    states = []

    class Recording(CentaurLLM):
        def __call__(self, state):
            states.append(state)
            return super().__call__(state)

    model = ScriptedChatModel(script=[answer])
    llm = Recording(model, "centaur")
    c = Centaur(llm, budget, seed=0, warmup=6, ratio=0.3)
    r = run_strategy(c, scfg(tmp_path, budget=budget, method="centaur", prompt="centaur"), "c", usage=llm.usage)
    sources = [t.source for t in r.trials]
    llm_idx = [i for i, s in enumerate(sources) if s == "centaur-llm"]
    assert llm_idx == [i for i, v in enumerate(centaur_schedule(budget, 6, 0.3)) if v]
    assert [(r.trials[i].learning_rate, r.trials[i].momentum) for i in llm_idx] == \
        [(1e-3, 0.9), (2e-3, 0.8), (5e-4, 0.95), (1.5e-3, 0.85)]
    assert c.cma.told == budget and llm.usage.calls == 4
    # the proposal tool was forced, and each prompt carried CMA-ES's state at that trial:
    # the number of trials told so far and CMA-ES's own suggestion for the replaced trial
    assert model.bindings == [{"tools": ["CentaurProposal"], "tool_choice": "any"}]
    assert len(prompts) == 4
    for k, st, text in zip(llm_idx, states, prompts, strict=False):
        assert f"Trials so far: {k} of {budget}." in text
        assert f"sigma: {st['sigma']:.4g}" in text
        a, b = pair(st["suggestion"])
        assert f"suggestion: learning_rate={fmt_lr(a)}, momentum={fmt_param(b)}" in text
        assert len(st["history"]) == k  # every earlier result was told to CMA-ES first
    assert states[0]["sigma"] != states[-1]["sigma"]  # CMA-ES moved between the calls
    man = json.loads((Path(r.run_dir) / "manifest.json").read_text())
    assert man["method"] == "centaur" and man["prompt"]["name"] == "centaur"


def test_centaur_prompt_shows_cmaes_state(tmp_path):
    seen = []

    def grab(messages, kwargs):
        seen.append("\n".join(str(m.content) for m in messages))
        return {"name": "CentaurProposal", "args": {"learning_rate": 1e-3, "momentum": 0.5}}

    llm = CentaurLLM(ScriptedChatModel(script=[grab]), "centaur")
    c = Centaur(llm, 8, seed=1, warmup=6, ratio=0.5)
    run_strategy(c, scfg(tmp_path, budget=8, method="centaur", prompt="centaur"), "c")
    text = seen[0]
    for needle in ("sigma", "mean", "suggestion", "Covariance", "index 0: log10(learning_rate)", "Top-5",
                   "Last 20", "Incumbent", "JSON only"):
        assert needle in text, needle


def test_centaur_out_of_range_is_reported_not_clamped(tmp_path):
    llm = CentaurLLM(centaur_model([(5.0, 0.5)]), "centaur")
    c = Centaur(llm, 8, seed=0, warmup=6, ratio=0.5)
    r = run_strategy(c, scfg(tmp_path, budget=8, method="centaur", prompt="centaur"), "c")
    assert r.invalid_proposals == 1 and r.trials_charged == 8
    assert all(t.learning_rate != 5.0 for t in r.trials)
    events = [json.loads(x) for x in (Path(r.run_dir) / "trace.jsonl").read_text().splitlines()]
    errs = [e for e in events if e["event"] == "tool_error"]
    assert errs and errs[0]["source"] == "centaur-llm" and "outside the allowed range" in errs[0]["error"]


def test_centaur_llm_failure_is_a_hard_visible_failure(tmp_path):
    llm = CentaurLLM(ScriptedChatModel(script=["I would rather not say."]), "centaur")
    c = Centaur(llm, 8, seed=0, warmup=6, ratio=0.5)
    r = run_strategy(c, scfg(tmp_path, budget=8, method="centaur", prompt="centaur"), "c")
    assert r.stop_reason == "model_error" and "JSON" in r.error
    first_llm = centaur_schedule(8, 6, 0.5).index(True)
    assert r.trials_charged == first_llm == 7  # CMA-ES's trials ran; nothing replaced the failed LLM trial


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_harness_resumes_and_summary_agrees_with_csv(tmp_path):
    cfg = EvalConfig(functions=["rosenbrock", "rastrigin"], methods=["grid", "random", "cmaes", "tpe"],
                     seeds=[0, 1, 2], budget=6, max_iter=500, out=tmp_path, workers=2)
    rows = run_eval(cfg)
    assert len(rows) == 2 * 4 * 3
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/result.json")}
    # an interrupted cell: its directory exists without result.json
    victim = tmp_path / "runs" / "tpe-rastrigin-s2"
    (victim / "result.json").unlink()
    ran = []  # the progress callback names each cell as it finishes
    cfg1 = cfg.model_copy(update={"workers": 1})
    rows2 = run_eval(cfg1, progress=lambda done, total, last: ran.append(last) if last else None)
    assert ran == ["tpe-rastrigin-s2"]
    for p, t in stamp.items():
        if p.parent != victim:
            assert p.stat().st_mtime_ns == t
    def strip(rs):
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in rs]
    assert strip(rows2) == strip(rows)  # the re-run cell reproduces its result exactly
    # summary vs results.csv
    table = _csv(tmp_path / "results.csv")
    summ = summarize(cfg)
    for f in cfg.functions:
        for m in cfg.methods:
            vals = [
                float(r["best_value"]) for r in table if r["function"] == f and r["method"] == m and r["best_value"]
            ]
            assert summ[f][m]["mean"] == pytest.approx(np.mean(vals))
            assert summ[f][m]["median"] == pytest.approx(np.median(vals))
            its = [float(r["iterations"]) for r in table if r["function"] == f and r["method"] == m]
            assert summ[f][m]["mean_iterations"] == pytest.approx(np.mean(its))
    md = write_summary(cfg, summ, {}).read_text()
    g = summ["rosenbrock"]["grid"]
    assert f"| grid | {g['mean']:.4g} | {g['median']:.4g} |" in md
    # same start point for every method under one seed
    x0s = {(r["function"], r["seed"]): set() for r in table}
    for r in table:
        x0s[(r["function"], r["seed"])].add(r["x0"])
    assert all(len(v) == 1 for v in x0s.values())


def test_eval_cli_with_llm_and_centaur_on_a_scripted_model(tmp_path, capsys):
    import itertools

    counter = itertools.count(1)

    def fake(settings):
        return ScriptedChatModel(
            script=[
                lambda m, k: (
                    {"name": "CentaurProposal", "args": {"learning_rate": 1e-3, "momentum": 0.9}}
                    if "CentaurProposal" in k["tools"]
                    else {"name": "run_momentum_gd", "args": {"learning_rate": 1e-4 * next(counter), "momentum": 0.5}}
                ),
            ]
        )

    from tuneloop.evaluation.cli import main

    code = main(
        [
            "eval",
            "--functions",
            "rosenbrock",
            "--methods",
            "grid",
            "llm",
            "centaur",
            "--seeds",
            "0",
            "--budget",
            "8",
            "--centaur-ratio",
            "0.5",
            "--max-iter",
            "300",
            "--workers",
            "1",
            "--out",
            str(tmp_path),
            "--no-plots",
        ],
        model_factory=fake,
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = _csv(tmp_path / "results.csv")
    assert [r["method"] for r in rows] == ["grid", "llm", "centaur"]
    assert all(int(r["trials_charged"]) == 8 for r in rows[1:]), rows
    assert int(rows[1]["tokens"]) > 0 and int(rows[2]["tokens"]) > 0


def test_eval_cli_writes_plots_and_rejects_bad_input(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    code = main(["eval", "--functions", "rosenbrock", "--methods", "grid", "cmaes", "--seeds", "0-1", "--budget", "4",
                 "--max-iter", "300", "--workers", "1", "--out", str(tmp_path)])
    assert code == 0
    md = (tmp_path / "summary.md").read_text()
    assert "![anytime_rosenbrock](plots/anytime_rosenbrock.png)" in md
    for name in ("anytime", "landscape", "per_seed", "trajectories"):
        assert (tmp_path / "plots" / f"{name}_rosenbrock.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    for bad in (["--methods", "gridd"], ["--seeds", "x"], ["--functions", "nope"], ["--x0", "somewhere"]):
        code = main(["eval", *bad, "--out", str(tmp_path / "b")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("error:") and err.count("\n") == 1, err


def test_reproduce_no_llm_tables_have_the_studys_columns(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    code = main(["reproduce", "--no-llm", "--out", str(tmp_path)])
    assert code == 0
    md = (tmp_path / "study.md").read_text()
    assert "| learning rate | momentum | final f(x) | iterations | status |" in md
    assert "| seed | x0 | best lr | momentum | final value | iterations | status |" in md
    assert "## Refined grid: best per objective" in md
    assert md.count("## Grid search on") == 2 and md.count("## Random search on") == 2
    # grid on rosenbrock: the study's best is lr 1e-3, momentum 0.9
    assert "| 0.001 | 0.9 | 1.14929e-08 | 2020 | Best |" in md


def test_reproduce_llm_rows_with_a_scripted_model(tmp_path):
    from tests.fakes import call, final
    from tuneloop.evaluation.reproduce import reproduce, study_markdown

    tables = reproduce(tmp_path, ["openai:gpt-4o"], model_settings=ModelSettings(),
                       model_factory=lambda s: ScriptedChatModel(script=[call(0.01, 0.9), final(0.01, 0.9)]))
    md = study_markdown(tables, {}, 1.0)
    assert "| seed | model | lr | momentum | final value | iterations | status |" in md
    rows = tables["llm"]["rosenbrock"]
    assert [r["seed"] for r in rows] == [0, 1, 2] and all(r["lr"] == 0.01 for r in rows)


def test_a_study_over_prompts_and_models_has_a_row_each_and_grows_resumably(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    made = []

    def factory(settings):
        made.append(settings.model)
        return ScriptedChatModel(script=[
            lambda m, k: ({"name": "CentaurProposal", "args": {"learning_rate": 1e-3, "momentum": 0.9}}
                          if "CentaurProposal" in k["tools"] else
                          {"name": "run_momentum_gd", "args": {"learning_rate": 2e-3, "momentum": 0.5}}
                          if "run_momentum_gd" in k["tools"] else
                          {"name": "FinalAnswer", "args": {"learning_rate": 2e-3, "momentum": 0.5, "rationale": "x"}}),
        ])

    base = ["eval", "--functions", "rosenbrock", "--methods", "random", "llm", "centaur", "--seeds", "0", "1",
            "--budget", "8", "--centaur-ratio", "0.5", "--max-iter", "300", "--workers", "1", "--out", str(tmp_path),
            "--no-plots", "--prompt", "default", "paper"]
    assert main([*base, "--model", "local"], model_factory=factory) == 0, capsys.readouterr().err
    first = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    assert sorted(first) == sorted(f"{arm}-rosenbrock-s{s}" for arm in ("random", "llm", "llm+paper", "centaur")
                                   for s in (0, 1))
    # a model added to the study: only its cells run; the finished ones are kept as they are
    assert main([*base, "--model", "local", "openai:m"], model_factory=factory) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "runs").iterdir()}
    assert {k: after[k] for k in first} == first
    assert sorted(set(after) - set(first)) == sorted(
        f"{arm}-rosenbrock-s{s}" for arm in ("llm+openai_m", "llm+paper+openai_m", "centaur+openai_m") for s in (0, 1))
    rows = _csv(tmp_path / "results.csv")
    assert [(r["method"], r["prompt"], r["model"]) for r in rows if r["seed"] == "0"] == [
        ("random", "", ""), ("llm", "default", "local"), ("llm", "default", "openai:m"), ("llm", "paper", "local"),
        ("llm", "paper", "openai:m"), ("centaur", "", "local"), ("centaur", "", "openai:m")]
    md = (tmp_path / "summary.md").read_text()
    for label in ("llm [paper, openai:m]", "centaur [openai:m]", "wins vs llm [paper]"):
        assert label in md
    paper = [json.loads((tmp_path / "runs" / f"llm+paper-rosenbrock-s{s}" / "manifest.json").read_text())
             for s in (0, 1)]
    assert all(m["prompt"]["name"] == "paper" and m["model"]["model"] == "local" for m in paper)


def test_a_centaur_cells_model_calls_are_traced_and_it_replays_from_them(tmp_path, capsys):
    import itertools

    from tuneloop.evaluation.cli import main

    lrs = itertools.count(1)

    def factory(settings):
        return ScriptedChatModel(script=[lambda m, k: {"name": "CentaurProposal", "args": {
            "learning_rate": 1e-4 * next(lrs), "momentum": 0.8}}])

    assert main(["eval", "--functions", "rosenbrock", "--methods", "centaur", "--seeds", "0", "--budget", "12",
                 "--centaur-ratio", "0.5", "--max-iter", "300", "--workers", "1", "--out", str(tmp_path),
                 "--no-plots"], model_factory=factory) == 0
    run_dir = tmp_path / "runs" / "centaur-rosenbrock-s0"
    events = [json.loads(x) for x in (run_dir / "trace.jsonl").read_text().splitlines()]
    calls = [e for e in events if e["event"] == "model_called"]
    llm_trials = [e for e in events if e["event"] == "trial_evaluated" and e["source"] == "centaur-llm"]
    assert len(calls) == len(llm_trials) == 3  # floor((12 - 6) * 0.5) LLM trials, each one model call
    assert all(c["tool_calls"][0]["name"] == "CentaurProposal" and "CMA-ES" in c["last_message"] for c in calls)
    fin = events[-1]
    assert fin["model_calls"] == 3 and fin["input_tokens"] == sum(c["input_tokens"] for c in calls)
    row = _csv(tmp_path / "results.csv")[0]
    assert int(row["tokens"]) == fin["input_tokens"] + fin["output_tokens"]
    capsys.readouterr()
    assert main(["trace", "summary", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model_calls"]["count"] == 3
    # replayed from its recorded replies: the same trials come out
    assert main(["trace", "replay", str(run_dir)]) == 0
    assert "identical" in capsys.readouterr().out
    # a recorded reply changed: the replay says where it parts
    lines = (run_dir / "trace.jsonl").read_text().splitlines()
    i = next(k for k, x in enumerate(lines) if json.loads(x)["event"] == "model_called")
    e = json.loads(lines[i])
    e["tool_calls"][0]["args"]["learning_rate"] = 0.05
    lines[i] = json.dumps(e)
    (run_dir / "trace.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["trace", "replay", str(run_dir)]) == 1
    assert "diverged at trial" in capsys.readouterr().out


def test_centaur_ratios_and_warmups_are_arms_of_one_study(tmp_path, capsys):
    """`--centaur-ratio 0 0.3 1 --centaur-warmup 0 4`: six Centaur arms per model, paired by
    seed; r = 0 is CMA-ES alone (trial for trial, whatever the warm-up), r = 1 gives the
    LLM every trial after the warm-up; the default arm keeps its name."""
    from tuneloop.evaluation.cli import main

    out = tmp_path / "study"
    argv = ["eval", "--functions", "rosenbrock", "--methods", "cmaes", "centaur", "--model", "uniform",
            "--centaur-ratio", "0", "0.3", "1", "--centaur-warmup", "0", "4", "--seeds", "0", "1", "--budget", "8",
            "--max-iter", "300", "--out", str(out), "--no-plots"]
    assert main(argv) == 0
    capsys.readouterr()
    cells = sorted(p.name for p in (out / "runs").iterdir())
    assert len(cells) == 2 * (1 + 6)
    assert "centaur+uniform+r0+warmup0-rosenbrock-s0" in cells and "centaur+uniform+warmup4-rosenbrock-s1" in cells

    def trials(cell: str) -> list[tuple[str, dict]]:
        events = [json.loads(x) for x in (out / "runs" / cell / "trace.jsonl").read_text().splitlines()]
        return [(e["source"], e["params"]) for e in events if e["event"] == "trial_evaluated" and e["charged"]]

    for seed in (0, 1):
        cma = [p for _, p in trials(f"cmaes-rosenbrock-s{seed}")]
        for w in (0, 4):
            r0 = trials(f"centaur+uniform+r0+warmup{w}-rosenbrock-s{seed}")
            assert [p for _, p in r0] == cma and {s for s, _ in r0} == {"cmaes"}
            r1 = [s for s, _ in trials(f"centaur+uniform+r1+warmup{w}-rosenbrock-s{seed}")]
            assert r1 == ["cmaes"] * w + ["centaur-llm"] * (8 - w)
        manifest = json.loads((out / "runs" / f"centaur+uniform+r1+warmup0-rosenbrock-s{seed}" / "manifest.json")
                              .read_text())
        assert manifest["centaur"]["ratio"] == 1 and manifest["centaur"]["warmup"] == 0
    summary = (out / "summary.md").read_text()
    assert "| centaur [uniform, r=0, warmup=4] |" in summary and "| centaur [uniform, r=1, warmup=0] |" in summary
    # a single value, as before: the default arm and its old name
    assert main(["eval", "--functions", "rosenbrock", "--methods", "centaur", "--model", "uniform", "--seeds", "0",
                 "--budget", "8", "--max-iter", "300", "--out", str(tmp_path / "one"), "--no-plots"]) == 0
    assert [p.name for p in (tmp_path / "one" / "runs").iterdir()] == ["centaur+uniform-rosenbrock-s0"]
    for bad, says in ((["--centaur-ratio", "0.3", "0.3"], "--centaur-ratio: lists a value twice"),
                      (["--centaur-ratio", "2"], "--centaur-ratio: Input should be less than or equal to 1"),
                      (["--centaur-warmup", "1.5"], "--centaur-warmup: Input should be a valid integer")):
        capsys.readouterr()
        assert main(["eval", "--methods", "centaur", "--model", "uniform", "--seeds", "0", "--out",
                     str(tmp_path / "bad"), *bad]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
