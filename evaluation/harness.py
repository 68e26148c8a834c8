"""methods x objectives x seeds on one budget, in parallel, resumable.

Layout of --out DIR:
    DIR/runs/<method>-<function>-s<seed>/   each cell's manifest.json, trace.jsonl, result.json
    DIR/results.csv                         one row per cell
    DIR/summary.md                          per function: the methods compared, anytime curves
    DIR/plots/*.png
A cell with a result.json is finished and is not run again; a cell directory without
one (a crash, Ctrl-C) is cleared and run again.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from tuneloop.agent.models import ModelFactory, ModelSettings, make_chat_model
from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.arms import Arm, study_arms
from tuneloop.evaluation.grids import check_refined_space
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.tools.defaults import DEFAULT_TOL
from tuneloop.tools.files import atomic_open, atomic_write_text
from tuneloop.tools.gd_space import check_gd_space
from tuneloop.tools.momentum import start_point as kernel_start_point
from tuneloop.tools.objectives import get_objective, is_objective_file
from tuneloop.tools.run_result import SessionResult
from tuneloop.tools.scoring import best_so_far
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trials import TrialResult
from tuneloop.tools.usage import known_sum

CSV_COLUMNS = [
    "method",
    "prompt",
    "model",
    "function",
    "seed",
    "x0",
    "best_alpha",
    "best_beta",
    "best_value",
    "iterations",
    "score",
    "trials_charged",
    "invalid",
    "repeated",
    "tokens",
    "cost_usd",
    "wall_s",
    "stop_reason",
    "error",
]


class EvalConfig(BaseModel):
    """A study: methods x functions x seeds on one budget (defaults in evaluation/defaults.py).
    With a `task`, `functions` is its name alone and every cell tunes the task."""

    task: str | None = None  # a task (tools/tasks.py) instead of GD on `functions`
    functions: list[str] = list(D.FUNCTIONS)
    methods: list[str] = list(D.METHODS)
    seeds: list[int] = list(D.SEEDS)
    budget: int = Field(default=D.BUDGET, ge=1)
    x0: Literal["paper", "random"] = D.X0
    dim: int = Field(default=2, ge=2, le=D.MAX_DIM)  # the start points' dimension (N-D objectives)
    space: SearchSpace | None = None  # what every method tunes (--space FILE); None: GD's default, a task's SPACE
    max_iter: int = Field(default=D.MAX_ITER, ge=1)
    tol: float = DEFAULT_TOL
    models: list[ModelSettings] = [ModelSettings()]  # each model's settings; one row per model
    prompts: list[str] = [D.PROMPT]  # the agent's templates; one row per prompt
    centaur_prompt: str = D.CENTAUR_PROMPT
    # Centaur's settings: one arm per (ratio, warm-up); a single value as before is a list of one
    centaur_ratio: list[Annotated[float, Field(ge=0.0, le=1.0)]] = Field(default=[D.CENTAUR_RATIO], min_length=1)
    centaur_warmup: list[Annotated[int, Field(ge=0)] | None] = Field(default=[None], min_length=1)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    concurrency: int = Field(default=D.CONCURRENCY, ge=1)  # remote-model cells at once
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    storage: str | None = None  # an Optuna RDB URL: every cell is also recorded there
    out: Path = D.OUT


    def arms(self) -> list[Arm]:
        return study_arms(self.methods, self.prompts, [m.model for m in self.models], self.centaur_ratio,
                          self.centaur_warmup)

    @field_validator("centaur_ratio", "centaur_warmup", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        """A single value (an EvalConfig saved before arms, a caller's float) is one arm."""
        return v if isinstance(v, list) else [v]

    @field_validator("centaur_ratio", "centaur_warmup")
    @classmethod
    def _distinct(cls, v: list[Any]) -> list[Any]:
        if len(set(v)) != len(v):
            raise ValueError("lists a value twice")
        return v

    def cells(self) -> list[tuple[Arm, str, int]]:
        """Every (arm, function, seed) of the study, in table order."""
        return [(a, f, s) for f in self.functions for a in self.arms() for s in self.seeds]

    @field_validator("space", mode="before")
    @classmethod
    def _gd_space(cls, v: Any, info: ValidationInfo) -> SearchSpace | None:
        if v is None:
            return None
        space = SearchSpace.parse(v) if info.data.get("task") else check_gd_space(SearchSpace.parse(v))
        return check_refined_space(space) if "refined" in info.data.get("methods", []) else space

    @field_validator("dim")
    @classmethod
    def _every_function_takes_it(cls, dim: int, info: ValidationInfo) -> int:
        if info.data.get("task"):
            return dim
        for f in info.data.get("functions", []):
            get_objective(f).check_dim(dim)  # a 2-D-only objective says so
        return dim

    def settings_of(self, model: str | None) -> ModelSettings:
        return next((m for m in self.models if m.model == model), self.models[0])

    @property
    def uses_llm(self) -> bool:
        return any(a.uses_llm for a in self.arms())


def cell_prompt(cfg: EvalConfig, arm: Arm) -> str:
    """The template a cell runs with: its arm's, Centaur's (`--centaur-prompt`), another
    LLM strategy's own, and on a task the task's versions of the default ones."""
    if arm.prompt is None and arm.method in D.STRATEGY_PROMPTS and arm.method != "centaur":
        on_gd, on_task = D.STRATEGY_PROMPTS[arm.method]
        return on_gd if cfg.task is None else on_task
    prompt = arm.prompt or cfg.centaur_prompt
    if cfg.task is not None:
        prompt = {D.PROMPT: D.TASK_PROMPT, D.CENTAUR_PROMPT: D.CENTAUR_TASK_PROMPT}.get(prompt, prompt)
    return prompt


def function_slug(function: str) -> str:
    """How a function is named in file names: a built-in's name, an objective file's stem."""
    return Path(function).stem if is_objective_file(function) else function


def cell_id(arm: Arm, function: str, seed: int, dim: int = 2) -> str:
    """A cell's name; the dimension is named when it is not the default 2 (cell names
    leave defaults out, so a study grows resumably and studies in N-D never collide)."""
    return f"{arm.slug}-{function_slug(function)}{'' if dim == 2 else f'-d{dim}'}-s{seed}"


def start_point(cfg: EvalConfig, seed: int) -> tuple[float, ...]:
    """Every method under one seed starts from the same point."""
    return kernel_start_point(cfg.x0, seed, cfg.dim)


def anytime(result: SessionResult) -> list[float]:
    """Best score after k charged evaluations, k = 1..trials charged."""
    return best_so_far([t.score for t in result.trials if t.charged])


def pad_curves(curves: list[list[float]]) -> np.ndarray:
    """Anytime curves as one (n, k_max) array: a cell that stopped early keeps its last
    best score; a cell with no charged trial is inf throughout."""
    k_max = max((len(c) for c in curves), default=0)
    return np.array([[c[k] if k < len(c) else (c[-1] if c else np.inf) for k in range(k_max)] for c in curves],
                    float).reshape(len(curves), k_max)


def run_cell(cfg: EvalConfig, arm: Arm, function: str, seed: int, threads_per_worker: int = 0,
             model_factory: ModelFactory = make_chat_model, executor: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one cell to completion and write its result.json; returns its CSV row.
    `executor` (backend, node) is recorded in the cell's manifest."""
    cid = cell_id(arm, function, seed, cfg.dim)
    runs = cfg.out / "runs"
    x0 = start_point(cfg, seed)
    base = cfg.settings_of(arm.model)
    model_settings = base.model_copy(update={"seed": base.seed + seed})
    if threads_per_worker:  # the embedded model's share of the cores (API models ignore it)
        model_settings = model_settings.model_copy(update={"n_threads": threads_per_worker})
    spec = MethodSpec(method=arm.method, function=function, budget=cfg.budget, seed=seed, x0=cfg.x0, dim=cfg.dim,
                      max_iter=cfg.max_iter, tol=cfg.tol, space=cfg.space, task=cfg.task, model=model_settings,
                      prompt=cell_prompt(cfg, arm),
                      centaur_ratio=cfg.centaur_ratio[0] if arm.ratio is None else arm.ratio,
                      centaur_warmup=cfg.centaur_warmup[0] if arm.warmup is None else arm.warmup, runs_dir=runs,
                      manifest_extra={"executor": executor} if executor else {})
    result = run_method(spec, session_id=cid, model_factory=model_factory)
    row = _row(arm, function, seed, x0, result)
    atomic_write_text(runs / cid / "result.json", json.dumps({
        "row": row, "anytime": anytime(result),
        "proposals": [proposal_record(t) for t in result.trials if t.charged]}))
    return row


def proposal_record(t: TrialResult) -> dict[str, Any]:
    """A charged trial as the cell's result.json lists it: the GD values (for the landscape
    plots), the score and source (for the summary), and the whole configuration."""
    return {"learning_rate": t.learning_rate, "momentum": t.momentum, "score": t.score, "source": t.source,
            "params": t.params}


def read_proposal(p: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """One entry of a cell's `proposals`, as proposal_record writes it; a cell written before
    typed spaces lists (alpha, beta, score, source)."""
    if isinstance(p, dict):
        return p
    lr, mom, score, source = p
    return {"learning_rate": lr, "momentum": mom, "score": score, "source": source,
            "params": {"learning_rate": lr, "momentum": mom}}


GD_PARAMS = ("learning_rate", "momentum")  # best_alpha and best_beta: the CSV's names since its first version


def best_params(b: TrialResult | None) -> dict[str, Any]:
    """The best trial's configuration as CSV columns: best_alpha and best_beta (the GD
    values; beta 0 when the space has no momentum), then best_<name> for each other
    parameter of the space; a cell without a best trial has only the first two, empty."""
    if b is None:
        return {"best_alpha": None, "best_beta": None}
    return {"best_alpha": b.learning_rate, "best_beta": b.momentum} | {
        f"best_{n}": v for n, v in b.params.items() if n not in GD_PARAMS}


def _row(arm: Arm, function: str, seed: int, x0, r: SessionResult) -> dict[str, Any]:
    b = r.best
    return {
        "method": arm.method,
        "prompt": arm.prompt or "",
        "model": arm.model or "",
        "function": function,
        "seed": seed,
        "x0": " ".join(f"{v:.6g}" for v in x0),
        **best_params(b),
        "best_value": b.final_value if b else None,
        "iterations": b.iterations if b else None,
        "score": b.score if b else None,
        "trials_charged": r.trials_charged,
        "invalid": r.invalid_proposals,
        "repeated": r.repeated_proposals,
        "tokens": known_sum((r.input_tokens, r.output_tokens)),
        "cost_usd": r.cost_usd,
        "wall_s": round(r.wall_s, 4),
        "stop_reason": r.stop_reason,
        "error": r.error or "",
    }


def is_remote(arm: Arm) -> bool:
    """Whether a cell waits on a remote model (network-bound) rather than on the cores."""
    return bool(arm.model and arm.model.startswith("openai:"))


def cell_dir(cfg: EvalConfig, cell: tuple[Arm, str, int]) -> Path:
    arm, function, seed = cell
    return cfg.out / "runs" / cell_id(arm, function, seed, cfg.dim)


def run_eval(cfg: EvalConfig, progress: Callable[[int, int, str], None] | None = None,
             model_factory: ModelFactory = make_chat_model,
             on_recorded: Callable[[Any], None] | None = None) -> list[dict]:
    """Run every missing cell on the configured backend, then collect all rows (in a
    fixed order). With more than one worker process or on Ray, `model_factory` must be
    picklable (a module-level function). With `cfg.storage`, every cell, finished now or
    before, is recorded there; `on_recorded` then gets the StorageReport (its `line()`)."""
    from tuneloop.evaluation.executors import CellJob, LocalExecutor, RayExecutor

    cells = cfg.cells()
    (cfg.out / "runs").mkdir(parents=True, exist_ok=True)
    todo = []
    for c in cells:
        d = cell_dir(cfg, c)
        if (d / "result.json").exists():
            continue
        if d.exists():
            shutil.rmtree(d)  # an unfinished cell from an interrupted run: start it again
        todo.append(c)
    done = len(cells) - len(todo)
    if progress:
        progress(done, len(cells), "")
    # LLM cells first: they are the long ones, so the pool stays busy at the end
    todo.sort(key=lambda c: not c[0].uses_llm)
    local_cells = [c for c in todo if not is_remote(c[0])]
    workers = max(1, min(cfg.workers, len(local_cells) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [CellJob(cfg, c, threads, model_factory, is_remote(c[0]), run_cell, cell_dir(cfg, c)) for c in todo]
    executor = (RayExecutor(cfg.ray_address) if cfg.backend == "ray"
                else LocalExecutor(workers, cfg.concurrency))

    recorder, earlier = None, []  # earlier: cells finished before this run, not yet recorded
    if cfg.storage:
        from tuneloop.evaluation.optuna_storage import StudyRecorder

        recorder = StudyRecorder(cfg.storage)
        running = {cell_dir(cfg, c).name for c in todo}
        earlier = [c for c in cells if cell_dir(cfg, c).name not in running]

    def record(cell: tuple[Arm, str, int]) -> None:
        # a cell the storage cannot take must not stop the cells still running: its files
        # are whole, and the next run records it (recording is idempotent)
        assert recorder is not None
        try:
            recorder.record(cell_dir(cfg, cell).name, cell_dir(cfg, cell))
        except Exception as e:  # noqa: BLE001 - SQLAlchemy and a damaged trace raise many kinds
            print(f"warning: {cell_dir(cfg, cell).name} not recorded in --storage: {str(e).splitlines()[0][:200]}",
                  file=sys.stderr, flush=True)

    def finished(cell: tuple[Arm, str, int]) -> None:
        nonlocal done
        if recorder is not None:
            record(cell)
        done += 1
        if progress:
            progress(done, len(cells), cell_dir(cfg, cell).name)

    if jobs:
        executor.run(jobs, finished)
    if recorder is not None:
        for c in earlier:  # cells finished by an earlier run, once the pool is done
            record(c)
        if on_recorded:
            on_recorded(recorder.report)
    rows = [json.loads((cell_dir(cfg, c) / "result.json").read_text())["row"] for c in cells]
    write_csv(rows, cfg.out / "results.csv")
    return rows


def csv_columns(rows: list[dict]) -> list[str]:
    """CSV_COLUMNS, with a best_<name> column after best_beta for each parameter beyond the
    two that any row's best trial has (in the order they first appear): a study of the
    default space keeps the header it always had."""
    extra = dict.fromkeys(k for r in rows for k in r if k.startswith("best_") and k not in CSV_COLUMNS)
    i = CSV_COLUMNS.index("best_beta") + 1
    return [*CSV_COLUMNS[:i], *extra, *CSV_COLUMNS[i:]]


def write_csv(rows: list[dict], path: Path) -> None:
    columns = csv_columns(rows)
    with atomic_open(path, newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
