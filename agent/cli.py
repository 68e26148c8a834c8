"""The `tuneloop` command.

This is the composition root: it is the one module on the agent side that also reaches
into `evaluation` (for eval, reproduce, trace and plots). Heavy imports (LangChain,
matplotlib, Optuna) happen inside the commands that need them, so `tuneloop gd` loads
only numpy and numba.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from agent.cli_args import (
    check_lr, check_momentum, check_range, join_multi_value_options, parse_numbers, parse_seeds, split_names,
)
from agent.errors import UserError

app = typer.Typer(
    name="tuneloop",
    help="LLM agents as hyperparameter tuners for gradient descent with momentum.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

FunctionOpt = Annotated[str, typer.Option("--function", "-f", help="objective name (see `tuneloop functions`)")]
X0Opt = Annotated[Optional[str], typer.Option("--x0", help="start point: numbers, e.g. --x0 -1.5 2")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print one JSON object instead of text")]


def _objective(name: str):
    from tools.objectives import UnknownObjectiveError, get_objective

    try:
        return get_objective(name)
    except UnknownObjectiveError as e:
        raise UserError(str(e)) from None


def _start(obj, x0: str | None, dim: int | None) -> tuple[float, ...]:
    from tools.momentum import default_start

    if x0 is None:
        start = default_start(dim or 2)
    else:
        start = parse_numbers(x0, "--x0")
        if dim is not None and len(start) != dim:
            raise UserError(f"--x0 has {len(start)} values but --dim is {dim}")
    try:
        obj.check_dim(len(start))
    except ValueError as e:
        raise UserError(f"--x0 has {len(start)} value(s): {e}") from None
    return start


def _json_num(v: float | None):
    return v if v is not None and math.isfinite(v) else None


@app.command()
def functions(as_json: JsonOpt = False) -> None:
    """List the benchmark objectives."""
    from tools.objectives import OBJECTIVES

    rows = [
        dict(name=o.name, dims="any" if o.any_dim else "2", minimum_2d=o.minimum(2),
             minimisers_2d=o.minimisers(2).tolist(), domain=list(o.domain), formula=o.formula,
             description=o.description)
        for o in OBJECTIVES.values()
    ]
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
    _console().print(table)


@app.command()
def gd(
    function: FunctionOpt = "rosenbrock",
    lr: Annotated[float, typer.Option("--lr", help="learning rate alpha, in (0, 1]")] = 1e-3,
    momentum: Annotated[float, typer.Option("--momentum", help="momentum beta, in [0, 1)")] = 0.9,
    max_iter: Annotated[int, typer.Option("--max-iter", min=1, help="iteration cap T")] = 5000,
    tol: Annotated[float, typer.Option("--tol", min=0.0, help="stop when ||v|| < tol")] = 1e-6,
    x0: X0Opt = None,
    dim: Annotated[Optional[int], typer.Option("--dim", min=2, help="dimension (N-D objectives)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run gradient descent with momentum once and print the result."""
    obj = _objective(function)
    check_lr(lr)
    check_momentum(momentum)
    if not math.isfinite(tol):
        raise UserError(f"--tol must be finite, got {tol}")
    start = _start(obj, x0, dim)
    from tools.momentum import run

    r = run(obj, lr, momentum, x0=start, max_iter=max_iter, tol=tol)
    out = dict(
        function=r.objective, learning_rate=r.alpha, momentum=r.beta, x0=list(r.x0),
        max_iter=max_iter, tol=tol, status=r.status, final_value=_json_num(r.final_value),
        iterations=r.iterations, x_final=[_json_num(v) for v in r.x_final],
        distance_to_optimum=_json_num(r.distance_to_optimum), best_value=_json_num(r.best_value),
    )
    if as_json:
        print(json.dumps(out))
        return
    fx = "nan (diverged)" if out["final_value"] is None else f"{r.final_value:.6g}"
    xs = ", ".join("nan" if v is None else f"{v:.6g}" for v in out["x_final"])
    dist = "n/a" if out["distance_to_optimum"] is None else f"{r.distance_to_optimum:.3g}"
    print(f"{r.objective}  lr={r.alpha:g}  momentum={r.beta:g}  x0=({', '.join(f'{v:g}' for v in r.x0)})")
    print(f"  status     {r.status} after {r.iterations} iterations (max {max_iter}, tol {tol:g})")
    print(f"  f(x_final) {fx}   best seen {r.best_value:.6g}")
    print(f"  x_final    ({xs})   distance to optimum {dist}")


