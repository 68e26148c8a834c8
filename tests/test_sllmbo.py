"""SLLMBO (evaluation/strategies.py): the LLM and TPE take turns by a seeded coin; TPE is
told every result, the LLM's included, and its unused suggestions are dropped; an LLM
answer out of range or junk is replaced by TPE's suggestion; a seed gives the same trials."""

from __future__ import annotations

import optuna

from tests.fakes import ScriptedChatModel
from tuneloop.evaluation.centaur import CentaurLLM
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.evaluation.strategies import SLLMBO, make_strategy
from tuneloop.evaluation.strategy_base import StrategyContext
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.record import read_trace


def proposals(*pairs):
    return [{"name": "CentaurProposal", "args": {"learning_rate": lr, "momentum": m}} for lr, m in pairs]


def run(tmp_path, script, budget=10, seed=4):
    r = run_method(MethodSpec(method="sllmbo", function="rosenbrock", budget=budget, seed=seed, max_iter=500,
                              runs_dir=tmp_path), chat_model=ScriptedChatModel(script=script))
    return read_trace(tmp_path / r.session_id)


def test_the_turns_are_a_seeded_coin_and_a_seed_gives_the_same_trials(tmp_path):
    script = proposals(*[(10.0 ** -(1 + k % 3), 0.1 * k) for k in range(10)])
    a, b = run(tmp_path / "a", script), run(tmp_path / "b", script)
    key = [(e["source"], e["params"]) for e in a.of("trial_evaluated")]
    assert key == [(e["source"], e["params"]) for e in b.of("trial_evaluated")]
    sources = [s for s, _ in key]
    assert {"tpe", "sllmbo-llm"} <= set(sources)
    assert len(a.of("model_called")) == sources.count("sllmbo-llm")  # one model call per LLM turn
    assert a.manifest["sllmbo"]["p_llm"] == 0.5 and a.manifest["prompt"]["name"] == "sllmbo"
    from tuneloop.evaluation.traces import state_audit

    assert state_audit(a)["n_valid"] == sources.count("sllmbo-llm")  # the audit judges the LLM's turns only


def test_tpe_is_told_every_result_and_its_unused_suggestions_are_dropped():
    class Llm:
        calls = 0

        def __call__(self, state):
            assert set(state) == {"suggestion", "history", "n_trials"}
            self.calls += 1
            return {"learning_rate": 10.0 ** -(1 + self.calls % 3), "momentum": 0.05 * self.calls}

        def bind_evaluator(self, ev):
            pass

        def bind_trace(self, callbacks):
            pass

    s = make_strategy("sllmbo", StrategyContext(budget=12, seed=1, space=DEFAULT_SPACE, propose_llm=Llm()))
    assert isinstance(s, SLLMBO)
    for i in range(12):
        p = s.ask()
        s.tell(p, float(i))
    states = [t.state for t in s.tpe.study.get_trials(deepcopy=False)]
    complete = states.count(optuna.trial.TrialState.COMPLETE)
    assert complete == 12  # every result, the LLM's too
    assert states.count(optuna.trial.TrialState.RUNNING) == 0
    assert states.count(optuna.trial.TrialState.FAIL) == s.llm_calls  # each LLM turn: TPE's suggestion unused
    assert [src for _, _, src in s.history].count("sllmbo-llm") == s.llm_calls > 0


def test_an_answer_out_of_range_or_junk_is_replaced_by_tpes_suggestion(tmp_path):
    junk = {"name": "CentaurProposal", "args": {"learning_rate": "fast", "momentum": None}}
    script = [*proposals((5.0, 0.5)), junk] * 6
    t = run(tmp_path, script, budget=8, seed=0)
    charged = [e for e in t.of("trial_evaluated") if e["charged"]]
    assert len(charged) == 8 and all(e["source"] == "tpe" for e in charged)  # every LLM answer was refused
    assert len(t.of("tool_error")) == len(t.of("model_called")) > 0
    assert all(DEFAULT_SPACE.check(DEFAULT_SPACE.coerce(e["params"])) is None for e in charged)


def test_its_llm_sees_tpes_suggestion_and_the_trials_so_far(tmp_path):
    seen = []

    def answer(messages, _):
        seen.append(str(messages[-1].content))  # the turn
        return proposals((2e-3, 0.6))[0]

    llm = CentaurLLM(ScriptedChatModel(script=[answer]), "sllmbo")
    s = make_strategy("sllmbo", StrategyContext(budget=6, seed=2, space=DEFAULT_SPACE, propose_llm=llm))
    from tuneloop.agent.session_config import SessionConfig
    from tuneloop.evaluation.runner import run_strategy
    from tuneloop.tools.trials import EvaluatorConfig

    cfg = SessionConfig(evaluator=EvaluatorConfig(budget=6, max_iter=300), method="sllmbo", prompt="sllmbo",
                        runs_dir=tmp_path)
    r = run_strategy(s, cfg, "sl-1")
    assert len(seen) == 6 and all("TPE's own next suggestion: learning_rate=" in p for p in seen)
    # the LLM keeps answering (2e-3, 0.6): its repeats are answered from the cache, not counted
    import re

    counts = [int(re.search(r"Trials so far \((\d+) of 6\)", p).group(1)) for p in seen]
    assert counts[0] == 0 and counts == sorted(counts) and counts[-1] < r.trials_charged == 6
    assert "1 | 2e-3 | 0.6 | max_iter" in seen[-1]  # the table of every trial, TPE's and the LLM's
