"""OTLP export of traces: sessions run the real way, exported, parsed back with the
OpenTelemetry protobuf definitions, and sent to OTLP/HTTP receivers on 127.0.0.1 (protobuf
only, as Arize Phoenix, or JSON only)."""

import base64
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.proto")

from langchain_core.messages import AIMessage  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTracePartialSuccess,
    ExportTraceServiceResponse,
)

from tests.fakes import ScriptedChatModel, call, final  # noqa: E402
from tests.otlp_receiver import JSON, PROTOBUF, Receiver, attrs, json_spans, proto, spans_of  # noqa: E402
from tuneloop.agent.models import ModelSettings  # noqa: E402
from tuneloop.agent.session import run_session  # noqa: E402
from tuneloop.agent.session_config import SessionConfig  # noqa: E402
from tuneloop.evaluation.cli import main  # noqa: E402
from tuneloop.evaluation.otlp import (  # noqa: E402
    otlp_request,
    otlp_target,
    run_start_us,
    send_otlp,
    span_id,
    trace_id,
    unix_nano,
    write_otlp,
)
from tuneloop.evaluation.runner import run_strategy  # noqa: E402
from tuneloop.evaluation.strategies import RandomSearch  # noqa: E402
from tuneloop.tools.errors import UserError  # noqa: E402
from tuneloop.tools.gd_space import DEFAULT_SPACE  # noqa: E402
from tuneloop.tools.record import TraceWriter, read_trace  # noqa: E402
from tuneloop.tools.trials import EvaluatorConfig  # noqa: E402

SECRET = "sk-test-OTLPSECRET1234567890"
TOKEN = "tok-HEADERSECRET-4242"  # a collector token in OTEL_EXPORTER_OTLP_HEADERS: never printed
ERROR, INTERNAL, CLIENT = 2, 1, 3


def cfg(tmp_path, budget=2, method="llm", **kw):
    return SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=budget, max_iter=2000),
                         runs_dir=tmp_path, method=method, **kw)


