"""The kernel's commands: `functions`, `gd`, and the kernel part of `bench`.

Heavy imports (numba through tools.momentum, rich) happen inside the commands, so the
root app can be built without loading them.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tuneloop.tools.cli_common import JsonOpt, check_lr, check_momentum, console, new_app, parse_numbers
from tuneloop.tools.defaults import DEFAULT_GRAD_CLIP, DEFAULT_LR_DECAY, DEFAULT_MAX_ITER, DEFAULT_TOL, START_SPECS
from tuneloop.tools.errors import UserError
from tuneloop.tools.formatting import finite_or_none

if TYPE_CHECKING:
    from tuneloop.tools.momentum import GDResult
    from tuneloop.tools.objectives import Objective

app = new_app("Objectives and the momentum-GD kernel.")

FunctionOpt = Annotated[
    str,
    typer.Option(
        "--function", "-f", help="objective name (see `tuneloop functions`) or a Python file defining f(x) and grad(x)"
    ),
]
X0Opt = Annotated[
    str | None,
    typer.Option(
        "--x0", help="start point: paper (-1.5, 2) | random (drawn from the seed) | numbers, e.g. --x0 -1.5 2"
    ),
]
DimOpt = Annotated[
    int | None,
    typer.Option("--dim", min=2, max=1000,
                 help="dimension of a paper or random start (N-D objectives; default 2)"),
]
SpaceOpt = Annotated[
    Path | None,
    typer.Option("--space", help="a search-space JSON file: the parameters to tune and their ranges or choices "
                                 "(default: learning_rate log [1e-4, 0.1], momentum [0, 0.99]; docs/reference.md)"),
]
TaskOpt = Annotated[
    str | None,
    typer.Option("--task", help="tune a task instead of GD: a built-in one (mlp-digits) or a Python file with SPACE "
                                "and evaluate(params, seed) (docs/tasks.md)"),
]
MaxIterOpt = Annotated[int, typer.Option("--max-iter", min=1, help="iteration cap T")]


def task_or_exit(spec: str, space: Path | None) -> tuple[str, Any]:
    """(the task's spec, its search space: a --space file if given, else its SPACE), or a
    UserError naming what is wrong."""
    from tuneloop.tools.space import SearchSpace
    from tuneloop.tools.tasks import load_task

    task = load_task(spec)
    return spec, task.space if space is None else SearchSpace.from_file(space)


def space_or_exit(path: Path | None) -> Any:
    """The SearchSpace in `path` (None: the default space), checked against what momentum
    GD takes, or a UserError naming the file and the problem."""
    from tuneloop.tools.gd_space import DEFAULT_SPACE, check_gd_space
    from tuneloop.tools.space import SearchSpace, SpaceError

    if path is None:
        return DEFAULT_SPACE
    space = SearchSpace.from_file(path)
    try:
        return check_gd_space(space)
    except SpaceError as e:
        raise SpaceError(f"the space file {path}: {e}") from None
TolOpt = Annotated[float, typer.Option("--tol", min=0.0, help="stop when ||v|| < tol")]


def objective_or_exit(name: str) -> Objective:
    """The objective called `name`, or a UserError listing the known ones."""
    from tuneloop.tools.objectives import UnknownObjectiveError, get_objective

    try:
        return get_objective(name)
    except UnknownObjectiveError as e:
        raise UserError(str(e)) from None


def start_or_exit(
    obj: Objective, x0: str | None, dim: int | None = None, seed: int = 0
) -> tuple[str, tuple[float, ...]]:
    """--x0 -> (how it was chosen, the start point): "paper" (the default: the study's
    point, its pattern repeated to `dim`), "random" (drawn from `seed`) or numbers;
    checked against the objective's dimensions."""
    from tuneloop.tools.momentum import start_point

    if x0 is None or x0 in START_SPECS:
        label = x0 or "paper"
        start = start_point(label, seed, dim or 2)
    else:
        label, start = "explicit", parse_numbers(x0, "--x0 (paper, random or numbers)")
        if dim is not None and len(start) != dim:
            raise UserError(f"--x0 has {len(start)} values but --dim is {dim}")
    try:
        obj.check_dim(len(start))
    except ValueError as e:
        # blame the flag the user actually gave
        raise UserError(f"--x0 has {len(start)} value(s): {e}" if label == "explicit" else
                        f"--dim {len(start)}: {e}") from None
    warn_about_gradient(obj, start)
    return label, start


def warn_about_gradient(obj: Objective, start: tuple[float, ...]) -> None:
    """An objective from a file: say so on stderr when grad disagrees with f at the start."""
    from tuneloop.tools.objectives import USER_FID, UserObjective

    if obj.fid == USER_FID:
        assert isinstance(obj, UserObjective)  # the only objectives with USER_FID
        warning = obj.gradient_warning(start)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)


