"""Tasks: an objective that is not numba GD, such as a user's own training run.

A task is a Python file (or a built-in name, `BUILTIN_TASKS`) defining

    SPACE = {...}                       the typed search space, its JSON form (tools/space.py)
    def evaluate(params, seed): ...     -> a number, or a dict with "value" and any metrics,
                                           optionally "status": "ok" | "failed" and "error"
    NAME = "..."                        optional: how tables name it (default: the file's stem)
    DESCRIPTION = "..."                 optional: what is being tuned, shown to the LLM
    DIRECTION = "minimize"              optional: or "maximize"
    TIMEOUT_S = 600                     optional: a trial running longer is stopped and failed
                                           (evaluate then runs in a worker process:
                                           tools/task_worker.py)

`run_task` turns whatever `evaluate` does into a `TaskOutcome`: a value that is not a
finite number, a raised exception or a wrong return type is a failed trial with its
reason; only KeyboardInterrupt goes through (the session then ends, resumably).

    >>> task = load_task("mlp-digits")
    >>> task.name, task.space.names, task.direction
    ('mlp-digits', ('learning_rate', 'momentum', 'nesterov'), 'minimize')
"""

from __future__ import annotations

import hashlib
import math
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tuneloop.tools.errors import UserError
from tuneloop.tools.pyfiles import load_python_file
from tuneloop.tools.space import SearchSpace, SpaceError

BUILTIN_TASKS = {"mlp-digits": "mlp_digits.py"}  # name -> file in tools/task_files/
FAILED_SCORE = 1e300  # the score of a failed trial: worse than any value a task returns
ERROR_CHARS = 500  # an error is kept to its last lines, this long at most


class TaskError(UserError):
    """A task that cannot be used: one line saying why."""


class TaskOutcome(BaseModel):
    """What one evaluation of a task gave."""

    status: Literal["ok", "failed"]
    value: float | None  # None when failed
    metrics: dict[str, Any] = {}
    error: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    space: SearchSpace
    evaluate: Callable[[dict[str, Any], int], Any]
    description: str = ""
    direction: Literal["minimize", "maximize"] = "minimize"
    path: str | None = None  # the file it came from
    sha256: str | None = None  # of that file
    spec: str | None = None  # what load_task was given (a worker process loads it again)
    timeout_s: float | None = None  # TIMEOUT_S: a trial's time limit

    @property
    def title(self) -> str:
        return self.name

    @property
    def formula(self) -> str:
        return self.description or self.name

    def score(self, outcome: TaskOutcome) -> float:
        """What every method minimises: the value, negated when the task maximises; a
        failed trial FAILED_SCORE."""
        if outcome.status == "failed" or outcome.value is None:
            return FAILED_SCORE
        return outcome.value if self.direction == "minimize" else -outcome.value


def task_dir() -> Path:
    return Path(__file__).parent / "task_files"


def is_task_name(spec: str) -> bool:
    return spec in BUILTIN_TASKS


_CACHE: dict[tuple[str, str], Task] = {}
_IN_MEMORY: dict[str, Task] = {}  # tasks made in this process (an ask/tell study), by spec
IN_MEMORY_PREFIX = "ask-tell:"


def is_ask_tell(manifest: Any) -> bool:
    """A run's manifest says it is an ask/tell study (its task in memory, not a file)."""
    task = manifest.get("task") if isinstance(manifest, dict) else None
    return isinstance(task, dict) and str(task.get("spec", "")).startswith(IN_MEMORY_PREFIX)


def register_task(task: Task, key: str) -> str:
    """Make an in-memory task (no file: the user answers each trial, evaluation/study.py)
    loadable by a spec of its own, which manifests record."""
    spec = IN_MEMORY_PREFIX + key
    _IN_MEMORY[spec] = task
    return spec