@pytest.fixture
def agent_trace(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_KEY", SECRET)
    model = ScriptedChatModel(script=[
        call(1e-3, 0.9),        # trial 1, charged
        call(2.0, 0.5),         # invalid: tool_error, not charged
        call(1e-3, 0.9),        # trial 2, a repeat: free
        call(1e-4, 0.5),        # trial 3, charged: budget spent
        final(1e-3, 0.9, f"trial 1 was best, my key is {SECRET}"),
    ])
    r = run_session(cfg(tmp_path, model=ModelSettings(model="openai:gpt-4o-mini", api_key_env="MY_KEY")),
                    chat_model=model)
    return read_trace(r.run_dir)


def test_agent_session_layout_attributes_and_times(agent_trace):
    t = agent_trace
    req = otlp_request([t])
    spans = spans_of(req)
    root, children = spans[0], spans[1:]
    sid, start = t.session_id, run_start_us(t)
    assert proto(req).resource_spans[0].scope_spans[0].scope.name == "tuneloop"
    res = attrs(proto(req).resource_spans[0].resource.attributes)
    assert res == {"service.name": "tuneloop", "service.version": t.manifest["versions"]["tuneloop"]}
    # 1 root + 5 chat + 4 execute_tool, all in one trace, the children under the root
    assert root.name == "invoke_agent tuneloop" and root.parent_span_id == b"" and root.kind == INTERNAL
    assert [s.name for s in children] == ["chat gpt-4o-mini", "execute_tool run_momentum_gd"] * 4 + ["chat gpt-4o-mini"]
    assert {s.trace_id.hex() for s in spans} == {trace_id(sid, start)} and len(trace_id(sid, start)) == 32
    # the run's identity: the session id and its first event's time in microseconds
    assert start == unix_nano(t.events[0]["timestamp"]) // 1000
    assert trace_id(sid, start) == hashlib.sha256(f"{sid}\x00{start}".encode()).hexdigest()[:32]
    assert all(s.parent_span_id == root.span_id for s in children)
    assert len({s.span_id for s in spans}) == 10 and all(len(s.span_id) == 8 for s in spans)

    ra = attrs(root.attributes)
    assert ra["gen_ai.operation.name"] == "invoke_agent" and ra["gen_ai.agent.name"] == "tuneloop"
    assert ra["gen_ai.usage.input_tokens"] == 30 + 50 + 70 + 90 + 110 and ra["gen_ai.usage.output_tokens"] == 5 * 7
    assert (ra["tuneloop.trials_charged"], ra["tuneloop.invalid_proposals"], ra["tuneloop.repeated_proposals"]) \
        == (2, 1, 1)
    assert ra["tuneloop.method"] == "llm" and ra["tuneloop.objective"] == "rosenbrock" and ra["tuneloop.budget"] == 2
    assert ra["tuneloop.stop_reason"] == "budget_spent" and ra["tuneloop.seed"] == 0
    trial1 = t.of("trial_evaluated")[0]
    assert ra["tuneloop.best_value"] == trial1["final_value"] and ra["tuneloop.best_trial"] == 1
    assert (ra["tuneloop.best_learning_rate"], ra["tuneloop.best_momentum"]) == (1e-3, 0.9)
    assert ra["tuneloop.wall_s"] == t.finished["wall_s"] and ra["tuneloop.x0"] == [-1.5, 2.0]
    assert "tuneloop.recommendation.rationale" not in ra and not root.HasField("status")

    chats = [s for s in children if s.name.startswith("chat")]
    ca = [attrs(s.attributes) for s in chats]
    # the scripted model counts 10 tokens a message; an API model is sent the whole conversation
    assert [a["gen_ai.usage.input_tokens"] for a in ca] == [30, 50, 70, 90, 110]
    assert all(a["gen_ai.usage.output_tokens"] == 7 and a["gen_ai.request.model"] == "gpt-4o-mini" for a in ca)
    assert all(a["gen_ai.provider.name"] == "openai" and a["gen_ai.operation.name"] == "chat" for a in ca)
    assert all(a["gen_ai.response.finish_reasons"] == ["tool_calls"] for a in ca)
    assert ca[0]["server.address"] == "api.openai.com" and all(s.kind == CLIENT for s in chats)
    calls = t.of("model_called")
    assert [c.end_time_unix_nano for c in chats] == [unix_nano(c["timestamp"]) for c in calls]
    assert [c.end_time_unix_nano - c.start_time_unix_nano for c in chats] == \
        [round(c["latency_s"] * 1e9) for c in calls]

    tools = [s for s in children if s.name.startswith("execute_tool")]
    ta = [attrs(s.attributes) for s in tools]
    assert [a["gen_ai.tool.call.id"] for a in ta] == [c["tool_calls"][0]["id"] for c in calls[:4]] \
        == ["call_1", "call_2", "call_3", "call_4"]
    assert all(a["gen_ai.operation.name"] == "execute_tool" and a["gen_ai.tool.name"] == "run_momentum_gd" for a in ta)
    assert json.loads(ta[0]["gen_ai.tool.call.arguments"]) == {"learning_rate": 1e-3, "momentum": 0.9}
    assert json.loads(ta[0]["gen_ai.tool.call.result"])["trial"] == 1
    assert [a.get("tuneloop.trial") for a in ta] == [1, None, 2, 3]
    assert [a.get("tuneloop.charged") for a in ta] == [True, None, False, True]
    assert [a.get("tuneloop.repeat") for a in ta] == [False, None, True, False]
    assert [a["tuneloop.budget_left"] for a in ta if "tuneloop.budget_left" in a] == [1, 1, 0]
    assert [a["tuneloop.learning_rate"] for a in ta] == [1e-3, 2.0, 1e-3, 1e-4]
    assert [a["tuneloop.momentum"] for a in ta] == [0.9, 0.5, 0.9, 0.5]
    for a, ev in zip([ta[0], ta[2], ta[3]], t.of("trial_evaluated"), strict=False):
        assert (a["tuneloop.final_value"], a["tuneloop.score"], a["tuneloop.status"]) == \
            (ev["final_value"], ev["score"], ev["status"])
        assert a["tuneloop.iterations"] == 2000 and a["tuneloop.source"] == "llm"
    assert ta[3]["tuneloop.final_value"] == pytest.approx(4.7786, rel=1e-4)  # 1e-4 is far too slow here
    # the invalid proposal: an ERROR span with the Evaluator's message
    assert tools[1].status.code == ERROR and "outside the allowed range" in tools[1].status.message
    assert ta[1]["tuneloop.status"] == "error" and ta[1]["error.type"] == "invalid_proposal"
    assert all(not s.HasField("status") for i, s in enumerate(tools) if i != 1)

    # times: every span ends after it starts, inside the root, in the order things happened
    for s in children:
        assert root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano <= root.end_time_unix_nano
    assert root.start_time_unix_nano == unix_nano(t.events[0]["timestamp"])
    assert root.end_time_unix_nano == unix_nano(t.finished["timestamp"])
    ends = [s.end_time_unix_nano for s in children]
    assert ends == sorted(ends)
    for c, tool in zip(chats, tools, strict=False):  # a tool ran after the reply that asked for it
        assert c.end_time_unix_nano <= tool.start_time_unix_nano


def test_content_only_on_request_and_no_secret(agent_trace):
    plain = json.dumps(otlp_request([agent_trace]))
    assert "gen_ai.input.messages" not in plain and "gen_ai.output.messages" not in plain
    assert "Budget left" not in plain and "trial 1 was best" not in plain
    req = otlp_request([agent_trace], include_content=True)
    text = json.dumps(req)
    assert SECRET not in text and SECRET not in plain
    spans = spans_of(req)
    first = attrs(spans[1].attributes)
    inp, out = json.loads(first["gen_ai.input.messages"]), json.loads(first["gen_ai.output.messages"])
    assert (
        inp[0]["role"] == "user" and inp[0]["parts"][0]["content"] == agent_trace.of("model_called")[0]["last_message"]
    )
    assert out[0]["role"] == "assistant" and out[0]["finish_reason"] == "tool_call"
    assert out[0]["parts"] == [{"type": "tool_call", "id": "call_1", "name": "run_momentum_gd",
                                "arguments": {"learning_rate": 1e-3, "momentum": 0.9}}]
    rationale = attrs(spans[0].attributes)["tuneloop.recommendation.rationale"]
    assert rationale.startswith("trial 1 was best") and "***" in rationale


def test_secret_from_environment_is_scrubbed_even_if_a_trace_kept_it(agent_trace, monkeypatch):
    # an old trace written before redaction: the key in the manifest's variable is still hidden
    path = agent_trace.run_dir / "trace.jsonl"
    path.write_text(path.read_text().replace("***", SECRET))
    monkeypatch.setenv("MY_KEY", SECRET)
    text = json.dumps(otlp_request([read_trace(agent_trace.run_dir)], include_content=True))
    assert SECRET not in text and "my key is ***" in text


def test_export_is_deterministic_and_writes_a_file(agent_trace, tmp_path):
    a, b = otlp_request([agent_trace]), otlp_request([read_trace(agent_trace.run_dir)])
    assert a == b
    root = a["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert root["spanId"] == span_id(agent_trace.session_id, run_start_us(agent_trace), "root")
    assert len(root["traceId"]) == 32
    assert root["startTimeUnixNano"].isdigit()  # int64 as a decimal string, as OTLP/JSON wants
    out = write_otlp(a, tmp_path / "t.json")
    assert json.loads(Path(out).read_text()) == a


def test_classical_run_has_one_evaluate_span_per_trial(tmp_path):
    r = run_strategy(RandomSearch(DEFAULT_SPACE, seed=0), cfg(tmp_path, budget=3, method="random"), "rs0")
    t = read_trace(r.run_dir)
    spans = spans_of(otlp_request([t]))
    root, kids = spans[0], spans[1:]
    assert root.name == "random" and [s.name for s in kids] == ["evaluate"] * 3
    ra = attrs(root.attributes)
    assert not any(k.startswith("gen_ai.") for k in ra) and ra["tuneloop.trials_charged"] == 3
    assert ra["tuneloop.method"] == "random" and ra["tuneloop.session_id"] == "rs0"
    evs = t.of("trial_evaluated")
    for s, ev in zip(kids, evs, strict=False):
        a = attrs(s.attributes)
        assert s.parent_span_id == root.span_id
        assert (a["tuneloop.trial"], a["tuneloop.learning_rate"], a["tuneloop.momentum"], a["tuneloop.status"],
                a["tuneloop.iterations"], a["tuneloop.score"], a["tuneloop.budget_left"]) == \
            (ev["trial"], ev["learning_rate"], ev["momentum"], ev["status"], ev["iterations"], ev["score"],
             ev["budget_left"])
        assert a.get("tuneloop.final_value") == ev["final_value"] and a["tuneloop.source"] == "random"
    assert [attrs(s.attributes)["tuneloop.budget_left"] for s in kids] == [2, 1, 0]
    # an evaluation spans from the event before it to its own record
    seqs = [e["timestamp"] for e in t.events]
    for s, ev in zip(kids, evs, strict=False):
        assert (s.start_time_unix_nano, s.end_time_unix_nano) == (unix_nano(seqs[ev["seq"] - 2]),
                                                                   unix_nano(ev["timestamp"]))


def test_retries_and_fallbacks_are_events_on_the_root(tmp_path):
    def drop(_messages, _kw):
        raise ConnectionError("connection dropped")

    fallback = AIMessage(content="", tool_calls=[{**call(1e-3, 0.5), "id": "c1"}], response_metadata={
        "tool_choice_fallbacks": [{"from": "required", "to": "auto", "error": "HTTP 400: tool_choice"}]})
    model = ScriptedChatModel(script=[drop, fallback, final(1e-3, 0.5)])
    r = run_session(cfg(tmp_path, budget=1, model=ModelSettings(retry_initial_s=0.01)), chat_model=model)
    t = read_trace(r.run_dir)
    spans = spans_of(otlp_request([t]))
    root = spans[0]
    assert [e.name for e in root.events] == ["retry", "tool_choice_fallback"]
    retry, fb = (attrs(e.attributes) for e in root.events)
    assert retry["tuneloop.attempt"] == 1 and "connection dropped" in retry["tuneloop.error"]
    assert (fb["tuneloop.from"], fb["tuneloop.to"]) == ("required", "auto")
    assert root.events[0].time_unix_nano == unix_nano(t.of("retry")[0]["timestamp"])
    # the embedded model: llama.cpp, named "local" since the manifest names no GGUF; no usage: no tokens
    chat = attrs(spans[1].attributes)
    assert chat["gen_ai.provider.name"] == "llama.cpp" and chat["gen_ai.request.model"] == "local"
    assert "gen_ai.usage.input_tokens" not in chat and attrs(spans[2].attributes)["gen_ai.tool.call.id"] == "c1"


def test_unfinished_session_ends_at_its_last_event(agent_trace):
    path = agent_trace.run_dir / "trace.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    t = read_trace(agent_trace.run_dir)
    root = spans_of(otlp_request([t]))[0]
    assert root.end_time_unix_nano == unix_nano(t.events[-1]["timestamp"])
    assert attrs(root.attributes)["tuneloop.stop_reason"].startswith("unfinished")


def test_a_tool_that_raised_and_a_call_with_two_records(tmp_path):
    """Paths the scripted sessions do not take, written with the trace's own writer: a tool
    that raised (the callback's tool_error, no tool_called) and one call the Evaluator
    recorded twice (each record becomes an `evaluate` child of the tool span)."""
    w = TraceWriter(tmp_path, "s1")
    w.emit("session_started", method="llm", objective="rosenbrock", budget=2)
    w.emit("model_called", model="local", tool_calls=[{"name": "run_momentum_gd", "args": {}, "id": "a"},
                                                      {"name": "run_momentum_gd", "args": {}, "id": "b"}],
           input_tokens=None, output_tokens=None, latency_s=0.001)
    w.emit("tool_error", tool="run_momentum_gd", input="{}", error="ValueError: boom")
    w.emit("trial_evaluated", trial=1, learning_rate=1e-3, momentum=0.5, status="converged", charged=True)
    w.emit("trial_evaluated", trial=2, learning_rate=1e-2, momentum=0.5, status="diverged", charged=True)
    w.emit("tool_called", tool="run_momentum_gd", input="{}", output="[...]", latency_s=0.002)
    w.emit("session_finished", error="the model failed", trials_charged=2)
    w.close()
    spans = spans_of(otlp_request([read_trace(tmp_path / "s1")]))
    root, chat, raised, ev1, ev2, tool = spans
    assert [s.name for s in spans] == ["invoke_agent tuneloop", "chat local", "execute_tool run_momentum_gd",
                                       "evaluate", "evaluate", "execute_tool run_momentum_gd"]
    assert raised.status.code == ERROR and raised.status.message == "ValueError: boom"
    assert attrs(raised.attributes)["error.type"] == "ValueError"
    assert [attrs(s.attributes)["gen_ai.tool.call.id"] for s in (raised, tool)] == ["a", "b"]
    assert ev1.parent_span_id == ev2.parent_span_id == tool.span_id and tool.parent_span_id == root.span_id
    assert [attrs(s.attributes)["tuneloop.trial"] for s in (ev1, ev2)] == [1, 2]
    assert "tuneloop.trial" not in attrs(tool.attributes)
    assert root.status.code == ERROR and root.status.message == "the model failed"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """No proxy and no OpenTelemetry settings from the machine that runs the tests."""
    for k in [k for k in os.environ if k.lower().endswith("_proxy") or k.startswith("OTEL_")]:
        monkeypatch.delenv(k)


@pytest.fixture
def studies(tmp_path):
    """Two eval folders (<study>/runs/<cell>) whose cells share a name, with different budgets."""
    cfgs = [cfg(tmp_path / study / "runs", budget=b, method="random") for study, b in (("a", 2), ("b", 3))]
    return [Path(run_strategy(RandomSearch(DEFAULT_SPACE, seed=0), c, "random-rosenbrock-s0").run_dir) for c in cfgs]


def test_send_json_to_an_otlp_http_receiver(agent_trace, tmp_path, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=collector%20key")
    classical = run_strategy(RandomSearch(DEFAULT_SPACE, seed=1), cfg(tmp_path / "c", budget=2, method="random"), "r")
    req = otlp_request([agent_trace, read_trace(classical.run_dir)])
    with Receiver(accept=(JSON,), answer=b"{}", answer_type=JSON) as rec:
        send_otlp(req, rec.url + "/v1/traces", protocol="http/json")
        send_otlp(req, rec.url, protocol="http/json")  # a base URL gets /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT does
    for got in rec.requests:
        assert got["path"] == "/v1/traces" and got["type"] == JSON and got["body"] == req
        assert [len(rs.scope_spans[0].spans) for rs in got["decoded"].resource_spans] == [10, 3]
    assert [got["key"] for got in rec.requests] == ["collector key"] * 2


def test_a_protobuf_only_receiver_takes_the_export_of_several_runs(agent_trace, studies, tmp_path, capsys, monkeypatch):
    """As Arize Phoenix: application/x-protobuf only. What it decodes is the JSON export: the
    same ids, names and attributes; the two studies' same-named cells stay two traces."""
    monkeypatch.chdir(tmp_path)
    dirs = [str(agent_trace.run_dir), *map(str, studies)]
    with Receiver() as rec:
        assert main(["trace", "export", *dirs, "--format", "otlp", "--otlp-endpoint", rec.url]) == 0
        assert main(["trace", "export", *dirs, "--format", "otlp", "--otlp-endpoint", rec.url,
                     "--otlp-protocol", "http/json"]) == 2
    out, err = capsys.readouterr()
    assert f"sent 17 spans of 3 session(s) to {rec.url}/v1/traces (http/protobuf)" in out
    assert not (tmp_path / "traces.json").exists()  # an endpoint and no --out: no file
    got, want = rec.requests[0], otlp_request([read_trace(d) for d in dirs])
    assert got["path"] == "/v1/traces" and got["type"] == PROTOBUF and got["decoded"] == proto(want)
    sent = spans_of(got["decoded"])
    assert [(s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(), s.name, len(s.attributes)) for s in sent] \
        == [(j["traceId"], j["spanId"], j.get("parentSpanId", ""), j["name"], len(j["attributes"]))
            for j in json_spans(want)]
    assert len({s.trace_id for s in sent}) == 3 and len({s.span_id for s in sent}) == len(sent) == 17
    (line,) = err.splitlines()  # JSON to it: 415, one line that names the endpoint and what to try
    assert line.startswith(f"error: the OTLP collector at {rec.url}/v1/traces answered HTTP 415")
    assert line.endswith("try --otlp-protocol http/protobuf)")


def test_ids_are_unique_per_run_and_the_same_when_exported_twice(studies):
    a, b = (read_trace(d) for d in studies)
    assert a.session_id == b.session_id  # the same cell in two studies
    ja, jb = json_spans(otlp_request([a])), json_spans(otlp_request([b]))
    assert {s["traceId"] for s in ja}.isdisjoint(s["traceId"] for s in jb)
    assert {s["spanId"] for s in ja}.isdisjoint(s["spanId"] for s in jb)
    assert otlp_request([read_trace(studies[0])]) == otlp_request([a])
    w = TraceWriter(studies[0].parent, a.session_id, append=True)  # resumed: appended, the first event kept
    w.emit("session_resumed", trials_restored=2)
    w.close()
    again = json_spans(otlp_request([read_trace(studies[0])]))
    assert [(s["traceId"], s["spanId"]) for s in again] == [(s["traceId"], s["spanId"]) for s in ja]


def test_environment_variables_and_header_values_never_shown(agent_trace, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export = ["trace", "export", str(agent_trace.run_dir), "--format", "otlp"]
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"authorization=Bearer%20{TOKEN},x-api-key=a%3Db")
    with Receiver() as rec:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rec.url + "/base/")  # a base URL: + v1/traces
        assert main(export) == 0
    (got,) = rec.requests
    assert got["path"] == "/base/v1/traces" and got["type"] == PROTOBUF and len(spans_of(got["decoded"])) == 10
    assert got["auth"] == f"Bearer {TOKEN}" and got["key"] == "a=b"
    with Receiver(accept=(JSON,), answer_type=JSON) as rec:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rec.url + "/custom")  # as is, before the base
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")  # before the general one
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-api-key=traces")  # instead of the general ones
        assert main(export) == 0
        assert main([*export, "--otlp-protocol", "http/protobuf"]) == 2  # a flag beats its variable: 415 here
    assert [r["path"] for r in rec.requests] == ["/custom"] * 2 and rec.requests[1]["type"] == PROTOBUF
    assert rec.requests[0]["body"] == otlp_request([agent_trace]) and not (tmp_path / "traces.json").exists()
    assert rec.requests[0]["key"] == "traces" and rec.requests[0]["auth"] is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"authorization={TOKEN}")
    with Receiver((JSON,), status=401, answer=f"unknown token {TOKEN}".encode(), answer_type="text/plain") as rec:
        assert main([*export, "--otlp-endpoint", rec.url]) == 2  # the flag beats the endpoint variables
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    assert main(export) == 2
    assert otlp_target(env={"OTEL_EXPORTER_OTLP_HEADERS": f"k={TOKEN}"}) is None  # no endpoint: nothing to send
    out, err = capsys.readouterr()
    assert TOKEN not in out + err
    assert "(http/protobuf, from OTEL_EXPORTER_OTLP_ENDPOINT)" in out
    assert "(http/json, from OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)" in out
    lines = err.splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
    assert "HTTP 415" in lines[0] and f"{rec.url}/v1/traces answered HTTP 401 Unauthorized: unknown token ***" \
        in lines[1]
    assert "'grpc' (from OTEL_EXPORTER_OTLP_TRACES_PROTOCOL) is not supported" in lines[2]


