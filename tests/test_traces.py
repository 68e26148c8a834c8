import json
from pathlib import Path

import pytest

from tests.fakes import ScriptedChatModel, call, final
from tuneloop.agent.session import run_session
from tuneloop.agent.session_config import SessionConfig
from tuneloop.evaluation.replay import replay
from tuneloop.evaluation.traces import compare, evals_to_within, export_rows, state_audit, summary
from tuneloop.tools.record import TraceError, read_trace
from tuneloop.tools.trials import EvaluatorConfig


def write_trace(d: Path, events: list[dict], manifest: dict | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, e in enumerate(events, 1):
        lines.append(json.dumps({"timestamp": "2026-01-01T00:00:00+00:00", "session_id": d.name, "seq": i,
                                 "format": 1} | e))
    (d / "trace.jsonl").write_text("\n".join(lines) + "\n")
    if manifest:
        (d / "manifest.json").write_text(json.dumps(manifest))
    return d


def trial(n, lr, mom, status, fv, it, score, repeat=False, source="llm"):
    return {"event": "trial_evaluated", "trial": n, "source": source, "learning_rate": lr, "momentum": mom,
            "status": status, "final_value": fv, "iterations": it, "score": score, "repeat": repeat,
            "charged": not repeat, "budget_left": 0}


SYNTH = [
    {"event": "session_started", "method": "llm", "objective": "rosenbrock"},
    {
        "event": "model_called",
        "latency_s": 1.0,
        "input_tokens": 100,
        "output_tokens": 10,
        "tool_calls": [],
        "reply": "",
    },
    trial(1, 0.5, 0.9, "diverged", None, 4, 400.0),
    {
        "event": "model_called",
        "latency_s": 3.0,
        "input_tokens": 120,
        "output_tokens": 12,
        "tool_calls": [],
        "reply": "",
    },
    {
        "event": "tool_error",
        "source": "llm",
        "error": "learning_rate=2 is outside",
        "learning_rate": 2,
        "momentum": 0.1,
    },
    {
        "event": "model_called",
        "latency_s": 2.0,
        "input_tokens": 140,
        "output_tokens": 14,
        "tool_calls": [],
        "reply": "",
    },
    trial(2, 1e-3, 0.9, "converged", 1e-8, 2000, -8.0),
    {
        "event": "model_called",
        "latency_s": 5.0,
        "input_tokens": 160,
        "output_tokens": 16,
        "tool_calls": [],
        "reply": "",
    },
    trial(3, 0.5, 0.9, "diverged", None, 4, 400.0, repeat=True),
    {
        "event": "model_called",
        "latency_s": 4.0,
        "input_tokens": 180,
        "output_tokens": 18,
        "tool_calls": [],
        "reply": "",
    },
    trial(4, 0.48, 0.88, "diverged", None, 5, 400.0),
    {
        "event": "session_finished",
        "stop_reason": "budget_spent",
        "wall_s": 20.0,
        "model_s": 15.0,
        "tool_s": 1.0,
        "overhead_s": 4.0,
    },
]
MANIFEST = {"method": "llm", "objective": "rosenbrock", "x0": [-1.5, 2.0], "max_iter": 5000, "tol": 1e-6,
            "budget": 3, "seed": 0}


def test_summary_matches_hand_computed(tmp_path):
    s = summary(read_trace(write_trace(tmp_path / "r", SYNTH, MANIFEST)))
    assert [r["trial"] for r in s["trials"]] == [1, 2, 3, 4]
    assert [r["best_score_so_far"] for r in s["trials"]] == [400.0, -8.0, -8.0, -8.0]
    assert s["best"]["trial"] == 2
    mc = s["model_calls"]
    assert (mc["count"], mc["input_tokens"], mc["output_tokens"]) == (5, 700, 70)
    assert mc["latency_p50_s"] == 3.0 and mc["latency_p95_s"] == pytest.approx(4.8)
    assert s["invalid"][0]["error"].startswith("learning_rate=2")
    assert s["stop_reason"] == "budget_spent" and s["time"]["overhead_s"] == 4.0
    assert s["settings"]["budget"] == 3


def test_compare_and_evals_to_within(tmp_path):
    a = read_trace(write_trace(tmp_path / "a", SYNTH, MANIFEST))
    b = read_trace(write_trace(tmp_path / "b", [trial(1, 1e-3, 0.5, "max_iter", 1e-2, 5000, -2.0, source="cmaes"),
                                               trial(2, 1e-3, 0.9, "converged", 1e-6, 900, -6.0, source="cmaes"),
                                               trial(3, 2e-3, 0.9, "converged", 1.02e-6, 800, -5.95, source="cmaes")],
                               MANIFEST | {"method": "cmaes"}))
    rows = compare([a, b])
    assert rows[0]["evals_to_1pct"] == 2 and rows[0]["invalid"] == 1 and rows[0]["repeated"] == 1
    assert rows[0]["tokens"] == 770 and rows[0]["best_value"] == 1e-8 and rows[0]["wall_s"] == 20.0
    assert rows[1]["method"] == "cmaes" and rows[1]["evals_to_1pct"] == 2  # -5.95 is within 1 % of -6
    assert rows[1]["stop_reason"].startswith("unfinished")
    assert evals_to_within([]) is None


def test_state_audit_flags_planted_repeat_of_failed_region(tmp_path):
    a = state_audit(read_trace(write_trace(tmp_path / "r", SYNTH, MANIFEST)))
    turns = [x for x in a["turns"] if not x["invalid"]]
    assert [x["trial"] for x in turns] == [1, 2, 3, 4]
    t3, t4 = turns[2], turns[3]
    assert t3["repeat_tried"] and t3["repeat_failed"] and t3["in_failed_region"]
    assert t3["incumbent"][:2] == (1e-3, 0.9)
    assert not t4["repeat_tried"] and t4["in_failed_region"] and t4["ignored_incumbent"]
    assert not turns[1]["in_failed_region"] and not turns[1]["ignored_incumbent"]
    assert a["repeat_tried_rate"] == 0.25 and a["failed_region_rate"] == 0.5 and a["invalid_rate"] == 0.2


def test_corrupt_traces(tmp_path):
    d = write_trace(tmp_path / "cut", SYNTH, MANIFEST)
    raw = (d / "trace.jsonl").read_text()
    (d / "trace.jsonl").write_text(raw + '{"event": "trial_evaluated", "trial": 5, "lea')  # killed mid-line
    t = read_trace(d)
    assert len(t.events) == len(SYNTH) and "cut off" in t.warnings[0]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "trace.jsonl").write_text("")
    with pytest.raises(TraceError, match="empty"):
        read_trace(empty)
    with pytest.raises(TraceError, match="does not exist"):
        read_trace(tmp_path / "nope")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "trace.jsonl").write_text("hello\nworld\n")
    with pytest.raises(TraceError, match="not a tuneloop trace"):
        read_trace(junk)
    other = tmp_path / "other"
    other.mkdir()
    (other / "trace.jsonl").write_text('{"a": 1}\n')
    with pytest.raises(TraceError, match="no 'event'"):
        read_trace(other)
    newer = write_trace(tmp_path / "newer", [{"event": "session_started", "format": 99}])
    with pytest.raises(TraceError, match="format 99, newer"):
        read_trace(newer)


