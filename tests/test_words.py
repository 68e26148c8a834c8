"""What a newcomer reads: help for every option, command lists not cut short, plain
error messages, template descriptions."""

import json
from pathlib import Path

import pytest
import typer

from tuneloop.evaluation.cli import app, main


def commands(group, path=("tuneloop",)):
    """(path, click command) for every command of the app, sub-apps included."""
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


CLICK_APP = typer.main.get_command(app)


@pytest.mark.parametrize(
    "path,cmd", list(commands(CLICK_APP)), ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_option_has_help(path, cmd):
    missing = [p.opts[0] for p in cmd.params if getattr(p, "opts", None) and p.opts[0].startswith("--")
               and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"{' '.join(path)}: no help for {', '.join(missing)}"


@pytest.mark.parametrize("argv", [["--help"], ["trace", "--help"], ["prompts", "--help"]])
def test_command_lists_are_not_cut_short(argv, capsys):
    assert main(argv) == 0
    out = capsys.readouterr().out
    listing = out.split("Commands:", 1)[1]
    assert "..." not in listing, listing


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval", "--seeds", "5-2"], "error: --seeds range 5-2 is reversed: write 2-5"),
        (["gd", "--function", "beale", "--dim", "5"], "error: --dim 5: beale is defined for dimension 2 only, not 5"),
        (
            ["gd", "--function", "beale", "--x0", "1", "2", "3"],
            "error: --x0 has 3 value(s): beale is defined for dimension 2 only",
        ),
        (["run", "--price-in", "1"], "error: --price-in and --price-out go together"),
    ],
)
def test_mistakes_name_what_the_user_wrote(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_prompts_list_gives_a_complete_line_per_template(capsys):
    assert main(["prompts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["centaur", "centaur-task", "default", "hollm", "lean", "llambo", "paper", "reasoning", "sllmbo",
                     "task", "untried"]
    for line in lines:
        description = line.split(maxsplit=1)[1]
        assert description.endswith(".") and len(description) > 30, line  # a sentence, not a cut fragment


def scripted(*items):
    from tuneloop.agent.scripted import ScriptedChatModel

    return lambda settings: ScriptedChatModel(script=list(items))


def gd(lr, mom):
    return {"name": "run_momentum_gd", "args": {"learning_rate": lr, "momentum": mom}}


FINAL = {"name": "FinalAnswer", "args": {"learning_rate": 1e-3, "momentum": 0.9, "rationale": "the best trial"}}


def test_a_session_where_every_trial_diverged_says_so_and_what_to_try(tmp_path, capsys):
    code = main(
        ["run", "--budget", "2", "--runs-dir", str(tmp_path)],
        model_factory=scripted(gd(0.05, 0.9), gd(0.09, 0.5), FINAL),
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "note   every trial diverged: the learning rates tried are too large for rosenbrock" in out
    assert "tuneloop sweep --function rosenbrock" in out


def test_a_session_where_nothing_converged_says_so(tmp_path, capsys):
    code = main(["run", "--budget", "1", "--max-iter", "50", "--runs-dir", str(tmp_path)],
                model_factory=scripted(gd(1e-4, 0.5), FINAL))
    out = capsys.readouterr().out
    assert code == 0 and "note   no trial converged" in out and "--max-iter" in out


def test_configurations_that_differ_print_differently(tmp_path, capsys):
    main(["run", "--budget", "2", "--runs-dir", str(tmp_path)],
         model_factory=scripted(gd(1e-4, 0.15805), gd(1e-4, 0.15821), FINAL))
    out = capsys.readouterr().out
    assert "mom=0.15805" in out and "mom=0.15821" in out


def test_piped_summary_lines_are_not_wrapped(tmp_path, capsys):
    main(["run", "--budget", "1", "--runs-dir", str(tmp_path)], model_factory=scripted(gd(1e-3, 0.9), FINAL))
    lines = capsys.readouterr().out.splitlines()
    trials = next(line for line in lines if line.startswith("trials charged"))
    assert "tokens in/out" in trials and len(trials) > 80  # one line, however long


def test_an_interrupted_session_ends_with_its_resume_command_and_resumes_like_a_fresh_one(tmp_path, capsys):
    def interrupt(messages, kwargs):
        raise KeyboardInterrupt

    code = main(["run", "--budget", "3", "--runs-dir", str(tmp_path)],
                model_factory=scripted(gd(1e-3, 0.9), interrupt))
    out = capsys.readouterr().out
    run_dir = next(tmp_path.iterdir())
    assert code == 130 and f"resume it with: tuneloop run --resume {run_dir}" in out
    code = main(["run", "--resume", str(run_dir)], model_factory=scripted(gd(1e-4, 0.5), gd(2e-3, 0.8), FINAL))
    out, err = capsys.readouterr()
    assert code == 0
    assert f"resuming session {run_dir.name}: rosenbrock, budget 3" in err
    assert out.count("\n#") >= 1 and "#2" in out and "#3" in out  # a line per new trial, numbered on
    # whole-session figures with this segment's beside them: 1 answered call before the
    # interrupt (the interrupted one never returned), 3 now
    assert "whole session 2 segments: trials charged 3/3" in out
    assert "model calls 4 (this segment: 3)" in out
    # trace summary sums the segments too
    assert main(["trace", "summary", str(run_dir), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    fins = [json.loads(x) for x in (run_dir / "trace.jsonl").read_text().splitlines()
            if json.loads(x)["event"] == "session_finished"]
    assert s["segments"] == 2 and s["time"]["wall_s"] == pytest.approx(sum(f["wall_s"] for f in fins))


def test_a_junk_rationale_and_a_diverged_recommendation_are_not_reported_as_they_came(tmp_path, capsys):
    junk = {"name": "FinalAnswer", "args": {"learning_rate": 0.05, "momentum": 0.9, "rationale": "},"}}
    code = main(["run", "--budget", "2", "--runs-dir", str(tmp_path), "--json"],
                model_factory=scripted(gd(1e-3, 0.9), gd(0.05, 0.9), junk))
    d = json.loads(capsys.readouterr().out)
    rec = d["recommendation"]
    assert code == 0 and (rec["learning_rate"], rec["momentum"]) == (1e-3, 0.9)  # the best trial, not the diverged one
    assert "which diverged; the best trial is reported instead" in rec["rationale"]
    assert "The model's rationale was not text: '},'" in rec["rationale"]
    assert "The recommended configuration is trial 1 (learning_rate=0.001, momentum=0.9) converged" in rec["rationale"]
    events = [json.loads(x) for x in (Path(d["run_dir"]) / "trace.jsonl").read_text().splitlines()]
    vet = next(e for e in events if e["event"] == "recommendation_vetted")
    assert vet["model_recommendation"]["rationale"] == "},"  # the model's own answer stays in the trace


def test_a_good_answer_is_reported_as_it_came(tmp_path, capsys):
    code = main(
        ["run", "--budget", "1", "--runs-dir", str(tmp_path), "--json"], model_factory=scripted(gd(1e-3, 0.9), FINAL)
    )
    rec = json.loads(capsys.readouterr().out)["recommendation"]
    assert code == 0 and rec == {"learning_rate": 1e-3, "momentum": 0.9, "rationale": "the best trial"}


def test_a_recommendation_that_is_not_the_best_trial_says_so_and_trace_summary_shows_it(tmp_path, capsys):
    second_best = {"name": "FinalAnswer", "args": {"learning_rate": 1e-4, "momentum": 0.5,
                                                   "rationale": "a safe and steady choice."}}
    code = main(["run", "--budget", "2", "--runs-dir", str(tmp_path)],
                model_factory=scripted(gd(1e-3, 0.9), gd(1e-4, 0.5), second_best))
    out = capsys.readouterr().out
    assert code == 0
    assert "agent recommends lr=0.0001 momentum=0.5: a safe and steady choice." in out
    assert "note   the agent's pick is trial 2 (f=" in out and "not the best trial 1 (f=" in out
    run_dir = next(tmp_path.iterdir())
    assert main(["trace", "summary", str(run_dir)]) == 0
    assert "recommendation: lr=0.0001 momentum=0.5: a safe and steady choice." in capsys.readouterr().out


def test_the_recommendation_line_says_whose_choice_it_is(tmp_path, capsys):
    diverged = {"name": "FinalAnswer", "args": {"learning_rate": 0.05, "momentum": 0.9,
                                                "rationale": "A learning rate of 0.05 with momentum of 0.9 was best."}}
    main(["run", "--budget", "2", "--runs-dir", str(tmp_path / "a")],
         model_factory=scripted(gd(1e-3, 0.9), gd(0.05, 0.9), diverged))
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(("tuneloop reports", "agent recommends")))
    # tuneloop's report, not the agent's: its words, then the agent's quoted and attributed
    assert line.startswith("tuneloop reports lr=0.001 momentum=0.9: The model recommended learning_rate=0.05")
    assert 'The model wrote: "A learning rate of 0.05 with momentum of 0.9 was best."' in line
    main(["run", "--budget", "1", "--runs-dir", str(tmp_path / "b")], model_factory=scripted(gd(1e-3, 0.9), FINAL))
    assert "agent recommends lr=0.001 momentum=0.9: the best trial" in capsys.readouterr().out


def test_the_session_header_comes_first_and_an_early_ctrl_c_says_no_call_finished(tmp_path, capsys):
    def interrupt(messages, kwargs):
        raise KeyboardInterrupt

    code = main(["run", "--budget", "3", "--runs-dir", str(tmp_path)], model_factory=scripted(interrupt))
    out, err = capsys.readouterr()
    assert code == 130 and err.startswith("session: rosenbrock, budget 3, model local")
    assert "tokens in/out none (no model call finished)" in out and "server reports no usage" not in out
