"""The `tuneloop` command: the root app. It mounts the other floors' commands (tools:
functions, gd, bench; agent: run, prompts) and adds its own: sweep, eval, reproduce,
trace. Heavy imports (LangChain, matplotlib, Optuna) happen inside the commands that
need them, so `tuneloop gd` loads only numpy and numba.
"""

from __future__ import annotations

import math
import socket
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.agent.cli import (
    BaseUrlOpt,
    KeyEnvOpt,
    PriceInOpt,
    PriceOutOpt,
    RpmOpt,
    TempOpt,
    TpmOpt,
    model_factory_of,
    model_settings_or_exit,
)
from tuneloop.agent.cli import app as agent_app
from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.strategies import METHODS
from tuneloop.evaluation.trace_cli import trace_app
from tuneloop.tools.cli import (
    DimOpt,
    FunctionOpt,
    MaxIterOpt,
    SpaceOpt,
    TaskOpt,
    TolOpt,
    X0Opt,
    objective_or_exit,
    space_or_exit,
    start_or_exit,
    task_or_exit,
)
from tuneloop.tools.cli import app as tools_app
from tuneloop.tools.cli_common import (
    check_out,
    check_range,
    exit_fast,
    new_app,
    parse_numbers,
    parse_seeds,
    run_app,
    split_names,
)
from tuneloop.tools.defaults import DEFAULT_MAX_ITER, DEFAULT_TOL, SWEEP_LR, SWEEP_MOMENTUM
from tuneloop.tools.errors import UserError
from tuneloop.tools.files import atomic_write_text

app = new_app("LLM agents as hyperparameter tuners for gradient descent with momentum.", name="tuneloop")
app.add_typer(tools_app)
app.add_typer(agent_app)
app.add_typer(trace_app, name="trace")


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"tuneloop {version('tuneloop')}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                               help="print tuneloop's version and exit")] = False) -> None:
    """LLM agents as hyperparameter tuners for gradient descent with momentum."""


@app.command(short_help="The (log alpha, beta) landscape: a heatmap PNG and its data.")
def sweep(
    function: FunctionOpt = "rosenbrock",
    lr_range: Annotated[tuple[float, float], typer.Option("--lr-range", help="alpha range (log-spaced)")] = SWEEP_LR,
    momentum_range: Annotated[
        tuple[float, float], typer.Option("--momentum-range", help="beta range")
    ] = SWEEP_MOMENTUM,
    resolution: Annotated[int, typer.Option("--resolution", min=2, max=2048, help="grid points per axis")] = 256,
    max_iter: MaxIterOpt = DEFAULT_MAX_ITER,
    tol: TolOpt = DEFAULT_TOL,
    x0: X0Opt = None,
    dim: DimOpt = None,
    out: Annotated[Path, typer.Option("--out", help="PNG to write; the data goes beside it as .npz")] = Path(
        "sweep.png"
    ),
) -> None:
    """Map the final value over the (log alpha, beta) grid: a heatmap PNG plus raw data."""
    obj = objective_or_exit(function)
    check_range(lr_range, "--lr-range", 0.0, 1.0, log=True)
    check_range(momentum_range, "--momentum-range", 0.0, 1.0)
    if momentum_range[1] >= 1.0:
        raise UserError("--momentum-range must stay below 1")
    _, start = start_or_exit(obj, x0, dim)
    check_out(out, ".png")
    import importlib
    import time
    from concurrent.futures import ThreadPoolExecutor

    from rich.console import Console

    from tuneloop.tools.kernels import DIVERGED
    from tuneloop.tools.sweep import sweep as run_sweep

    # Import matplotlib (half a second) in a thread while the kernel runs: the batch
    # kernel releases the GIL, so the two overlap.
    plotting = ThreadPoolExecutor(1).submit(importlib.import_module, "tuneloop.evaluation.report")
    t0 = time.perf_counter()
    with Console(stderr=True).status(f"running {resolution * resolution} momentum-GD runs"):
        land = run_sweep(obj.name, lr_range, momentum_range, resolution, x0=start, max_iter=max_iter, tol=tol)
    secs = time.perf_counter() - t0
    plot_landscape = plotting.result().plot_landscape

    plot_landscape(land, out)
    data = out.with_suffix(".npz")
    land.to_npz(data)
    n = resolution * resolution
    diverged = land.status_code == DIVERGED
    best = float(min(land.final_value[~diverged], default=math.nan))
    print(f"{n} runs in {secs:.2f} s; {int(diverged.sum())} diverged; best final value {best:.4g}")
    print(f"wrote {out} and {data}")


