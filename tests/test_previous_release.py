"""Runs written by the release before the `tuneloop.*` package (top-level `tools`,
`agent`, `evaluation`): an agent session with the embedded model, and a CMA-ES and a
Centaur cell of `tuneloop eval`, as that release wrote them (tests/data/previous_release).
They read, summarise, replay and export as they did."""

import json
import shutil
from pathlib import Path

import pytest

from tuneloop.evaluation.cli import main
from tuneloop.tools.record import read_trace

DATA = Path(__file__).parent / "data" / "previous_release"
RUNS = sorted(p.name for p in DATA.iterdir())


@pytest.fixture
def runs(tmp_path):
    out = tmp_path / "runs"
    shutil.copytree(DATA, out)
    return out


def test_the_runs_are_there():
    assert RUNS == ["20261130T062439-llm-4d56f4", "centaur-rosenbrock-s0", "cmaes-rosenbrock-s0"]


@pytest.mark.parametrize("name", RUNS)
def test_a_previous_release_run_reads_summarises_and_replays(runs, name, capsys):
    t = read_trace(runs / name)
    assert t.warnings == [] and t.finished is not None and t.manifest is not None
    assert main(["trace", "summary", str(runs / name), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["session_id"] == name and summary["stop_reason"] == t.finished["stop_reason"]
    charged = [e for e in t.of("trial_evaluated") if e["charged"]]
    assert len([r for r in summary["trials"] if r["charged"]]) == len(charged) == t.manifest["budget"]
    # re-run from the record: the same trials, results and final answer come out
    assert main(["trace", "replay", str(runs / name)]) == 0
    assert "identical" in capsys.readouterr().out


def test_previous_release_runs_compare_and_export(runs, tmp_path, capsys):
    dirs = [str(runs / n) for n in RUNS]
    assert main(["trace", "compare", *dirs, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3
    out = tmp_path / "traces.json"
    assert main(["trace", "export", *dirs, "--format", "otlp", "--out", str(out)]) == 0
    request = json.loads(out.read_text())
    assert len(request["resourceSpans"]) == 3
