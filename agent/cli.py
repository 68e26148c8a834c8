"""The agent floor's commands: `run` (and `run --resume`) and `prompts list|show`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tuneloop.agent.gguf import DEFAULT_N_CTX
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
from tuneloop.tools.cli_common import EXIT_INTERRUPTED, JsonOpt, new_app
from tuneloop.tools.defaults import DEFAULT_MAX_ITER, DEFAULT_TOL
from tuneloop.tools.errors import UserError

app = new_app("Agent sessions and prompt templates.")


def model_settings_or_exit(model: str, *, seed: int = 0, temperature: float | None = None,
                           max_tokens: int | None = None, timeout: float | None = None,
                           base_url: str | None = None, api_key_env: str | None = None,
                           price_in: float | None = None, price_out: float | None = None,
                           rpm: float | None = None, tpm: float | None = None,
                           n_threads: int | None = None, n_ctx: int | None = None):
    """ModelSettings from CLI flags; a flag left out keeps ModelSettings' own default. A
    `gguf:PATH` model is checked here (file, format, chat template), before anything runs."""
    if (price_in is None) != (price_out is None):
        raise UserError("--price-in and --price-out go together (USD per million input and output tokens)")
    from pydantic import ValidationError

    from tuneloop.agent.models import ModelSettings, is_local, local_model_path

    if not is_local(model) and (n_threads is not None or n_ctx is not None):
        raise UserError("--n-threads and --n-ctx are for local models (local, gguf:PATH)")
    path = local_model_path(model) if is_local(model) else None
    if path is not None:
        from tuneloop.agent.gguf import check_model

        model = "gguf:" + check_model(path)
    given = dict(temperature=temperature, max_tokens=max_tokens, timeout_s=timeout, api_key_env=api_key_env,
                 n_threads=n_threads, n_ctx=n_ctx)
    kw: dict[str, Any] = dict(model=model, seed=seed, base_url=base_url, price_in=price_in, price_out=price_out,
                              rpm=rpm, tpm=tpm) | {k: v for k, v in given.items() if v is not None}
    if base_url is not None and not base_url.startswith(("http://", "https://")):
        raise UserError(f"--base-url must start with http:// or https://, got {base_url!r}")
    try:
        return ModelSettings(**kw)
    except ValidationError as e:
        raise UserError(f"bad model settings: {e.errors()[0]['loc'][0]}: {e.errors()[0]['msg']}") from None


ModelOpt = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="local (embedded) | gguf:PATH (a GGUF file) | openai:<model> (e.g. openai:gpt-4o-mini)"
    ),
]
NThreadsOpt = Annotated[
    int | None,
    typer.Option("--n-threads", min=1, max=256, help="llama.cpp threads for a local model (default: every core)"),
]
NCtxOpt = Annotated[
    int | None,
    typer.Option(
        "--n-ctx", min=512, max=131072, help=f"context length in tokens for a local model (default {DEFAULT_N_CTX})"
    ),
]
PromptOpt = Annotated[str, typer.Option("--prompt", "-p", help="template name (see `tuneloop prompts list`) or path")]
BaseUrlOpt = Annotated[str | None, typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")]
KeyEnvOpt = Annotated[
    str | None, typer.Option("--api-key-env", help="environment variable holding the API key (default OPENAI_API_KEY)")
]
TempOpt = Annotated[float | None, typer.Option("--temperature", help="sampling temperature (default 1.0)")]
MaxTokOpt = Annotated[int | None, typer.Option("--max-tokens", help="max tokens per model reply")]
PriceInOpt = Annotated[
    float | None,
    typer.Option("--price-in", min=0.0, help="USD per million input tokens (gpt-4o and gpt-4o-mini are known)"),
]
PriceOutOpt = Annotated[float | None, typer.Option("--price-out", min=0.0, help="USD per million output tokens")]
RpmOpt = Annotated[
    float | None,
    typer.Option(
        "--rpm", min=0.001, help="at most this many model requests per minute, shared by the process's sessions"
    ),
]
TpmOpt = Annotated[float | None, typer.Option("--tpm", min=1.0, help="at most this many tokens per minute, likewise")]
TimeoutOpt = Annotated[
    float | None, typer.Option("--timeout", help="request timeout in seconds, remote models (default 60)")
]


def model_factory_of(ctx: typer.Context):
    """The chat-model factory the app was started with (a test's), else make_chat_model."""
    from tuneloop.agent.models import make_chat_model

    return (ctx.obj or {}).get("model_factory") or make_chat_model


@app.command(short_help="One agent session on a budget (or --resume one).")
def run(
    ctx: typer.Context,
    function: FunctionOpt = "rosenbrock",
    budget: Annotated[int, typer.Option("--budget", "-b", min=1, max=10_000,
                                        help="charged evaluations: new configurations the agent may run")] = 10,
    model: ModelOpt = "local",
    prompt: PromptOpt = "default",
    seed: Annotated[int, typer.Option("--seed", help="seeds the model and a random start")] = 0,
    x0: X0Opt = None,
    dim: DimOpt = None,
    space: SpaceOpt = None,
    task: TaskOpt = None,
    max_iter: MaxIterOpt = DEFAULT_MAX_ITER,
    tol: TolOpt = DEFAULT_TOL,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="where run directories go")] = Path("runs"),
    temperature: TempOpt = None,
    max_tokens: MaxTokOpt = None,
    timeout: TimeoutOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    price_in: PriceInOpt = None,
    price_out: PriceOutOpt = None,
    n_threads: NThreadsOpt = None,
    n_ctx: NCtxOpt = None,
    resume: Annotated[Path | None, typer.Option("--resume", help="continue an interrupted run directory")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one agent session: the model proposes, the tool evaluates, until the budget is spent."""
    factory = model_factory_of(ctx)
    if resume is not None:
        return _resume(resume, as_json, api_key_env, factory)
    if task is not None:
        return _run_task(ctx, task, space, budget, prompt, seed, runs_dir, as_json, settings_flags=dict(
            model=model, temperature=temperature, max_tokens=max_tokens, timeout=timeout, base_url=base_url,
            api_key_env=api_key_env, price_in=price_in, price_out=price_out, n_threads=n_threads, n_ctx=n_ctx))
    obj = objective_or_exit(function)
    label, start = start_or_exit(obj, x0, dim, seed=seed)
    search_space = space_or_exit(space)
    settings = model_settings_or_exit(model, seed=seed, temperature=temperature, max_tokens=max_tokens,
                                      timeout=timeout, base_url=base_url, api_key_env=api_key_env,
                                      price_in=price_in, price_out=price_out, n_threads=n_threads, n_ctx=n_ctx)
    from tuneloop.agent.models import is_local, local_model_path, make_chat_model
    from tuneloop.agent.prompt_state import prompt_values
    from tuneloop.agent.prompts import load_template
    from tuneloop.tools.trials import Evaluator, EvaluatorConfig

    template = load_template(prompt)  # a bad template is reported before the model loads
    evaluator = EvaluatorConfig(objective=obj.name, x0=start, max_iter=max_iter, tol=tol, budget=budget,
                                space=search_space)
    loads_here = factory is make_chat_model and is_local(settings.model)
    if not as_json:  # first, before llama.cpp's loader holds the terminal's output
        print(f"session: {obj.name}, budget {budget}, model {settings.model}, prompt {prompt}, x0 {start} ({label})"
              + ("" if space is None else f"\nspace: {search_space.describe()}")
              + ("\nloading the model ..." if loads_here else ""), file=sys.stderr, flush=True)
    if loads_here:
        # the model loads, and reads the system prompt, in a thread while the agent's
        # libraries import (about two seconds)
        from tuneloop.agent.gguf import preload

        preload(local_model_path(settings.model), settings.n_ctx, settings.n_threads,
                system=template.render_system(**prompt_values(Evaluator(evaluator))))
    from tuneloop.agent.session import run_session
    from tuneloop.agent.session_config import SessionConfig

    cfg = SessionConfig(evaluator=evaluator, model=settings, prompt=prompt, seed=seed, x0_spec=label,
                        runs_dir=runs_dir)
    from tuneloop.agent.session_view import TrialLines

    chat_model = factory(settings)
    show = None if as_json else TrialLines()
    _report_session(run_session(cfg, chat_model=chat_model, on_trial=show), as_json)


def _run_task(ctx: typer.Context, spec: str, space: Path | None, budget: int, prompt: str, seed: int,
              runs_dir: Path, as_json: bool, settings_flags: dict[str, Any]) -> None:
    """`tuneloop run --task`: one agent session on a task (the `task` template unless
    --prompt names another)."""
    spec, search_space = task_or_exit(spec, space)
    model = settings_flags.pop("model")
    settings = model_settings_or_exit(model, seed=seed, **settings_flags)
    from tuneloop.agent.prompts import TASK_TEMPLATES, load_template
    from tuneloop.agent.session import run_session
    from tuneloop.agent.session_config import SessionConfig
    from tuneloop.agent.session_view import TrialLines
    from tuneloop.tools.trials import EvaluatorConfig

    prompt = TASK_TEMPLATES[0] if prompt == "default" else prompt
    load_template(prompt)  # a bad template is reported before the model loads
    evaluator = EvaluatorConfig(task=spec, seed=seed, budget=budget, space=search_space)
    if not as_json:
        print(f"session: task {spec}, budget {budget}, model {settings.model}, prompt {prompt}\n"
              f"space: {search_space.describe()}", file=sys.stderr, flush=True)
    cfg = SessionConfig(evaluator=evaluator, model=settings, prompt=prompt, seed=seed, x0_spec="task",
                        runs_dir=runs_dir)
    chat_model = model_factory_of(ctx)(settings)
    _report_session(run_session(cfg, chat_model=chat_model, on_trial=None if as_json else TrialLines()), as_json)


@app.command(short_help="Speed: the kernel, and the local model's constrained decoding.")
def bench(
    configs: Annotated[int, typer.Option("--configs", min=100, help="batch size for the throughput rows")] = 100_000,
    max_iter: MaxIterOpt = DEFAULT_MAX_ITER,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="timings per row; the fastest is kept")] = 3,
    no_numpy: Annotated[bool, typer.Option("--no-numpy", help="skip the (slow) NumPy reference")] = False,
    model_calls: Annotated[int, typer.Option("--model-calls", min=1, max=100,
                                             help="calls per decoding row (the embedded model)")] = 5,
    no_model: Annotated[bool, typer.Option("--no-model", help="skip the embedded model's decoding rows")] = False,
    n_threads: NThreadsOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure the kernel (ns per iteration, batch throughput, with ratios) and the
    embedded model's decoding: unconstrained, under llama.cpp's grammar, and under
    tuneloop's token masks (tokens per second and seconds per proposal)."""
    from tuneloop.tools.cli import kernel_bench

    figures = kernel_bench(configs, max_iter, repeats, no_numpy, as_json)
    rows = None
    if not no_model:
        from rich.console import Console

        from tuneloop.agent import model_bench

        with Console(stderr=True).status(f"timing the embedded model's decoding ({model_calls} calls a row)"):
            try:
                rows = model_bench.rows_json(model_bench.decode_rows(model_calls, n_threads))
            except ImportError:
                print("note: llama-cpp-python is not installed: no decoding rows (pip install -e \".[local]\")",
                      file=sys.stderr)
            except UserError as e:  # the embedded model's package missing: the kernel's figures still count
                print(f"note: no decoding rows: {e}", file=sys.stderr)
    if as_json:
        print(json.dumps(figures | ({"decoding": rows} if rows is not None else {})))
        return
    if rows is not None:
        from rich.table import Table

        from tuneloop.tools.cli_common import console

        t = Table(title="decoding: the embedded model writes a proposal's arguments (prompt cached)")
        for col in ("way", "s / call", "tokens / s", "x unconstrained", "sampled / s", "x unconstrained "):
            t.add_column(col, justify="left" if col == "way" else "right")
        for r in rows:
            t.add_row(r["name"], f"{r['seconds_per_call']:.3f}", f"{r['tokens_per_s']:.1f}",
                      f"{r['ratio_to_unconstrained']:.2f}", f"{r['sampled_per_s']:.1f}", f"{r['sampled_ratio']:.2f}")
        console().print(t)
        console().print("tokens: in the text written (a key written by tuneloop counts); sampled: chosen by "
                        "the model, one model step each")


def read_trace_warning(run_dir: Path):
    """A run directory's trace, its warnings (a cut last line...) as `warning:` lines on stderr."""
    from tuneloop.tools.record import read_trace

    t = read_trace(run_dir)
    for w in t.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return t


def _resume(run_dir: Path, as_json: bool, api_key_env: str | None, factory) -> None:
    from tuneloop.agent import AGENT_METHOD
    from tuneloop.agent.resume import finished_reason
    from tuneloop.agent.session import run_session
    from tuneloop.agent.session_config import config_from_manifest

    t = read_trace_warning(run_dir)
    if not t.manifest:
        raise UserError(f"{run_dir} has no manifest.json: it cannot be resumed")
    if t.method != AGENT_METHOD:
        raise UserError(f"{run_dir} is a {t.method} run; only agent sessions resume (re-run `tuneloop eval` instead)")
    reason = finished_reason(t.events)
    if reason in ("budget_spent", "final_answer"):
        raise UserError(f"{run_dir} already finished ({reason}); nothing to resume")
    cfg = config_from_manifest(t.manifest).model_copy(update={"runs_dir": t.run_dir.parent})
    if api_key_env is not None and api_key_env != cfg.model.api_key_env:
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"api_key_env": api_key_env})})
    from rich.console import Console

    from tuneloop.agent.session_view import TrialLines, earlier_segments

    ev = cfg.evaluator
    if not as_json:
        Console(stderr=True, soft_wrap=True).print(
            f"[dim]resuming session {t.run_dir.name}: {ev.objective}, budget {ev.budget}, model {cfg.model.model}, "
            f"prompt {cfg.prompt}, x0 {ev.x0} ({cfg.x0_spec})[/dim]")
    earlier = earlier_segments(t.events)
    _report_session(run_session(cfg, chat_model=factory(cfg.model), session_id=t.run_dir.name,
                                resume_events=t.events, on_trial=None if as_json else TrialLines()),
                    as_json, earlier)