@app.command("eval", short_help="Every method x objective x seed on one budget; tables, plots.")
def eval_cmd(
    ctx: typer.Context,
    functions: Annotated[
        str, typer.Option("--functions", help="objectives, e.g. --functions rosenbrock rastrigin")
    ] = ",".join(D.FUNCTIONS),
    methods: Annotated[str, typer.Option("--methods", help=" ".join(METHODS))] = ",".join(D.METHODS),
    seeds: Annotated[str, typer.Option("--seeds", help="e.g. --seeds 0 1 2, or --seeds 0-29")] = ",".join(
        map(str, D.SEEDS)
    ),
    budget: Annotated[
        int, typer.Option("--budget", min=1, max=10_000, help="charged evaluations per cell, the same for every method")
    ] = D.BUDGET,
    x0: Annotated[str, typer.Option("--x0", help="paper | random (drawn per seed, shared by all methods)")] = D.X0,
    dim: DimOpt = None,
    space: SpaceOpt = None,
    task: TaskOpt = None,
    max_iter: Annotated[int, typer.Option("--max-iter", min=1, help="iteration cap T of each run")] = D.MAX_ITER,
    model: Annotated[
        str,
        typer.Option("--model", "-m", help="one or more models, e.g. --model local openai:gpt-4o-mini: one row each"),
    ] = "local",
    prompt: Annotated[
        str,
        typer.Option("--prompt", "-p", help="one or more prompt templates, e.g. --prompt default paper: one row each"),
    ] = D.PROMPT,
    centaur_ratio: Annotated[
        str, typer.Option("--centaur-ratio", help="fraction r of LLM trials; several: one Centaur arm each")
    ] = str(D.CENTAUR_RATIO),
    centaur_warmup: Annotated[
        str | None, typer.Option("--centaur-warmup", help="CMA-ES-only trials first (default: one generation); "
                                 "several: one arm each")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="processes for CPU-bound cells (default: CPU count)")
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", min=1, max=1024, help="cells waiting on a remote model at once (threads)")
    ] = D.CONCURRENCY,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    backend: Annotated[str, typer.Option("--backend", help="local (processes and threads) | ray")] = "local",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address",
                     help="join this Ray cluster (default: a private local Ray, whatever RAY_ADDRESS says)"),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="also record every cell as an Optuna study in this RDB, e.g. sqlite:///study.db "
            "(for optuna-dashboard)",
        ),
    ] = None,
    temperature: TempOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    out: Annotated[Path, typer.Option("--out", help="output folder (re-running resumes it)")] = D.OUT,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNG figures")] = False,
) -> None:
    """Every method x objective x seed on one budget, in parallel; results.csv, summary.md, plots."""
    from tuneloop.evaluation.study_cli import check_before_work, eval_config, report, run_with_progress

    if ray_address is not None and backend != "ray":
        raise UserError("--ray-address needs --backend ray")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out is a file, not a folder: {out}")
    models = [model_settings_or_exit(m, temperature=temperature, base_url=base_url, api_key_env=api_key_env,
                                     price_in=price_in, price_out=price_out, rpm=rpm, tpm=tpm)
              for m in split_names(model, "--model")]
    if task is not None:  # every cell tunes the task; its name stands where a function's would
        task, task_space = task_or_exit(task, space)
        from tuneloop.tools.tasks import load_task

        functions, space_given = load_task(task).name, task_space
    else:
        space_given = space_or_exit(space) if space else None
    cfg = eval_config(task=task, functions=[f if task else objective_or_exit(f).name
                                            for f in split_names(functions, "--functions")],
                      methods=split_names(methods, "--methods", METHODS), seeds=parse_seeds(seeds), budget=budget,
                      x0=x0, dim=dim, space=space_given, max_iter=max_iter,
                      models=models, prompts=split_names(prompt, "--prompt"),
                      centaur_ratio=list(parse_numbers(centaur_ratio, "--centaur-ratio")),
                      centaur_warmup=None if centaur_warmup is None else list(parse_numbers(centaur_warmup,
                                                                                            "--centaur-warmup")),
                      out=out, concurrency=concurrency,
                      backend=backend, ray_address=ray_address, storage=storage, workers=workers)
    factory = model_factory_of(ctx)
    check_before_work(cfg, factory)
    rows, storage_lines, seconds = run_with_progress(cfg, factory)
    report(cfg, rows, seconds, storage_lines, plots=not no_plots)


