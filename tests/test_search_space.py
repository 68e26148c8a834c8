"""Typed search spaces: the file format and its errors, values and unit coordinates, GD's
knobs through the Evaluator (checked against the kernel run directly), and every method
proposing only inside any space, each parameter type included."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tuneloop.agent.scripted import ScriptedChatModel
from tuneloop.agent.session_config import SessionConfig
from tuneloop.evaluation.centaur import CentaurLLM
from tuneloop.evaluation.grids import grid_counts
from tuneloop.evaluation.runner import run_strategy
from tuneloop.evaluation.strategies import STUDY_ALPHAS, STUDY_BETAS, StrategyContext, make_strategy
from tuneloop.tools.gd_space import DEFAULT_SPACE, FULL_SPACE, check_gd_space, space_text
from tuneloop.tools.momentum import run
from tuneloop.tools.space import SearchSpace, SpaceError
from tuneloop.tools.trials import Evaluator, EvaluatorConfig, InvalidProposal

MIXED = SearchSpace.model_validate({
    "lr": {"type": "float", "low": 1e-5, "high": 1.0, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "width": {"type": "int", "low": 16, "high": 256, "step": 16},
    "layers": {"type": "int", "low": 1, "high": 64, "log": True},
    "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
    "bias": {"type": "categorical", "choices": [False, True]},
})


@pytest.mark.parametrize("data,message", [
    ({"a": {"type": "float", "low": 1, "high": 1}}, "a: low (1) must be below high (1)"),
    ({"a": {"type": "float", "low": 0, "high": 1, "log": True}}, "a: a log-scale range needs low > 0"),
    ({"a": {"type": "int", "low": 0, "high": 10, "step": 3}}, "must be a multiple of step"),
    ({"a": {"type": "categorical", "choices": []}}, "a.choices: needs at least one choice"),
    ({"a": {"type": "categorical", "choices": [1, 1]}}, "choices must be distinct"),
    ({"a": {"type": "matrix"}}, "unknown type 'matrix'"),
    ({"a": {"low": 0, "high": 1}}, "needs a type"),
    ({"a": {"type": "float", "low": 0, "high": 1, "scale": "log"}}, "a.scale: is not a setting"),
    ({}, "at least one parameter"),
    ([1, 2], "must be a JSON object of parameters"),
    ({"not a name": {"type": "float", "low": 0, "high": 1}}, "not an identifier"),
])
def test_a_bad_space_is_one_clear_error(data, message):
    with pytest.raises(SpaceError) as e:
        SearchSpace.parse(data)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_space_files_and_what_gd_takes(tmp_path):
    path = tmp_path / "space.json"
    path.write_text(json.dumps(FULL_SPACE.to_json()))
    assert SearchSpace.from_file(path) == FULL_SPACE  # the JSON form round-trips
    path.write_text("{nope")
    with pytest.raises(SpaceError, match="is not JSON"):
        SearchSpace.from_file(path)
    with pytest.raises(SpaceError, match="takes no parameter 'lr', 'dropout'"):
        check_gd_space(MIXED)
    for bad, why in [({"momentum": {"type": "float", "low": 0, "high": 0.9}}, "needs a learning_rate"),
                     ({"learning_rate": {"type": "float", "low": 1e-3, "high": 0.1},
                       "momentum": {"type": "float", "low": 0.5, "high": 1.0}}, "momentum must be in [0, 1)"),
                     ({"learning_rate": {"type": "categorical", "choices": [0.01, -1]}}, "learning_rate must be > 0"),
                     ({"learning_rate": {"type": "float", "low": 1e-3, "high": 0.1},
                       "nesterov": {"type": "categorical", "choices": [0, 1]}}, "nesterov must be categorical")]:
        with pytest.raises(SpaceError, match=why.replace("[", r"\[").replace(")", r"\)")):
            check_gd_space(SearchSpace.parse(bad))
    # the default space is the study's ranges, said in the prompts as before
    assert space_text(DEFAULT_SPACE) == "learning_rate (alpha) in [0.0001, 0.1] and momentum (beta) in [0, 0.99]"


def test_values_are_typed_and_checked():
    raw = {"lr": "1e-3", "dropout": 0, "width": 32.0, "layers": 3, "act": "tanh", "bias": "true"}
    p = MIXED.coerce(raw)
    assert p == {"lr": 1e-3, "dropout": 0.0, "width": 32, "layers": 3, "act": "tanh", "bias": True}
    assert type(p["width"]) is int and type(p["bias"]) is bool and MIXED.check(p) is None
    assert "width=40 is not on the range's step" in MIXED.check(p | {"width": 40})
    assert "bias=1 is not one of" in MIXED.check(p | {"bias": 1})  # 1 is not true
    assert "lr=2.0 is outside" in MIXED.check(p | {"lr": 2.0})
    for bad, why in [({**raw, "width": 32.5}, "width: must be an integer"),
                     ({**raw, "act": "sigmoid"}, "act: must be one of"),
                     ({**raw, "lr": float("nan")}, "lr: must be a finite number"),
                     ({**raw, "lr": True}, "lr: must be a number"),
                     ({k: v for k, v in raw.items() if k != "act"}, "act: missing"),
                     ({**raw, "extra": 1}, "unexpected argument(s) extra")]:
        with pytest.raises(ValueError, match=why.replace("(", r"\(").replace(")", r"\)")):
            MIXED.coerce(bad)
    assert MIXED.key(p) != MIXED.key(p | {"bias": False})


def test_unit_coordinates_round_trip_on_log_linear_and_integer_axes():
    assert MIXED.continuous == ("lr", "dropout", "width", "layers") and MIXED.categorical == ("act", "bias")
    p = {"lr": 1e-3, "dropout": 0.25, "width": 128, "layers": 8}
    z = MIXED.to_unit(p)
    assert z == pytest.approx([0.4, 0.5, 112 / 240, math.log10(8) / math.log10(64)])
    back = MIXED.from_unit(z)
    assert back["lr"] == pytest.approx(1e-3) and back["dropout"] == 0.25 and back["width"] == 128
    assert back["layers"] == 8 and type(back["layers"]) is int
    assert MIXED.from_unit(np.array([0.0, 0.0, 0.51, 1.0]))["width"] == 144  # the nearest step


@pytest.mark.parametrize("method", ["grid", "random", "cmaes", "tpe", "centaur", "sllmbo", "llambo", "hollm"])
def test_every_method_proposes_only_inside_any_space(method):
    """On a space with every type (log, linear, stepped and log integers, string and
    boolean choices), 30 proposals, each valid, with values of the parameter's type; and
    every categorical choice gets proposed by the methods that search them."""

    class Llm:  # Centaur's LLM stand-in: proposes a fixed valid configuration
        def __call__(self, state):
            assert set(state["suggestion"]) == set(MIXED.names) and len(state.get("mean", "1234")) == 4
            return {"lr": 1e-2, "dropout": 0.1, "width": 64, "layers": 2, "act": "gelu", "bias": True}

        def candidates(self, state, k, box=None):  # LLAMBO's, HOLLM's: k of it, HOLLM's inside a box of the space
            assert box is None or (box.names == MIXED.names and all(
                MIXED[n].low <= box[n].low < box[n].high <= MIXED[n].high for n in MIXED.continuous))
            return [self({"suggestion": dict.fromkeys(MIXED.names)})] * k

        def bind_evaluator(self, ev):
            pass

        def bind_trace(self, callbacks):
            pass

    s = make_strategy(method, StrategyContext(budget=30, seed=1, space=MIXED, propose_llm=Llm(), centaur_ratio=0.5))
    seen = []
    for i in range(30):
        p = s.ask()
        if p is None:
            break
        assert list(p) == list(MIXED.names) and MIXED.check(p) is None, p
        assert type(p["width"]) is int and type(p["layers"]) is int and type(p["bias"]) is bool
        s.tell(p, float(i % 7))
        seen.append(p)
    assert len(seen) == 30
    if method not in ("centaur", "sllmbo", "llambo", "hollm"):  # (their LLM stand-in proposes one configuration)
        assert {p["act"] for p in seen} == {"relu", "tanh", "gelu"} and {p["bias"] for p in seen} == {False, True}


def test_the_grid_is_the_studys_on_the_default_space_and_a_budgets_worth_on_any_other():
    g = make_strategy("grid", StrategyContext(budget=24))
    pts = [g.ask() for _ in range(13)]
    assert pts[12] is None and [(p["learning_rate"], p["momentum"]) for p in pts[:12]] == [
        (a, b) for a in STUDY_ALPHAS for b in STUDY_BETAS]
    assert grid_counts(4, 6) == [2, 2, 2, 1]  # 12 trials over 2 x 4 axes: 2 nesterov x 2^3 x 1, spread to 12
    g = make_strategy("grid", StrategyContext(budget=12, space=FULL_SPACE))
    pts = [g.ask() for _ in range(12)]
    assert g.ask() is None and len({FULL_SPACE.key(p) for p in pts}) == 12
    assert {p["nesterov"] for p in pts} == {False, True} and {p["grad_clip"] for p in pts} == {10 ** 0.5}


def test_the_knobs_reach_the_kernel_through_the_evaluator():
    """A trial on the five-parameter space is exactly the kernel's run with those knobs;
    a configuration differing only in a choice is a new trial, the same one a repeat."""
    ev = Evaluator(EvaluatorConfig(objective="rosenbrock", budget=3, space=FULL_SPACE))
    p = {"learning_rate": 2e-3, "momentum": 0.9, "nesterov": True, "lr_decay": 1e-3, "grad_clip": 5.0}
    r = ev.evaluate(p)
    ref = run("rosenbrock", 2e-3, 0.9, nesterov=True, lr_decay=1e-3, grad_clip=5.0)
    assert (r.status, r.iterations, r.final_value) == (ref.status, ref.iterations, ref.final_value)
    assert r.params == p and (r.learning_rate, r.momentum) == (2e-3, 0.9)
    assert ev.evaluate(p | {"nesterov": "true"}).repeat  # the same choice, written as a model may
    assert not ev.evaluate(p | {"nesterov": False}).repeat
    with pytest.raises(InvalidProposal, match="nesterov: must be one of"):
        ev.evaluate(p | {"nesterov": "maybe"})
    assert ev.charged == 2 and ev.invalid == 1


def test_centaur_llm_answers_every_parameter_and_its_prompt_names_them(tmp_path):
    seen = []

    def answer(messages, kwargs):
        seen.append("\n".join(str(m.content) for m in messages))
        return {"name": "CentaurProposal", "args": {"learning_rate": 1e-3, "momentum": 0.5, "nesterov": True,
                                                    "lr_decay": 1e-4, "grad_clip": 10}}

    llm = CentaurLLM(ScriptedChatModel(script=[answer]), "centaur")
    s = make_strategy("centaur", StrategyContext(budget=12, seed=0, space=FULL_SPACE, propose_llm=llm,
                                                 centaur_ratio=0.5))
    cfg = SessionConfig(evaluator=EvaluatorConfig(budget=12, max_iter=500, space=FULL_SPACE), method="centaur",
                        prompt="centaur", runs_dir=tmp_path)
    r = run_strategy(s, cfg, "c")
    llm_trials = [t for t in r.trials if t.source == "centaur-llm"]
    assert llm_trials and all(t.params["nesterov"] is True and t.params["grad_clip"] == 10.0 for t in llm_trials)
    text = seen[0]
    assert "index 3: log10(grad_clip), grad_clip in [1e-1, 1e2]" in text
    assert "not searched by CMA-ES, chosen with each proposal: nesterov in {false, true}" in text
    assert '"nesterov": <one of {false, true}>' in text


def test_an_agent_session_on_a_space_file_in_10_d_shows_records_and_recommends_every_parameter(tmp_path, capsys):
    """`tuneloop run --space FILE --dim 10`: the tool's schema and the prompt carry every
    parameter, each trial line and the trace show them, and the final answer holds them."""
    from tests.fakes import ScriptedChatModel as Fake
    from tuneloop.evaluation.cli import main

    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(FULL_SPACE.to_json()))
    p1 = {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True, "lr_decay": 1e-4, "grad_clip": 10.0}
    p2 = p1 | {"nesterov": False, "momentum": 0.5}
    seen = {}

    def propose(params):
        def answer(messages, kwargs):
            seen.setdefault("prompt", "\n".join(str(m.content) for m in messages))
            return {"name": "run_momentum_gd", "args": params}
        return answer

    final = {"name": "FinalAnswer", "args": p1 | {"rationale": "trial 1 converged with the look-ahead gradient on."}}
    code = main(["run", "--space", str(space_file), "--dim", "10", "--budget", "2", "--runs-dir", str(tmp_path / "r")],
                model_factory=lambda s: Fake(script=[propose(p1), propose(p2), final]))
    out = capsys.readouterr().out
    assert code == 0
    assert "nesterov=true lr_decay=0.0001 grad_clip=10" in out  # the trial line and the best line
    from tuneloop.agent.langchain_tools import make_gd_tool

    tool = make_gd_tool(Evaluator(EvaluatorConfig(space=FULL_SPACE)))
    assert tool.args["nesterov"] == {"enum": [False, True], "description": "Nesterov look-ahead gradient, in "
                                     "{false, true}"} and "nesterov (in {false, true})" in tool.description
    assert "nesterov in {false, true}, lr_decay (gamma) in [0.00001, 0.01] and grad_clip (c) in [0.1, 100]" in \
        seen["prompt"]
    run_dir = next((tmp_path / "r").iterdir())
    events = [json.loads(x) for x in (run_dir / "trace.jsonl").read_text().splitlines()]
    trials = [e for e in events if e["event"] == "trial_evaluated"]
    assert [t["params"] for t in trials] == [p1, p2] and len(trials[0]["x_final"]) == 10
    rec = events[-1]["recommendation"]
    assert {k: rec[k] for k in p1} == p1
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert SearchSpace.parse(manifest["space"]) == FULL_SPACE and len(manifest["x0"]) == 10


@pytest.mark.parametrize("method", ["tpe", "centaur", "llm"])
def test_runs_on_a_five_parameter_space_replay_identically(tmp_path, method):
    """A classical run re-evaluates its proposals; an LLM method re-runs from its recorded
    replies: on the five-parameter space in 5-D, the same trials come out."""
    from tests.fakes import ScriptedChatModel as Fake
    from tuneloop.evaluation.methods import MethodSpec, run_method
    from tuneloop.evaluation.replay import replay
    from tuneloop.tools.record import read_trace

    p = {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True, "lr_decay": 1e-4, "grad_clip": 10.0}
    script = {"llm": [{"name": "run_momentum_gd", "args": p},
                      {"name": "run_momentum_gd", "args": p | {"nesterov": False}},
                      {"name": "run_momentum_gd", "args": p | {"momentum": 0.5}},
                      {"name": "FinalAnswer", "args": p | {"rationale": "trial 1 had the lowest final value."}}],
              "centaur": [{"name": "CentaurProposal", "args": p}] * 4}.get(method)
    spec = MethodSpec(method=method, function="rastrigin", budget=12 if method == "centaur" else 3, seed=2,
                      x0="random", dim=5, max_iter=800, space=FULL_SPACE, runs_dir=tmp_path / "runs",
                      centaur_ratio=0.5)
    r = run_method(spec, chat_model=Fake(script=script) if script else None)
    assert r.trials_charged == spec.budget and all(FULL_SPACE.check(t.params) is None for t in r.trials)
    out = replay(read_trace(Path(r.run_dir)), tmp_path / "replay")
    assert out["identical"], out
