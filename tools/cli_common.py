"""What every floor's commands share: argument parsing, the console, the JSON option,
and the entry point that turns a user's mistake into one line and exit code 2.

Kept free of heavy imports: `tuneloop gd` loads this, typer and the kernel, nothing else.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuneloop.tools.errors import UserError

if TYPE_CHECKING:
    from rich.console import Console

EXIT_USAGE = 2  # a user's mistake: bad flag, file, template, key...
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
EXIT_DIFFERS = 1  # the command ran, and its answer is "no" (a replay that diverged)

JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of text")]


def _is_number(tok: str) -> bool:
    try:
        float(tok)
    except ValueError:
        return False
    return True


MULTI_VALUE_OPTIONS = ("--x0", "--functions", "--methods", "--seeds", "--models", "--model", "--prompt",
                       "--centaur-ratio", "--centaur-warmup")


def join_multi_value_options(argv: list[str], options: tuple[str, ...] = MULTI_VALUE_OPTIONS) -> list[str]:
    """Turn `--x0 -1.5 2` into `--x0=-1.5,2` and `--seeds 0 1 2` into `--seeds=0,1,2`, so an
    option can take several values (click options take a fixed count, and `-1.5` would
    look like a flag). Values run up to the next token that starts with '-' and is not a
    number."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok in options:
            j = i + 1
            while j < len(argv) and (_is_number(argv[j]) or not argv[j].startswith("-")):
                j += 1
            if j > i + 1:
                out.append(f"{tok}={','.join(argv[i + 1 : j])}")
                i = j
                continue
        out.append(tok)
        i += 1
    return out


def parse_numbers(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip() != "")
    except ValueError:
        raise UserError(f"{what} must be numbers, got {text!r}") from None
    if not values:
        raise UserError(f"{what} needs at least one number")
    if not all(math.isfinite(v) for v in values):
        raise UserError(f"{what} must be finite, got {text!r}")
    return values


def check_lr(lr: float) -> float:
    if not (math.isfinite(lr) and 0.0 < lr <= 1.0):
        raise UserError(f"--lr must be a number in (0, 1], got {lr}")
    return lr


def check_momentum(beta: float) -> float:
    if not (math.isfinite(beta) and 0.0 <= beta < 1.0):
        raise UserError(f"--momentum must be a number in [0, 1), got {beta}")
    return beta


def check_range(
    values: tuple[float, float], name: str, low: float, high: float, log: bool = False
) -> tuple[float, float]:
    a, b = values
    if not (math.isfinite(a) and math.isfinite(b) and a < b and a >= low and b <= high and (not log or a > 0)):
        lo = f"({low:g}" if log else f"[{low:g}"
        raise UserError(f"{name} must be two increasing numbers within {lo}, {high:g}], got {a:g} {b:g}")
    return values


def split_names(text: str, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError(f"{what} needs at least one name")
    if allowed is not None:
        bad = [n for n in names if n not in allowed]
        if bad:
            raise UserError(f"unknown {what.lstrip('-')} {', '.join(bad)}; known: {', '.join(allowed)}")
    if len(set(names)) != len(names):
        raise UserError(f"{what} lists a name twice")
    return names


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` or ranges like `0-29` (inclusive)."""
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",") if p.strip()):
            if "-" in part[1:]:
                a, b = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise UserError(f"--seeds range {part} is reversed: write {hi}-{lo}")
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise UserError(f"--seeds must be integers or ranges like 0-29, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise UserError(f"--seeds must be non-negative integers, got {text!r}")
    return sorted(set(seeds))


def console() -> Console:
    """A rich console that does not squeeze wide tables into 80 columns when piped."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=220)


def new_app(help: str, **kw: Any) -> typer.Typer:
    """A Typer app with the project's settings (no completion, plain help, no pretty tracebacks)."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       rich_markup_mode=None, **kw)


def run_app(app: typer.Typer, argv: list[str] | None = None, prog_name: str = "tuneloop", obj: Any = None) -> int:
    """Run a Typer app; user mistakes end in one line on stderr and exit code 2. `obj`
    becomes the commands' `ctx.obj`."""
    args = join_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        # in non-standalone mode click returns a typer.Exit's code instead of raising it
        rv = app(args=args, prog_name=prog_name, standalone_mode=False, obj=obj)
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except typer.TyperException as e:
        # Typer vendors click; its exceptions are public only through this base class.
        # A usage error carries the context of the command it was raised in.
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError":  # how Typer itself recognises it
            print(ctx.get_help() if ctx else f"{prog_name} --help", file=sys.stderr)
        elif ctx is not None:
            print(f"error: {e.format_message()} (see `{ctx.command_path} --help`)", file=sys.stderr)
        else:
            print(f"error: {e.format_message()}", file=sys.stderr)
        return EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except typer.Exit as e:
        return e.exit_code
    except BrokenPipeError:
        return 1
    return 0


def exit_fast(code: int) -> None:
    """Leave through os._exit once output is flushed: tearing down numba's LLVM state in
    a normal interpreter exit costs about 0.2 s, a fifth of `tuneloop gd`'s time budget.
    Every command closes its own files before returning, so nothing is lost."""
    import os

    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)


def check_out(out: Path | None, suffix: str | None = None, flag: str = "--out") -> Path | None:
    """An output file, checked before any work: its folder exists, it is not a folder itself,
    and it ends in `suffix` (when given). Every command's --out (or other output flag, named
    by `flag` in the messages) goes through here."""
    if out is None:
        return None
    if suffix is not None and out.suffix.lower() != suffix:
        raise UserError(f"{flag} must name a {suffix} file, got {out}")
    if out.is_dir():
        raise UserError(f"{flag} is a folder, not a file: {out}")
    if not out.parent.is_dir():
        what = "is a file, not a folder" if out.parent.exists() else "does not exist"
        raise UserError(f"{flag}'s folder {what}: {out.parent}")
    return out