def function_rows() -> list[dict[str, Any]]:
    """The built-in objectives as `tuneloop functions --json` (and the service) show them."""
    from tuneloop.tools.objectives import OBJECTIVES

    return [
        dict(name=o.name, dims="any" if o.any_dim else "2", minimum_2d=o.minimum(2),
             minimisers_2d=o.minimisers(2).tolist(), domain=list(o.domain), formula=o.formula,
             description=o.description)
        for o in OBJECTIVES.values()
    ]


def run_json(r: GDResult) -> dict[str, Any]:
    """One momentum-GD run (a GDResult) as JSON shows it: non-finite numbers as null."""
    return dict(
        function=r.objective, learning_rate=r.alpha, momentum=r.beta, x0=list(r.x0), status=r.status,
        final_value=finite_or_none(r.final_value), iterations=r.iterations,
        x_final=[finite_or_none(v) for v in r.x_final], distance_to_optimum=finite_or_none(r.distance_to_optimum),
        best_value=finite_or_none(r.best_value),
    )


@app.command()
def functions(as_json: JsonOpt = False) -> None:
    """List the benchmark objectives."""
    rows = function_rows()
    if as_json:
        print(json.dumps(rows))
        return
    from rich.table import Table

    table = Table(title="tuneloop objectives")
    for col in ("name", "dims", "min (2-D)", "minimiser(s) (2-D)", "domain", "formula"):
        table.add_column(col, overflow="fold")
    for r in rows:
        mins = "; ".join(f"({a:.4g}, {b:.4g})" for a, b in r["minimisers_2d"])
        table.add_row(r["name"], r["dims"], f"{r['minimum_2d']:.6g}", mins,
                      f"[{r['domain'][0]:g}, {r['domain'][1]:g}]", r["formula"])
    console().print(table)


@app.command()
def gd(
    function: FunctionOpt = "rosenbrock",
    lr: Annotated[float, typer.Option("--lr", help="learning rate alpha, in (0, 1]")] = 1e-3,
    momentum: Annotated[float, typer.Option("--momentum", help="momentum beta, in [0, 1)")] = 0.9,
    max_iter: MaxIterOpt = DEFAULT_MAX_ITER,
    tol: TolOpt = DEFAULT_TOL,
    x0: X0Opt = None,
    dim: DimOpt = None,
    nesterov: Annotated[bool, typer.Option(
        "--nesterov", help="Nesterov momentum: take the gradient at the look-ahead point x + momentum v")] = False,
    lr_decay: Annotated[float, typer.Option(
        "--lr-decay", metavar="G", help="decay the learning rate: lr / (1 + G t) at update t = 0, 1, ... (0: none)",
    )] = DEFAULT_LR_DECAY,
    grad_clip: Annotated[float | None, typer.Option(
        "--grad-clip", metavar="C", help="clip the gradient's Euclidean norm at C > 0 (default: no clipping)",
    )] = DEFAULT_GRAD_CLIP,
    as_json: JsonOpt = False,
) -> None:
    """Run gradient descent with momentum once and print the result."""
    obj = objective_or_exit(function)
    check_lr(lr)
    check_momentum(momentum)
    if not math.isfinite(tol):
        raise UserError(f"--tol must be finite, got {tol}")
    from tuneloop.tools.momentum import kernel_knobs, run

    try:
        kernel_knobs(nesterov, lr_decay, grad_clip, names=("--nesterov", "--lr-decay", "--grad-clip"))
    except ValueError as e:
        raise UserError(str(e)) from None
    _, start = start_or_exit(obj, x0, dim)
    r = run(obj, lr, momentum, x0=start, max_iter=max_iter, tol=tol, nesterov=nesterov, lr_decay=lr_decay,
            grad_clip=grad_clip)
    run_fields = run_json(r)
    # the order the JSON always had: the run's settings first (the knobs after tol)
    out = {k: run_fields[k] for k in ("function", "learning_rate", "momentum", "x0")} | \
        dict(max_iter=max_iter, tol=tol, nesterov=r.nesterov, lr_decay=r.lr_decay, grad_clip=r.grad_clip) | run_fields
    if as_json:
        print(json.dumps(out))
        return
    fx = "nan (diverged)" if out["final_value"] is None else f"{r.final_value:.6g}"
    xs = ", ".join("nan" if v is None else f"{v:.6g}" for v in out["x_final"])
    dist = "n/a" if out["distance_to_optimum"] is None else f"{r.distance_to_optimum:.3g}"
    knobs = "".join(["  nesterov" if r.nesterov else "", f"  lr_decay={r.lr_decay:g}" if r.lr_decay else "",
                     "" if r.grad_clip is None else f"  grad_clip={r.grad_clip:g}"])
    print(f"{r.objective}  lr={r.alpha:g}  momentum={r.beta:g}{knobs}  x0=({', '.join(f'{v:g}' for v in r.x0)})")
    print(f"  status     {r.status} after {r.iterations} iterations (max {max_iter}, tol {tol:g})")
    print(f"  f(x_final) {fx}   best seen {r.best_value:.6g}")
    print(f"  x_final    ({xs})   distance to optimum {dist}")


