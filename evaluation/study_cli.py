"""The steps of `tuneloop eval`, apart from its flags: the flags become an EvalConfig (its
validation is the one check of each value; a refusal names the flag), everything that
can fail is checked before any cell runs, the cells run under a progress bar, and the
closing lines say what was written."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from tuneloop.tools.errors import UserError

# EvalConfig's fields under the flag a user typed
FLAG_OF = {"functions": "--functions", "methods": "--methods", "seeds": "--seeds", "budget": "--budget",
           "x0": "--x0", "dim": "--dim", "space": "--space", "task": "--task", "max_iter": "--max-iter",
           "prompts": "--prompt",
           "centaur_ratio": "--centaur-ratio", "centaur_warmup": "--centaur-warmup", "workers": "--workers",
           "concurrency": "--concurrency", "backend": "--backend", "ray_address": "--ray-address",
           "storage": "--storage", "out": "--out"}


def eval_config(**fields: Any) -> Any:
    """An EvalConfig from the flags' values, or one line naming the flag at fault."""
    from tuneloop.evaluation.harness import EvalConfig

    try:
        return EvalConfig(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as e:
        err = e.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else ""
        raise UserError(f"{FLAG_OF.get(field, field)}: {err['msg'].removeprefix('Value error, ')}") from None


def check_before_work(cfg: Any, factory: Callable[..., Any]) -> None:
    """What would fail later, found now: Ray and its cluster, the models and prompts of
    the LLM arms (a missing key, an unknown model), the Optuna storage URL."""
    if cfg.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UserError('--backend ray needs Ray: pip install -e ".[ray]"') from None
        if cfg.ray_address is not None:
            from tuneloop.evaluation.executors import check_ray_address

            check_ray_address(cfg.ray_address)
    if cfg.uses_llm:
        from tuneloop.agent.prompts import load_template

        for p in [*cfg.prompts, cfg.centaur_prompt]:
            load_template(p)
        for settings in cfg.models:
            factory(settings)  # a missing key or unknown model is reported before any work
    if cfg.storage is not None:
        from tuneloop.evaluation.optuna_storage import storage_or_error

        storage_or_error(cfg.storage)  # a bad URL is reported before any work


def run_with_progress(cfg: Any, factory: Callable[..., Any]) -> tuple[list[dict[str, Any]], list[str], float]:
    """Every cell of the study under a progress bar: (rows, storage lines, seconds)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tuneloop.evaluation.harness import run_eval

    t0 = time.perf_counter()
    storage_lines: list[str] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), transient=False) as bar:
        task = bar.add_task("cells", total=None, last="")

        def progress(done: int, total: int, last: str) -> None:
            bar.update(task, completed=done, total=total, last=last)

        rows = run_eval(cfg, progress, model_factory=factory, on_recorded=lambda r: storage_lines.append(r.line()))
    return rows, storage_lines, time.perf_counter() - t0


def report(cfg: Any, rows: list[dict[str, Any]], seconds: float, storage_lines: list[str], plots: bool) -> None:
    """summary.md, the plots, and the closing lines."""
    from tuneloop.evaluation.summary import summarize, write_summary

    figures: dict[str, Any] = {}
    if plots:
        from tuneloop.evaluation.report import eval_plots

        try:
            figures = eval_plots(cfg, cfg.out)
        except Exception as e:  # noqa: BLE001  a figure that cannot be drawn must not cost the summary
            print(f"warning: the plots could not be drawn ({type(e).__name__}: {e}); summary.md is written without "
                  "them (run again with --no-plots to skip them)", file=sys.stderr)
    path = write_summary(cfg, summarize(cfg), figures, seconds=seconds)
    failed = [r for r in rows if r["error"]]
    print(f"{len(rows)} cells in {seconds:.1f} s ({len(failed)} with errors); wrote {cfg.out / 'results.csv'}, {path}"
          + (f" and {sum(len(v) for v in figures.values())} plots in {cfg.out / 'plots'}" if figures else ""))
    for line in storage_lines:
        print(line)
