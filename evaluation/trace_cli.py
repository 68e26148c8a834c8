"""`tuneloop trace ...`: analyse, compare, plot, export and replay traces."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tuneloop.agent.cli import read_trace_warning
from tuneloop.tools.cli_common import EXIT_DIFFERS, JsonOpt, check_out, console, new_app
from tuneloop.tools.defaults import DEFAULT_MAX_ITER
from tuneloop.tools.errors import UserError
from tuneloop.tools.formatting import fmt_cell, fmt_sci

if TYPE_CHECKING:
    from tuneloop.tools.record import Trace

trace_app = new_app("Analyse, compare, plot, export and replay traces.")
RunDirArg = Annotated[Path, typer.Argument(help="a run directory (holding trace.jsonl)")]
PARAM_HEADERS = {"learning_rate": "alpha", "momentum": "beta"}  # summary's columns; other parameters by name


def load_run(run_dir: Path) -> Trace:
    """A run's trace, for every trace command. A folder of runs (a runs dir, or an eval's out
    folder with runs/ inside) is an error that points to the runs in it."""
    if run_dir.is_dir() and not (run_dir / "trace.jsonl").exists():
        for where in (run_dir, run_dir / "runs"):
            try:
                runs = sorted(d.name for d in where.iterdir() if (d / "trace.jsonl").is_file())
            except OSError:  # no runs/ inside, or not readable
                runs = []
            if runs:
                n = f"{len(runs)} run{'s' if len(runs) > 1 else ''}"
                raise UserError(f"{run_dir} is a folder of runs: give one of them, e.g. {where / runs[0]} ({n})")
    return read_trace_warning(run_dir)


@trace_app.command("summary", short_help="Settings, trials, model calls, stop reason, time split.")
def trace_summary(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """Settings, the per-trial table (a column per parameter of the run's space), invalid
    proposals, model calls, stop reason, time split."""
    from tuneloop.evaluation.trace_params import param_text, recommended_params
    from tuneloop.evaluation.traces import summary

    s = summary(load_run(run_dir))
    if as_json:
        print(json.dumps(s, default=str))
        return
    from rich.table import Table

    con = console()
    con.print(f"[bold]{s['session_id']}[/bold]  " + "  ".join(f"{k}={fmt_cell(v)}" for k, v in s["settings"].items()))
    names = s["parameters"]
    task = "direction" in s["settings"]  # a task's run: no GD iterations
    tab = Table(show_edge=False)
    for col in ("trial", "source", *(PARAM_HEADERS.get(n, n) for n in names), "status",
                "value" if task else "final value", *(() if task else ("iters",)), "score", "repeat", "best so far"):
        tab.add_column(col, justify="right" if col not in ("source", "status") else "left", no_wrap=True)
    for r in s["trials"]:
        tab.add_row(
            fmt_cell(r["trial"]),
            fmt_cell(r["source"]),
            *(param_text(r.get(n)) for n in names),
            fmt_cell(r["status"]),
            fmt_cell(r["final_value"]),
            *(() if task else (fmt_cell(r["iterations"]),)),
            fmt_cell(r["score"], ".3f" if r["score"] is None or abs(r["score"]) < 1e6 else ".3g"),  # a failure: 1e+300
            "yes" if r["repeat"] else "",
            fmt_cell(r["best_value_so_far"]),
        )
    con.print(tab)
    for e in s["invalid"]:
        con.print(f"invalid ({e['source']}): {e['error']}")
    mc = s["model_calls"]
    cost = "" if s["cost_usd"] is None else f", cost ${s['cost_usd']:.4f}"
    con.print(
        f"model calls {mc['count']}, tokens in/out {fmt_cell(mc['input_tokens'])}/{fmt_cell(mc['output_tokens'])}"
        f"{cost}, latency p50 {fmt_cell(mc['latency_p50_s'], '.2f')} s p95 {fmt_cell(mc['latency_p95_s'], '.2f')} s, "
        f"retries {s['retries']}"
    )
    for fb in s["tool_choice_fallbacks"]:
        con.print(f"tool_choice: the server rejected {fb['from']}, now {fb['to']} ({fb['error']})")
    tm = s["time"]
    if tm:
        wait = f" + retry waits {fmt_cell(tm['retry_wait_s'], '.2f')}" if tm.get("retry_wait_s") else ""
        segs = f" ({s['segments']} segments summed)" if s["segments"] > 1 else ""
        con.print(f"time{segs}: wall {fmt_cell(tm['wall_s'], '.2f')} s = model {fmt_cell(tm['model_s'], '.2f')} + tool "
                  f"{fmt_cell(tm['tool_s'], '.3f')}{wait} + overhead {fmt_cell(tm['overhead_s'], '.3f')} s")
    rec = s["recommendation"]
    if rec:
        config = " ".join(f"{'lr' if n == 'learning_rate' else n}={param_text(v)}"
                          for n, v in recommended_params(rec, names).items())
        con.print(f"recommendation: {config}: {rec['rationale']}")
    con.print(f"stop: {s['stop_reason']}")


@trace_app.command("compare", short_help="Runs side by side, grouped by method, prompt and model.")
def trace_compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories")], as_json: JsonOpt = False
) -> None:
    """Runs side by side: best value and its configuration (a column per parameter of any of
    the runs' spaces), evaluations to within 1 % of it, invalid/repeated, tokens, time."""
    from tuneloop.evaluation.trace_params import run_space, union
    from tuneloop.evaluation.traces import best_columns, compare

    traces = [load_run(d) for d in run_dirs]
    rows = compare(traces)
    if as_json:
        print(json.dumps(rows))
        return
    from rich.table import Table

    tab = Table(show_edge=False)
    best = best_columns(union(run_space(t).names for t in traces))
    cols = (
        "run",
        "method",
        "prompt",
        "model",
        "objective",
        "best_value",
        *best,
        "evals_to_1pct",
        "charged",
        "invalid",
        "repeated",
        "tokens",
        "cost_usd",
        "wall_s",
        "stop_reason",
    )
    for c in cols:
        tab.add_column(c.replace("_", " "), no_wrap=True)
    for r in rows:
        tab.add_row(*(_cell(r.get(c)) for c in cols))
    con = console()
    if not con.is_terminal:  # piped: as much room for each parameter beyond the two as the two have
        con.width += 16 * (len(best) - 2)
    con.print(tab)
    _print_seed_pairs(traces)


def _print_seed_pairs(traces: list[Trace]) -> None:
    """compare's second table, when runs of different arms share an (objective, seed)."""
    from rich.table import Table

    from tuneloop.evaluation.traces import seed_pairs

    pairs = seed_pairs(traces)
    if not pairs:
        return
    tab = Table(show_edge=False, title="paired by seed (best score, lower wins)")
    for c in ("objective", "arm A", "arm B", "seeds", "A wins", "ties", "A losses", "Wilcoxon p", "Holm p", "r"):
        tab.add_column(c, no_wrap=True)
    for p in pairs:
        tab.add_row(p["objective"], p["a"], p["b"], str(p["n"]), str(p["wins"]), str(p["ties"]), str(p["losses"]),
                    fmt_cell(p["p"], ".3g", missing="n/a"), fmt_cell(p["p_holm"], ".3g", missing="n/a"),
                    fmt_cell(p["r"], ".2f", missing="n/a"))
    console().print(tab)
    console().print("Wilcoxon signed-rank (two-sided, zero_method zsplit), Holm over each objective's pairs; "
                    "r: matched-pairs rank-biserial, > 0 when A scored lower.")


def _cell(v: object) -> str:
    """A compare cell: a choice true/false as the space writes it, anything else as fmt_cell does."""
    from tuneloop.evaluation.trace_params import param_text

    return param_text(v) if isinstance(v, bool) else fmt_cell(v)


@trace_app.command("state", short_help="Did each proposal repeat a tried or failed configuration?")
def trace_state(
    run_dir: RunDirArg,
    as_json: JsonOpt = False,
    plot: Annotated[Path | None, typer.Option("--plot", help="also draw the state as a PNG here")] = None,
) -> None:
    """State-tracking audit: did each proposal repeat a tried or failed configuration, or ignore the incumbent?
    Also: proposals at a bound of the space, distinct values per parameter, and whether each
    proposal moved toward the incumbent and away from the failures (against the model's
    previous one). Distances and failed regions are measured over every parameter of the
    run's space (evaluation/traces.py's AuditGeometry). --plot draws it."""
    from tuneloop.evaluation.trace_params import run_space
    from tuneloop.evaluation.traces import AuditGeometry, state_audit
    from tuneloop.tools.scoring import GOOD_GAP

    check_out(plot, ".png", flag="--plot")
    t = load_run(run_dir)
    a = state_audit(t)
    if plot is not None:
        from tuneloop.evaluation.state_plot import plot_state

        plot_state(a, run_space(t), plot, f"{t.session_id}: {t.method} on {t.objective}")
    if as_json:
        print(json.dumps(a, default=str))
        return
    names = a["parameters"]
    for x in a["turns"]:
        if x["invalid"]:
            print(f"seq {x['seq']:>4}  invalid proposal: {x['error']}")
            continue
        inc = x["incumbent"]
        flags = [
            n
            for n, k in (
                ("REPEAT", "repeat_tried"),
                ("REPEAT-OF-FAILED", "repeat_failed"),
                ("IN-FAILED-REGION", "in_failed_region"),
                ("IGNORED-INCUMBENT", "ignored_incumbent"),
            )
            if x[k]
        ]
        print(f"trial {x['trial']:>3}  proposed {_config_text(names, x['proposal'])}  | incumbent "
              f"{'none' if inc is None else _config_text(names, inc)}  failed so far {x['failed_so_far']}  "
              f"{' '.join(flags)}")
    def pct(v):
        return "n/a" if v is None else f"{100 * v:.0f} %"

    print(
        f"\n{a['n_turns']} model proposals ({a['n_valid']} valid): invalid {pct(a['invalid_rate'])}, repeated a tried "
        f"configuration {pct(a['repeat_tried_rate'])}, repeated a failed one {pct(a['repeat_failed_rate'])}, in a "
        f"failed region {pct(a['failed_region_rate'])}, ignored the incumbent {pct(a['ignored_incumbent_rate'])}"
    )
    bounds = ", ".join(f"{n} {pct(v)}" for n, v in a["at_bound_by_parameter"].items())
    distinct = ", ".join(f"{n} {c}" for n, c in a["distinct_by_parameter"].items())
    print(f"at a bound of the space {pct(a['at_bound_rate'])} ({bounds}); distinct values: {distinct}; against the "
          f"previous proposal, moved toward the incumbent {pct(a['toward_incumbent_rate'])}, away from the failures "
          f"{pct(a['away_from_failures_rate'])}")
    print(f"(failed: diverged, or stopped more than {fmt_sci(GOOD_GAP)} above the minimum; failed region: within "
          f"{AuditGeometry.of(run_space(t)).describe()} of a failed trial; ignored the incumbent: "
          f"closer to a failed trial than to the incumbent)")
    if plot is not None:
        print(f"wrote {plot}")


STATE_LABELS = {"learning_rate": "lr", "momentum": "mom"}  # the audit's short names; others by their own


def _config_text(names: list[str], values: list | tuple) -> str:
    """'lr=0.001 mom=0.9 nesterov=true': a configuration in the audit's lines (numbers to 4 digits)."""
    from tuneloop.evaluation.trace_params import param_text

    return " ".join(f"{STATE_LABELS.get(n, n)}={param_text(v, '.4g')}" for n, v in zip(names, values, strict=False))


@trace_app.command("tokens", short_help="What the local model would have written at a trial, as probabilities.")
def trace_tokens(
    run_dir: RunDirArg,
    trial: Annotated[int, typer.Option("--trial", min=1, help="the charged trial (its number in the run's output) "
                                                        "whose call to read")] = 1,
    floor: Annotated[float | None, typer.Option("--floor", min=0.001, max=0.5,
                                                help="smallest probability shown (default: 1 %)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The distribution of each argument at the call that proposed TRIAL, under the token
    masks, before the avoid list: the model's own preference, and its share at a bound."""
    from tuneloop.evaluation.trace_tokens import tokens_at

    res = tokens_at(load_run(run_dir), trial, floor)
    if as_json:
        print(json.dumps(res))
        return
    con = console()
    con.print(f"trial {trial}: the model's turn\n{res['turn']}\n", highlight=False, markup=False)
    if res["prompt_as_recorded"] is None:
        con.print("note: the trace records no digest of the call's prompt: the figures are for the prompt as this "
                  "release renders it", highlight=False)
    elif not res["prompt_as_recorded"]:
        con.print("note: this release renders the call's prompt differently from the recorded one (a trace of "
                  "an earlier release): the figures are for the prompt as rendered now", highlight=False)
    for name, d in res["parameters"].items():
        top = ", ".join(f"{x['value']} {x['p']:.0%}" for x in d["distribution"][:8])
        con.print(f"{name}: wrote {json.dumps(d['written'])} (p {d['p_written']:.0%}); at a bound "
                      f"{d['p_at_bound']:.0%}; most probable: {top}", highlight=False, soft_wrap=True)


@trace_app.command("plot", short_help="Proposals on the landscape, and the best-so-far curve (PNG).")
def trace_plot(
    run_dir: RunDirArg,
    out: Annotated[Path | None, typer.Option("--out", help="PNG (default RUN_DIR/proposals.png)")] = None,
    axes: Annotated[
        tuple[str, str] | None,
        typer.Option("--axes", metavar="NAME NAME",
                     help="two continuous parameters of the run's space (default: learning_rate and momentum when "
                     "it has them, else its first two continuous ones)"),
    ] = None,
) -> None:
    """Proposals in order on two parameters, coloured by score, with the best-so-far curve.
    On learning_rate and momentum, when the rest of the space is absent or off in every
    trial (plain momentum GD), over the (log alpha, beta) landscape; otherwise a scatter on
    the two axes (log10 on a log parameter) whose title names the parameters that vary."""
    from tuneloop.evaluation.trace_params import on_landscape, plot_axes, run_space
    from tuneloop.evaluation.traces import trial_rows

    check_out(out, ".png")
    t = load_run(run_dir)
    space = run_space(t)
    x, y = plot_axes(space, axes)
    rows = trial_rows(t)
    target = out or (t.run_dir / "proposals.png")
    title = f"{t.session_id}: {t.method} on {t.objective}"
    if on_landscape(space, (x, y), rows):
        m = t.manifest or {}
        if not m.get("objective") or not m.get("x0"):
            raise UserError(f"{run_dir} has no usable manifest.json: the plot needs the objective and start point")
        from tuneloop.evaluation.report import plot_trace

        plot_trace(m["objective"], m["x0"], int(m.get("max_iter", DEFAULT_MAX_ITER)), rows, target, title)
    else:
        from tuneloop.evaluation.report import plot_trace_params

        plot_trace_params(rows, space, (x, y), target, title)
    print(f"wrote {target}")


@trace_app.command("export", short_help="Trials as CSV or JSON lines; sessions as OpenTelemetry (OTLP).")
def trace_export(
    run_dirs: Annotated[list[Path], typer.Argument(help="run directories")],
    fmt: Annotated[
        str, typer.Option("--format", help="csv | jsonl (one row per trial) | otlp (OTLP/JSON spans)")
    ] = "csv",
    out: Annotated[
        Path | None, typer.Option("--out", help="file to write (default trials.csv, trials.jsonl or traces.json)")
    ] = None,
    otlp_endpoint: Annotated[
        str | None,
        typer.Option(
            "--otlp-endpoint",
            help="otlp: send the spans to this OTLP/HTTP collector, e.g. http://127.0.0.1:4318 (default: "
            "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, or $OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; with "
            "an endpoint, a file only with --out)",
        ),
    ] = None,
    otlp_protocol: Annotated[
        str | None,
        typer.Option(
            "--otlp-protocol",
            help="otlp: http/protobuf or http/json (default: $OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else "
            "$OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf); headers from $OTEL_EXPORTER_OTLP_HEADERS",
        ),
    ] = None,
    include_content: Annotated[
        bool, typer.Option("--include-content", help="otlp: put the messages sent and received in the spans")
    ] = False,
) -> None:
    """One row per trial across runs, for pandas or a spreadsheet (csv, jsonl); or each
    session as an OpenTelemetry trace following the GenAI conventions (otlp), for Phoenix,
    Langfuse, Jaeger or any OTLP collector: a file of OTLP/JSON, or sent over OTLP/HTTP."""
    import csv

    from tuneloop.evaluation.traces import export_columns, export_rows
    from tuneloop.tools.files import atomic_open

    if fmt not in ("csv", "jsonl", "otlp"):
        raise UserError(f"--format must be csv, jsonl or otlp, got {fmt!r}")
    for flag, v in (("--otlp-endpoint", otlp_endpoint), ("--otlp-protocol", otlp_protocol)):
        if v is not None and fmt != "otlp":
            raise UserError(f"{flag} needs --format otlp")
    check_out(out)
    target = None
    if fmt == "otlp":  # where to send is checked before any work, as --out is
        from tuneloop.evaluation.otlp import otlp_target

        target = otlp_target(otlp_endpoint, otlp_protocol)
        if target is None and otlp_protocol is not None:
            raise UserError("--otlp-protocol needs an endpoint: --otlp-endpoint URL or $OTEL_EXPORTER_OTLP_ENDPOINT")
    traces = [load_run(d) for d in run_dirs]
    if fmt == "otlp":
        from tuneloop.evaluation.otlp import otlp_request, send_otlp, write_otlp

        request = otlp_request(traces, include_content=include_content)
        spans = sum(len(ss["spans"]) for rs in request["resourceSpans"] for ss in rs["scopeSpans"])
        if out is not None or target is None:
            path = out or Path("traces.json")
            try:
                write_otlp(request, path)
            except OSError as e:
                raise UserError(f"cannot write {path}: {e.strerror}") from None
            print(f"wrote {spans} spans of {len(traces)} session(s) to {path}")
        if target is not None:
            send_otlp(request, target)
            via = "" if target.source == "--otlp-endpoint" else f", from {target.source}"
            print(f"sent {spans} spans of {len(traces)} session(s) to {target.shown} ({target.protocol}{via})")
        return
    out = out or Path(f"trials.{fmt}")
    rows = export_rows(traces)
    try:
        with atomic_open(out, newline="") as f:
            if fmt == "csv":
                w = csv.DictWriter(f, fieldnames=export_columns(traces))
                w.writeheader()
                w.writerows(rows)
            else:
                for r in rows:
                    f.write(json.dumps(r) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    print(f"wrote {len(rows)} trials from {len(run_dirs)} run(s) to {out}")


@trace_app.command("replay", short_help="Re-run a session from its recorded replies; same result?")
def trace_replay(run_dir: RunDirArg, as_json: JsonOpt = False) -> None:
    """Re-run a session with its recorded model replies (no network, no model) and check
    that the same trials, results and final answer come out."""
    import tempfile

    from tuneloop.evaluation.replay import replay

    t = load_run(run_dir)
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
        raise typer.Exit(EXIT_DIFFERS)
