"""The session list at scale: the runs dir's SQLite index (rebuilt when missing, re-read
when a run's files change, rows dropped with their runs), keyset pages that cover every
session once in order, filters, and one clear 422 for a bad cursor or limit."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.evaluation.service.app import create_app
from tuneloop.evaluation.service.run_index import INDEX_FILE
from tuneloop.evaluation.service.sessions import SessionManager

METHODS = ("random", "tpe", "cmaes")
START = datetime(2026, 11, 30)  # the first run's creation time; one a minute after it
FUNCTIONS = ("rosenbrock", "rastrigin")


def make_runs(runs: Path, n: int, template_dir: Path, budget: int = 2) -> list[str]:
    """n runs copied from one real run each of random/tpe/cmaes, each with its own id,
    method, function and creation time (one a minute, the newest last)."""
    templates = {}
    for m in METHODS:
        r = run_method(MethodSpec(method=m, budget=budget, max_iter=200, runs_dir=template_dir))
        templates[m] = template_dir / r.session_id
    ids = []
    for i in range(n):
        m, f = METHODS[i % 3], FUNCTIONS[i % 2]
        created = START + timedelta(minutes=i)
        sid = f"{created:%Y%m%dT%H%M%S}-{m}-{i:06x}"
        shutil.copytree(templates[m], runs / sid)
        manifest = json.loads((runs / sid / "manifest.json").read_text())
        manifest.update(created=f"{created:%Y-%m-%dT%H:%M:%S}Z", objective=f)
        (runs / sid / "manifest.json").write_text(json.dumps(manifest))
        ids.append(sid)
    return ids


@pytest.fixture
def listed(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    ids = make_runs(runs, 25, tmp_path / "templates")
    manager = SessionManager(runs)
    yield TestClient(create_app(manager)), manager, ids
    manager.shutdown()


def every_page(api, **params) -> tuple[list[dict], list[int]]:
    rows, totals, cursor = [], [], None
    while True:
        body = api.get("/api/sessions", params=params | ({"cursor": cursor} if cursor else {})).json()
        rows += body["sessions"]
        totals.append(body["total"])
        cursor = body["next"]
        if cursor is None:
            return rows, totals


def test_pages_cover_every_session_once_newest_first(listed):
    api, _, ids = listed
    first = api.get("/api/sessions", params={"limit": 10}).json()
    assert len(first["sessions"]) == 10 and first["total"] == 25 and first["next"]
    assert first["next"] == f"{first['sessions'][-1]['created']}~{first['sessions'][-1]['id']}"
    # any well-formed position is a place in the list: the page after it
    after = api.get("/api/sessions", params={"limit": 3, "cursor": f"2026-11-30T00:05:30Z~{ids[5]}"}).json()
    assert [r["id"] for r in after["sessions"]] == [ids[5], ids[4], ids[3]]
    rows, totals = every_page(api, limit=10)
    assert [r["id"] for r in rows] == ids[::-1] and set(totals) == {25}
    assert [r["id"] for r in api.get("/api/sessions").json()["sessions"]] == ids[::-1]  # default: 100 a page


def test_filters_by_method_function_status_and_time(listed):
    api, _, ids = listed
    rows, totals = every_page(api, method="tpe", limit=3)
    assert [r["id"] for r in rows] == [i for i in ids[::-1] if "-tpe-" in i] and totals[0] == len(rows) == 8
    both = api.get("/api/sessions", params={"method": "cmaes", "function": "rastrigin"}).json()
    assert {r["function"] for r in both["sessions"]} == {"rastrigin"} and both["total"] == 4
    assert api.get("/api/sessions", params={"status": "finished"}).json()["total"] == 25
    assert api.get("/api/sessions", params={"status": "failed"}).json() == {"sessions": [], "total": 0, "next": None}
    late = api.get("/api/sessions", params={"since": "2026-11-30T00:20:00Z"}).json()
    assert [r["id"] for r in late["sessions"]] == ids[20:][::-1]


@pytest.mark.parametrize("params,field", [({"cursor": "not a cursor"}, "cursor"), ({"limit": 0}, "limit"),
                                          ({"limit": 5000}, "limit"), ({"status": "sleeping"}, "status")])
def test_a_bad_cursor_or_filter_is_one_422_naming_it(listed, params, field):
    api, _, _ = listed
    r = api.get("/api/sessions", params=params)
    assert r.status_code == 422 and r.json()["detail"][0]["field"] == field, r.text


def test_the_index_is_rebuilt_when_missing_and_follows_the_files(listed):
    api, manager, ids = listed
    runs = manager.runs_dir
    assert (runs / INDEX_FILE).is_file()
    manager.shutdown()
    shutil.rmtree(runs / INDEX_FILE.parent)
    shutil.rmtree(runs / ids[0])  # a run removed
    trace = runs / ids[1] / "trace.jsonl"  # a run changed: its last trial now the best, a new value
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    for e in events:
        if e.get("event") == "trial_evaluated":
            e["final_value"], e["score"] = -1.0, -1.0
    trace.write_text("".join(json.dumps(e) + "\n" for e in events))
    again = SessionManager(runs)
    try:
        body = TestClient(create_app(again)).get("/api/sessions", params={"limit": 100}).json()
        assert body["total"] == 24 and ids[0] not in {r["id"] for r in body["sessions"]}
        assert next(r for r in body["sessions"] if r["id"] == ids[1])["best_value"] == -1.0
        trace.write_text(trace.read_text().replace("-1.0", "-2.0"))
        shutil.rmtree(runs / ids[2])
        assert again.index.sync() == (1, 1)  # one re-read, one dropped; the others only stat'ed
        body = TestClient(create_app(again)).get("/api/sessions", params={"limit": 100}).json()
        assert body["total"] == 23
        assert next(r for r in body["sessions"] if r["id"] == ids[1])["best_value"] == -2.0
    finally:
        again.shutdown()
