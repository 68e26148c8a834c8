"""How many cores the rest of the machine leaves free, for llama.cpp's threads.

llama.cpp's threads wait for each other at every step of the model; with one of them on a
core another process keeps busy, every step waits for that thread's time slice. Measured
on this 2-core machine (a budget-10 session, `tuneloop run`, one busy-loop process beside
it): 2 threads took 2.2 times as long as on a quiet machine, 1 thread 1.5 times as long.
So, before each model call, the embedded model takes as many threads as there were free
cores since its previous call: the machine's busy time (/proc/stat) less this process's
own CPU time (its own threads are not a load), over the time between the two looks.

    >>> share = FreeCores(n_cpu=2, read_stat=iter([(0, 0), (100, 200)]).__next__,
    ...                   own_cpu=iter([0.0, 0.0]).__next__, clock=iter([0.0, 1.0]).__next__)
    >>> share.threads()  # half of 2 cores' time went to others in the last second: one is free
    1

Where /proc/stat cannot be read (not Linux), every core is taken as free.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

MIN_WINDOW_S = 0.1  # a look this soon after the previous one waits this long to see anything


def read_proc_stat() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all cores since boot; None where there is no /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    return sum(ticks) - idle, sum(ticks)


def own_cpu_s() -> float:
    """CPU seconds this process has used (every thread, user and system)."""
    t = os.times()
    return t.user + t.system


class FreeCores:
    """The free cores since the last look, as a thread count for the next model call."""

    def __init__(self, n_cpu: int | None = None, read_stat: Callable[[], tuple[int, int] | None] = read_proc_stat,
                 own_cpu: Callable[[], float] = own_cpu_s, clock: Callable[[], float] = time.monotonic) -> None:
        self.n_cpu = n_cpu or os.cpu_count() or 1
        self.read_stat, self.own_cpu, self.clock = read_stat, own_cpu, clock
        self._last = self._look()

    def _look(self) -> tuple[tuple[int, int] | None, float, float]:
        return self.read_stat(), self.own_cpu(), self.clock()

    def free(self) -> float:
        """Cores not used by other processes since the previous call (between 0 and n_cpu)."""
        (stat0, own0, t0) = self._last
        now = self._look()
        if now[2] - t0 < MIN_WINDOW_S and self.clock is time.monotonic:
            time.sleep(MIN_WINDOW_S - (now[2] - t0))
            now = self._look()
        self._last = now
        (stat1, own1, t1) = now
        if stat0 is None or stat1 is None or stat1[1] <= stat0[1] or t1 <= t0:
            return float(self.n_cpu)
        busy_cores = (stat1[0] - stat0[0]) / (stat1[1] - stat0[1]) * self.n_cpu
        own_cores = (own1 - own0) / (t1 - t0)
        return min(float(self.n_cpu), max(0.0, self.n_cpu - max(0.0, busy_cores - own_cores)))

    def threads(self) -> int:
        """The free cores, rounded, at least one."""
        return max(1, min(self.n_cpu, round(self.free())))
