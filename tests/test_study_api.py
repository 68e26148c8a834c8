"""Ask/tell over HTTP: the studies API in-process (FastAPI's TestClient over the app
`tuneloop serve` runs): create, ask, tell to the end; bad bodies; the one-trial-at-a-time
rule and told-once rule as 409s; NaN and failed tells; the 202 of a method still
thinking; list, read, follow; close; a restart; the token and the contract. And one
study driven end to end by `tuneloop.Client` against a real `tuneloop serve` (uvicorn)."""

import math
import threading
import time

import pytest
from fastapi.testclient import TestClient

from tests.fakes import ScriptedChatModel
from tuneloop.evaluation.client import Client, RemoteStudy, ServiceError
from tuneloop.evaluation.service.app import create_app
from tuneloop.evaluation.service.schemas import Limits
from tuneloop.evaluation.service.sessions import SessionManager
from tuneloop.evaluation.service.studies import StudyManager
from tuneloop.evaluation.study import StudyError, Trial
from tuneloop.tools.record import read_trace

SPACE = {"lr": {"type": "float", "low": 1e-4, "high": 1.0, "log": True},
         "layers": {"type": "int", "low": 1, "high": 4},
         "act": {"type": "categorical", "choices": ["relu", "tanh"]}}
TPE = {"space": SPACE, "method": "tpe", "budget": 3}


def loss(p: dict) -> float:
    return (math.log10(p["lr"]) + 2) ** 2 + 0.1 * p["layers"] + (0.5 if p["act"] == "tanh" else 0.0)


