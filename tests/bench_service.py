"""The service with a big runs dir: `python -m tests.bench_service [N] [RUNS_DIR]`.

Makes N sessions (copies of three real runs of budget 10, each with its own id, method,
function and creation time; kept in RUNS_DIR when given, so a second run skips this), then starts
`tuneloop serve` on them twice: first with no index (a runs dir from before the index),
then again (the index the first start wrote). For each start it prints the seconds from
launch until the server answers, and the latency of the first `GET /api/sessions?limit=50`.
On the second server, 4 clients (threads, keep-alive) each send 100 requests of every
listing kind; it prints p50 and p95 per kind and the response size. Latencies are the
client's, on 127.0.0.1; the machine's load is printed beside them. BENCH_PYTHONPATH=DIR
runs the server from another installed tuneloop (`pip install --target DIR`: an earlier
release, for a before/after).
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.test_run_index import make_runs
from tests.test_service import Server

CLIENTS = 4
REQUESTS = 100


def get(conn: http.client.HTTPConnection, path: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body[:200])
    return time.perf_counter() - t0, len(body)


def start(runs: Path) -> tuple[Server, float, float]:
    t0 = time.perf_counter()
    srv = Server(runs, env={"PYTHONPATH": os.environ["BENCH_PYTHONPATH"]} if "BENCH_PYTHONPATH" in os.environ else None)
    up = time.perf_counter() - t0
    conn = http.client.HTTPConnection("127.0.0.1", srv.port)
    first, _ = get(conn, "/api/sessions?limit=50")
    conn.close()
    return srv, up, first


def hammer(port: int, path: str) -> tuple[list[float], int]:
    times: list[float] = []
    size = [0]
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        mine = []
        for _ in range(REQUESTS):
            dt, size[0] = get(conn, path)
            mine.append(dt)
        conn.close()
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times, size[0]


def main(n: int, runs: Path) -> None:
    runs.mkdir(parents=True, exist_ok=True)
    have = sum(1 for d in runs.iterdir() if not d.name.startswith("."))
    if have < n:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            make_runs(runs, n, Path(tmp), budget=10)
        print(f"made {n} sessions in {time.perf_counter() - t0:.1f} s")
    index = runs / ".tuneloop"
    if index.exists():
        for f in index.iterdir():
            f.unlink()
    print(f"load {os.getloadavg()[0]:.2f} (2 cores)")
    for label in ("no index (first start)", "with its index (restart)"):
        srv, up, first = start(runs)
        print(f"{label}: server up in {up:.2f} s; first GET /api/sessions?limit=50: {first * 1000:.0f} ms")
        if label.startswith("no"):
            srv.stop()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port)
    cursor = None
    for _ in range(100):  # page 101 of 50: deep in the list
        conn.request("GET", "/api/sessions?limit=50" + (f"&cursor={cursor}" if cursor else ""))
        cursor = json.loads(conn.getresponse().read()).get("next")  # (an earlier release: no pages)
        if cursor is None:
            break
    conn.close()
    kinds = {
        "GET /api/sessions?limit=50": "/api/sessions?limit=50",
        "  filtered: method=tpe&status=finished": "/api/sessions?limit=50&method=tpe&status=finished",
        "  filtered: function=rastrigin&since=...":
            "/api/sessions?limit=50&function=rastrigin&since=2026-12-05T00:00:00Z",
        **({"  page 101 (cursor)": f"/api/sessions?limit=50&cursor={cursor}"} if cursor else {}),
        "GET /api/studies": "/api/studies",
    }
    try:
        for label, path in kinds.items():
            times, size = hammer(srv.port, path)
            q = statistics.quantiles(times, n=20)
            print(f"{label:42s} p50 {statistics.median(times) * 1000:6.1f} ms  p95 {q[18] * 1000:6.1f} ms  "
                  f"({CLIENTS} clients x {REQUESTS}; {size / 1024:.1f} KB)")
    finally:
        srv.stop()
    print(f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    if len(sys.argv) > 2:
        main(n, Path(sys.argv[2]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(n, Path(tmp) / "runs")
