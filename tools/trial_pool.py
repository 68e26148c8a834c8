"""Several trials out at once: ask/tell with parallel workers.

A Study's user may ask for a second configuration before telling the first (two workers,
Optuna's `n_jobs=2`). The method then has to propose while earlier trials are pending, so
a proposal cannot wait for its own result. `Demand` is the user's side: how many trials
the user wants out right now (asks waiting plus trials not yet told). `TrialPool` is the
method's side: it reserves each proposal with the Evaluator (charged when handed out:
the budget counts asks), runs it in a worker thread (which blocks until the user tells),
and reports results as they come back, in the order they come back.

    >>> from tuneloop.tools.trials import Evaluator, EvaluatorConfig
    >>> demand = Demand(); demand.add(2)       # two workers asked
    >>> pool = TrialPool(Evaluator(EvaluatorConfig(budget=3)), demand)
    >>> pool.submit({"learning_rate": 1e-3, "momentum": 0.9}, "random")  # runs in a thread
    >>> pool.has_room
    True
    >>> pool.submit({"learning_rate": 1e-2, "momentum": 0.5}, "random")
    >>> demand.add(-2)                          # both told (here: GD answers by itself)
    >>> pool.wait(until_all=True)
    >>> sorted(r.learning_rate for r in pool.take()[0])
    [0.001, 0.01]

With a demand that never exceeds 1 the pool runs trials strictly one after another, in
the order a sequential run would: the same trials, the same trace.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from tuneloop.tools.trials import Evaluator, Reservation, TrialResult

__all__ = ["Demand", "TrialPool"]


class Demand:
    """How many trials the user wants out at once; waking whoever waits on it."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self._wanted = 0
        self.closed = False

    @property
    def wanted(self) -> int:
        return self._wanted

    def add(self, k: int) -> None:
        """+1 when a user asks, -1 when a trial is told (before its result is handed back,
        so that the method does not propose for a worker that is no longer waiting)."""
        with self.cond:
            self._wanted += k
            self.cond.notify_all()

    def close(self) -> None:
        """No more trials: wake every waiter (the study is closing)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()


class TrialPool:
    """Reserved trials running in worker threads, as many as the demand asks for."""

    def __init__(self, ev: Evaluator, demand: Demand) -> None:
        self.ev = ev
        self.demand = demand
        self._done: list[TrialResult] = []
        self._failure: BaseException | None = None  # raised by a worker (a study closed with the trial out)
        self._running = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def pending(self) -> list[dict[str, Any]]:
        """The configurations out, not yet answered."""
        return self.ev.pending

    @property
    def has_room(self) -> bool:
        """True when the method should propose another trial now."""
        return not self.ev.exhausted and not self.demand.closed and self._running < self.demand.wanted

    def submit(self, params: Mapping[str, Any], source: str) -> TrialResult | None:
        """Reserve a proposal and start it; a repeat is answered at once (returned).
        Raises the Evaluator's InvalidProposal and BudgetExhausted."""
        out = self.ev.reserve(params, source)
        if isinstance(out, TrialResult):
            return out
        with self.demand.cond:
            self._running += 1
        threading.Thread(target=self._work, args=(out,), name="tuneloop-trial", daemon=True).start()
        return None

    def _work(self, reservation: Reservation) -> None:
        try:
            result = self.ev.run(reservation)
        except BaseException as e:  # noqa: BLE001 - handed to the method's thread by wait()
            with self.demand.cond:
                self._running -= 1
                self._failure = self._failure or e
                self.demand.cond.notify_all()
            return
        with self.demand.cond:
            self._running -= 1
            self._done.append(result)
            self.demand.cond.notify_all()

    def wait(self, until_all: bool = False, timeout: float | None = None) -> None:
        """Block until a result has come back or there is room for another proposal (with
        `until_all`: until no trial is running); `take` then says which."""

        def ready() -> bool:
            if until_all or self._failure is not None:  # a failure: the others uncharge their trials first
                return self._running == 0
            return bool(self._done) or self.has_room or self.demand.closed and self._running == 0

        with self.demand.cond:
            self.demand.cond.wait_for(ready, timeout=timeout)

    def take(self) -> tuple[list[TrialResult], bool]:
        """The results come back since the last take, and whether to propose now, read at
        one instant: a result is always told before the proposal it could inform. A
        worker's failure (a study closed with a trial out) is raised here, once no trial
        is running."""
        with self.demand.cond:
            if self._failure is not None and self._running == 0:
                raise self._failure
            done, self._done = self._done, []
            return done, self.has_room and self._failure is None
