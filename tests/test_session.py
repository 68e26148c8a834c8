import json
from pathlib import Path

import pytest

from tests.fakes import ScriptedChatModel, call, final
from tuneloop.agent.models import ModelSettings
from tuneloop.agent.session import run_session
from tuneloop.agent.session_config import SessionConfig
from tuneloop.tools.trials import EvaluatorConfig


def events(run_dir):
    return [json.loads(line) for line in (Path(run_dir) / "trace.jsonl").read_text().splitlines()]


def cfg(tmp_path, budget=3, **kw):
    return SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=budget, max_iter=2000),
                         runs_dir=tmp_path, **kw)


def test_scripted_session_counts_and_trace(tmp_path):
    model = ScriptedChatModel(script=[
        call(1e-3, 0.9),          # charged
        call(2.0, 0.5),           # out of range: invalid, not charged
        call("fast", 0.5),        # wrong type: invalid
        call(1e-3, 0.9),          # repeat: free
        call(1e-4, 0.5),          # charged
        call(0.09, 0.9),          # charged (diverges), budget now spent
        final(1e-3, 0.9, "trial 1 was best"),
    ])
    r = run_session(cfg(tmp_path), chat_model=model)
    assert (r.trials_charged, r.invalid_proposals, r.repeated_proposals) == (3, 2, 1)
    assert r.stop_reason == "budget_spent"
    assert r.recommendation.learning_rate == 1e-3 and "best" in r.recommendation.rationale
    assert r.best.learning_rate == 1e-3 and r.best.trial == 1
    assert r.model_calls == 7 and r.input_tokens > 0 and r.output_tokens == 7 * 7
    # once the budget was spent only FinalAnswer was offered, before only the GD tool
    assert model.bindings[-1]["tools"] == ["FinalAnswer"]
    assert all(b["tools"] == ["run_momentum_gd"] for b in model.bindings[:-1])
    ev = events(r.run_dir)
    names = [e["event"] for e in ev]
    assert names[0] == "session_started" and names[-1] == "session_finished"
    assert [e["seq"] for e in ev] == list(range(1, len(ev) + 1))
    assert names.count("trial_evaluated") == 4 and names.count("tool_error") == 2
    assert names.count("model_called") == 7
    trials = [e for e in ev if e["event"] == "trial_evaluated"]
    assert [t["charged"] for t in trials] == [True, False, True, True]
    assert [t["budget_left"] for t in trials] == [2, 2, 1, 0]
    for e in ev:
        assert e["session_id"] == r.session_id and e["timestamp"].endswith("+00:00")
    fin = ev[-1]
    assert fin["stop_reason"] == "budget_spent" and fin["trials_charged"] == 3
    assert fin["wall_s"] >= fin["model_s"] >= 0 and "overhead_s" in fin
    man = json.loads((Path(r.run_dir) / "manifest.json").read_text())
    for k in ("objective", "x0", "max_iter", "tol", "budget", "method", "model", "prompt", "seed", "versions"):
        assert k in man
    assert len(man["prompt"]["sha256"]) == 64


def test_model_that_never_stops_repeating_still_ends(tmp_path):
    model = ScriptedChatModel(script=[call(1e-3, 0.5)])  # the same call forever
    r = run_session(cfg(tmp_path, budget=4), chat_model=model)
    # the tool-call cap (3 x budget = 12) ends it first: 1 charged trial and 11 free repeats
    # answered, then a 13th model call whose tool call the cap refuses
    assert r.stop_reason == "tool_call_limit"
    assert (r.trials_charged, r.repeated_proposals, r.model_calls) == (1, 11, 13)
    assert r.model_calls < 3 * 4 + 3  # before the model-call cap


def test_model_that_only_talks_is_reminded_then_capped(tmp_path):
    model = ScriptedChatModel(script=["I think a learning rate of 0.01 is good."])
    r = run_session(cfg(tmp_path, budget=2), chat_model=model)
    assert r.trials_charged == 0 and r.stop_reason == "model_call_limit"
    assert r.model_calls == 3 * 2 + 3


def test_budget_is_never_exceeded_even_if_model_ignores_the_final_tool(tmp_path):
    lrs = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3]
    model = ScriptedChatModel(script=[call(a, 0.5) for a in lrs])
    r = run_session(cfg(tmp_path, budget=3), chat_model=model)
    assert r.trials_charged == 3
    charged = [e for e in events(r.run_dir) if e["event"] == "trial_evaluated" and e["charged"]]
    assert len(charged) == 3


