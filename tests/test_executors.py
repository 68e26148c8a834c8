"""Where cells run: threads for remote-model cells, a local Ray, rate limits."""

import csv
import itertools
import json

import pytest

from tests.fakes import FakeOpenAIServer
from tuneloop.evaluation.cli import main

KEY = "sk-fake-0123456789abcdef"


def rows(out):
    with open(out / "results.csv") as f:
        return [{k: v for k, v in r.items() if k != "wall_s"} for r in csv.DictReader(f)]


def llm_server(delay_s):
    lrs = (1e-4 * k for k in itertools.count(1))

    def reply(body, n):
        names = [t["function"]["name"] for t in body.get("tools", [])]
        if "FinalAnswer" in names:
            return ("ok", "FinalAnswer", {"learning_rate": 1e-3, "momentum": 0.5, "rationale": "best"})
        return ("ok", "run_momentum_gd", {"learning_rate": next(lrs), "momentum": 0.5})

    return FakeOpenAIServer([reply], delay_s=delay_s)


def test_remote_model_cells_run_concurrently_and_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = tmp_path / "study"
    with llm_server(delay_s=0.3) as srv:
        argv = ["eval", "--functions", "rosenbrock", "--methods", "llm", "--seeds", "0-5", "--budget", "2",
                "--max-iter", "300", "--model", "openai:m", "--base-url", srv.url, "--concurrency", "6",
                "--out", str(out), "--no-plots"]
        assert main(argv) == 0, capsys.readouterr().err
        # six sessions were in flight together, not one per core
        assert srv.max_in_flight >= 4
        n_requests = len(srv.requests)
        got = rows(out)
        assert [r["seed"] for r in got] == [str(s) for s in range(6)]
        assert all(r["trials_charged"] == "2" and r["stop_reason"] == "budget_spent" for r in got)
        man = json.loads((out / "runs" / "llm+openai_m-rosenbrock-s3" / "manifest.json").read_text())
        assert man["executor"]["backend"] == "local"
        # resumable: a finished study runs nothing again; a lost cell runs alone
        (out / "runs" / "llm+openai_m-rosenbrock-s4" / "result.json").unlink()
        assert main(argv) == 0
        assert len(srv.requests) - n_requests == 3  # two proposals and the final answer of one cell


def test_rate_limiter_spaces_requests_and_charges_tokens():
    from tuneloop.agent.ratelimit import RateLimiter

    now = [0.0]
    waits = []

    def sleep(s):
        waits.append(s)
        now[0] += s

    lim = RateLimiter(rpm=60, tpm=600, clock=lambda: now[0], sleep=sleep)
    # a burst of ten seconds' worth of requests (10 at 1/s), then one a second
    assert [lim.acquire() for _ in range(10)] == [0.0] * 10
    assert lim.acquire() == pytest.approx(1.0)
    # tokens: 900 spent against a 600-a-minute bucket leaves it 300 in debt: 30 s to repay
    lim.spend_tokens(900)
    assert lim.acquire() == pytest.approx(30.0)
    # those 30 s refilled the request bucket (capped at ten requests): no wait now
    assert lim.acquire() == 0.0
    assert sum(waits) == pytest.approx(31.0)


def test_shared_limiter_is_one_per_process_and_settings():
    from tuneloop.agent.ratelimit import shared_limiter

    assert shared_limiter(None, None) is None
    assert shared_limiter(100, None) is shared_limiter(100, None) is not shared_limiter(200, None)


@pytest.fixture(scope="module")
def ray_available():
    return pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


