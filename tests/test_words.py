"""What a newcomer reads: help for every option, command lists not cut short, plain
error messages, template descriptions."""

import pytest
import typer

from evaluation.cli import app, main


def commands(group, path=("tuneloop",)):
    """(path, click command) for every command of the app, sub-apps included."""
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


CLICK_APP = typer.main.get_command(app)


@pytest.mark.parametrize("path,cmd", list(commands(CLICK_APP)), ids=lambda v: " ".join(v) if isinstance(v, tuple) else "")
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


@pytest.mark.parametrize("argv,message", [
    (["eval", "--seeds", "5-2"], "error: --seeds range 5-2 is reversed: write 2-5"),
    (["gd", "--function", "beale", "--dim", "5"], "error: --dim 5: beale is defined for dimension 2 only, not 5"),
    (["gd", "--function", "beale", "--x0", "1", "2", "3"], "error: --x0 has 3 value(s): beale is defined for dimension 2 only"),
    (["run", "--price-in", "1"], "error: --price-in and --price-out go together"),
])
def test_mistakes_name_what_the_user_wrote(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_prompts_list_gives_a_complete_line_per_template(capsys):
    assert main(["prompts", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in lines]
    assert names == ["centaur", "default", "paper", "reasoning"]
    for line in lines:
        description = line.split(maxsplit=1)[1]
        assert description.endswith(".") and len(description) > 30, line  # a sentence, not a cut fragment