def test_without_opentelemetry_proto_one_line_says_what_to_install(agent_trace, tmp_path, capsys, monkeypatch):
    for m in ("opentelemetry.proto.collector.trace.v1", "opentelemetry.proto.collector.trace.v1.trace_service_pb2"):
        monkeypatch.setitem(sys.modules, m, None)  # as if not installed
    export = ["trace", "export", str(agent_trace.run_dir), "--format", "otlp"]
    with Receiver(accept=(JSON,), answer_type=JSON) as rec:
        assert main([*export, "--otlp-endpoint", rec.url]) == 2
        assert main([*export, "--otlp-endpoint", rec.url, "--otlp-protocol", "http/json"]) == 0
    assert main([*export, "--out", str(tmp_path / "t.json")]) == 0  # the file is OTLP/JSON: no package needed
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: ") and "pip install opentelemetry-proto" in line and len(rec.requests) == 1


def test_out_in_a_missing_folder_and_a_folder_of_runs_are_one_line(studies, tmp_path, capsys):
    run, runs, missing = studies[0], studies[0].parent, tmp_path / "missing" / "dir"
    for out in ("p.png", "t.csv", "t.json"):
        fmt = {"png": [], "csv": ["--format", "csv"], "json": ["--format", "otlp"]}[out.split(".")[1]]
        assert main(["trace", "plot" if not fmt else "export", str(run), "--out", str(missing / out), *fmt]) == 2
    assert capsys.readouterr().err.splitlines() == [f"error: --out's folder does not exist: {missing}"] * 3
    for folder in (runs, runs.parent):  # a runs dir, and an eval's out folder with runs/ inside
        for cmd in ("summary", "compare", "state", "plot", "export", "replay"):
            assert main(["trace", cmd, str(folder)]) == 2
        assert capsys.readouterr().err.splitlines() == [
            f"error: {folder} is a folder of runs: give one of them, e.g. {run} (1 run)"] * 6


