"""One request, three callers: the service, the harness and replay all run a method
through `run_method`, so the same request gives the same trials whichever runs it.
And the package itself: only `tuneloop` is installed, and a user's own `tools/` or
`agent/` folder cannot shadow it."""

import subprocess
import sys
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

from tests.fakes import ScriptedChatModel
from tuneloop.agent.models import ModelSettings
from tuneloop.evaluation.harness import EvalConfig, run_eval
from tuneloop.evaluation.replay import replay
from tuneloop.evaluation.service.app import create_app
from tuneloop.evaluation.service.sessions import SessionManager
from tuneloop.tools.record import read_trace

FIELDS = ("source", "learning_rate", "momentum", "status", "final_value", "iterations", "charged")


def scripted_answer(messages, kwargs) -> dict:
    """Centaur's and SLLMBO's LLM: the same proposal every call; LLAMBO's and HOLLM's: five
    candidates, a function of the prompt's length (module level: picklable)."""
    if "Candidates" in kwargs["tools"]:
        n = len(str(messages[-1].content))
        return {"name": "Candidates", "args": {f"{k}_{j}": v for j in range(1, 6) for k, v in (
            ("learning_rate", 10.0 ** -(1 + ((n + j) % 30) / 10)), ("momentum", round(0.031 * ((3 * n + j) % 32), 3)))}}
    return {"name": "CentaurProposal", "args": {"learning_rate": 2e-3, "momentum": 0.6}}


def centaur_model(settings: ModelSettings) -> ScriptedChatModel:
    """The hybrids' LLM, scripted (scripted_answer)."""
    return ScriptedChatModel(script=[scripted_answer])


def trials(run_dir) -> list[tuple]:
    return [tuple(e[k] for k in FIELDS) for e in read_trace(run_dir).of("trial_evaluated")]


@pytest.mark.parametrize("method", ["cmaes", "tpe", "centaur", "sllmbo", "llambo", "hollm"])
def test_service_harness_and_replay_give_the_same_trials(tmp_path, method):
    # budget 12: Centaur's LLM has trials after its warm-up generation (6) at ratio 0.3
    request = {"method": method, "function": "rastrigin", "budget": 12, "seed": 2, "x0": "random", "max_iter": 2000}
    # the service
    manager = SessionManager(tmp_path / "served", model_factory=centaur_model)
    client = TestClient(create_app(manager))
    sid = client.post("/api/sessions", json=request).json()["id"]
    deadline = time.monotonic() + 60
    while manager.is_active(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    manager.shutdown()
    served = tmp_path / "served" / sid
    # the harness, with the same model settings the service builds (seed included)
    cfg = EvalConfig(functions=["rastrigin"], methods=[method], seeds=[2], budget=12, x0="random", max_iter=2000,
                     workers=1, out=tmp_path / "study", models=[ModelSettings(seed=0)])
    run_eval(cfg, model_factory=centaur_model)
    cell = next((tmp_path / "study" / "runs").iterdir())
    assert trials(served) == trials(cell) and len([t for t in trials(cell) if t[-1]]) == 12
    if method == "centaur":  # the LLM's trials are there, and the manifests agree on Centaur's settings
        assert any(t[0] == "centaur-llm" for t in trials(cell))
        assert read_trace(served).manifest["centaur"] == read_trace(cell).manifest["centaur"]
    if method == "sllmbo":  # the LLM's turns are there, with its own template
        assert any(t[0] == "sllmbo-llm" for t in trials(cell)) and any(t[0] == "tpe" for t in trials(cell))
        assert read_trace(cell).manifest["prompt"]["name"] == read_trace(served).manifest["prompt"]["name"] == "sllmbo"
    if method in ("llambo", "hollm"):  # the model's candidates picked after the random start
        assert [t[0] for t in trials(cell)][5:] == [f"{method}-llm"] * 7
        assert read_trace(served).manifest[method] == read_trace(cell).manifest[method]
    # replay re-runs the served session from its record: identical
    assert replay(read_trace(served), tmp_path / "replayed")["identical"] is True


@pytest.mark.slow
def test_only_tuneloop_is_installed(tmp_path):
    """`pip wheel .`: the wheel holds `tuneloop/` and its dist-info, nothing else."""
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w",
                        str(tmp_path), str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next(tmp_path.glob("tuneloop-*.whl"))
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"tuneloop", wheel.name.split("-py3")[0] + ".dist-info"}, tops
    names = zipfile.ZipFile(wheel).namelist()
    for must in ("tuneloop/__init__.py", "tuneloop/tools/kernels.py", "tuneloop/agent/session.py",
                 "tuneloop/evaluation/service/static/index.html", "tuneloop/prompts/default.txt", "tuneloop/py.typed"):
        assert must in names, must


