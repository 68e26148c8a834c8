"""The threads the embedded model takes: the cores other processes left free since the
last model call (/proc/stat's busy time less this process's own), against hand-computed
cases, and on this machine with a real busy-loop process beside it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tuneloop.agent.free_cores import FreeCores, read_proc_stat


def share(stats, own, clock, n_cpu=2) -> FreeCores:
    return FreeCores(n_cpu=n_cpu, read_stat=iter(stats).__next__, own_cpu=iter(own).__next__,
                     clock=iter(clock).__next__)


@pytest.mark.parametrize("busy,own_s,free,threads", [
    (0, 0.0, 2.0, 2),      # a quiet machine
    (100, 0.0, 1.0, 1),    # one core's worth busy, none of it ours: one free
    (100, 1.0, 2.0, 2),    # one core's worth busy, all of it our own threads: both free
    (200, 0.0, 0.0, 1),    # everything busy with others: still one thread
    (150, 0.5, 1.0, 1),    # 1.5 cores busy, 0.5 of them ours
])
def test_free_cores_are_the_machines_idle_time_plus_our_own(busy, own_s, free, threads):
    # 1 s between the looks, 200 ticks over 2 cores (100 Hz)
    s = share([(0, 0), (busy, 200)], [0.0, own_s], [0.0, 1.0])
    assert s.free() == pytest.approx(free)
    s = share([(0, 0), (busy, 200)], [0.0, own_s], [0.0, 1.0])
    assert s.threads() == threads


def test_without_proc_stat_every_core_is_free():
    assert share([None, None], [0.0, 0.0], [0.0, 1.0], n_cpu=4).threads() == 4


@pytest.mark.skipif(read_proc_stat() is None, reason="no /proc/stat here")
def test_a_busy_loop_beside_it_takes_a_core_away():
    if (FreeCores().n_cpu or 1) < 2:
        pytest.skip("one core: nothing to share")
    idle = FreeCores()
    time.sleep(0.3)
    quiet = idle.free()
    if quiet < 1.5:
        pytest.skip(f"the machine is busy already ({quiet:.1f} cores free)")
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = FreeCores()
        time.sleep(1.0)
        loaded = busy.free()
    finally:
        loop.kill()
        loop.wait()
    assert loaded <= quiet - 0.6, (quiet, loaded)  # about one core fewer (other jobs may share the machine)