class Gate:
    """A chat model factory for the llm method whose every reply waits for `open`: a test
    can see an ask while the method is still thinking."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.entered = threading.Event()  # the method is in its model call

    def __call__(self, settings):
        def reply(messages, kw):
            self.entered.set()
            self.open.wait(30)
            k = len(messages)  # a new configuration each call (a repeat would be answered from the cache)
            return {"name": "run_trial", "args": {"lr": 10.0 ** -(1 + k % 4), "layers": 1 + k % 4, "act": "relu"}}

        return ScriptedChatModel(script=[reply])


def app_over(runs, token=None, **studies):
    sessions = SessionManager(runs)
    manager = StudyManager(runs, **studies)
    client = TestClient(create_app(sessions, token=token, limits=Limits(max_budget=20), studies=manager))
    client.studies = manager
    client.sessions = sessions
    return client


@pytest.fixture
def api(tmp_path):
    gate = Gate()
    client = app_over(tmp_path / "runs", ask_wait_s=0.5, model_factory=gate)
    client.gate = gate
    yield client
    gate.open.set()
    client.studies.shutdown()
    client.sessions.shutdown()


def create(api, **body) -> str:
    r = api.post("/api/studies", json=TPE | body)
    assert r.status_code == 201 and r.json()["status"] == "running", r.text
    return r.json()["id"]


def ask(api, sid) -> dict:
    r = api.post(f"/api/studies/{sid}/ask")
    assert r.status_code == 200, r.text
    return r.json()


def test_a_study_is_asked_and_told_to_the_end_and_is_a_run_like_any_other(api):
    sid = create(api, direction="maximize", name="net")
    told = []
    for _ in range(3):
        trial = ask(api, sid)
        r = api.post(f"/api/studies/{sid}/tell", json={"trial": trial["trial"],
                                                       "metrics": {"value": loss(trial["params"]), "epochs": 3}})
        assert r.json() == {"trial": trial["trial"], "status": "ok", "value": loss(trial["params"]), "error": None}
        told.append(loss(trial["params"]))
    r = api.post(f"/api/studies/{sid}/ask")
    assert r.status_code == 409 and "budget of 3 trials is spent" in r.json()["detail"]
    d = api.get(f"/api/studies/{sid}").json()
    assert (d["status"], d["stop_reason"], d["direction"], d["name"], d["pending"]) == (
        "finished", "budget_spent", "maximize", "net", [])
    assert [t["final_value"] for t in d["trials"]] == told and d["trials"][0]["metrics"] == {"epochs": 3.0}
    assert d["best"]["final_value"] == max(told)  # maximised
    rows = api.get("/api/studies").json()["studies"]
    assert rows == [{"id": sid, "name": "net", "method": "tpe", "status": "finished", "budget": 3, "trials": 3,
                     "best": max(told), "created": d["created"]}]
    t = read_trace(api.studies.runs_dir / sid)  # the trace every `tuneloop trace` command reads
    assert t.finished["stop_reason"] == "budget_spent" and len(t.of("trial_evaluated")) == 3
    with api.stream("GET", f"/api/studies/{sid}/events") as r:
        names = [line.split('"event": "')[1].split('"')[0] for line in r.iter_lines() if line.startswith("data: ")]
    assert names == ["session_started", *["trial_evaluated"] * 3, "session_finished"]
    assert api.post(f"/api/studies/{sid}/close").json() == {"id": sid, "stop_reason": "budget_spent"}


@pytest.mark.parametrize("body,field", [
    ({"budget": -1}, "budget"),
    ({"budget": 21}, "budget"),  # over this server's --max-budget
    ({"budget": "3"}, "budget"),
    ({"method": "nope"}, "method"),
    ({"method": "llm", "model": "gguf:/etc/passwd"}, "model"),
    ({"method": "llm", "model": "bogus"}, "model"),
    ({"method": "llm", "prompt": "nope"}, "prompt"),
    ({"method": "refined"}, "space"),  # refined searches learning_rate and momentum only
    ({"space": {}}, "space"),
    ({"space": {"x": {"type": "float", "low": 1, "high": 0}}}, "space"),
    ({"space": {"x": {"type": "wat"}}}, "space"),
    ({"direction": "up"}, "direction"),
    ({"surprise": 1}, "surprise"),
])
def test_bad_study_bodies_name_the_field_and_the_reason(api, body, field):
    r = api.post("/api/studies", json=TPE | body)
    assert r.status_code == 422
    assert any(e["field"].split(".")[0] == field and e["reason"] for e in r.json()["detail"]), r.json()
    assert api.get("/api/studies").json()["studies"] == []


@pytest.mark.parametrize("body,field", [
    ({"trial": 1}, "body"),  # no value, no metrics value, not failed
    ({"trial": 1, "value": 1.0, "metrics": {"value": 2.0}}, "body"),
    ({"trial": 1, "value": "1.5"}, "value"),
    ({"trial": 1, "value": True}, "value"),
    ({"trial": 1, "value": 1.0, "metrics": {"status": "ok"}}, "metrics"),
    ({"trial": 1, "value": 1.0, "metrics": {"deep": {"x": 1}}}, "metrics"),
    ({"trial": 0, "value": 1.0}, "trial"),
    ({"trial": 1, "value": 1.0, "state": "meh"}, "state"),
    ({"trial": 1, "value": 1.0, "surprise": 1}, "surprise"),
])
def test_bad_tell_bodies_are_422_and_the_trial_stays_out(api, body, field):
    sid = create(api)
    ask(api, sid)
    r = api.post(f"/api/studies/{sid}/tell", json=body)
    assert r.status_code == 422
    assert any(e["field"].split(".")[0] == field and e["reason"] for e in r.json()["detail"]), r.json()
    assert [t["trial"] for t in api.get(f"/api/studies/{sid}").json()["pending"]] == [1]


def test_parallel_asks_the_budget_counts_them_and_each_trial_is_told_once(api):
    sid = create(api)  # budget 3
    assert api.post(f"/api/studies/{sid}/tell", json={"trial": 1, "value": 1.0}).json()["detail"] == \
        "trial 1 is not out (none is out: ask first)"
    first, second = ask(api, sid), ask(api, sid)  # two workers
    assert (first["trial"], second["trial"]) == (1, 2) and first["params"] != second["params"]
    assert api.get(f"/api/studies/{sid}").json()["pending"] == [first, second]
    r = api.post(f"/api/studies/{sid}/tell", json={"trial": 7, "value": 1.0})
    assert r.status_code == 409 and r.json()["detail"] == "trial 7 is not out (out now: 1, 2)"
    assert api.post(f"/api/studies/{sid}/tell", json={"trial": 2, "value": 2.0}).status_code == 200
    r = api.post(f"/api/studies/{sid}/tell", json={"trial": 2, "value": 1.0})
    assert r.status_code == 409 and r.json()["detail"] == "trial 2 was already told (out now: 1)"
    third = ask(api, sid)
    r = api.post(f"/api/studies/{sid}/ask")
    assert r.status_code == 409 and "budget of 3 trials is handed out: tell the trials out (1, 3)" in r.json()["detail"]
    for t in (third, first):
        assert api.post(f"/api/studies/{sid}/tell", json={"trial": t["trial"], "value": 1.0}).status_code == 200
    d = api.get(f"/api/studies/{sid}").json()
    assert d["status"] == "finished" and [t["final_value"] for t in d["trials"]] == [2.0, 1.0, 1.0]


def test_nan_null_and_failed_tells_are_failed_trials_charged(api):
    sid = create(api, budget=5)
    bodies = [{"value": "nan"}, {"value": None}, {"state": "failed", "error": "CUDA out of memory"},
              {"metrics": {"value": "-inf", "epochs": 2}}, {"value": 0.25, "metrics": {"acc": 0.9}}]
    answers = []
    for body in bodies:
        trial = ask(api, sid)["trial"]
        answers.append(api.post(f"/api/studies/{sid}/tell", json={"trial": trial} | body).json())
    assert [a["status"] for a in answers] == ["failed"] * 4 + ["ok"]
    assert "nan" in answers[0]["error"] and "null" in answers[1]["error"] and answers[2]["error"] == \
        "CUDA out of memory"
    trials = api.get(f"/api/studies/{sid}").json()["trials"]
    assert [t["status"] for t in trials] == ["failed"] * 4 + ["ok"] and trials[3]["metrics"] == {"epochs": 2.0}
    # Python's json writes NaN as a bare literal: the server reads it too
    r = api.post("/api/studies", json=TPE)
    other = r.json()["id"]
    trial = ask(api, other)["trial"]
    r = api.post(f"/api/studies/{other}/tell", content=f'{{"trial": {trial}, "value": NaN}}'.encode(),
                 headers={"Content-Type": "application/json"})
    assert r.json()["status"] == "failed"


def test_an_ask_waits_for_a_thinking_method_then_answers_202(api):
    sid = create(api, method="llm", budget=2)
    r = api.post("/api/studies", json=TPE | {"method": "centaur"})
    assert r.status_code == 429 and "the embedded model runs one study at a time" in r.json()["detail"]
    t0 = time.monotonic()
    r = api.post(f"/api/studies/{sid}/ask")
    assert r.status_code == 202 and r.headers["retry-after"] == "1" and r.json()["retry_after"] == 1
    assert time.monotonic() - t0 >= 0.5  # the server's ask wait
    from tuneloop.evaluation.service.studies import MAX_WAITING_ASKS

    waiting = [threading.Thread(target=lambda: api.studies.ask(sid)) for _ in range(MAX_WAITING_ASKS)]
    for w in waiting:  # other workers' asks, waiting
        w.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    r = api.post(f"/api/studies/{sid}/ask")  # one more: 202 at once, not another thread held
    assert r.status_code == 202 and time.monotonic() - t0 < 0.4
    for w in waiting:
        w.join()
    api.gate.open.set()  # the model answers: nothing was lost, the proposal goes to the next ask
    deadline = time.monotonic() + 30
    while (r := api.post(f"/api/studies/{sid}/ask")).status_code == 202 and time.monotonic() < deadline:
        pass
    assert r.status_code == 200 and r.json()["trial"] == 1


def test_a_close_while_the_method_thinks_answers_202_until_its_proposal_ends(tmp_path):
    gate = Gate()
    api = app_over(tmp_path / "runs", ask_wait_s=0.2, close_wait_s=0.2, model_factory=gate)
    sid = create(api, method="llm", budget=2)
    assert gate.entered.wait(30)  # (a close before the first model call would end the run at once)
    r = api.post(f"/api/studies/{sid}/close")
    assert r.status_code == 202 and r.json() == {"id": sid, "stop_reason": None}
    assert api.get(f"/api/studies/{sid}").json()["status"] == "running"
    r = api.post(f"/api/studies/{sid}/ask")
    assert r.status_code == 409 and r.json()["detail"] == "the study is closing"
    gate.open.set()  # the model's call ends: the close goes through, nothing charged
    deadline = time.monotonic() + 30
    while (r := api.post(f"/api/studies/{sid}/close")).status_code == 202 and time.monotonic() < deadline:
        pass
    assert r.status_code == 200 and r.json()["stop_reason"] == "interrupted"
    d = api.get(f"/api/studies/{sid}").json()
    assert (d["status"], d["trials"]) == ("interrupted", [])
    api.studies.shutdown()


def test_closing_early_interrupts_and_uncharges_the_trial_out(api):
    sid = create(api, budget=5)
    trial = ask(api, sid)["trial"]
    api.post(f"/api/studies/{sid}/tell", json={"trial": trial, "value": 1.0})
    out = ask(api, sid)["trial"]
    assert api.post(f"/api/studies/{sid}/close").json()["stop_reason"] == "interrupted"
    r = api.post(f"/api/studies/{sid}/tell", json={"trial": out, "value": 1.0})
    assert r.status_code == 409 and "was closed (interrupted)" in r.json()["detail"]
    d = api.get(f"/api/studies/{sid}").json()
    assert d["status"] == "interrupted" and len(d["trials"]) == 1 and d["pending"] == []
    assert api.post(f"/api/studies/{sid}/ask").status_code == 409


def test_after_a_restart_studies_are_listed_from_their_traces(tmp_path):
    runs = tmp_path / "runs"
    before = app_over(runs)
    done = before.post("/api/studies", json=TPE | {"budget": 1}).json()["id"]
    before.post(f"/api/studies/{done}/tell", json={"trial": ask(before, done)["trial"], "value": 2.0})
    cut = before.post("/api/studies", json=TPE).json()["id"]
    before.post(f"/api/studies/{cut}/tell", json={"trial": ask(before, cut)["trial"], "value": 1.0})
    out = ask(before, cut)  # the server stops with this trial out
    deadline = time.monotonic() + 30
    while read_trace(runs / done).finished is None and time.monotonic() < deadline:
        time.sleep(0.05)
    after = app_over(runs)  # a new server over the same runs dir
    rows = {r["id"]: r for r in after.get("/api/studies").json()["studies"]}
    assert (rows[done]["status"], rows[done]["trials"], rows[done]["best"]) == ("finished", 1, 2.0)
    assert (rows[cut]["status"], rows[cut]["trials"]) == ("interrupted", 1)
    assert after.get(f"/api/studies/{cut}").json()["trials"][0]["final_value"] == 1.0
    with after.stream("GET", f"/api/studies/{cut}/events") as r:  # read to its end, then the stream ends
        assert sum(line.startswith("data: ") for line in r.iter_lines()) == 2
    # an ask continues it: the trial that was out is asked again, the one told is kept
    again = ask(after, cut)
    assert again["trial"] == 2 and again["params"] == out["params"]
    assert after.post(f"/api/studies/{cut}/tell", json={"trial": 2, "value": 0.5}).status_code == 200
    assert (runs / cut / "continued_in").exists()
    before.studies.shutdown()
    after.studies.shutdown()


def test_a_study_the_server_stopped_is_continued_by_the_next_server(tmp_path):
    runs = tmp_path / "runs"
    before = app_over(runs)
    sid = before.post("/api/studies", json=TPE | {"budget": 4}).json()["id"]
    first = ask(before, sid)
    before.post(f"/api/studies/{sid}/tell", json={"trial": first["trial"], "value": 3.0})
    before.studies.shutdown()  # a clean stop: the study's run ends, marked as stopped by the server
    after = app_over(runs)
    second = ask(after, sid)
    assert second["trial"] == 2 and second["params"] != first["params"]
    after.post(f"/api/studies/{sid}/tell", json={"trial": 2, "value": 1.0})
    closed = after.post(f"/api/studies/{sid}/close").json()
    assert closed["stop_reason"] == "interrupted"
    # closed by its client: not continued again
    third = app_over(runs)
    assert third.post(f"/api/studies/{sid}/ask").status_code == 409
    after.studies.shutdown()


def test_unknown_ids_too_many_studies_and_a_model_the_server_cannot_use(tmp_path, monkeypatch):
    api = app_over(tmp_path / "runs", max_open=1)
    for sid in ("..%2F..%2Fetc%2Fpasswd", "nope", "..", "%2Fetc"):
        assert api.get(f"/api/studies/{sid}").status_code == 404
        assert api.get(f"/api/studies/{sid}/events").status_code == 404
        assert api.post(f"/api/studies/{sid}/ask").status_code == 404
    assert api.post("/api/studies/nope/tell", json={"trial": 1, "value": 1}).status_code == 404
    sid = create(api)
    r = api.post("/api/studies", json=TPE)
    assert r.status_code == 429 and "1 studies are running" in r.json()["detail"]
    api.post(f"/api/studies/{sid}/close")
    assert api.post("/api/studies", json=TPE).status_code == 201  # a closed study no longer counts
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    r = api.post("/api/studies", json=TPE | {"method": "llm", "model": "openai:gpt-4o-mini"})
    assert r.status_code == 409 and "OPENAI_API_KEY is not set" in r.json()["detail"]
    api.studies.shutdown()


def test_a_model_that_fails_is_a_409_at_once_or_a_failed_study_saying_why(tmp_path):
    def broken(settings):
        raise RuntimeError("the model server vanished")

    api = app_over(tmp_path / "runs", model_factory=broken)
    r = api.post("/api/studies", json=TPE | {"method": "llm"})
    assert r.status_code == 409 and r.json()["detail"] == "model: RuntimeError: the model server vanished"
    api = app_over(tmp_path / "runs", model_factory=lambda settings: ScriptedChatModel(script=[]), ask_wait_s=10)
    sid = create(api, method="llm")  # a model with nothing to say: its first call raises
    r = api.post(f"/api/studies/{sid}/ask")
    assert r.status_code == 409 and "model_error" in r.json()["detail"]
    d = api.get(f"/api/studies/{sid}").json()
    assert (d["status"], d["stop_reason"]) == ("failed", "model_error") and "script" in d["reason"]
    api.studies.shutdown()


def test_the_token_guards_studies_and_the_contract_states_them(tmp_path):
    api = app_over(tmp_path / "runs", token="t0k")
    assert api.post("/api/studies", json=TPE).status_code == 401
    auth = {"Authorization": "Bearer t0k"}
    sid = api.post("/api/studies", json=TPE, headers=auth).json()["id"]
    assert api.post(f"/api/studies/{sid}/ask", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert api.post(f"/api/studies/{sid}/ask", headers=auth).status_code == 200
    assert api.get("/api/studies?token=t0k").status_code == 200
    doc = api.get("/openapi.json", headers=auth).json()
    assert {"201", "400", "401", "409", "413", "422", "429"} <= set(doc["paths"]["/api/studies"]["post"]["responses"])
    asking = doc["paths"]["/api/studies/{study_id}/ask"]["post"]
    assert {"200", "202", "404", "409"} <= set(asking["responses"]) and asking["security"] == [{"bearer": []}]
    assert "Retry-After" in asking["responses"]["202"]["headers"]
    body = doc["components"]["schemas"]["StudyRequest"]
    assert body["properties"]["budget"]["maximum"] == 20 and "tpe" in body["properties"]["method"]["enum"]
    api.studies.shutdown()


def test_the_client_drives_a_study_on_a_real_server(tmp_path):
    """`tuneloop serve` (uvicorn on 127.0.0.1, with a token) and tuneloop's Client: the
    Python Study's loop, unchanged, over HTTP."""
    from tests.test_service import Server

    srv = Server(tmp_path / "runs", "--token-env", "TL_TOKEN", env={"TL_TOKEN": "study-token"})
    try:
        with pytest.raises(ServiceError, match="HTTP 401"):
            Client(srv.url).studies()
        client = Client(srv.url, token="study-token")
        study = client.create_study(SPACE, method="random", budget=4, seed=2, name="remote")
        assert isinstance(study, RemoteStudy)
        for k in range(3):
            trial = study.ask(timeout=30)
            assert isinstance(trial, Trial) and set(trial.params) == set(SPACE)
            if k == 2:  # a second worker asks with trial 3 out
                other = study.ask(timeout=30)
                assert other.id == 4 and other.params != trial.params
                with pytest.raises(StudyError, match=r"handed out: tell the trials out \(3, 4\)"):
                    study.ask()
                study.tell(other, {"value": loss(other.params), "epochs": 4})
            study.tell(trial, float("nan") if k == 1 else {"value": loss(trial.params), "epochs": k})
        with pytest.raises(StudyError, match="budget of 4 trials is spent"):
            study.ask(timeout=30)
        with pytest.raises(StudyError, match="was already told"):
            study.tell(trial, 1.0)
        assert [t.status for t in study.trials] == ["ok", "failed", "ok", "ok"]
        assert [t.metrics["epochs"] for t in study.trials if t.status == "ok"] == [0, 4, 2]  # as told
        assert study.best is not None and study.best.final_value == min(
            t.final_value for t in study.trials if t.final_value is not None)
        assert study.close() == "budget_spent"
        assert [(r["id"], r["name"], r["status"], r["trials"]) for r in client.studies()] == [
            (study.id, "remote", "finished", 4)]
        with pytest.raises(ServiceError, match="HTTP 422") as bad:
            client.create_study(SPACE, method="nope", budget=3)
        assert bad.value.detail[0]["field"] == "method"
    finally:
        srv.stop()
    assert read_trace(tmp_path / "runs" / study.id).finished["trials_charged"] == 4
