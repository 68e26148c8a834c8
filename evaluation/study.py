"""Ask/tell: the user drives. `Study.ask()` returns the next configuration to try,
`Study.tell(trial, value)` returns its result; any method of the harness proposes.

    >>> study = Study({"x": {"type": "float", "low": -5, "high": 5}}, method="tpe", budget=6, runs_dir=tmp)
    >>> for _ in range(6):
    ...     trial = study.ask()
    ...     study.tell(trial, (trial.params["x"] - 1) ** 2)
    >>> -5 <= study.best.params["x"] <= 5, len(study.trials)
    (True, 6)
    >>> study.close()
    'budget_spent'

How: the method runs, as it always does, in a thread of its own, on a task whose
`evaluate` is "wait for the user's tell" (tools/tasks.py, an in-memory task). So every
method works unchanged behind a Study, through the same Evaluator: an invalid proposal
never reaches the user, a repeated configuration is answered from the cache, the budget
counts the trials asked, and the run writes its manifest and trace like any other (trace
summary, compare, state and export read it).

One trial at a time: the methods propose in sequence, so a second ask before the tell of
the first is refused (a StudyError naming the trial to tell). `tune` is the simple loop.

`Study.load(run_dir)` continues an interrupted study in a new run directory: the method
runs again from the start with the same seed, and while it proposes the configurations
the old run recorded, their recorded results answer it (nobody is asked); the first
configuration it had not tried yet is the next `ask`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tuneloop.agent.models import ModelSettings
from tuneloop.agent.session_config import model_from_manifest
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.tools.errors import UserError
from tuneloop.tools.record import new_session_id
from tuneloop.tools.run_result import SessionResult
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.tasks import Task, TaskOutcome, is_ask_tell, outcome_of, register_task
from tuneloop.tools.trials import TrialResult


class StudyError(UserError):
    """A use of a Study that cannot be answered (a tell out of turn, an ask after the end)."""


class Trial(BaseModel):
    """A configuration to evaluate: tell its result with `Study.tell(trial, ...)`."""

    id: int  # the trial's number in the study's trace
    params: dict[str, Any]


class _Ticket:
    """One trial handed from the method's thread to the user and back."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.outcome: TaskOutcome | None = None
        self.done = threading.Event()


_FINISHED = object()  # put on the queue when the method's run has ended
RECORD_WAIT_S = 5.0  # how long a tell waits for its trial to reach the trace (it takes milliseconds)


class StudyClosed(KeyboardInterrupt):
    """Raised in the method's thread for a trial the study was closed without telling: the
    run ends as interrupted, and that trial is not charged (as on Ctrl-C)."""


