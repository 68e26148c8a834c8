"""The real langchain-openai ChatOpenAI path, over HTTP, against a fake server on 127.0.0.1."""

import json
from pathlib import Path

from tests.fakes import FakeOpenAIServer
from tuneloop.agent.models import ModelSettings
from tuneloop.agent.session import run_session
from tuneloop.agent.session_config import SessionConfig
from tuneloop.tools.trials import EvaluatorConfig

KEY = "sk-fake-0123456789abcdef"


def session(tmp_path, url, budget=2, timeout=5.0):
    settings = ModelSettings(model="openai:fake-model", base_url=url, timeout_s=timeout,
                             retry_attempts=5, retry_initial_s=0.01, retry_total_s=20)
    cfg = SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=budget, max_iter=1000),
                        model=settings, runs_dir=tmp_path)
    return run_session(cfg)


def trace(r):
    return [json.loads(x) for x in (Path(r.run_dir) / "trace.jsonl").read_text().splitlines()]


def test_transient_faults_are_retried_and_session_completes(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    gd = ("ok", "run_momentum_gd", {"learning_rate": 0.001, "momentum": 0.9})
    # (an error on the very first call may be the server refusing the tool_choice form,
    # which is stepped down, not retried: tests/test_model_servers.py covers that)
    script = [
        gd,
        ("status", 429),
        ("status", 500),
        ("sleep", 1.5, gd),  # longer than the client timeout: a timeout, retried
        ("drop",),           # connection dropped without a reply
        ("ok", "run_momentum_gd", {"learning_rate": 0.0001, "momentum": 0.5}),
        ("status", 503),
        ("ok", "FinalAnswer", {"learning_rate": 0.001, "momentum": 0.9, "rationale": "lowest value"}),
    ]
    with FakeOpenAIServer(script) as srv:
        r = session(tmp_path, srv.url, timeout=0.5)
    assert r.stop_reason == "budget_spent", r.error
    assert r.trials_charged == 2 and r.recommendation.learning_rate == 0.001
    retries = [e for e in trace(r) if e["event"] == "retry"]
    assert len(retries) == 5
    assert [e["attempt"] for e in retries] == [1, 2, 3, 4, 1]
    assert any("RateLimit" in e["error"] for e in retries)
    assert any("Timeout" in e["error"] for e in retries)
    # the request really went over HTTP with the key, the tools and the forced tool choice
    req = srv.requests[0]
    assert req["path"].endswith("/chat/completions")
    assert {k.lower(): v for k, v in req["headers"].items()}["authorization"] == f"Bearer {KEY}"
    assert req["body"]["tools"][0]["function"]["name"] == "run_momentum_gd"
    assert req["body"]["tools"][0]["function"]["parameters"]["properties"]["momentum"]["maximum"] == 0.99
    # one tool offered: the call is forced by naming it (more servers take that than "required")
    assert req["body"]["tool_choice"] == {"type": "function", "function": {"name": "run_momentum_gd"}}
    fin = trace(r)[-1]
    assert fin["retries"] == 5 and fin["retry_wait_s"] > 0
    assert fin["wall_s"] >= fin["model_s"] + fin["tool_s"] + fin["retry_wait_s"]
    # ... and the key never reached the trace or the manifest
    blob = (Path(r.run_dir) / "trace.jsonl").read_text() + (Path(r.run_dir) / "manifest.json").read_text()
    assert KEY not in blob


def test_401_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer([("status", 401)]) as srv:
        r = session(tmp_path, srv.url)
    assert r.stop_reason == "model_error" and "401" in r.error and "key" in r.error
    assert len(srv.requests) == 1  # not retried
    ev = trace(r)
    assert ev[-1]["event"] == "session_finished" and ev[-1]["stop_reason"] == "model_error"
    assert not [e for e in ev if e["event"] == "retry"]


def test_400_and_404_fail_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # a 400 on the first call may be the tool_choice form: the other two forms are tried
    # once each (named, required, auto), then it fails; a 404 is never about tool_choice
    for code, word, requests in ((400, "400", 3), (404, "model", 1)):
        with FakeOpenAIServer([("status", code)]) as srv:
            r = session(tmp_path, srv.url)
        assert r.stop_reason == "model_error" and word in r.error
        assert len(srv.requests) == requests
        assert [q["body"].get("tool_choice") for q in srv.requests][1:] == ["required", "auto"][: requests - 1]
        assert not [e for e in trace(r) if e["event"] in ("retry", "tool_choice_fallback")]


def test_persistent_5xx_gives_up_after_bounded_attempts(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer([("status", 500)]) as srv:
        r = session(tmp_path, srv.url)
    assert r.stop_reason == "model_error" and "after 5 attempts" in r.error
    # 5 attempts; on the first, the two other tool_choice forms were tried once as well
    assert len(srv.requests) == 5 + 2


def test_cli_run_against_fake_server(tmp_path, monkeypatch, capsys):
    from tuneloop.evaluation.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    script = [("ok", "run_momentum_gd", {"learning_rate": 0.001, "momentum": 0.9}),
              ("ok", "FinalAnswer", {"learning_rate": 0.001, "momentum": 0.9, "rationale": "ok"})]
    with FakeOpenAIServer(script) as srv:
        code = main(["run", "--model", "openai:fake", "--base-url", srv.url, "--budget", "1",
                     "--runs-dir", str(tmp_path), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    for k in ("run_dir", "best", "trials_charged", "invalid_proposals", "repeated_proposals", "stop_reason",
              "input_tokens", "output_tokens"):
        assert k in d
    assert d["trials_charged"] == 1 and d["input_tokens"] == 100 and d["stop_reason"] == "budget_spent"


def test_cli_model_error_is_one_line(tmp_path, monkeypatch, capsys):
    from tuneloop.evaluation.cli import main

    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with FakeOpenAIServer([("status", 401)]) as srv:
        code = main(["run", "--model", "openai:fake", "--base-url", srv.url, "--budget", "1",
                     "--runs-dir", str(tmp_path), "--json"])
    _, err = capsys.readouterr()
    assert code == 2 and err.count("\n") == 1 and "401" in err and KEY not in err