def _report_session(result, as_json: bool, earlier: dict | None = None) -> None:
    """A finished session: its JSON or its summary; exit 130 if interrupted, 2 on a model error."""
    if as_json:
        d = result.model_dump(exclude={"trials"})
        d["best"] = result.best.model_dump(exclude={"curve"}) if result.best else None
        print(json.dumps(d))
    else:
        from rich.console import Console

        from tuneloop.agent.session_view import print_summary

        print_summary(Console(soft_wrap=True), result, earlier)
    if result.stop_reason == "interrupted":
        raise typer.Exit(EXIT_INTERRUPTED)
    if result.stop_reason == "model_error":
        raise UserError(
            f"model error: {result.error} (trace kept: resume with `tuneloop run --resume {result.run_dir}`)"
        )


prompts_app = new_app("List and show prompt templates.")
app.add_typer(prompts_app, name="prompts")


@prompts_app.command("list")
def prompts_list() -> None:
    """List the built-in prompt templates."""
    from tuneloop.agent.prompts import list_templates, load_template

    for name in list_templates():
        print(f"{name:<12} {load_template(name).description}")


@prompts_app.command("show")
def prompts_show(name: Annotated[str, typer.Argument(help="template name or path")]) -> None:
    """Print a template (checked: unknown variables are an error)."""
    from tuneloop.agent.prompts import load_template

    t = load_template(name)
    print(t.text.rstrip())
    print(f"\n# sha256 {t.sha256}")