@app.command()
def sweep(
    function: FunctionOpt = "rosenbrock",
    lr_range: Annotated[tuple[float, float], typer.Option("--lr-range", help="alpha range (log-spaced)")] = (1e-5, 1e-1),
    momentum_range: Annotated[tuple[float, float], typer.Option("--momentum-range", help="beta range")] = (0.0, 0.99),
    resolution: Annotated[int, typer.Option("--resolution", min=2, max=2048, help="grid points per axis")] = 256,
    max_iter: Annotated[int, typer.Option("--max-iter", min=1)] = 5000,
    tol: Annotated[float, typer.Option("--tol", min=0.0)] = 1e-6,
    x0: X0Opt = None,
    out: Annotated[Path, typer.Option("--out", help="PNG to write; the data goes beside it as .npz")] = Path("sweep.png"),
) -> None:
    """Map the final value over the (log alpha, beta) grid: a heatmap PNG plus raw data."""
    obj = _objective(function)
    check_range(lr_range, "--lr-range", 0.0, 1.0, log=True)
    check_range(momentum_range, "--momentum-range", 0.0, 1.0)
    if momentum_range[1] >= 1.0:
        raise UserError("--momentum-range must stay below 1")
    start = _start(obj, x0, None)
    if out.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {out}")
    if not out.parent.exists():
        raise UserError(f"--out's folder does not exist: {out.parent}")
    import time

    from tools.sweep import sweep as run_sweep

    from rich.console import Console

    t0 = time.perf_counter()
    with Console(stderr=True).status(f"running {resolution * resolution} momentum-GD runs"):
        land = run_sweep(obj.name, lr_range, momentum_range, resolution, x0=start, max_iter=max_iter, tol=tol)
    secs = time.perf_counter() - t0
    from evaluation.report import plot_landscape

    plot_landscape(land, out)
    data = out.with_suffix(".npz")
    land.to_npz(data)
    n = resolution * resolution
    div = int((land.status_code == 2).sum())
    print(f"{n} runs in {secs:.2f} s; {div} diverged; best final value {float(min(land.final_value[~(land.status_code == 2)], default=math.nan)):.4g}")
    print(f"wrote {out} and {data}")


