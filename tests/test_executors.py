"""Where cells run: threads for remote-model cells, a local Ray, a real Ray cluster (with
and without token auth), rate limits."""

import csv
import itertools
import json
import os
import signal
import socket
import threading

import pytest

from tests.fakes import FakeOpenAIServer
from tuneloop.evaluation.cli import main
from tuneloop.evaluation.harness import run_cell as real_run_cell

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


def run_cell_killed_on_seed_2(cfg, arm, function, seed, **kw):
    """harness.run_cell, except that seed 2's worker dies the way a crash in native code
    ends it: at once, with no Python exception and nothing sent back."""
    if seed == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_run_cell(cfg, arm, function, seed, **kw)


def test_a_worker_that_dies_ends_the_study_in_one_line_and_the_same_command_resumes(tmp_path, monkeypatch, capsys):
    # multiprocessing.Pool replaced a dead worker and waited forever for its cell's answer
    # (seen: llama.cpp's native build died of a protection fault at AMX's ldtilecfg at its first call)
    from tuneloop.evaluation import harness

    def argv(out):
        return ["eval", "--functions", "rosenbrock", "--methods", "random", "tpe", "--seeds", "0-3", "--budget", "3",
                "--max-iter", "300", "--workers", "2", "--out", str(out), "--no-plots"]

    monkeypatch.setattr(harness, "run_cell", run_cell_killed_on_seed_2)
    codes = []
    first = threading.Thread(target=lambda: codes.append(main(argv(tmp_path / "study"))), daemon=True)
    first.start()
    first.join(120)
    assert codes == [2], "the study hung after its worker died" if first.is_alive() else codes
    err = capsys.readouterr().err
    assert "error: a worker process ended abruptly after" in err and "the same command resumes" in err
    assert "Traceback" not in err
    finished = sorted(p.parent.name for p in (tmp_path / "study" / "runs").glob("*/result.json"))
    assert not any(n.endswith("-s2") for n in finished)

    monkeypatch.setattr(harness, "run_cell", real_run_cell)
    assert main(argv(tmp_path / "study")) == 0, capsys.readouterr().err
    assert main(argv(tmp_path / "fresh")) == 0  # the resumed study has the rows of one run straight through
    assert rows(tmp_path / "study") == rows(tmp_path / "fresh")
    assert len(rows(tmp_path / "study")) == 8


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


@pytest.mark.slow
def test_ray_backend_gives_the_same_rows_and_resumes(tmp_path, capsys, ray_available):
    auth_mode = os.environ.get("RAY_AUTH_MODE")
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
    assert os.environ.get("RAY_AUTH_MODE") == auth_mode  # Ray's ray.init sets it; the executor puts it back


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


# ---- a real Ray cluster: `ray start --head` in a session of its own (tests/ray_cluster.py) ----

TINY = ["eval", "--functions", "rosenbrock", "--methods", "grid", "random", "--seeds", "0-1", "--budget", "3",
        "--max-iter", "300", "--no-plots"]


def one_error_line(proc, *secrets):
    """The run failed as the CLI fails on bad input: exit 2, one `error:` line on stderr,
    no traceback, no token."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    for s in secrets:
        assert s not in proc.stderr and s not in proc.stdout
    return proc.stderr


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "study"
    assert main([*TINY, "--out", str(out)]) == 0
    return rows(out)


@pytest.fixture(scope="module")
def token_head(ray_available):
    """A head node with token auth, on by Ray's default: its HOME holds ~/.ray/auth_token."""
    import secrets

    from tests.ray_cluster import start_head

    head = start_head(token=secrets.token_hex(16))
    yield head
    head.stop()


@pytest.fixture
def empty_home(tmp_path):
    (tmp_path / "home").mkdir()
    return tmp_path / "home"