class Study:
    """An ask/tell study over `space` (a SearchSpace or its JSON form) with any method."""

    def __init__(self, space: SearchSpace | dict[str, Any], method: str = "tpe", budget: int = 20, seed: int = 0,
                 model: str | ModelSettings = "local", prompt: str | None = None, runs_dir: str | Path = "runs",
                 direction: Literal["minimize", "maximize"] = "minimize", description: str = "",
                 name: str = "study", chat_model: Any = None) -> None:
        self.space = SearchSpace.parse(space)
        self.session_id = new_session_id(method)
        task = Task(name=name, space=self.space, evaluate=self._evaluate, description=description,
                    direction=direction)
        settings = model if isinstance(model, ModelSettings) else ModelSettings(model=model, seed=seed)
        self.spec = MethodSpec(method=method, task=register_task(task, self.session_id), budget=budget, seed=seed,
                               model=settings, prompt=prompt, runs_dir=Path(runs_dir))
        self.task = task
        self._chat_model = chat_model
        self._asked: queue.Queue[Any] = queue.Queue()
        self._pending: _Ticket | None = None
        self._pending_id = 0  # the id of the trial out (when _pending is set)
        self._told: list[Trial] = []
        self._recorded = 0  # charged trials the run has written to its trace
        self._recording = threading.Condition()
        self._stop = threading.Event()
        self._result: SessionResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"study-{self.session_id}", daemon=True)
        self._n = 0
        self._replay: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (params, result) recorded earlier
        self.resumed_from: str | None = None

    @classmethod
    def load(cls, run_dir: str | Path, chat_model: Any = None) -> Study:
        """Continue the study recorded in `run_dir` (a new run directory beside it)."""
        from tuneloop.tools.record import read_trace
        from tuneloop.tools.space import params_of

        t = read_trace(Path(run_dir))
        m = t.manifest or {}
        task = m.get("task") or {}
        if not is_ask_tell(m):
            raise StudyError(f"{run_dir} is not an ask/tell study (its manifest names no ask-tell task)")
        study = cls(m["space"], method=m["method"], budget=m["budget"], seed=m.get("seed", 0),
                    model=model_from_manifest(m),
                    prompt=(m.get("prompt") or {}).get("name"),
                    runs_dir=Path(run_dir).parent, direction=task.get("direction", "minimize"),
                    description=task.get("description", ""), name=task.get("name", "study"), chat_model=chat_model)
        for e in t.of("trial_evaluated"):
            if e.get("charged"):
                result = {"value": e.get("final_value"), **(e.get("metrics") or {}), "status": e.get("status", "ok"),
                          "error": e.get("error")}
                study._replay.append((params_of(e), result))
        study.resumed_from = t.session_id
        study.spec = study.spec.model_copy(update={"manifest_extra": {"resumed_from": t.session_id}})
        return study

    # ------------------------------------------------------------ the method's side
    def _run(self) -> None:
        try:
            self._result = run_method(self.spec, session_id=self.session_id, chat_model=self._chat_model,
                                      on_trial=self._on_trial,
                                      should_stop=self._stop.is_set)
        except StudyClosed:
            pass  # closed with a trial out: the trace says "interrupted"
        except BaseException as e:  # noqa: BLE001 - handed to the user's next ask
            self._error = e
        finally:
            self._asked.put(_FINISHED)

    def _on_trial(self, fields: dict[str, Any]) -> None:
        """Called by the run once a trial's event is written: a tell returns after that."""
        if fields.get("charged"):
            with self._recording:
                self._recorded += 1
                self._recording.notify_all()

    def _evaluate(self, params: dict[str, Any], seed: int) -> Any:
        if self._replay:  # a loaded study: the recorded result while the method retraces its steps
            recorded, result = self._replay.pop(0)
            if self.space.key(self.space.coerce(recorded)) == self.space.key(params):
                self._n += 1
                self._told.append(Trial(id=self._n, params=dict(params)))
                return result
            self._replay.clear()  # the method went another way: from here on, the user answers
        ticket = _Ticket(params)
        self._asked.put(ticket)
        ticket.done.wait()
        out = ticket.outcome
        if out is None:  # the study was closed with this trial untold
            raise StudyClosed
        return {"value": out.value, **out.metrics, "status": out.status, "error": out.error}

    # ------------------------------------------------------------ the user's side
    def ask(self, timeout: float | None = None) -> Trial:
        """The next configuration to evaluate (waits for the method to propose)."""
        if self._pending is not None:
            raise StudyError(f"trial {self._pending_id} is still out: tell its result first (a study hands out one "
                             "trial at a time)")
        if self._thread.ident is None:
            self._thread.start()
        try:
            item = self._asked.get(timeout=timeout)
        except queue.Empty:
            raise StudyError(f"the method proposed nothing within {timeout} s") from None
        if item is _FINISHED:
            self._asked.put(_FINISHED)  # every later ask gets the same answer
            if self._error is not None:
                raise StudyError(f"the study's method failed: {type(self._error).__name__}: {self._error}")
            assert self._result is not None
            raise StudyError(f"the study is over ({self._result.stop_reason}): its budget of "
                             f"{self.spec.budget} trials is spent" if self._result.stop_reason == "budget_spent"
                             else f"the study is over ({self._result.stop_reason})")
        self._pending, self._n = item, self._n + 1
        self._pending_id = self._n
        return Trial(id=self._n, params=dict(item.params))

    def tell(self, trial: Trial, value: float | dict[str, Any] | None = None, *, failed: bool = False) -> None:
        """The result of `trial`: a number, a dict of `value` and metrics, or failed=True. A
        NaN or a value that is not a number is a failed trial."""
        if self._pending is None or trial.id != self._pending_id:
            raise StudyError(f"trial {trial.id} is not the one out" + (
                f" (trial {self._pending_id} is)" if self._pending is not None else " (none is: ask first)"))
        outcome = TaskOutcome(status="failed", value=None, error="told failed") if failed else outcome_of(value)
        ticket, self._pending = self._pending, None
        ticket.outcome = outcome
        self._told.append(trial)
        with self._recording:  # returns once the trial is in the trace: `trials` then holds it
            ticket.done.set()
            self._recording.wait_for(lambda: self._recorded >= len(self._told), timeout=RECORD_WAIT_S)

    def close(self) -> str:
        """End the study and return how its run ended (`budget_spent`, or `interrupted` when
        closed early: a trial out, untold, is dropped uncharged)."""
        from tuneloop.tools.record import read_trace

        if len(self._told) < self.spec.budget or self._pending is not None:
            self._stop.set()  # trials left: end now (with the budget spent, an agent first gives its answer)
        if self._pending is not None:
            self._pending.done.set()  # told nothing: its evaluate raises StudyClosed, uncharged
            self._pending = None
        if self._thread.ident is None:
            self._thread.start()  # (never asked: the run starts and stops at once)
        while self._thread.is_alive():  # release every trial handed over but not told
            try:
                item = self._asked.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, _Ticket):
                item.done.set()
            else:
                self._asked.put(item)
                self._thread.join()
        if self._error is not None:
            raise StudyError(f"the study's method failed: {type(self._error).__name__}: {self._error}")
        finished = read_trace(self.run_dir).finished or {}
        return str(finished.get("stop_reason", "interrupted"))

    # ------------------------------------------------------------ what it found
    @property
    def trials(self) -> list[TrialResult]:
        """The charged trials so far, from the trace's events (in order)."""
        from tuneloop.tools.record import read_trace

        run_dir = self.spec.runs_dir / self.session_id
        if not (run_dir / "trace.jsonl").exists():
            return []
        return [TrialResult.from_event(e) for e in read_trace(run_dir).of("trial_evaluated") if e.get("charged")]

    @property
    def best(self) -> TrialResult | None:
        return min(self.trials, key=lambda t: t.score, default=None)

    @property
    def run_dir(self) -> Path:
        return self.spec.runs_dir / self.session_id


def tune(evaluate: Callable[[dict[str, Any]], Any], space: SearchSpace | dict[str, Any], method: str = "tpe",
         budget: int = 20, **study: Any) -> TrialResult | None:
    """The simple loop: ask, evaluate(params), tell, `budget` times; the best trial.

    >>> best = tune(lambda p: (p["x"] - 2) ** 2, {"x": {"type": "float", "low": 0, "high": 4}},
    ...             method="random", budget=5, runs_dir=tmp)
    >>> 0 <= best.params["x"] <= 4
    True
    """
    s = Study(space, method=method, budget=budget, **study)
    for _ in range(budget):
        try:
            trial = s.ask()
        except StudyError:
            break
        try:
            result = evaluate(trial.params)
        except KeyboardInterrupt:
            s.close()
            raise
        except Exception as e:  # noqa: BLE001 - the user's code failed on this trial: recorded as failed
            s.tell(trial, {"status": "failed", "error": f"{type(e).__name__}: {e}"})
            continue
        s.tell(trial, result)
    s.close()
    return s.best