@app.command()
def bench(
    configs: Annotated[int, typer.Option("--configs", min=100, help="batch size for the throughput rows")] = 100_000,
    max_iter: Annotated[int, typer.Option("--max-iter", min=10)] = 5000,
    repeats: Annotated[int, typer.Option("--repeats", min=1)] = 3,
    no_numpy: Annotated[bool, typer.Option("--no-numpy", help="skip the (slow) NumPy reference")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the kernel: ns per iteration and batch throughput, with ratios."""
    from rich.console import Console

    from tools import bench as b

    status = Console(stderr=True).status("measuring single runs")
    status.start()
    single = {
        "rosenbrock 2-D": b.single_ns_per_iter("rosenbrock", repeats=repeats),
        "rastrigin 2-D": b.single_ns_per_iter("rastrigin", iters=500_000, repeats=repeats),
        "rosenbrock d=1000 (per dim)": b.single_ns_per_iter("rosenbrock", iters=20_000, repeats=repeats, dim=1000),
    }
    status.update(f"measuring the batch paths on {configs} configs" + ("" if no_numpy else " (NumPy last, slowest)"))
    try:
        rows, same, threads = b.batch_rows("rosenbrock", configs, max_iter=max_iter, repeats=repeats,
                                           numpy_ref=not no_numpy)
    finally:
        status.stop()
    ref = rows[-1].updates_per_s if not no_numpy else rows[1].updates_per_s
    if as_json:
        print(json.dumps(dict(
            single_ns_per_iter=single, threads=threads, identical_results=same,
            batch=[dict(name=r.name, seconds=r.seconds, configs_per_s=r.configs_per_s,
                        updates_per_s=r.updates_per_s, ratio=r.updates_per_s / ref) for r in rows],
        )))
        return
    from rich.table import Table

    con = _console()
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


def resolve_x0(spec: str | None, obj, seed: int, dim: int = 2) -> tuple[str, tuple[float, ...]]:
    """--x0 paper | random | numbers -> (spec label, start point)."""
    from tools.momentum import default_start, random_start

    if spec is None or spec == "paper":
        start, label = default_start(dim), "paper"
    elif spec == "random":
        start, label = random_start(seed, dim), "random"
    else:
        start, label = parse_numbers(spec, "--x0 (paper, random or numbers)"), "explicit"
    try:
        obj.check_dim(len(start))
    except ValueError as e:
        raise UserError(f"--x0 has {len(start)} value(s): {e}") from None
    return label, start


def _model_settings(model: str, temperature: float | None, max_tokens: int | None, seed: int,
                    timeout: float, base_url: str | None, api_key_env: str):
    from agent.models import ModelSettings

    kw = dict(model=model, seed=seed, timeout_s=timeout, base_url=base_url, api_key_env=api_key_env)
    if temperature is not None:
        kw["temperature"] = temperature
    if max_tokens is not None:
        kw["max_tokens"] = max_tokens
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise UserError(f"--base-url must start with http:// or https://, got {base_url!r}")
    try:
        return ModelSettings(**kw)
    except ValueError as e:
        raise UserError(f"bad model settings: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None


ModelOpt = Annotated[str, typer.Option("--model", "-m", help="local | openai:<model> (e.g. openai:gpt-4o-mini)")]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="template name (see `tuneloop prompts list`) or path")]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")]
KeyEnvOpt = Annotated[str, typer.Option("--api-key-env", help="environment variable holding the API key")]
TempOpt = Annotated[Optional[float], typer.Option("--temperature", help="sampling temperature (default 1.0)")]
MaxTokOpt = Annotated[Optional[int], typer.Option("--max-tokens", help="max tokens per model reply")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="request timeout in seconds (remote models)")]


@app.command()
def run(
    function: FunctionOpt = "rosenbrock",
    budget: Annotated[int, typer.Option("--budget", "-b", min=1, max=10_000, help="charged evaluations")] = 10,
    model: ModelOpt = "local",
    prompt: PromptOpt = "default",
    seed: Annotated[int, typer.Option("--seed", help="seeds the model and a random start")] = 0,
    x0: Annotated[Optional[str], typer.Option("--x0", help="paper | random | X Y")] = None,
    max_iter: Annotated[int, typer.Option("--max-iter", min=1)] = 5000,
    tol: Annotated[float, typer.Option("--tol", min=0.0)] = 1e-6,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="where run directories go")] = Path("runs"),
    temperature: TempOpt = None,
    max_tokens: MaxTokOpt = None,
    timeout: TimeoutOpt = 60.0,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = "OPENAI_API_KEY",
    resume: Annotated[Optional[Path], typer.Option("--resume", help="continue an interrupted run directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one agent session: the model proposes, the tool evaluates, until the budget is spent."""
    if resume is not None:
        return _resume(resume, as_json, api_key_env)
    obj = _objective(function)
    label, start = resolve_x0(x0, obj, seed)
    settings = _model_settings(model, temperature, max_tokens, seed, timeout, base_url, api_key_env)
    from agent.models import make_chat_model
    from agent.prompts import load_template
    from agent.session import SessionConfig, run_session
    from tools.trials import EvaluatorConfig

    load_template(prompt)  # a bad template is reported before the model loads
    cfg = SessionConfig(
        evaluator=EvaluatorConfig(objective=obj.name, x0=start, max_iter=max_iter, tol=tol, budget=budget),
        model=settings, prompt=prompt, seed=seed, x0_spec=label, runs_dir=runs_dir,
    )
    from rich.console import Console

    err = Console(stderr=True)
    chat_model = make_chat_model(settings)
    best: dict = {}

    def show(f: dict) -> None:
        if as_json:
            return
        if not f["repeat"] and (not best or f["score"] < best["score"]):
            best.update(f)
        fmt = (lambda v: "nan" if v is None else format(v, ".3g"))
        tag = "  repeat" if f["repeat"] else ""
        print(f"#{f['trial']:<3} lr={f['learning_rate']:<9.3g} mom={f['momentum']:<7.3g} {f['status']:<9} "
              f"f={fmt(f['final_value']):<9} it={f['iterations']:<5} "
              f"best={fmt(best.get('final_value')) if best.get('final_value') is not None else '-':<9} "
              f"left={f['budget_left']}{tag}", flush=True)

    if not as_json:
        err.print(f"[dim]session: {obj.name}, budget {budget}, model {settings.model}, prompt {prompt}, "
                  f"x0 {start} ({label})[/dim]")
    _report_session(run_session(cfg, chat_model=chat_model, on_trial=show), as_json)


def _resume(run_dir: Path, as_json: bool, api_key_env: str) -> None:
    from agent.models import make_chat_model
    from agent.resume import config_from_manifest, finished_reason
    from agent.session import run_session

    t = _read(run_dir)
    if not t.manifest:
        raise UserError(f"{run_dir} has no manifest.json: it cannot be resumed")
    if t.method != "llm":
        raise UserError(f"{run_dir} is a {t.method} run; only agent sessions resume (re-run `tuneloop eval` instead)")
    reason = finished_reason(t.events)
    if reason in ("budget_spent", "final_answer"):
        raise UserError(f"{run_dir} already finished ({reason}); nothing to resume")
    cfg = config_from_manifest(t.manifest).model_copy(update={"runs_dir": t.run_dir.parent})
    if api_key_env != cfg.model.api_key_env:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"api_key_env": api_key_env})})
    _report_session(run_session(cfg, chat_model=make_chat_model(cfg.model), session_id=t.run_dir.name,
                                resume_events=t.events), as_json)


