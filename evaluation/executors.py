"""Where a study's cells run.

    LocalExecutor  CPU-bound cells (classical methods, the embedded model) in a process
                   pool, one per core by default, each llama.cpp with its share of the
                   cores; cells that wait on a remote model in threads of this process,
                   up to `concurrency` at once, whatever the core count.
    RayExecutor    every cell a Ray task, on a local Ray (started and stopped here) or
                   an existing cluster: embedded-model cells reserve the CPUs their
                   llama.cpp threads use, remote-model cells a quarter of one.

Both call `on_done(cell)` as cells finish, in the caller's thread, and leave each
finished cell's directory (manifest, trace, result.json) under the study's runs dir, so
the harness, resuming and every `trace` command see the same files from either.
"""

from __future__ import annotations

import os
import queue
import socket
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.tools.errors import UserError
from tuneloop.tools.files import atomic_write_text

REMOTE_CPU_SHARE = 0.25  # a Ray task that waits on the network holds a quarter of a CPU


@dataclass(frozen=True)
class CellJob:
    """One cell to run: what `harness.run_cell` needs, and how heavy it is."""

    cfg: Any  # EvalConfig
    cell: tuple
    threads: int  # cores for an embedded model's llama.cpp
    factory: Callable
    remote: bool  # waits on a remote model (network-bound), not on this machine's cores
    run_cell: Callable  # harness.run_cell: runs the cell and writes its directory under cfg.out
    dest: Path  # the cell's directory in the study

    @property
    def ray_cpus(self) -> float:
        """What the cell reserves on a Ray node: a share of a CPU while it waits on the
        network, its llama.cpp threads for the embedded model, one CPU otherwise."""
        if self.remote:
            return REMOTE_CPU_SHARE
        return self.threads if self.cell[0].uses_llm else 1  # cell[0]: the Arm


def run_job(job: CellJob, executor: dict[str, Any] | None = None) -> tuple:
    job.run_cell(job.cfg, *job.cell, threads_per_worker=job.threads, model_factory=job.factory, executor=executor)
    return job.cell


def _worker_init() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C


class LocalExecutor:
    """A process pool for CPU-bound cells, threads for remote-model cells."""

    name = "local"

    def __init__(self, workers: int, concurrency: int) -> None:
        self.workers = workers
        self.concurrency = concurrency

    def run(self, jobs: list[CellJob], on_done: Callable[[tuple], None]) -> None:
        import multiprocessing

        done: queue.Queue = queue.Queue()
        cpu = [j for j in jobs if not j.remote]
        api = [j for j in jobs if j.remote]
        meta = {"backend": self.name, "host": socket.gethostname()}
        pool = multiprocessing.Pool(self.workers, initializer=_worker_init) if cpu and self.workers > 1 else None
        inline = ThreadPoolExecutor(1) if cpu and pool is None else None  # one at a time, off the caller's thread
        threads = ThreadPoolExecutor(self.concurrency) if api else None
        try:
            for j in cpu:
                if pool is not None:
                    pool.apply_async(run_job, (j, meta), callback=done.put, error_callback=done.put)
                else:
                    inline.submit(run_job, j, meta).add_done_callback(lambda f: done.put(f.exception() or f.result()))
            for j in api:
                threads.submit(run_job, j, meta).add_done_callback(lambda f: done.put(f.exception() or f.result()))
            for _ in jobs:
                item = done.get()
                if isinstance(item, BaseException):
                    raise item
                on_done(item)
        finally:
            # on Ctrl-C or a failed cell, stop at once rather than wait minutes for running
            # LLM cells: their directories have no result.json, so the next run redoes them
            if pool is not None:
                pool.terminate()
            for ex in (inline, threads):
                if ex is not None:
                    ex.shutdown(wait=False, cancel_futures=True)


def check_ray_address(address: str) -> None:
    """Fail fast, before anything starts, when a Ray address cannot be reached."""
    hostport = address.split("://", 1)[-1].rsplit("/", 1)[0]
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address!r} ({e}): start it with `ray start --head` "
                        "or check --ray-address") from None


def _ray_cell(job: CellJob) -> tuple[tuple, dict[str, bytes], dict]:
    """Run one cell on a Ray worker in a scratch runs dir; return its files, so the driver
    writes them into the study's folder whether or not the nodes share a file system."""
    import ray

    ctx = ray.get_runtime_context()
    meta = {"backend": "ray", "node": ctx.get_node_id(), "host": socket.gethostname()}
    with tempfile.TemporaryDirectory(prefix="tuneloop-cell-") as tmp:
        scratch = job.cfg.model_copy(update={"out": Path(tmp)})
        run_job(CellJob(scratch, job.cell, job.threads, job.factory, job.remote, job.run_cell, job.dest), meta)
        files = {p.name: p.read_bytes() for d in (Path(tmp) / "runs").iterdir() for p in d.iterdir()}
    return job.cell, files, meta


class RayExecutor:
    """Every cell a Ray task; local Ray unless an address is given."""

    name = "ray"

    def __init__(self, address: str | None) -> None:
        self.address = address

    def run(self, jobs: list[CellJob], on_done: Callable[[tuple], None]) -> None:
        import ray

        started = not ray.is_initialized()
        if started:
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR")
        pending: dict = {}
        try:
            task = ray.remote(_ray_cell)
            for j in jobs:
                pending[task.options(num_cpus=j.ray_cpus, max_retries=0).remote(j)] = j
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    cell, files, _meta = ray.get(ref)
                    d = job.dest
                    d.mkdir(parents=True, exist_ok=True)
                    for name in sorted(files, key=lambda n: n == "result.json"):  # result.json last: the cell is done
                        atomic_write_text(d / name, files[name].decode("utf-8"))
                    on_done(cell)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            if started:
                ray.shutdown()