def test_ray_backend_gives_the_same_rows_and_resumes(tmp_path, capsys, ray_available):
    base = ["eval", "--functions", "rosenbrock", "--methods", "grid", "cmaes", "tpe", "--seeds", "0-1",
            "--budget", "5", "--max-iter", "300", "--no-plots"]
    assert main([*base, "--out", str(tmp_path / "local")]) == 0
    assert main([*base, "--out", str(tmp_path / "ray"), "--backend", "ray"]) == 0, capsys.readouterr().err
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")
    man = json.loads((tmp_path / "ray" / "runs" / "tpe-rosenbrock-s1" / "manifest.json").read_text())
    assert man["executor"]["backend"] == "ray" and man["executor"]["node"]
    assert "Cells ran on: ray on " in (tmp_path / "ray" / "summary.md").read_text()
    # per-cell traces are there, readable by the trace commands
    assert main(["trace", "summary", str(tmp_path / "ray" / "runs" / "grid-rosenbrock-s0"), "--json"]) == 0
    # resume on Ray: only the cell without a result runs
    victim = tmp_path / "ray" / "runs" / "cmaes-rosenbrock-s0" / "result.json"
    victim.unlink()
    stamp = (tmp_path / "ray" / "runs" / "grid-rosenbrock-s0" / "result.json").stat().st_mtime_ns
    assert main([*base, "--out", str(tmp_path / "ray"), "--backend", "ray"]) == 0
    assert victim.exists()
    assert (tmp_path / "ray" / "runs" / "grid-rosenbrock-s0" / "result.json").stat().st_mtime_ns == stamp
    assert rows(tmp_path / "ray") == rows(tmp_path / "local")


def test_an_unreachable_ray_address_is_one_line_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["eval", "--methods", "grid", "--seeds", "0", "--backend", "ray", "--ray-address", "127.0.0.1:9",
                 "--out", str(out), "--no-plots"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot reach the Ray cluster" in err, err
    assert not out.exists()


def test_storage_records_every_cell_as_an_optuna_study(tmp_path, capsys):
    import math

    import optuna

    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "s"
    assert main(["eval", "--functions", "rosenbrock", "--methods", "grid", "tpe", "--seeds", "0", "1", "--budget", "5",
                 "--max-iter", "300", "--out", str(out), "--no-plots", "--storage", url]) == 0
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["grid-rosenbrock-s0", "grid-rosenbrock-s1", "tpe-rosenbrock-s0", "tpe-rosenbrock-s1"]
    study = optuna.load_study(study_name="tpe-rosenbrock-s1", storage=url)
    events = [json.loads(x) for x in (out / "runs" / "tpe-rosenbrock-s1" / "trace.jsonl").read_text().splitlines()]
    charged = [e for e in events if e["event"] == "trial_evaluated" and e["charged"]]
    assert len(study.trials) == len(charged) == 5
    for t, e in zip(study.trials, charged, strict=False):
        assert t.value == e["score"] and t.params["momentum"] == e["momentum"]
        assert t.params["log10_learning_rate"] == pytest.approx(math.log10(e["learning_rate"]))
        assert (t.user_attrs["status"], t.user_attrs["iterations"], t.user_attrs["source"]) == \
            (e["status"], e["iterations"], "tpe")
    # a bad storage URL is one line, before any work
    assert main(["eval", "--methods", "grid", "--seeds", "0", "--out", str(tmp_path / "x"),
                 "--storage", "nosuchdb://x"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot use --storage")
    assert not (tmp_path / "x").exists()


def test_ray_reserves_cpus_by_what_a_cell_waits_on(tmp_path):
    from tuneloop.evaluation.arms import Arm
    from tuneloop.evaluation.executors import REMOTE_CPU_SHARE, CellJob

    def job(arm, remote):
        return CellJob(None, (arm, "rosenbrock", 0), 2, None, remote, None, tmp_path)

    assert job(Arm("llm", "default", "local"), False).ray_cpus == 2  # the embedded model's llama.cpp threads
    assert job(Arm("centaur", None, "local"), False).ray_cpus == 2
    assert job(Arm("llm", "default", "openai:m"), True).ray_cpus == REMOTE_CPU_SHARE
    assert job(Arm("cmaes"), False).ray_cpus == 1