def _report_session(result, as_json: bool) -> None:
    """A finished session: its JSON or its summary; exit 130 if interrupted, 2 on a model error."""
    if as_json:
        d = result.model_dump(exclude={"trials"})
        d["best"] = result.best.model_dump(exclude={"curve"}) if result.best else None
        print(json.dumps(d))
    else:
        from rich.console import Console

        _print_session_summary(Console(), result)
    if result.stop_reason == "interrupted":
        raise typer.Exit(130)
    if result.stop_reason == "model_error":
        raise UserError(f"model error: {result.error} (trace kept in {result.run_dir})")


def _print_session_summary(out, r) -> None:
    b = r.best
    out.print()
    if b is not None:
        fv = "nan (diverged)" if b.final_value is None else f"{b.final_value:.6g}"
        out.print(f"[bold]best[/bold]   trial {b.trial}: lr={b.learning_rate:g} momentum={b.momentum:g} -> "
                  f"{b.status}, f={fv}, {b.iterations} iterations")
    else:
        out.print("[bold]best[/bold]   no trial was charged")
    if r.recommendation is not None:
        rec = r.recommendation
        out.print(f"[bold]agent recommends[/bold] lr={rec.learning_rate:g} momentum={rec.momentum:g}: {rec.rationale}")
    out.print(f"trials charged {r.trials_charged}/{r.budget}, invalid {r.invalid_proposals}, "
              f"repeated {r.repeated_proposals}; model calls {r.model_calls}, tokens in/out "
              f"{r.input_tokens}/{r.output_tokens}")
    pct = (lambda x: 100.0 * x / r.wall_s if r.wall_s else 0.0)
    out.print(f"wall {r.wall_s:.1f} s (model {r.model_s:.1f} s, tool {r.tool_s:.2f} s, overhead "
              f"{r.overhead_s:.2f} s = {pct(r.overhead_s):.1f} %); stop: {r.stop_reason}")
    out.print(f"run directory: {r.run_dir}")