def test_cli_trace_commands_and_bad_input(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    d = write_trace(tmp_path / "r", SYNTH, MANIFEST)
    assert main(["trace", "summary", str(d), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["best"]["trial"] == 2
    assert main(["trace", "state", str(d)]) == 0
    assert "repeated a tried configuration 25 %" in capsys.readouterr().out
    assert main(["trace", "export", str(d), str(d), "--format", "csv", "--out", str(tmp_path / "t.csv")]) == 0
    assert (tmp_path / "t.csv").read_text().count("\n") == 1 + 8
    assert main(["trace", "plot", str(d), "--out", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "trace.jsonl").write_text("")
    for argv in (["trace", "summary", str(tmp_path / "missing")], ["trace", "compare", str(tmp_path / "e")],
                 ["trace", "export", str(d), "--format", "xml"], ["trace", "state", "/etc/hostname"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err


def test_export_rows(tmp_path):
    rows = export_rows([read_trace(write_trace(tmp_path / "r", SYNTH, MANIFEST))])
    assert len(rows) == 4 and rows[1]["learning_rate"] == 1e-3 and rows[1]["method"] == "llm"


def scripted_session(tmp_path, script, budget=3):
    cfg = SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=budget, max_iter=1500),
                        runs_dir=tmp_path)
    return run_session(cfg, chat_model=ScriptedChatModel(script=script))


def test_replay_reproduces_a_scripted_session_and_reports_a_planted_divergence(tmp_path):
    r = scripted_session(tmp_path / "runs", [call(1e-3, 0.9), call(2.0, 0.1), call(1e-3, 0.9), call(1e-4, 0.5),
                                             call(3e-4, 0.7), final(1e-3, 0.9, "trial 1")])
    t = read_trace(r.run_dir)
    rep = replay(t, tmp_path / "replay1")
    assert rep == {"identical": True, "trials": 4, "first_divergence": None}
    # plant a divergence: the recorded result of trial 3 is edited
    path = Path(r.run_dir) / "trace.jsonl"
    events = [json.loads(x) for x in path.read_text().splitlines()]
    for e in events:
        if e["event"] == "trial_evaluated" and e["trial"] == 3:
            e["iterations"] += 1
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    rep = replay(read_trace(r.run_dir), tmp_path / "replay2")
    assert not rep["identical"]
    assert rep["first_divergence"]["where"] == "trial 3" and rep["first_divergence"]["field"] == "iterations"


def test_resume_after_a_crash_charges_nothing_twice(tmp_path, capsys, monkeypatch):
    runs = tmp_path / "runs"

    def boom(messages, kwargs):
        raise KeyboardInterrupt

    r = scripted_session(runs, [call(1e-3, 0.9), call(1e-4, 0.5), boom], budget=4)
    assert r.stop_reason == "interrupted" and r.trials_charged == 2
    # a kill -9 on top: the session_finished line is gone and the last line is cut
    path = Path(r.run_dir) / "trace.jsonl"
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["event"] == "session_finished"
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:25])
    seen = []

    def resumed_model(settings):
        def first(messages, kwargs):
            seen.append(messages)
            return call(2e-3, 0.8)
        return ScriptedChatModel(script=[first, call(1e-3, 0.9), call(5e-4, 0.6), final(1e-3, 0.9)])

    from tuneloop.evaluation.cli import main

    code = main(["run", "--resume", r.run_dir, "--json"], model_factory=resumed_model)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "cut off" in out.err
    d = json.loads(out.out)
    assert d["trials_charged"] == 4 and d["repeated_proposals"] == 1 and d["stop_reason"] == "budget_spent"
    # the restored state reached the model (the manifest's model is "local", so compact: the
    # system prompt and one turn whose table holds both earlier trials, no conversation)
    kinds = [type(m).__name__ for m in seen[0]]
    assert kinds == ["SystemMessage", "HumanMessage"]
    turn = seen[0][-1].content
    assert "Budget left: 2 of 4" in turn and "1e-3 | 0.9" in turn and "1e-4 | 0.5" in turn
    events = [json.loads(x) for x in path.read_text().splitlines()]  # the cut line was dropped on resume
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    charged = [(e["learning_rate"], e["momentum"]) for e in events if e["event"] == "trial_evaluated" and e["charged"]]
    assert len(charged) == len(set(charged)) == 4
    assert any(e["event"] == "session_resumed" for e in events)
    assert main(["run", "--resume", r.run_dir]) == 2  # finished now: nothing to resume
    assert "already finished" in capsys.readouterr().err


def test_a_url_password_never_reaches_the_trace(tmp_path):
    from tuneloop.tools.record import TraceWriter

    w = TraceWriter(tmp_path, "s")
    w.write_manifest({"model": {"base_url": "http://me:hunter2@127.0.0.1:8080/v1"}})
    w.emit("retry", error="cannot reach https://me:hunter2@example.invalid/v1: refused")
    w.close()
    text = (tmp_path / "s" / "manifest.json").read_text() + (tmp_path / "s" / "trace.jsonl").read_text()
    assert "hunter2" not in text and "http://me:***@127.0.0.1:8080/v1" in text


def test_state_audit_counts_bounds_distinct_values_and_moves_by_hand(tmp_path, capsys):
    """Four proposals on the default space (learning rate 1e-4..0.1 in decades, momentum
    0..0.99 in tenths), worked out by hand: (1e-4, 0.5) ok; (0.1, 0.99) diverges; (1e-3, 0.9)
    the new best; (1e-4, 0)."""
    events = [{"event": "session_started", "method": "llm", "objective": "rosenbrock"},
              trial(1, 1e-4, 0.5, "converged", 1e-6, 900, -5.0), trial(2, 0.1, 0.99, "diverged", None, 4, 400.0),
              trial(3, 1e-3, 0.9, "converged", 1e-8, 700, -7.0), trial(4, 1e-4, 0.0, "converged", 1e-7, 800, -6.0)]
    run = write_trace(tmp_path / "r", events, MANIFEST)
    a = state_audit(read_trace(run))
    turns = a["turns"]
    assert [x["at_bound"] for x in turns] == [["learning_rate"], ["learning_rate", "momentum"], [],
                                              ["learning_rate", "momentum"]]
    # trial 2 moves 5.75 from the incumbent (trial 1: 3 decades, 4.9 tenths) from 0; trial 3 is
    # 4.12 from it (1, 4) against trial 2's 5.75; trial 4 is 9.06 from the new incumbent (trial 3)
    assert [x["toward_incumbent"] for x in turns] == [None, False, True, False]
    # no failure before trial 3; then trial 3 is 2.19 from trial 2 (from 0), trial 4 10.34 (from 2.19)
    assert [x["away_from_failures"] for x in turns] == [None, None, True, True]
    assert a["at_bound_rate"] == 0.75 and a["at_bound_by_parameter"] == {"learning_rate": 0.75, "momentum": 0.5}
    assert a["distinct_by_parameter"] == {"learning_rate": 3, "momentum": 4}
    assert a["toward_incumbent_rate"] == pytest.approx(1 / 3) and a["away_from_failures_rate"] == 1.0
    from tuneloop.evaluation.cli import main

    assert main(["trace", "state", str(run), "--plot", str(tmp_path / "state.png")]) == 0
    out = capsys.readouterr().out
    assert "at a bound of the space 75 % (learning_rate 75 %, momentum 50 %)" in out
    assert "moved toward the incumbent 33 %, away from the failures 100 %" in out
    assert (tmp_path / "state.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["trace", "state", str(run), "--plot", str(tmp_path / "state.txt")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --plot must name a .png file, got {tmp_path / 'state.txt'}"