def test_nothing_listening_is_one_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nothing listens there
    url = f"http://127.0.0.1:{port}/v1/traces"
    with pytest.raises(UserError, match=rf"127\.0\.0\.1:{port}/v1/traces.*connection refused"):
        send_otlp({"resourceSpans": []}, url, timeout=2)


def test_http_error_and_rejected_spans_are_errors_without_the_password():
    with Receiver(status=500, answer=b'{"message": "boom"}', answer_type=JSON) as rec:
        url = rec.url.replace("http://", "http://user:hunter2@") + "/v1/traces"
        with pytest.raises(UserError, match="HTTP 500.*boom") as e:
            send_otlp({"resourceSpans": []}, url)
    assert "hunter2" not in str(e.value) and rec.url in str(e.value)
    assert rec.requests[0]["auth"] == "Basic " + base64.b64encode(b"user:hunter2").decode()
    msg = b"proto: cannot parse"  # a google.rpc.Status {code 3, message}, as collectors answer protobuf
    with Receiver(status=400, answer=bytes([8, 3, 18, len(msg)]) + msg) as rec:
        with pytest.raises(UserError, match="HTTP 400 Bad Request: proto: cannot parse$"):
            send_otlp({"resourceSpans": []}, rec.url)
    with Receiver(answer=b'{"partialSuccess": {"rejectedSpans": "2", "errorMessage": "bad ids"}}',
                  answer_type=JSON) as rec:
        with pytest.raises(UserError, match="rejected 2 spans: bad ids"):
            send_otlp({"resourceSpans": []}, rec.url + "/v1/traces")
    partial = ExportTracePartialSuccess(rejected_spans=3, error_message="too old")
    with Receiver(answer=ExportTraceServiceResponse(partial_success=partial).SerializeToString()) as rec:
        with pytest.raises(UserError, match="rejected 3 spans: too old"):
            send_otlp({"resourceSpans": []}, rec.url)
    with pytest.raises(UserError, match="not an http"):
        send_otlp({"resourceSpans": []}, "localhost:4318")
    with pytest.raises(UserError, match="port"):
        send_otlp({"resourceSpans": []}, "http://127.0.0.1:http/v1/traces")


def test_the_cli_writes_and_sends_otlp(agent_trace, tmp_path, capsys):
    run_dir, out = str(agent_trace.run_dir), tmp_path / "spans.json"
    with Receiver() as rec:
        assert main(["trace", "export", run_dir, "--format", "otlp", "--out", str(out),
                     "--otlp-endpoint", rec.url]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 10 spans of 1 session(s) to {out}" in printed and "sent 10 spans" in printed
    assert json.loads(out.read_text()) == otlp_request([agent_trace])  # the file: OTLP/JSON, as before
    assert rec.requests[0]["decoded"] == proto(otlp_request([agent_trace]))
    # --otlp-endpoint with another format, and nothing listening: one line each, exit 2
    assert main(["trace", "export", run_dir, "--format", "csv", "--otlp-endpoint", "http://127.0.0.1:9"]) == 2
    assert main(["trace", "export", run_dir, "--format", "otlp", "--otlp-endpoint", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)