@app.command("eval")
def eval_cmd(
    functions: Annotated[str, typer.Option("--functions", help="objectives, e.g. --functions rosenbrock rastrigin")] = "rosenbrock,rastrigin",
    methods: Annotated[str, typer.Option("--methods", help="grid refined random cmaes tpe llm centaur")] = "grid,random,cmaes,tpe",
    seeds: Annotated[str, typer.Option("--seeds", help="e.g. --seeds 0 1 2, or --seeds 0-29")] = "0,1,2",
    budget: Annotated[int, typer.Option("--budget", min=1, max=10_000)] = 12,
    x0: Annotated[str, typer.Option("--x0", help="paper | random (drawn per seed, shared by all methods)")] = "random",
    max_iter: Annotated[int, typer.Option("--max-iter", min=1)] = 2000,
    model: ModelOpt = "local",
    prompt: PromptOpt = "default",
    centaur_ratio: Annotated[float, typer.Option("--centaur-ratio", min=0.0, max=1.0, help="fraction r of LLM trials")] = 0.3,
    centaur_warmup: Annotated[Optional[int], typer.Option("--centaur-warmup", min=0, help="default: one CMA-ES generation")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", min=1, help="processes (default: CPU count)")] = None,
    temperature: TempOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = "OPENAI_API_KEY",
    out: Annotated[Path, typer.Option("--out", help="output folder (re-running resumes it)")] = Path("results"),
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNG figures")] = False,
) -> None:
    """Every method x objective x seed on one budget, in parallel; results.csv, summary.md, plots."""
    import time as _time

    from agent.prompts import load_template
    from evaluation.harness import LLM_METHODS, METHODS, EvalConfig

    fnames = split_names(functions, "--functions")
    for f in fnames:
        _objective(f)
    mnames = split_names(methods, "--methods", METHODS)
    seed_list = parse_seeds(seeds)
    if x0 not in ("paper", "random"):
        raise UserError(f"--x0 must be paper or random, got {x0!r}")
    settings = _model_settings(model, temperature, None, 0, 60.0, base_url, api_key_env)
    if set(mnames) & set(LLM_METHODS):
        load_template(prompt)
        load_template("centaur")
        from agent.models import make_chat_model

        make_chat_model(settings)  # a missing key or unknown model is reported before any work
    if out.exists() and not out.is_dir():
        raise UserError(f"--out is a file, not a folder: {out}")
    cfg = EvalConfig(functions=[_objective(f).name for f in fnames], methods=mnames, seeds=seed_list, budget=budget,
                     x0=x0, max_iter=max_iter, model=settings, prompt=prompt, centaur_ratio=centaur_ratio,
                     centaur_warmup=centaur_warmup, out=out, **({"workers": workers} if workers else {}))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from evaluation.harness import run_eval, summarize, write_summary

    t0 = _time.perf_counter()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), transient=False) as bar:
        task = bar.add_task("cells", total=None, last="")

        def progress(done: int, total: int, last: str) -> None:
            bar.update(task, completed=done, total=total, last=last)

        rows = run_eval(cfg, progress)
    secs = _time.perf_counter() - t0
    plots: dict = {}
    if not no_plots:
        from evaluation.report import eval_plots

        plots = eval_plots(cfg, out)
    path = write_summary(cfg, summarize(cfg), plots, seconds=secs)
    failed = [r for r in rows if r["error"]]
    print(f"{len(rows)} cells in {secs:.1f} s ({len(failed)} with errors); wrote {out / 'results.csv'}, {path}"
          + (f" and {sum(len(v) for v in plots.values())} plots in {out / 'plots'}" if plots else ""))