def test_repeats_raise_the_temperature(tmp_path):
    model = ScriptedChatModel(script=[call(1e-3, 0.5), call(1e-3, 0.5), call(1e-3, 0.5), call(2e-3, 0.5),
                                      call(3e-3, 0.5), final(1e-3, 0.5)])
    run_session(cfg(tmp_path, budget=3, model=ModelSettings(temperature=0.5)), chat_model=model)
    temps = [b.get("temperature") for b in model.bindings]
    assert temps[:4] == [None, None, pytest.approx(0.8), pytest.approx(1.1)]


def test_secret_never_reaches_trace_or_manifest(tmp_path, monkeypatch):
    secret = "sk-test-SECRETSECRET123456"
    monkeypatch.setenv("MY_KEY", secret)
    model = ScriptedChatModel(script=[lambda m, k: call(1e-3, 0.5) | {"args": {"learning_rate": 1e-3, "momentum": 0.5}},
                                      final(1e-3, 0.5, f"my key is {secret}")])
    r = run_session(cfg(tmp_path, budget=1, model=ModelSettings(model="openai:x", api_key_env="MY_KEY")),
                    chat_model=model)
    text = (Path(r.run_dir) / "trace.jsonl").read_text() + (Path(r.run_dir) / "manifest.json").read_text()
    assert secret not in text and "***" in text


def test_bad_template_fails_before_any_model_call(tmp_path):
    from tuneloop.tools.errors import UserError

    bad = tmp_path / "bad.txt"
    bad.write_text("--- system ---\n$nope\n--- turn ---\nx\n")
    model = ScriptedChatModel(script=[call(1e-3, 0.5)])
    with pytest.raises(UserError, match=r"\$nope"):
        run_session(cfg(tmp_path, prompt=str(bad)), chat_model=model)
    assert model.bindings == []


@pytest.mark.parametrize("name", ["default", "lean", "paper", "reasoning"])
def test_builtin_prompts_render(tmp_path, name):
    model = ScriptedChatModel(script=[call(1e-3, 0.5), final(1e-3, 0.5)])
    r = run_session(cfg(tmp_path, budget=1, prompt=name), chat_model=model)
    assert r.trials_charged == 1 and r.stop_reason == "budget_spent"


def test_interrupted_session_keeps_a_complete_trace_and_cli_exits_130(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    def interrupt(messages, kwargs):
        raise KeyboardInterrupt

    code = main(["run", "--budget", "3", "--runs-dir", str(tmp_path), "--json"],
                model_factory=lambda s: ScriptedChatModel(script=[call(1e-3, 0.9), interrupt]))
    d = json.loads(capsys.readouterr().out)
    assert code == 130 and d["stop_reason"] == "interrupted" and d["trials_charged"] == 1
    last = events(d["run_dir"])[-1]
    assert last["event"] == "session_finished" and last["stop_reason"] == "interrupted"


def test_a_local_model_gets_the_state_alone_and_the_configurations_to_avoid(tmp_path):
    """The embedded model's turns (compact): the system prompt and one message carrying the
    trials, nothing of the conversation; the tried configurations as `avoid`; the final
    message from the template's final part, with the table."""
    seen = []

    def spy(answer):
        def step(messages, kwargs):
            seen.append(([type(m).__name__ for m in messages], messages[-1].content))
            return answer
        return step

    model = ScriptedChatModel(
        script=[spy(call(1e-3, 0.9)), spy(call(1e-4, 0.5)), spy(final(1e-3, 0.9, "trial 1 was best"))]
    )
    r = run_session(cfg(tmp_path, budget=2, model=ModelSettings(model="local")), chat_model=model)
    assert r.trials_charged == 2
    assert [kinds for kinds, _ in seen] == [["SystemMessage", "HumanMessage"]] * 3
    avoid = [b.get("avoid") for b in model.bindings]
    assert not avoid[0] and avoid[1] == [{"learning_rate": 1e-3, "momentum": 0.9}]
    assert avoid[2] is None  # the final answer may (and should) name a tried configuration
    last = seen[2][1]
    assert "1 | 1e-3 | 0.9 |" in last and "2 | 1e-4 | 0.5 |" in last and "Call FinalAnswer" in last


def test_a_remote_model_gets_the_whole_conversation_and_no_avoid_list(tmp_path):
    seen = []

    def spy(answer):
        def step(messages, kwargs):
            seen.append([type(m).__name__ for m in messages])
            return answer
        return step

    model = ScriptedChatModel(script=[spy(call(1e-3, 0.9)), spy(call(1e-4, 0.5)), spy(final(1e-3, 0.9))])
    run_session(cfg(tmp_path, budget=2, model=ModelSettings(model="openai:x", base_url="http://127.0.0.1:9/v1")),
                chat_model=model)
    assert seen[1] == ["SystemMessage", "HumanMessage", "AIMessage", "ToolMessage", "HumanMessage"]
    assert not any("avoid" in b for b in model.bindings)