@pytest.mark.slow
def test_a_token_cluster_runs_the_study_with_the_token_where_ray_reads_it(token_head, local_rows, empty_home,
                                                                          tmp_path):
    from tests.ray_cluster import clean_env, run_cli

    # the README recipe on the head node: `ray start --head`, then tuneloop, no variable
    # set: the token is Ray's default file, ~/.ray/auth_token
    out = tmp_path / "file"
    proc = run_cli([*TINY, "--backend", "ray", "--ray-address", token_head.address, "--out", str(out)],
                   clean_env(token_head.home))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(out) == local_rows
    man = json.loads((out / "runs" / "random-rosenbrock-s1" / "manifest.json").read_text())
    assert man["executor"]["backend"] == "ray"
    assert man["executor"]["node"] in token_head.info(clean_env(token_head.home))["nodes"]
    # from another machine: the token in RAY_AUTH_TOKEN, no file
    out = tmp_path / "env"
    proc = run_cli([*TINY, "--backend", "ray", "--ray-address", token_head.address, "--out", str(out)],
                   clean_env(empty_home, RAY_AUTH_TOKEN=token_head.token))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(out) == local_rows
    assert token_head.token not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_wrong_or_missing_ray_token_is_one_line_and_starts_nothing(token_head, empty_home, tmp_path):
    from tests.ray_cluster import clean_env, run_cli

    out = tmp_path / "never"
    args = [*TINY, "--backend", "ray", "--ray-address", token_head.address, "--out", str(out)]
    wrong = "wrong-" + token_head.token[::-1]
    err = one_error_line(run_cli(args, clean_env(empty_home, RAY_AUTH_TOKEN=wrong)), wrong, token_head.token)
    assert "refused the auth token from RAY_AUTH_TOKEN" in err and "ray get-auth-token" in err
    (tmp_path / "tok").write_text(wrong + "\n")
    err = one_error_line(run_cli(args, clean_env(empty_home, RAY_AUTH_TOKEN_PATH=str(tmp_path / "tok"))), wrong,
                         token_head.token)
    assert f"refused the auth token from RAY_AUTH_TOKEN_PATH ({tmp_path / 'tok'})" in err
    err = one_error_line(run_cli(args, clean_env(empty_home)), token_head.token)
    assert "wants an auth token and no auth token is set here" in err and "RAY_AUTH_TOKEN" in err
    # a token at hand, but RAY_AUTH_MODE says not to send it: Ray's setting wins, and says so
    err = one_error_line(run_cli(args, clean_env(token_head.home, RAY_AUTH_MODE="disabled")), token_head.token)
    assert "RAY_AUTH_MODE is disabled, so no token was sent" in err
    assert not out.exists()