@app.command()
def reproduce(
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("study"),
    models: Annotated[str, typer.Option("--model", "--models", help="model(s) for the LLM-guided rows")] = "local",
    no_llm: Annotated[bool, typer.Option("--no-llm", help="skip the LLM rows (runs in seconds)")] = False,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = "OPENAI_API_KEY",
) -> None:
    """Study 1 (PROTOCOL.md): grid, refined grid, random search, LLM-guided; tables + figures."""
    import time as _time

    from evaluation.reproduce import reproduce as run_repro
    from evaluation.reproduce import study_figures, study_markdown

    mlist = split_names(models, "--model")
    settings = _model_settings("local", None, None, 0, 60.0, base_url, api_key_env)
    if not no_llm:
        from agent.models import make_chat_model

        for m in mlist:
            make_chat_model(settings.model_copy(update={"model": m}))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out is a file, not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    from rich.console import Console

    err = Console(stderr=True)
    t0 = _time.perf_counter()
    with err.status("reproducing study 1") as status:
        tables = run_repro(out, mlist, no_llm=no_llm, model_settings=settings,
                           progress=lambda m: status.update(f"reproducing study 1: {m}"))
    secs = _time.perf_counter() - t0
    figs = study_figures(tables, out)
    (out / "study.md").write_text(study_markdown(tables, figs, secs))
    print(f"study reproduced in {secs:.1f} s: {out / 'study.md'}, figures in {out / 'plots'}, runs in {out / 'runs'}")


trace_app = typer.Typer(help="Analyse, compare, plot, export and replay traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")
RunDirArg = Annotated[Path, typer.Argument(help="a run directory (holding trace.jsonl)")]


def _read(run_dir: Path):
    from evaluation.traces import read_trace

    t = read_trace(run_dir)
    for w in t.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return t