def test_a_users_own_tools_and_agent_folders_do_not_shadow_tuneloop(tmp_path):
    for name in ("tools", "agent", "evaluation", "prompts"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name} was imported')\n")
    code = ("import tuneloop, tuneloop.tools.trials, tuneloop.agent.gbnf, tuneloop.evaluation.methods\n"
            "print(tuneloop.__version__)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() and r.stdout.strip()[0].isdigit()
    r = subprocess.run(["tuneloop", "--version"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("tuneloop ")


def test_every_method_runs_in_n_d(tmp_path):
    """--dim for a study: 10-D starts for every method and seed, named in the cell, the
    same start for every method of a seed; a 2-D-only objective says so."""
    cfg = EvalConfig(functions=["rosenbrock"], methods=["grid", "random", "cmaes", "tpe"], seeds=[0, 1], budget=6,
                     x0="random", dim=10, max_iter=300, workers=1, out=tmp_path / "study")
    rows = run_eval(cfg)
    assert {len(r["x0"].split()) for r in rows} == {10}
    for seed in (0, 1):
        assert len({r["x0"] for r in rows if r["seed"] == seed}) == 1
    cells = sorted(p.name for p in (tmp_path / "study" / "runs").iterdir())
    assert "cmaes-rosenbrock-d10-s0" in cells and all("-d10-" in c for c in cells)
    t = read_trace(tmp_path / "study" / "runs" / "tpe-rosenbrock-d10-s1")
    assert len(t.manifest["x0"]) == 10 and all(len(e["x_final"]) == 10 for e in t.of("trial_evaluated"))
    with pytest.raises(ValueError, match="beale is defined for dimension 2 only"):
        EvalConfig(functions=["beale"], dim=5)


def test_the_service_takes_dim(tmp_path):
    manager = SessionManager(tmp_path / "runs")
    client = TestClient(create_app(manager))
    sid = client.post("/api/sessions", json={"method": "cmaes", "function": "rastrigin", "budget": 4, "dim": 5,
                                             "x0": "random", "seed": 3}).json()["id"]
    deadline = time.monotonic() + 60
    while manager.is_active(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    manifest = client.get(f"/api/sessions/{sid}").json()["manifest"]
    assert len(manifest["x0"]) == 5 and manifest["x0_spec"] == "random"
    for bad in ({"function": "beale", "dim": 3}, {"function": "rosenbrock", "x0": [1, 2, 3], "dim": 3},
                {"function": "rosenbrock", "dim": 1}):
        r = client.post("/api/sessions", json={"method": "cmaes", "budget": 4} | bad)
        assert r.status_code == 422 and r.json()["detail"][0]["field"] == "dim", (bad, r.text)
    manager.shutdown()


def test_dim_flags_on_the_command_line(tmp_path, capsys):
    from tuneloop.evaluation.cli import main

    assert main(["eval", "--functions", "rosenbrock", "--methods", "grid", "--seeds", "0", "--budget", "3",
                 "--dim", "6", "--workers", "1", "--no-plots", "--out", str(tmp_path / "s")]) == 0
    assert "start point: random in 6-D" in (tmp_path / "s" / "summary.md").read_text()
    assert main(["eval", "--functions", "beale", "--dim", "5", "--out", str(tmp_path / "t")]) == 2
    assert main(["run", "--function", "beale", "--dim", "4", "--runs-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-2:] == ["error: --dim: beale is defined for dimension 2 only, not 5",
                        "error: --dim 4: beale is defined for dimension 2 only, not 4"]
    assert main(["sweep", "--function", "rastrigin", "--dim", "10", "--resolution", "8",
                 "--out", str(tmp_path / "s10.png")]) == 0
    import numpy as np

    assert len(np.load(tmp_path / "s10.npz")["x0"]) == 10