def load_task(spec: str) -> Task:
    """The task called `spec` (a built-in name or a path to a .py file), checked: a file
    that cannot load, lacks SPACE or evaluate, or has a bad SPACE is one TaskError."""
    if spec.startswith(IN_MEMORY_PREFIX):
        if spec not in _IN_MEMORY:
            raise TaskError(f"{spec} was an ask/tell study of another process: its trials are in its trace, "
                            "but nothing here can evaluate them again")
        return _IN_MEMORY[spec]
    path = task_dir() / BUILTIN_TASKS[spec] if spec in BUILTIN_TASKS else Path(spec).expanduser()
    if not path.is_file():
        raise TaskError(f"task not found: {spec} (a built-in task: {', '.join(BUILTIN_TASKS)}, or a .py file)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    key = (str(path.resolve()), digest)
    if key not in _CACHE:
        _CACHE[key] = _task_from(load_python_file(path, spec, "task", TaskError), path, spec, digest)
    return _CACHE[key]


def _task_from(module: Any, path: Path, shown: str, digest: str) -> Task:
    if not callable(getattr(module, "evaluate", None)):
        raise TaskError(f"{shown} defines no function evaluate(params, seed)")
    if not hasattr(module, "SPACE"):
        raise TaskError(f"{shown} defines no SPACE (the parameters to tune, as a space file holds them)")
    try:
        space = SearchSpace.parse(module.SPACE, where=f"{shown}: SPACE")
    except SpaceError as e:
        raise TaskError(str(e)) from None
    given = getattr(module, "DIRECTION", "minimize")
    if given not in ("minimize", "maximize"):
        raise TaskError(f"{shown}: DIRECTION must be 'minimize' or 'maximize', got {given!r}")
    direction: Literal["minimize", "maximize"] = "maximize" if given == "maximize" else "minimize"
    timeout = getattr(module, "TIMEOUT_S", None)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not math.isfinite(timeout) or timeout <= 0):
        raise TaskError(f"{shown}: TIMEOUT_S must be a positive number of seconds, got {timeout!r}")
    return Task(name=str(getattr(module, "NAME", path.stem)), space=space, evaluate=module.evaluate,
                description=str(getattr(module, "DESCRIPTION", "")), direction=direction,
                path=str(path.resolve()), sha256=digest,
                spec=shown if shown in BUILTIN_TASKS else str(path.resolve()),
                timeout_s=None if timeout is None else float(timeout))


def run_task(task: Task, params: dict[str, Any], seed: int) -> TaskOutcome:
    """One evaluation in this process; never raises but for KeyboardInterrupt (and
    SystemExit). (A task with a TIMEOUT_S is run by tools/task_worker.py: run_trial.)"""
    try:
        out = task.evaluate(dict(params), seed)
    except Exception as e:  # noqa: BLE001 - a user's code may raise anything: a failed trial
        tail = "".join(traceback.format_exception_only(type(e), e)).strip()
        return TaskOutcome(status="failed", value=None, error=tail[-ERROR_CHARS:])
    return outcome_of(out)


def outcome_of(out: Any) -> TaskOutcome:
    """What `evaluate` returned, as a TaskOutcome (a wrong type or a non-finite value is a
    failed trial saying so).

    >>> outcome_of(0.5).value, outcome_of(float("nan")).error, outcome_of({"value": 1, "acc": 0.9}).metrics
    (0.5, 'evaluate returned nan: not a finite number', {'acc': 0.9})
    """
    status, metrics, error = "ok", {}, None
    if isinstance(out, dict):
        metrics = {str(k): _plain(v) for k, v in out.items() if k not in ("value", "status", "error")}
        status = out.get("status", "ok")
        error = None if out.get("error") is None else str(out["error"])[-ERROR_CHARS:]
        if status not in ("ok", "failed"):
            return TaskOutcome(status="failed", value=None, metrics=metrics,
                               error=f"evaluate returned status {status!r}: use 'ok' or 'failed'")
        out = out.get("value")
        if status == "failed":
            return TaskOutcome(status="failed", value=None, metrics=metrics, error=error or "evaluate said failed")
    if isinstance(out, bool) or not isinstance(out, (int, float)) and not hasattr(out, "__float__"):
        return TaskOutcome(status="failed", value=None, metrics=metrics,
                           error=f"evaluate returned {type(out).__name__}: expected a number or a dict with 'value'")
    value = float(out)
    if not math.isfinite(value):
        return TaskOutcome(status="failed", value=None, metrics=metrics,
                           error=f"evaluate returned {value}: not a finite number")
    return TaskOutcome(status="ok", value=value, metrics=metrics, error=error)


def _plain(v: Any) -> Any:
    """A metric as JSON can hold it: numbers as floats (nan as None), anything else as text."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)[:200]
    return f if math.isfinite(f) else None