def kernel_bench(configs: int, max_iter: int, repeats: int, no_numpy: bool, as_json: bool) -> dict[str, Any]:
    """Measure the kernel: ns per iteration and batch throughput, with ratios. Prints the
    tables unless `as_json`; returns the figures (the `tuneloop bench` command, which also
    times the local model's decoding, lives on the agent floor)."""
    from rich.console import Console

    from tuneloop.tools import bench as b

    status = Console(stderr=True).status("measuring single runs")
    status.start()
    # each knob's row next to the plain row it changes (b.BENCH_KNOBS: the settings)
    single = {"rosenbrock 2-D": b.single_ns_per_iter("rosenbrock", repeats=repeats)}
    for knob, setting in b.BENCH_KNOBS.items():
        single[f"rosenbrock 2-D {knob}"] = b.single_ns_per_iter("rosenbrock", repeats=repeats, **setting)
    single["rastrigin 2-D"] = b.single_ns_per_iter("rastrigin", iters=500_000, repeats=repeats)
    nd = "rosenbrock d=1000 (per dim)"
    single[nd] = b.single_ns_per_iter("rosenbrock", iters=20_000, repeats=repeats, dim=1000)
    for knob, setting in b.BENCH_KNOBS.items():
        single[f"{nd} {knob}"] = b.single_ns_per_iter("rosenbrock", iters=20_000, repeats=repeats, dim=1000, **setting)
    status.update(f"measuring the batch paths on {configs} configs" + ("" if no_numpy else " (NumPy last, slowest)"))
    try:
        rows, same, threads = b.batch_rows("rosenbrock", configs, max_iter=max_iter, repeats=repeats,
                                           numpy_ref=not no_numpy)
    finally:
        status.stop()
    ref = rows[-1].updates_per_s if not no_numpy else rows[1].updates_per_s
    figures = dict(
        single_ns_per_iter=single, knob_settings=b.BENCH_KNOBS, threads=threads, identical_results=same,
        batch=[dict(name=r.name, seconds=r.seconds, configs_per_s=r.configs_per_s,
                    updates_per_s=r.updates_per_s, ratio=r.updates_per_s / ref) for r in rows],
    )
    if as_json:
        return figures
    from rich.table import Table

    con = console()
    t1 = Table(title="single run (after compilation)")
    t1.add_column("workload")
    t1.add_column("ns / iteration", justify="right")
    for k, v in single.items():
        t1.add_row(k, f"{v:.2f}")
    con.print(t1)
    ref_name = "NumPy" if not no_numpy else "numba serial"
    t2 = Table(title=f"batch: {configs} random configs on rosenbrock 2-D, T={max_iter}, {threads} threads")
    for col in ("path", "seconds", "configs/s", "M updates/s", f"x {ref_name}"):
        t2.add_column(col, justify="right" if col != "path" else "left")
    for r in rows:
        t2.add_row(r.name, f"{r.seconds:.3f}", f"{r.configs_per_s:,.0f}", f"{r.updates_per_s / 1e6:,.0f}",
                   f"{r.updates_per_s / ref:.1f}")
    con.print(t2)
    con.print(f"all paths give identical iterations and statuses: {same}")
    return figures
