"""The null model (`--model uniform`): seeded, uniform over the embedded model's value
language, every parameter type, for the agent and Centaur alike, and in a study beside
the real model as its ablation arm."""

from __future__ import annotations

import csv

from tuneloop.agent.gbnf import value_sentences
from tuneloop.agent.langchain_tools import args_schema
from tuneloop.agent.models import ModelSettings
from tuneloop.evaluation.cli import main
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.tools.gd_space import FULL_SPACE


def test_the_null_model_is_seeded_and_writes_only_sentences_of_each_language(tmp_path):
    props = args_schema(FULL_SPACE)["properties"]
    runs = []
    for i, seed in enumerate((4, 4, 5)):
        spec = MethodSpec(method="llm", budget=6, seed=seed, space=FULL_SPACE, max_iter=300,
                          model=ModelSettings(model="uniform", seed=seed), runs_dir=tmp_path / str(i))
        r = run_method(spec)
        assert r.trials_charged == 6 and r.invalid_proposals == 0 and r.model == "uniform"
        for t in r.trials:
            for name, v in t.params.items():
                text = {True: "true", False: "false"}.get(v) if isinstance(v, bool) else None
                assert (text or format(v, "g")) in value_sentences(props[name]) or \
                    any(float(s) == v for s in value_sentences(props[name]) if s not in ("true", "false")), (name, v)
        runs.append([t.params for t in r.trials])
    assert runs[0] == runs[1] and runs[0] != runs[2]
    assert {p["nesterov"] for run in runs for p in run} == {False, True}


def test_a_study_gets_the_ablation_arm_of_every_llm_method(tmp_path, capsys):
    code = main(["eval", "--methods", "llm", "centaur", "--model", "uniform", "--seeds", "0-1", "--budget", "8",
                 "--functions", "rosenbrock", "--out", str(tmp_path / "s"), "--no-plots", "--workers", "1"])
    assert code == 0, capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "s" / "results.csv")))
    assert sorted((r["method"], r["model"]) for r in rows) == [("centaur", "uniform")] * 2 + [("llm", "uniform")] * 2
    assert all(r["stop_reason"] == "budget_spent" and r["trials_charged"] == "8" for r in rows)
