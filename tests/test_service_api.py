"""The service's API in-process (FastAPI's TestClient over the same app `tuneloop serve`
runs): request validation, the error statuses, the OpenAPI contract, cost limits, queued
and failed sessions. tests/test_service.py drives a real uvicorn; the contract itself is
fuzzed by schemathesis against a real server in tests/test_service_contract.py."""

import json
import threading
import time

import pytest
from fastapi.testclient import TestClient

from tuneloop.evaluation.service.app import create_app
from tuneloop.evaluation.service.schemas import Limits
from tuneloop.evaluation.service.sessions import REQUEST_FILE, SessionManager


class HeldManager(SessionManager):
    """A manager whose sessions wait for `release` before they run: a test can look at a
    queued or running session."""

    def __init__(self, *a, **kw) -> None:
        self.release = threading.Event()
        super().__init__(*a, **kw)

    def _run_new(self, sid, req, cancel):
        self.release.wait(30)
        super()._run_new(sid, req, cancel)


@pytest.fixture
def api(tmp_path):
    manager = HeldManager(tmp_path / "runs", max_running=1, max_queued=2)
    client = TestClient(create_app(manager, limits=Limits(max_budget=50, max_iter=3000)))
    client.manager = manager
    yield client
    manager.release.set()
    manager.shutdown()


def wait_for(check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


CMAES = {"method": "cmaes", "function": "rosenbrock", "budget": 3}
CMAES_BODY = CMAES
FIVE_KNOBS = {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
              "momentum": {"type": "float", "low": 0, "high": 0.99},
              "nesterov": {"type": "categorical", "choices": [False, True]},
              "lr_decay": {"type": "float", "low": 1e-5, "high": 1e-2, "log": True},
              "grad_clip": {"type": "float", "low": 0.1, "high": 100, "log": True}}


@pytest.mark.parametrize("body,field", [
    ({"method": "cmaes", "function": "rosenbrock", "budget": -1}, "budget"),
    ({"method": "nope", "function": "rosenbrock", "budget": 3}, "method"),
    ({"method": "cmaes", "function": "nope", "budget": 3}, "function"),
    ({"method": "cmaes", "function": "../../etc/passwd", "budget": 3}, "function"),
    ({"method": "cmaes", "function": "rosenbrock", "budget": "many"}, "budget"),
    ({"method": "cmaes", "function": "rosenbrock", "budget": "3"}, "budget"),  # a number, not text
    ({"method": "cmaes", "function": "rosenbrock", "budget": 3, "temperature": 9}, "temperature"),
    ({"method": "cmaes", "function": "rosenbrock", "budget": 3, "surprise": 1}, "surprise"),
    ({"method": "llm", "function": "rosenbrock", "budget": 3, "model": "gguf:/etc/passwd"}, "model"),
    ({"method": "llm", "function": "rosenbrock", "budget": 3, "model": "bogus"}, "model"),
    ({"method": "llm", "function": "rosenbrock", "budget": 3, "prompt": "nope"}, "prompt"),
    ({"method": "cmaes", "function": "beale", "budget": 3, "x0": [1.0, 2.0, 3.0]}, "x0"),
    ({"method": "cmaes", "function": "rosenbrock", "budget": 3, "x0": [1.0]}, "x0"),
    ({"method": "cmaes", "function": "rosenbrock", "budget": 51}, "budget"),  # over this server's --max-budget
    ({"method": "cmaes", "function": "rosenbrock", "budget": 3, "max_iter": 3001}, "max_iter"),
    ({**CMAES_BODY, "space": {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}}}, "space"),
    ({**CMAES_BODY, "space": {"weight_decay": {"type": "float", "low": 0, "high": 1}}}, "space"),
    ({**CMAES_BODY, "space": {"learning_rate": {"type": "float", "low": 1e-4, "high": 0.1},
                              "momentum": {"type": "float", "low": 0, "high": 1.5}}}, "space"),
    ({**CMAES_BODY, "space": {"learning_rate": {"type": "wat"}}}, "space"),
    ({**CMAES_BODY, "space": {}}, "space"),
])
def test_bad_session_bodies_name_the_field_and_the_reason(api, body, field):
    r = api.post("/api/sessions", json=body)
    assert r.status_code == 422
    assert any(e["field"].split(".")[0] == field and e["reason"] for e in r.json()["detail"]), r.json()


