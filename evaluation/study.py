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

Parallel workers: ask again before telling and the method proposes another trial while
the first is out (tools/trial_pool.py): the trials out are charged (the budget counts
asks), shown to an agent as pending (its history table and tool replies), left to TPE's
constant liar and to CMA-ES's generation; results may come back in any order. A study's
`Trial.id` counts asks; its trace numbers trials in the order their results were recorded
(the same numbers when one trial at a time is out). `tune` is the simple loop.

`Study.load(run_dir)` continues an interrupted study in a new run directory: the method
runs again from the start with the same seed, and whenever it proposes a configuration
the old run recorded, the recorded result answers it (nobody is asked); the first
configuration it had not tried yet is the next `ask`. A study run one trial at a time
continues exactly where it stopped; one run with parallel workers retraces the same
steps only as far as results do not depend on the order they came back in (the method
now proposes one at a time), and a recorded trial it no longer proposes is left out.
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
from tuneloop.tools.trial_pool import Demand
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
        self._out: dict[int, _Ticket] = {}  # trials handed out, not told yet, by id
        self._lock = threading.Lock()  # _out, _n and _told: asks and tells may come from several threads
        self._demand = Demand()  # asks waiting plus trials out: how many the method keeps running
        self._told: list[Trial] = []
        self._recorded = 0  # charged trials the run has written to its trace
        self._recording = threading.Condition()
        self._stop = threading.Event()
        self._result: SessionResult | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"study-{self.session_id}", daemon=True)
        self._n = 0
        self._replay: dict[tuple[Any, ...], dict[str, Any]] = {}  # configuration -> result, recorded earlier
        self.resumed_from: str | None = None
        self.recorded = 0  # a loaded study: the results its earlier run recorded

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
                study._replay[study.space.key(study.space.coerce(params_of(e)))] = result
        study.resumed_from = t.session_id
        study.recorded = len(study._replay)
        study.spec = study.spec.model_copy(update={"manifest_extra": {"resumed_from": t.session_id}})
        return study

    # ------------------------------------------------------------ the method's side
    def _run(self) -> None:
        try:
            self._result = run_method(self.spec, session_id=self.session_id, chat_model=self._chat_model,
                                      on_trial=self._on_trial, should_stop=self._stop.is_set,
                                      demand=self._demand)
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
        with self._lock:  # a loaded study: the recorded result while the method retraces its steps
            result = self._replay.pop(self.space.key(params), None)
            if result is not None:
                self._n += 1
                self._told.append(Trial(id=self._n, params=dict(params)))
                return result
        ticket = _Ticket(params)
        self._asked.put(ticket)
        ticket.done.wait()
        out = ticket.outcome
        if out is None:  # the study was closed with this trial untold
            raise StudyClosed
        return {"value": out.value, **out.metrics, "status": out.status, "error": out.error}

    # ------------------------------------------------------------ the user's side
    def _start(self) -> None:
        with self._lock:  # two first asks at once start the method once
            if self._thread.ident is None:
                self._thread.start()

    def ask(self, timeout: float | None = None) -> Trial:
        """The next configuration to evaluate (waits for the method to propose). Asking
        again before telling hands out another trial, for a parallel worker."""
        if self.handed_out:  # the budget counts asks
            raise StudyError(f"the study's budget of {self.spec.budget} trials is handed out: tell the trials "
                             f"out ({', '.join(str(t.id) for t in self.pending)}); nothing more to ask")
        self._start()
        self._demand.add(1)
        try:
            item = self._asked.get(timeout=timeout)
        except queue.Empty:
            self._demand.add(-1)  # nobody waits now; a trial proposed meanwhile goes to the next ask
            raise StudyError(f"the method proposed nothing within {timeout} s") from None
        if item is _FINISHED:
            self._demand.add(-1)
            self._asked.put(_FINISHED)  # every later ask gets the same answer
            if self._error is not None:
                raise StudyError(f"the study's method failed: {type(self._error).__name__}: {self._error}")
            assert self._result is not None
            raise StudyError(f"the study is over ({self._result.stop_reason}): its budget of "
                             f"{self.spec.budget} trials is spent" if self._result.stop_reason == "budget_spent"
                             else f"the study is over ({self._result.stop_reason})")
        with self._lock:
            self._n += 1
            self._out[self._n] = item
            return Trial(id=self._n, params=dict(item.params))

    @property
    def handed_out(self) -> bool:
        """True while every trial of the budget is handed out and some are not told yet."""
        with self._lock:
            return bool(self._out) and self._n >= self.spec.budget

    @property
    def pending(self) -> list[Trial]:
        """The trials out: asked, not told yet."""
        with self._lock:
            return [Trial(id=i, params=dict(t.params)) for i, t in self._out.items()]

    def tell(self, trial: Trial | int, value: float | dict[str, Any] | None = None, *, failed: bool = False) -> None:
        """The result of `trial` (or its id): a number, a dict of `value` and metrics, or
        failed=True. A NaN or a value that is not a number is a failed trial."""
        tid = trial if isinstance(trial, int) else trial.id
        outcome = TaskOutcome(status="failed", value=None, error="told failed") if failed else outcome_of(value)
        with self._lock:
            ticket = self._out.pop(tid, None)
            if ticket is None:
                told = any(t.id == tid for t in self._told)
                out = ", ".join(str(i) for i in self._out)
                raise StudyError(f"trial {tid} " + ("was already told" if told else "is not out") + (
                    f" (out now: {out})" if out else " (none is out: ask first)"))
            self._told.append(Trial(id=tid, params=dict(ticket.params)))
            n_told = len(self._told)
        self._demand.add(-1)  # first: the method must not propose for a worker that no longer waits
        ticket.outcome = outcome
        with self._recording:  # returns once the trial is in the trace: `trials` then holds it
            ticket.done.set()
            self._recording.wait_for(lambda: self._recorded >= n_told, timeout=RECORD_WAIT_S)

    def close(self) -> str:
        """End the study and return how its run ended (`budget_spent`, or `interrupted` when
        closed early: a trial out, untold, is dropped uncharged)."""
        from tuneloop.tools.record import read_trace

        with self._lock:
            out, self._out = list(self._out.values()), {}
        if len(self._told) < self.spec.budget or out:
            self._stop.set()  # trials left: end now (with the budget spent, an agent first gives its answer)
        self._demand.close()
        for ticket in out:
            ticket.done.set()  # told nothing: its evaluate raises StudyClosed, uncharged
        self._start()  # (never asked: the run starts and stops at once)
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
