"""`tuneloop serve` through a real uvicorn on 127.0.0.1: the API contract, live events,
cancel and resume, bad input, the token and path rules, and load."""

import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.fakes import FakeOpenAIServer

KEY = "sk-service-SECRET-0123456789"
TOKEN = "service-token-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tuneloop serve` in its own process, as a user starts it."""

    def __init__(self, runs: Path, *extra: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tuneloop.evaluation.cli",
                "serve",
                "--port",
                str(self.port),
                "--runs-dir",
                str(runs),
                *extra,
            ],
            env={**os.environ, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/api/health", headers=self.auth, timeout=1).status_code in (200, 401):
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("tuneloop serve did not start: " + self.proc.stdout.read())

    auth: dict = {}

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def served(tmp_path):
    srv = Server(tmp_path / "runs", env={"OPENAI_API_KEY": KEY})
    yield srv
    srv.stop()


def follow(url: str, session_id: str, headers=None, timeout=60) -> list[dict]:
    """Every event of a session's SSE stream, until the server ends it."""
    events = []
    with httpx.stream("GET", f"{url}/api/sessions/{session_id}/events", headers=headers, timeout=timeout) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def wait_status(url, sid, wanted, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = httpx.get(f"{url}/api/sessions/{sid}").json()["status"]
        if s in wanted:
            return s
        time.sleep(0.2)
    raise AssertionError(f"{sid} never reached {wanted}")


def test_a_classical_session_streams_to_its_end_and_is_a_session_like_any_other(served, capsys):
    r = httpx.post(served.url + "/api/sessions", json={"method": "cmaes", "function": "rosenbrock", "budget": 8,
                                                       "x0": "random", "seed": 3})
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    sid = r.json()["id"]
    events = follow(served.url, sid)
    names = [e["event"] for e in events]
    assert names[0] == "session_started" and names[-1] == "session_finished"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # every event, in order
    assert names.count("trial_evaluated") == 8
    detail = httpx.get(f"{served.url}/api/sessions/{sid}").json()
    assert detail["status"] == "finished" and detail["manifest"]["method"] == "cmaes"
    assert detail["summary"]["stop_reason"] == "budget_spent" and len(detail["summary"]["trials"]) == 8
    listed = httpx.get(served.url + "/api/sessions").json()["sessions"]
    row = next(s for s in listed if s["id"] == sid)
    assert (row["method"], row["function"], row["status"], row["budget"], row["trials_charged"]) == \
        ("cmaes", "rosenbrock", "finished", 8, 8)
    # the CLI reads it like one of its own
    from tuneloop.evaluation.cli import main

    run_dir = Path(served.proc.args[served.proc.args.index("--runs-dir") + 1]) / sid
    assert main(["trace", "summary", str(run_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["session_id"] == sid


@pytest.mark.slow
def test_an_llm_session_cancelled_midway_resumes_to_its_end(served):
    def gd(b, n):
        if "FinalAnswer" in [t["function"]["name"] for t in b["tools"]]:
            return ("sleep", 0.4, ("ok", "FinalAnswer", {"learning_rate": 1e-3, "momentum": 0.5,
                                                              "rationale": "best"}))
        return ("sleep", 0.4, ("ok", "run_momentum_gd", {"learning_rate": 1e-4 * n, "momentum": 0.5}))
    with FakeOpenAIServer([gd]) as llm:
        body = {"method": "llm", "function": "rosenbrock", "budget": 6, "model": "openai:m", "base_url": llm.url,
                "max_iter": 500}
        sid = httpx.post(served.url + "/api/sessions", json=body).json()["id"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # cancel once a trial or two ran
            row = next((x for x in httpx.get(served.url + "/api/sessions").json()["sessions"] if x["id"] == sid), None)
            if row and row["trials_charged"] >= 1:
                break
            time.sleep(0.1)
        assert httpx.post(f"{served.url}/api/sessions/{sid}/cancel").status_code == 202
        events = follow(served.url, sid)
        assert events[-1]["event"] == "session_finished" and events[-1]["stop_reason"] == "interrupted"
        charged_before = len([e for e in events if e["event"] == "trial_evaluated" and e["charged"]])
        assert 0 < charged_before < 6
        assert wait_status(served.url, sid, ("interrupted",)) == "interrupted"
        assert httpx.post(f"{served.url}/api/sessions/{sid}/resume").status_code == 202
        events = follow(served.url, sid)
    assert events[-1]["event"] == "session_finished" and events[-1]["stop_reason"] in ("budget_spent", "final_answer")
    charged = [e for e in events if e["event"] == "trial_evaluated" and e["charged"]]
    assert len(charged) == 6 and any(e["event"] == "session_resumed" for e in events)
    detail = httpx.get(f"{served.url}/api/sessions/{sid}").json()
    assert detail["status"] == "finished"
    # no endpoint ever returns the API key
    for path in ("/api/sessions", f"/api/sessions/{sid}"):
        assert KEY not in httpx.get(served.url + path).text
    assert KEY not in "".join(json.dumps(e) for e in events)


@pytest.mark.slow  # a real server; the in-process test covers the rule
def test_a_full_queue_is_429(tmp_path):
    slow = ("sleep", 3.0, ("ok", "run_momentum_gd", {"learning_rate": 1e-3, "momentum": 0.5}))
    srv = Server(tmp_path / "runs", "--max-running", "1", "--max-queued", "1", env={"OPENAI_API_KEY": KEY})
    try:
        with FakeOpenAIServer([slow]) as llm:
            body = {"method": "llm", "function": "rosenbrock", "budget": 1, "model": "openai:m", "base_url": llm.url}
            codes = [httpx.post(srv.url + "/api/sessions", json=body).status_code for _ in range(3)]
            assert codes == [202, 202, 429]  # one running, one waiting, then the queue is full
            assert "queue is full" in httpx.post(srv.url + "/api/sessions", json=body).json()["detail"]
    finally:
        srv.stop()


def test_the_token_rule(tmp_path):
    srv = Server(tmp_path / "runs", "--host", "0.0.0.0", "--token-env", "TL_TOKEN", env={"TL_TOKEN": TOKEN})
    try:
        assert httpx.get(srv.url + "/api/sessions").status_code == 401
        assert httpx.get(srv.url + "/api/sessions", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(srv.url + "/api/sessions", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert httpx.get(srv.url + f"/api/health?token={TOKEN}").status_code == 200
    finally:
        srv.stop()
    # a non-loopback address without a token does not start
    from tuneloop.evaluation.cli import main

    assert main(["serve", "--host", "0.0.0.0", "--runs-dir", str(tmp_path / "r")]) == 2


def test_a_restarted_server_reports_cut_sessions_as_interrupted(tmp_path):
    from tuneloop.tools.record import TraceWriter

    runs = tmp_path / "runs"
    w = TraceWriter(runs, "20260101T000000-llm-cut000")
    w.write_manifest({"method": "llm", "objective": "rosenbrock", "budget": 4, "created": "2026-01-01T00:00:00Z"})
    w.emit("session_started", method="llm")
    w.close()  # no session_finished: the process died mid-session
    srv = Server(runs)
    try:
        row = httpx.get(srv.url + "/api/sessions").json()["sessions"][0]
        assert (row["id"], row["status"]) == ("20260101T000000-llm-cut000", "interrupted")
    finally:
        srv.stop()


@pytest.mark.slow
def test_load_many_clients_and_streams_lose_nothing(served):
    """100 concurrent clients on GET /api/sessions, 20 SSE clients on one running session."""
    def slow(b, n):
        if "FinalAnswer" in [t["function"]["name"] for t in b["tools"]]:
            return ("sleep", 0.25, ("ok", "FinalAnswer", {"learning_rate": 1e-3, "momentum": 0.5,
                                                               "rationale": "x"}))
        return ("sleep", 0.25, ("ok", "run_momentum_gd", {"learning_rate": 1e-4 * n, "momentum": 0.5}))
    with FakeOpenAIServer([slow]) as llm:
        sid = httpx.post(served.url + "/api/sessions", json={
            "method": "llm", "function": "rosenbrock", "budget": 12, "model": "openai:m", "base_url": llm.url,
            "max_iter": 300}).json()["id"]
        wait_status(served.url, sid, ("running",))
        streams: list = [None] * 20

        def watch(i):
            streams[i] = follow(served.url, sid)

        watchers = [threading.Thread(target=watch, args=(i,)) for i in range(20)]
        for w in watchers:
            w.start()
        latencies, statuses = [], []
        # one connection pool for the 100 clients: the measurement is the server's, not the
        # cost of building an HTTP client per request in the test process
        client = httpx.Client(limits=httpx.Limits(max_connections=100), timeout=30)

        def get(_):
            t0 = time.perf_counter()
            r = client.get(served.url + "/api/sessions")
            latencies.append(time.perf_counter() - t0)
            statuses.append(r.status_code)

        evaluate_latencies = []

        def evaluate(i):
            t0 = time.perf_counter()
            r = client.post(served.url + "/api/evaluate", json={"function": "rosenbrock",
                                                                "learning_rate": 1e-4 * (1 + i % 50), "momentum": 0.5})
            evaluate_latencies.append(time.perf_counter() - t0)
            statuses.append(r.status_code)

        with ThreadPoolExecutor(100) as pool:
            list(pool.map(get, range(300)))
            list(pool.map(evaluate, range(300)))
        for w in watchers:
            w.join(timeout=120)
    assert statuses.count(200) == 600
    final = [json.loads(x) for x in (Path(served.proc.args[served.proc.args.index("--runs-dir") + 1]) / sid /
                                     "trace.jsonl").read_text().splitlines()]
    for events in streams:
        assert events == final  # every client got every event, in order
    for name, lat in (("GET /api/sessions", latencies), ("POST /api/evaluate", evaluate_latencies)):
        q = statistics.quantiles(lat, n=100)
        print(f"\n{name} under 100 clients: p50 {q[49] * 1000:.0f} ms, p99 {q[98] * 1000:.0f} ms")


@pytest.mark.slow  # a real server and a 20,000-event trace
def test_a_client_that_leaves_an_event_stream_leaves_the_log_quiet(tmp_path):
    """Clients that hang up on a long stream: the server stops writing to them (before, one
    server logged thousands of `socket.send() raised exception.` lines)."""
    runs = tmp_path / "runs"
    (runs / "long-run").mkdir(parents=True)
    with (runs / "long-run" / "trace.jsonl").open("w") as f:  # a long trace, no session_finished: a live stream
        for i in range(1, 20_001):
            f.write(json.dumps({"event": "trial_evaluated", "timestamp": "2026-01-01T00:00:00.000000+00:00",
                                "session_id": "long-run", "seq": i, "format": 1, "pad": "x" * 200}) + "\n")
    srv = Server(runs)
    try:
        for _ in range(3):
            with httpx.stream("GET", srv.url + "/api/sessions/long-run/events", timeout=10) as r:
                next(r.iter_bytes())  # read a little, then hang up
        time.sleep(1.5)  # a few polls of the stream
        assert httpx.get(srv.url + "/api/health").status_code == 200
    finally:
        srv.stop()
    log = srv.proc.stdout.read()
    assert "socket.send() raised exception" not in log, log[-500:]


def test_serve_on_a_port_in_use_is_one_line_and_no_banner(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["serve", "--port", str(port), "--runs-dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.startswith(f"error: cannot listen on 127.0.0.1:{port}:")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_new_runs_dir_is_said_on_the_first_line(tmp_path):
    srv = Server(tmp_path / "typo-runs")
    srv.stop()
    first = srv.proc.stdout.readline()
    assert "typo-runs (new: it did not exist, so it was created)" in first


@pytest.mark.slow  # a real server
def test_a_chunked_body_is_capped_too(tmp_path):
    """A body sent without a Content-Length (chunked) is held to the same 64 KiB."""
    srv = Server(tmp_path / "runs")
    try:
        def chunks(n):
            for _ in range(n):
                yield b" " * 1024

        big = httpx.post(srv.url + "/api/evaluate", content=chunks(100), headers={"Content-Type": "application/json"})
        assert big.status_code == 413
        body = json.dumps({"function": "rosenbrock", "learning_rate": 1e-3, "momentum": 0.9}).encode()
        small = httpx.post(srv.url + "/api/evaluate", content=iter([body[:20], body[20:]]),
                           headers={"Content-Type": "application/json"})
        assert small.status_code == 200 and small.json()["status"] == "converged"
    finally:
        srv.stop()


def test_the_servers_connections_send_without_nagles_delay():
    """Each response of a keep-alive connection is written in pieces (headers, body); with
    Nagle's algorithm on, the body waited for the client's delayed ACK (~40 ms a request).
    asyncio turns it off on the connections of a socket made as `serve` makes it."""
    import asyncio
    import socket

    from tuneloop.evaluation.cli import listening_socket

    async def accepted_nodelay() -> int:
        sock = listening_socket("127.0.0.1", 0)
        got: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                got.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        _, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        value = await asyncio.wait_for(got, 10)
        writer.close()
        server.close()
        return value

    assert asyncio.run(accepted_nodelay()) != 0
