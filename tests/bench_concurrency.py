"""How many remote-model cells one process runs at once: `python -m tests.bench_concurrency`.

A fake OpenAI-compatible server on 127.0.0.1 answers every request after DELAY_S; the
same study is timed with one LLM cell and with N cells at --concurrency N. Prints the
ratio of the two wall times (1.0 would be perfect overlap)."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from tests.test_executors import llm_server
from tuneloop.evaluation.cli import main

DELAY_S = 0.5


def study_wall(n_cells: int, budget: int, out: Path, url: str) -> float:
    argv = ["eval", "--functions", "rosenbrock", "--methods", "llm", "--seeds", f"0-{n_cells - 1}",
            "--budget", str(budget), "--max-iter", "2000", "--model", "openai:m", "--base-url", url,
            "--concurrency", str(n_cells), "--out", str(out), "--no-plots"]
    t0 = time.perf_counter()
    assert main(argv) == 0
    return time.perf_counter() - t0


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    budget = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    os.environ.setdefault("OPENAI_API_KEY", "sk-fake-benchmark-key")
    with tempfile.TemporaryDirectory() as tmp, llm_server(delay_s=DELAY_S) as srv:
        study_wall(1, budget, Path(tmp) / "warm-up", srv.url)  # imports and caches, not measured
        one = study_wall(1, budget, Path(tmp) / "one", srv.url)
        many = study_wall(n, budget, Path(tmp) / "many", srv.url)
        print(f"\n1 cell: {one:.2f} s; {n} cells at --concurrency {n}: {many:.2f} s; ratio {many / one:.2f} "
              f"(server: {DELAY_S} s per request, at most {srv.max_in_flight} at once)")