def _console():
    """A rich console that does not squeeze wide tables into 80 columns when piped."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=220)


def _f(v, fmt=".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return format(v, fmt)
    return str(v)


@trace_app.command("summary")
def trace_summary(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """Settings, the per-trial table, invalid proposals, model calls, stop reason, time split."""
    from evaluation.traces import summary

    s = summary(_read(run_dir))
    if as_json:
        print(json.dumps(s, default=str))
        return
    from rich.table import Table

    con = _console()
    con.print(f"[bold]{s['session_id']}[/bold]  " + "  ".join(f"{k}={_f(v)}" for k, v in s["settings"].items()))
    tab = Table(show_edge=False)
    for col in ("trial", "source", "alpha", "beta", "status", "final value", "iters", "score", "repeat", "best so far"):
        tab.add_column(col, justify="right" if col not in ("source", "status") else "left", no_wrap=True)
    for r in s["trials"]:
        tab.add_row(_f(r["trial"]), _f(r["source"]), _f(r["learning_rate"]), _f(r["momentum"]), _f(r["status"]),
                    _f(r["final_value"]), _f(r["iterations"]), _f(r["score"], ".3f"), "yes" if r["repeat"] else "",
                    _f(r["best_value_so_far"]))
    con.print(tab)
    for e in s["invalid"]:
        con.print(f"invalid ({e['source']}): {e['error']}")
    mc = s["model_calls"]
    con.print(f"model calls {mc['count']}, tokens in/out {mc['input_tokens']}/{mc['output_tokens']}, latency "
              f"p50 {_f(mc['latency_p50_s'], '.2f')} s p95 {_f(mc['latency_p95_s'], '.2f')} s, retries {s['retries']}")
    tm = s["time"]
    if tm:
        con.print(f"time: wall {_f(tm['wall_s'], '.2f')} s = model {_f(tm['model_s'], '.2f')} + tool "
                  f"{_f(tm['tool_s'], '.3f')} + overhead {_f(tm['overhead_s'], '.3f')} s")
    con.print(f"stop: {s['stop_reason']}")


@trace_app.command("compare")
def trace_compare(run_dirs: Annotated[list[Path], typer.Argument(help="run directories")], as_json: JsonOpt = False) -> None:
    """Runs side by side: best value, evaluations to within 1 % of it, invalid/repeated, tokens, time."""
    from evaluation.traces import compare

    rows = compare([_read(d) for d in run_dirs])
    if as_json:
        print(json.dumps(rows))
        return
    from rich.table import Table

    tab = Table(show_edge=False)
    cols = ("run", "method", "objective", "best_value", "best_lr", "best_momentum", "evals_to_1pct", "charged",
            "invalid", "repeated", "tokens", "wall_s", "stop_reason")
    for c in cols:
        tab.add_column(c.replace("_", " "), no_wrap=True)
    for r in rows:
        tab.add_row(*(_f(r[c]) for c in cols))
    _console().print(tab)


@trace_app.command("state")
def trace_state(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """State-tracking audit: did each proposal repeat a tried or failed configuration, or ignore the incumbent?"""
    from evaluation.traces import FAILED_BOX, state_audit

    a = state_audit(_read(run_dir))
    if as_json:
        print(json.dumps(a, default=str))
        return
    for x in a["turns"]:
        if x["invalid"]:
            print(f"seq {x['seq']:>4}  invalid proposal: {x['error']}")
            continue
        inc = x["incumbent"]
        flags = [n for n, k in (("REPEAT", "repeat_tried"), ("REPEAT-OF-FAILED", "repeat_failed"),
                                ("IN-FAILED-REGION", "in_failed_region"), ("IGNORED-INCUMBENT", "ignored_incumbent")) if x[k]]
        print(f"trial {x['trial']:>3}  proposed lr={x['proposal'][0]:.4g} mom={x['proposal'][1]:.4g}  | incumbent "
              f"{'none' if inc is None else f'lr={inc[0]:.4g} mom={inc[1]:.4g}'}  failed so far {x['failed_so_far']}  "
              f"{' '.join(flags)}")
    pct = (lambda v: "n/a" if v is None else f"{100 * v:.0f} %")
    print(f"\n{a['n_turns']} model proposals ({a['n_valid']} valid): invalid {pct(a['invalid_rate'])}, repeated a tried "
          f"configuration {pct(a['repeat_tried_rate'])}, repeated a failed one {pct(a['repeat_failed_rate'])}, in a "
          f"failed region {pct(a['failed_region_rate'])}, ignored the incumbent {pct(a['ignored_incumbent_rate'])}")
    print(f"(failed: diverged, or stopped more than 1e-3 above the minimum; failed region: within "
          f"{FAILED_BOX[0]} decade of alpha and {FAILED_BOX[1]} of beta of a failed trial; ignored the incumbent: "
          f"closer to a failed trial than to the incumbent)")


@trace_app.command("plot")
def trace_plot(run_dir: RunDirArg,
               out: Annotated[Optional[Path], typer.Option("--out", help="PNG (default RUN_DIR/proposals.png)")] = None) -> None:
    """Proposals in order on the (log alpha, beta) landscape, coloured by score, with the best-so-far curve."""
    from evaluation.traces import trial_rows

    t = _read(run_dir)
    m = t.manifest or {}
    if not m.get("objective") or not m.get("x0"):
        raise UserError(f"{run_dir} has no usable manifest.json: the plot needs the objective and start point")
    target = out or (t.run_dir / "proposals.png")
    if target.suffix.lower() != ".png":
        raise UserError(f"--out must name a .png file, got {target}")
    from evaluation.report import plot_trace

    plot_trace(m["objective"], m["x0"], int(m.get("max_iter", 5000)), trial_rows(t), target,
               f"{t.session_id}: {t.method} on {t.objective}")
    print(f"wrote {target}")


@trace_app.command("export")
def trace_export(run_dirs: Annotated[list[Path], typer.Argument(help="run directories")],
                 fmt: Annotated[str, typer.Option("--format", help="csv | jsonl")] = "csv",
                 out: Annotated[Path, typer.Option("--out", help="file to write")] = Path("trials.csv")) -> None:
    """One row per trial across runs, for pandas or a spreadsheet."""
    import csv

    from evaluation.traces import EXPORT_FIELDS, export_rows

    if fmt not in ("csv", "jsonl"):
        raise UserError(f"--format must be csv or jsonl, got {fmt!r}")
    rows = export_rows([_read(d) for d in run_dirs])
    tmp = out.with_name(out.name + ".tmp")
    try:
        with tmp.open("w", newline="") as f:
            if fmt == "csv":
                w = csv.DictWriter(f, fieldnames=EXPORT_FIELDS)
                w.writeheader()
                w.writerows(rows)
            else:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    tmp.replace(out)
    print(f"wrote {len(rows)} trials from {len(run_dirs)} run(s) to {out}")


@trace_app.command("replay")
def trace_replay(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """Re-run a session with its recorded model replies (no network, no model) and check
    that the same trials, results and final answer come out."""
    import tempfile

    from evaluation.traces import replay

    t = _read(run_dir)
    with tempfile.TemporaryDirectory(prefix="tuneloop-replay-") as tmp:
        rep = replay(t, Path(tmp))
    if as_json:
        print(json.dumps(rep, default=str))
    elif rep["identical"]:
        print(f"replayed {rep['trials']} trials of {t.session_id}: identical (trials, results, final answer)")
    else:
        d = rep["first_divergence"]
        print(f"replay of {t.session_id} diverged at {d['where']}: {d['field']} recorded "
              f"{d.get('recorded')!r}, replayed {d.get('replayed')!r}")
    if not rep["identical"]:
        raise typer.Exit(1)


prompts_app = typer.Typer(help="List and show prompt templates.", no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("list")
def prompts_list() -> None:
    """List the built-in prompt templates."""
    from agent.prompts import builtin_dir, list_templates

    for name in list_templates():
        first = next((line[1:].strip() for line in (builtin_dir() / f"{name}.txt").read_text().splitlines()
                      if line.startswith("#")), "")
        print(f"{name:<12} {first}")


@prompts_app.command("show")
def prompts_show(name: Annotated[str, typer.Argument(help="template name or path")]) -> None:
    """Print a template (checked: unknown variables are an error)."""
    from agent.prompts import load_template

    t = load_template(name)
    print(t.text.rstrip())
    print(f"\n# sha256 {t.sha256}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes end in one line on stderr and exit code 2."""
    # Typer >= 0.25 vendors click as typer._click; its exception classes live there.
    from typer._click import exceptions as cx

    args = join_multi_value_options(list(sys.argv[1:] if argv is None else argv))
    try:
        # in non-standalone mode click returns a typer.Exit's code instead of raising it
        rv = app(args=args, prog_name="tuneloop", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except cx.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "tuneloop --help", file=sys.stderr)
        return 2
    except cx.UsageError as e:
        where = e.ctx.command_path if e.ctx else "tuneloop"
        print(f"error: {e.format_message()} (see `{where} --help`)", file=sys.stderr)
        return 2
    except (cx.Abort if hasattr(cx, "Abort") else typer.Abort, KeyboardInterrupt):
        print("interrupted", file=sys.stderr)
        return 130
    except typer.Exit as e:
        return e.exit_code
    except cx.ClickException as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 1
    return 0


def console_main() -> None:
    """The console script. After the command has finished and its output is flushed,
    leave through os._exit: tearing down numba's LLVM state in a normal interpreter exit
    costs about 0.2 s, a fifth of `tuneloop gd`'s whole time budget. Every command
    closes its own files before returning, so nothing is lost."""
    import os

    code = main()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)


if __name__ == "__main__":
    console_main()