def test_a_model_this_server_cannot_use_is_refused_at_once(api, monkeypatch):
    """Nothing is queued, nothing listed: 409 with the reason (the body itself is valid)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    for method in ("llm", "centaur"):
        r = api.post("/api/sessions", json={"method": method, "function": "rosenbrock", "budget": 3,
                                            "model": "openai:gpt-4o-mini"})
        assert r.status_code == 409 and "OPENAI_API_KEY is not set" in r.json()["detail"]
    assert api.get("/api/sessions").json()["sessions"] == []


def test_a_session_that_fails_before_its_trace_is_listed_as_failed_with_why(tmp_path):
    def broken_factory(settings):
        raise RuntimeError("the model server vanished")

    manager = SessionManager(tmp_path / "runs", model_factory=broken_factory)
    client = TestClient(create_app(manager))
    sid = client.post("/api/sessions", json={"method": "llm", "function": "rosenbrock", "budget": 3}).json()["id"]
    wait_for(lambda: not manager.is_active(sid))
    row = next(r for r in client.get("/api/sessions").json()["sessions"] if r["id"] == sid)
    assert row["status"] == "failed" and "the model server vanished" in row["reason"]
    detail = client.get(f"/api/sessions/{sid}").json()
    assert detail["status"] == "failed" and detail["summary"]["stop_reason"] == "model_error"
    manager.shutdown()


def test_a_queued_session_answers_409_where_it_has_no_trace_yet(api):
    first = api.post("/api/sessions", json=CMAES).json()["id"]  # held: running, no trace yet
    queued = api.post("/api/sessions", json=CMAES).json()["id"]
    for sid in (first, queued):
        for method, path in (("get", "landscape"), ("post", "resume")):
            r = getattr(api, method)(f"/api/sessions/{sid}/{path}")
            assert r.status_code == 409 and "has no trace yet" in r.json()["detail"], r.text
    assert api.get(f"/api/sessions/{queued}").json()["status"] == "queued"
    api.manager.release.set()
    wait_for(lambda: api.get(f"/api/sessions/{queued}").json()["status"] == "finished")
    land = api.get(f"/api/sessions/{queued}/landscape?resolution=8").json()
    assert len(land["level"]) == 8 and len(land["level"][0]) == 8


class DyingManager(HeldManager):
    """A server process that is killed before its sessions start: they never run here."""

    def _run_new(self, sid, req, cancel):
        self.release.wait(30)


def test_queued_sessions_are_queued_again_after_a_restart(tmp_path):
    runs = tmp_path / "runs"
    first = DyingManager(runs, max_running=1)
    a, _ = first.start(first_request := _request(CMAES))
    b, _ = first.start(_request(CMAES | {"seed": 4}))
    assert (runs / b / REQUEST_FILE).is_file() and not (runs / b / "trace.jsonl").exists()
    first.pool.shutdown(wait=False, cancel_futures=True)  # the process dies with `a` taken and `b` waiting
    second = SessionManager(runs, max_running=1)
    assert second.requeued == 2
    wait_for(lambda: not second.is_active(a) and not second.is_active(b))
    rows = {r.id: r for r in second.rows()}
    assert rows[a].status == rows[b].status == "finished" and rows[b].trials_charged == 3
    assert json.loads((runs / a / REQUEST_FILE).read_text())["budget"] == first_request.budget
    first.release.set()
    second.shutdown()


def _request(body):
    from tuneloop.evaluation.service.schemas import SessionRequest

    return SessionRequest(**body)


def test_evaluate_is_the_tool_as_an_endpoint_and_checks_its_input(api):
    r = api.post("/api/evaluate", json={"function": "rosenbrock", "learning_rate": 1e-3, "momentum": 0.9})
    d = r.json()
    assert r.status_code == 200 and (d["status"], d["iterations"]) == ("converged", 2020)
    assert d["score"] < 0 and d["final_value"] == pytest.approx(1.14929e-08, rel=1e-5)
    nan = api.post("/api/evaluate", content=b'{"function": "rosenbrock", "learning_rate": NaN, "momentum": 0.5}',
                   headers={"Content-Type": "application/json"})
    assert nan.status_code == 422 and nan.json()["detail"][0]["field"] == "learning_rate"
    for bad in ({"momentum": 1.0}, {"momentum": "x"}, {"learning_rate": 0}, {"tol": "1e-6"}, {"max_iter": 3001},
                {"function": "beale", "x0": [1, 2, 3]}):
        body = {"function": "rosenbrock", "learning_rate": 1e-3, "momentum": 0.5} | bad
        assert api.post("/api/evaluate", json=body).status_code == 422, bad
    big = api.post("/api/evaluate", content=b"x" * 100_000, headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert api.post("/api/evaluate", content=b"\x04s\xff", headers={"Content-Type": "application/json"}) \
        .status_code in (400, 422)
    assert [p["name"] for p in api.get("/api/prompts").json()] == [
        "centaur", "centaur-task", "default", "hollm", "lean", "llambo", "paper", "reasoning", "sllmbo",
        "task", "untried"]
    assert "rosenbrock" in [f["name"] for f in api.get("/api/functions").json()]


def test_ids_never_leave_the_runs_dir(api):
    for sid in ("..%2F..%2Fetc%2Fpasswd", "nope", "..", "%2Fetc"):
        assert api.get(f"/api/sessions/{sid}").status_code == 404
        assert api.get(f"/api/sessions/{sid}/events").status_code == 404
    assert api.post("/api/sessions/nope/cancel").status_code == 404


def test_a_405_lists_every_method_of_the_path(api):
    r = api.request("DELETE", "/api/sessions")
    assert r.status_code == 405 and set(r.headers["allow"].split(", ")) == {"GET", "POST"}


def test_the_openapi_document_states_what_the_server_does(tmp_path):
    manager = SessionManager(tmp_path / "runs")
    doc = TestClient(create_app(manager, token="t0k", limits=Limits(max_budget=7, max_iter=900))).get(
        "/openapi.json", headers={"Authorization": "Bearer t0k"}).json()
    start = doc["paths"]["/api/sessions"]["post"]
    assert {"400", "401", "409", "413", "422", "429"} <= set(start["responses"])
    body = doc["components"]["schemas"]["SessionRequest"]
    assert body["properties"]["budget"]["maximum"] == 7 and body["properties"]["max_iter"]["maximum"] == 900
    assert "llm" in body["properties"]["method"]["enum"] and "rosenbrock" in body["properties"]["function"]["enum"]
    assert "default" in body["properties"]["prompt"]["enum"]
    invalid = start["responses"]["422"]["content"]["application/json"]["schema"]["$ref"]
    assert invalid.endswith("/ValidationProblem")
    events = doc["paths"]["/api/sessions/{session_id}/events"]["get"]["responses"]
    assert list(events["200"]["content"]) == ["text/event-stream"]
    assert list(events["404"]["content"]) == ["application/json"]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer",
                                                              "description": "the server's --token-env variable"}
    assert start["security"] == [{"bearer": []}]
    manager.shutdown()


def test_a_refused_session_leaves_nothing_behind(api):
    """429: no folder, so no restart queues it later and no id answers for it."""
    codes = [api.post("/api/sessions", json=CMAES | {"seed": s}).status_code for s in range(4)]
    assert codes == [202, 202, 202, 429]  # one held running, two waiting, then the queue is full
    runs = api.manager.runs_dir
    assert len([d for d in runs.iterdir() if not d.name.startswith(".")]) == 3  # (.tuneloop: the index)


def test_a_session_takes_a_space_and_a_dimension_and_records_both(tmp_path):
    manager = SessionManager(tmp_path / "runs")
    client = TestClient(create_app(manager))
    try:
        r = client.post("/api/sessions", json={"method": "tpe", "function": "rastrigin", "budget": 4, "dim": 5,
                                               "space": FIVE_KNOBS})
        assert r.status_code == 202, r.json()
        sid = r.json()["id"]
        wait_for(lambda: client.get(f"/api/sessions/{sid}").json()["status"] == "finished")
        manifest = client.get(f"/api/sessions/{sid}").json()["manifest"]
        assert manifest["space"]["nesterov"] == {"type": "categorical", "choices": [False, True]}
        assert len(manifest["x0"]) == 5
        trials = [json.loads(line) for line in (tmp_path / "runs" / sid / "trace.jsonl").read_text().splitlines()]
        trials = [e for e in trials if e["event"] == "trial_evaluated"]
        assert len(trials) == 4 and all(set(t["params"]) == set(FIVE_KNOBS) for t in trials)
    finally:
        manager.shutdown()
