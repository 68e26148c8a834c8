"""A task's trial with a time limit (`TIMEOUT_S` in the task file).

Python cannot stop a thread, so a training run that hangs or runs far too long can only be
ended from outside: with a time limit, `evaluate` runs in a worker process of its own
(started with "spawn", so nothing of the parent's threads, llama.cpp's included, is
copied; kept between trials, so the task's imports are paid once). When the limit passes
the worker is killed and the trial is failed, saying so; the next trial gets a new worker.
A Ctrl-C kills the worker too and goes on up (the session ends, resumably). Without a
limit, `evaluate` runs in the session's own process (tools/tasks.py: run_task).
`run_trial` is what the Evaluator calls: one or the other.
"""

from __future__ import annotations

import atexit
import multiprocessing as mp
import threading
from multiprocessing.pool import Pool
from typing import Any

from tuneloop.tools.tasks import Task, TaskOutcome, load_task, run_task

_WORKERS: dict[str, Pool] = {}  # by task spec: one worker process each
_LOCK = threading.Lock()
_TASK: Task | None = None  # in a worker: the task it evaluates


def _load(spec: str) -> None:
    global _TASK
    _TASK = load_task(spec)


def _evaluate(params: dict[str, Any], seed: int) -> TaskOutcome:
    assert _TASK is not None  # loaded by the pool's initializer
    return run_task(_TASK, params, seed)


def _worker(spec: str) -> Pool:
    with _LOCK:
        if spec not in _WORKERS:
            _WORKERS[spec] = mp.get_context("spawn").Pool(1, initializer=_load, initargs=(spec,))
        return _WORKERS[spec]


def _kill(spec: str) -> None:
    with _LOCK:
        pool = _WORKERS.pop(spec, None)
    if pool is not None:
        pool.terminate()
        pool.join()


def run_trial(task: Task, params: dict[str, Any], seed: int) -> TaskOutcome:
    """One evaluation of `task`: with a TIMEOUT_S in its worker process, else here."""
    if task.timeout_s is not None and task.spec is not None:
        return evaluate_with_limit(task, params, seed)
    return run_task(task, params, seed)


def evaluate_with_limit(task: Task, params: dict[str, Any], seed: int) -> TaskOutcome:
    """One evaluation of `task` in its worker process, failed after `task.timeout_s` seconds."""
    assert task.spec is not None and task.timeout_s is not None  # a task loaded from a file, with a limit
    pending = _worker(task.spec).apply_async(_evaluate, (dict(params), seed))
    try:
        return pending.get(task.timeout_s)
    except mp.TimeoutError:
        _kill(task.spec)
        return TaskOutcome(status="failed", value=None,
                           error=f"timed out: evaluate ran past the task's TIMEOUT_S of {task.timeout_s:g} s "
                                 "(its worker process was stopped)")
    except KeyboardInterrupt:
        _kill(task.spec)
        raise
    except Exception as e:  # noqa: BLE001 - the worker could not run it (a result that does not pickle, say)
        _kill(task.spec)
        return TaskOutcome(status="failed", value=None,
                           error=f"the worker process failed: {type(e).__name__}: {e}"[-500:])


@atexit.register
def _stop_workers() -> None:
    for spec in list(_WORKERS):
        _kill(spec)