@app.command(short_help="Study 1's protocol: its tables and figures.")
def reproduce(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="output folder")] = Path("study"),
    models: Annotated[str, typer.Option("--model", "--models", help="model(s) for the LLM-guided rows")] = "local",
    no_llm: Annotated[bool, typer.Option("--no-llm", help="skip the LLM rows (runs in seconds)")] = False,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
) -> None:
    """Study 1 (docs/protocol.md): grid, refined grid, random search, LLM-guided; tables + figures."""
    import time as _time

    from tuneloop.evaluation.reproduce import reproduce as run_repro
    from tuneloop.evaluation.reproduce import study_figures, study_markdown

    mlist = split_names(models, "--model")
    settings = model_settings_or_exit("local", base_url=base_url, api_key_env=api_key_env)
    factory = model_factory_of(ctx)
    if not no_llm:
        for m in mlist:
            factory(settings.model_copy(update={"model": m}))  # a missing key or unknown model, before any work
    if out.exists() and not out.is_dir():
        raise UserError(f"--out is a file, not a folder: {out}")
    out.mkdir(parents=True, exist_ok=True)
    from rich.console import Console

    err = Console(stderr=True)
    t0 = _time.perf_counter()
    with err.status("reproducing study 1") as status:
        tables = run_repro(out, mlist, no_llm=no_llm, model_settings=settings, model_factory=factory,
                           progress=lambda m: status.update(f"reproducing study 1: {m}"))
    secs = _time.perf_counter() - t0
    figs = study_figures(tables, out)
    atomic_write_text(out / "study.md", study_markdown(tables, figs, secs))
    print(f"study reproduced in {secs:.1f} s: {out / 'study.md'}, figures in {out / 'plots'}, runs in {out / 'runs'}")


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@app.command(short_help="The HTTP API and the live page over a runs dir.")
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="address to listen on (loopback unless a token is set)")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="port to listen on")] = 8000,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="where sessions are read and written")] = Path("runs"),
    max_running: Annotated[
        int, typer.Option("--max-running", min=1, max=256, help="sessions at once (the embedded model: one at a time)")
    ] = 4,
    max_queued: Annotated[
        int,
        typer.Option("--max-queued", min=0, max=10_000, help="sessions waiting before POST /api/sessions answers 429"),
    ] = 64,
    token_env: Annotated[
        str | None,
        typer.Option("--token-env", help="environment variable holding the bearer token every /api request must carry"),
    ] = None,
    max_budget: Annotated[
        int, typer.Option("--max-budget", min=1, help="the most charged evaluations one session may ask for")
    ] = D.SERVE_MAX_BUDGET,
    max_iter_cap: Annotated[
        int, typer.Option("--max-iter-cap", min=1, help="the most iterations one run may ask for (max_iter)")
    ] = D.SERVE_MAX_ITER,
) -> None:
    """Serve the sessions of a runs dir: the JSON API (/docs), Server-Sent Events, the page at /."""
    import os

    token = None
    if token_env is not None:
        token = os.environ.get(token_env) or None
        if token is None:
            raise UserError(f"--token-env {token_env}: that variable is not set (or empty)")
    if host not in LOOPBACK and token is None:
        raise UserError(f"--host {host} is not a loopback address: set a token with --token-env NAME first")
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(f"--runs-dir is a file, not a folder: {runs_dir}")
    import uvicorn

    from tuneloop.evaluation.service.app import create_app
    from tuneloop.evaluation.service.schemas import Limits
    from tuneloop.evaluation.service.sessions import SessionManager

    sock = listening_socket(host, port)  # first: a port in use is one line, before any banner
    new_dir = not runs_dir.exists()
    manager = SessionManager(runs_dir, max_running=max_running, max_queued=max_queued,
                             model_factory=model_factory_of(ctx))
    where = f"runs dir {runs_dir}" + (" (new: it did not exist, so it was created)" if new_dir else "")
    print(f"tuneloop serve: http://{host}:{port}/ (API docs at /docs), {where}", flush=True)
    if manager.requeued:
        print(f"tuneloop serve: {manager.requeued} session(s) queued before the last stop are queued again", flush=True)
    import threading

    from tuneloop.evaluation.service.api_sessions import warm_up

    threading.Thread(target=warm_up, name="tuneloop-warm-up", daemon=True).start()
    try:
        config = uvicorn.Config(create_app(manager, token, Limits(max_budget=max_budget, max_iter=max_iter_cap)),
                                log_level="warning")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        manager.shutdown()


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound (uvicorn takes it). proto=IPPROTO_TCP, as getaddrinfo
    gives it: asyncio turns Nagle off (TCP_NODELAY) only on the connections of such a
    socket, and with Nagle on every keep-alive response waited ~40 ms for the client's
    delayed ACK between its headers and its body."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e} (another server there? pick --port)") \
            from None
    return sock


def main(argv: list[str] | None = None, model_factory=None) -> int:
    """Run `tuneloop` with `argv`; returns the exit code. `model_factory` replaces
    make_chat_model for every command that makes a chat model (tests inject theirs here)."""
    return run_app(app, argv, obj={"model_factory": model_factory})


def console_main() -> None:
    """The console script."""
    exit_fast(main())


if __name__ == "__main__":
    console_main()