@pytest.mark.slow
def test_without_an_address_ray_is_a_private_instance_beside_a_running_cluster(token_head, local_rows, tmp_path):
    from tests.ray_cluster import clean_env, run_cli

    # RAY_ADDRESS names the cluster, with its token at hand: a plain ray.init() would join it
    env = clean_env(token_head.home, RAY_ADDRESS=token_head.address)
    before = token_head.info(env)
    out = tmp_path / "own"
    proc = run_cli([*TINY, "--backend", "ray", "--out", str(out)], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rows(out) == local_rows
    man = json.loads((out / "runs" / "grid-rosenbrock-s0" / "manifest.json").read_text())
    after = token_head.info(env)
    assert man["executor"]["node"] not in after["nodes"]  # the cells ran elsewhere...
    assert after == before  # ...and no driver joined the cluster
    assert token_head.proc.poll() is None


@pytest.mark.slow
def test_a_cluster_without_auth_takes_the_token_at_hand(ray_available, local_rows, tmp_path):
    """Ray without a token starts a cluster without auth; tuneloop sends the token it has
    anyway (token mode on whenever a token is at hand), which such a cluster ignores."""
    from tests.ray_cluster import clean_env, run_cli, start_head

    head = start_head(token=None)
    try:
        (tmp_path / "home" / ".ray").mkdir(parents=True)
        (tmp_path / "home" / ".ray" / "auth_token").write_text("a-token-this-cluster-does-not-want")
        out = tmp_path / "noauth"
        proc = run_cli([*TINY, "--backend", "ray", "--ray-address", head.address, "--out", str(out)],
                       clean_env(tmp_path / "home"))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert rows(out) == local_rows
    finally:
        head.stop()


@pytest.mark.slow
def test_other_ray_or_python_versions_than_the_cluster_are_one_line(token_head, tmp_path, monkeypatch, capsys):
    import ray

    from tuneloop.evaluation import executors

    real = ray.__version__
    monkeypatch.setattr(executors, "_checked", set())
    monkeypatch.setenv("RAY_AUTH_TOKEN", token_head.token)
    monkeypatch.setattr(ray, "__version__", "0.0.1")
    out = tmp_path / "never"
    assert main([*TINY, "--backend", "ray", "--ray-address", token_head.address, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"runs Ray {real} on Python" in err, err
    assert "this machine Ray 0.0.1" in err and token_head.token not in err
    assert not out.exists()


@pytest.mark.slow
def test_a_port_where_no_ray_answers_is_one_line(ray_available, tmp_path, monkeypatch, capsys):
    from tuneloop.evaluation import executors

    monkeypatch.setattr(executors, "RAY_PROBE_TIMEOUT_S", 4.0)
    with socket.socket() as srv:  # listens, never speaks gRPC
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        addr = f"127.0.0.1:{srv.getsockname()[1]}"
        out = tmp_path / "never"
        assert main([*TINY, "--backend", "ray", "--ray-address", addr, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no Ray cluster answered at {addr!r}" in err, err
    assert not out.exists()


def test_ray_token_settings_ray_would_abort_on_are_one_line(tmp_path, monkeypatch, capsys):
    """A RAY_AUTH_TOKEN_PATH that cannot be read, or token mode with no token, makes Ray's
    C++ client abort the process: tuneloop says so first, before Ray is touched."""
    pytest.importorskip("ray")
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "never"
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        argv = [*TINY, "--backend", "ray", "--ray-address", f"127.0.0.1:{srv.getsockname()[1]}", "--out", str(out)]
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "absent"))
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"RAY_AUTH_TOKEN_PATH is {tmp_path / 'absent'}, which cannot be read" in err
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "RAY_AUTH_MODE is token but no Ray auth token is set" in err, err
    assert not out.exists()


def test_ray_auth_reads_the_token_where_ray_does(tmp_path, monkeypatch):
    from tuneloop.evaluation.executors import ray_auth

    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    assert (ray_auth().mode, ray_auth().source) == (None, None)  # no token: no auth, as Ray
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-the-default-file\n")
    auth = ray_auth()
    assert (auth.mode, auth.source) == ("token", str(tmp_path / ".ray" / "auth_token"))
    assert "from-the-default-file" in auth.secrets and "from-the-default-file" not in repr(auth)
    (tmp_path / "t").write_text("from-the-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert ray_auth().secrets == ("from-the-path",)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-variable")
    assert (ray_auth().source, ray_auth().secrets) == ("RAY_AUTH_TOKEN", ("from-the-variable",))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # an explicit mode is Ray's to keep
    assert ray_auth().mode == "disabled"
    assert ray_auth(local=True).mode is None  # a Ray of our own: Ray sets its auth up itself


def test_a_failed_ray_init_is_one_line_without_the_token(tmp_path, monkeypatch):
    """Whatever ray.init raises after the checks passed (a cluster gone meanwhile) is a
    UserError without the token, and RAY_AUTH_MODE is as it was."""
    ray = pytest.importorskip("ray")
    from tuneloop.evaluation import executors
    from tuneloop.tools.errors import UserError

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN", "tok-0123456789")
    monkeypatch.setattr(executors, "check_ray_address", lambda address: None)

    def init(**kw):
        assert os.environ["RAY_AUTH_MODE"] == "token"  # a token at hand: Ray is told to send it
        raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379\nwith tok-0123456789")

    monkeypatch.setattr(ray, "init", init)
    with pytest.raises(UserError) as e:
        executors.RayExecutor("10.0.0.1:6379").run([], lambda cell: None)
    msg = str(e.value)
    assert "\n" not in msg and "tok-0123456789" not in msg and "cannot connect to the Ray cluster" in msg, msg
    assert "RAY_AUTH_MODE" not in os.environ
