"""Where a study's cells run.

    LocalExecutor  CPU-bound cells (classical methods, the embedded model) in a process
                   pool, one per core by default, each llama.cpp with its share of the
                   cores; cells that wait on a remote model in threads of this process,
                   up to `concurrency` at once, whatever the core count.
    RayExecutor    every cell a Ray task, on a Ray of its own (started and stopped here,
                   whatever cluster RAY_ADDRESS or `ray start` left on the machine) or,
                   given an address, on that cluster (token auth from Ray's RAY_AUTH_*
                   variables, see RayAuth; check_ray_address words every way the
                   connection fails as one line): embedded-model cells reserve the CPUs
                   their llama.cpp threads use, remote-model cells a quarter of one.

Both call `on_done(cell)` as cells finish, in the caller's thread, and leave each
finished cell's directory (manifest, trace, result.json) under the study's runs dir, so
the harness, resuming and every `trace` command see the same files from either.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
        from concurrent.futures import Future, ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        done: queue.Queue = queue.Queue()
        cpu = [j for j in jobs if not j.remote]
        api = [j for j in jobs if j.remote]
        meta = {"backend": self.name, "host": socket.gethostname()}
        children_before = set(multiprocessing.active_children())
        # ProcessPoolExecutor, not multiprocessing.Pool: a worker that dies (a crash in
        # llama.cpp's native code, the OOM killer) breaks the executor and fails every
        # pending cell, where Pool quietly starts a new worker and waits forever for the
        # lost cell's answer
        pool = (ProcessPoolExecutor(self.workers, initializer=_worker_init)
                if cpu and self.workers > 1 else None)
        inline = ThreadPoolExecutor(1) if cpu and pool is None else None  # one at a time, off the caller's thread
        threads = ThreadPoolExecutor(self.concurrency) if api else None

        def put(f: Future) -> None:
            if not f.cancelled():  # cancelled: by the shutdown below, after the run has ended
                done.put(f.exception() or f.result())

        try:
            runner = pool or inline
            for j in cpu:
                assert runner is not None  # cpu cells: made above
                runner.submit(run_job, j, meta).add_done_callback(put)
            for j in api:
                assert threads is not None  # api cells: made above
                threads.submit(run_job, j, meta).add_done_callback(put)
            for finished in range(len(jobs)):
                item = done.get()
                if isinstance(item, BrokenProcessPool):
                    raise WorkerDied(finished, len(jobs)) from None
                if isinstance(item, BaseException):
                    raise item
                on_done(item)
        finally:
            # on Ctrl-C or a failed cell, stop at once rather than wait minutes for running
            # LLM cells: their directories have no result.json, so the next run redoes them
            for ex in (pool, inline, threads):
                if ex is not None:
                    ex.shutdown(wait=False, cancel_futures=True)
            for child in set(multiprocessing.active_children()) - children_before:  # the pool's workers
                child.terminate()


class WorkerDied(UserError):
    """A worker process of the local pool ended abruptly: a crash in native code or a kill
    from outside. The finished cells are kept; the same command resumes from them."""

    def __init__(self, finished: int, total: int) -> None:
        super().__init__(
            f"a worker process ended abruptly after {finished} of this run's {total} cells (a crash in native code, "
            "such as the embedded model's llama.cpp, or a kill from outside, such as the out-of-memory killer; "
            "`dmesg` names it); the finished cells are kept and the same command resumes the study")


RAY_PROBE_TIMEOUT_S = 30.0  # a GCS that does not answer in this long is reported, not waited on
TOKEN_HELP = ("set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node prints it), "
              "or RAY_AUTH_TOKEN_PATH to a file that holds it")


@dataclass(frozen=True)
class RayAuth:
    """How to authenticate to a Ray cluster, from the variables Ray itself reads:
    RAY_AUTH_MODE, then the token from RAY_AUTH_TOKEN, else the file named by
    RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's own order). Ray 2.52+ turns token
    mode on by itself for `ray start --head` and for a local cluster it finds, but not for
    an explicit address: tuneloop turns it on there too whenever a token is at hand (a
    cluster without auth ignores the token), so the cluster recipe works with no extra
    variable on the head node. An explicit RAY_AUTH_MODE is left as it is."""

    mode: str | None  # RAY_AUTH_MODE to connect with; None: leave it unset
    source: str | None  # where the token comes from, for messages (never the token itself)
    secrets: tuple[str, ...] = field(repr=False)  # the token, to keep out of every message


def ray_auth(local: bool = False) -> RayAuth:
    """The auth settings to connect with (`local`: to start a Ray of our own, which Ray
    sets up itself, a token included). What Ray would abort the process on (a
    RAY_AUTH_TOKEN_PATH that cannot be read; token mode and no token to connect with) is a
    UserError here."""
    token = os.environ.get("RAY_AUTH_TOKEN", "")
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", "")
    source: str | None = None
    secret = ""
    if token:
        source, secret = "RAY_AUTH_TOKEN", token
    elif path:
        secret = _read_token(Path(path))
        if not secret:
            raise UserError(f"RAY_AUTH_TOKEN_PATH is {path}, which cannot be read or is empty: point it at a file "
                            "that holds the Ray cluster's token, or unset it")
        source = f"RAY_AUTH_TOKEN_PATH ({path})"
    else:
        default = Path.home() / ".ray" / "auth_token"
        secret = _read_token(default)
        if secret:
            source = str(default)
    mode = os.environ.get("RAY_AUTH_MODE")
    if local:
        mode = None
    elif mode is None:
        mode = "token" if source else None
    elif mode.lower() == "token" and source is None:
        raise UserError(f"RAY_AUTH_MODE is {mode} but no Ray auth token is set: {TOKEN_HELP}")
    return RayAuth(mode, source, tuple(s for s in {secret, secret.strip()} if s))


def _read_token(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _scrub(text: str, auth: RayAuth) -> str:
    """One line, without the token."""
    for s in auth.secrets:
        text = text.replace(s, "***")
    return " ".join(text.split())


def _hostport(address: str) -> str:
    return address.split("://", 1)[-1].rsplit("/", 1)[0]


@contextlib.contextmanager
def _auth_env(auth: RayAuth):
    """RAY_AUTH_MODE as `auth` says while Ray connects from this process; as before after.
    Ray caches the mode and the token once read, so both are read again here."""
    before = os.environ.get("RAY_AUTH_MODE")
    if auth.mode is not None:
        os.environ["RAY_AUTH_MODE"] = auth.mode
    _reload_ray_auth()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)  # ray.init of a local Ray sets it too
        else:
            os.environ["RAY_AUTH_MODE"] = before


def _reload_ray_auth() -> None:
    import ray

    if ray.is_initialized():
        return
    try:
        # not in Ray's _raylet.pyi, which declares only part of the extension module
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]
    except ImportError:  # a Ray before token auth (2.52)
        return
    Config.initialize("")  # what ray._private.authentication.authentication_token_setup does on a change
    AuthenticationTokenLoader.instance().reset_cache()


def _probe_gcs(hostport: str) -> None:
    """Run in a child process by check_ray_address: reach the cluster's GCS as `ray.init`
    does (token included), read the versions it records; print one JSON line."""
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]  # missing from Ray's _raylet.pyi

        client = GcsClient(address=hostport)
    except Exception as e:  # noqa: BLE001 -- reported to the parent, which words it
        print(json.dumps({"ok": False, "error": type(e).__name__, "message": str(e)}), flush=True)
        return
    meta: dict = {}
    try:
        try:
            from ray._common.usage.usage_lib import get_cluster_metadata
        except ImportError:
            # the module's place before Ray moved it to ray._common (absent from the Ray mypy sees)
            from ray._private.usage.usage_lib import get_cluster_metadata  # type: ignore[import-not-found, no-redef]
        meta = get_cluster_metadata(client) or {}
    except Exception:  # noqa: BLE001, S110 -- no versions recorded: ray.init checks them anyway
        pass
    print(json.dumps({"ok": True, "ray": meta.get("ray_version"), "python": meta.get("python_version")}), flush=True)


_checked: set[tuple] = set()  # (address, RayAuth) pairs that passed check_ray_address


def check_ray_address(address: str) -> None:
    """Fail fast, before anything starts, when the Ray cluster at `address` cannot be used
    from here: nothing listening, not a Ray head, an auth token missing or refused, other
    Ray or Python versions. Each is one UserError line that says what to check."""
    hostport = _hostport(address)
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except (OSError, ValueError) as e:
        raise UserError(f"cannot reach the Ray cluster at {address!r} ({e}): start it with `ray start --head` "
                        "or check --ray-address") from None
    auth = ray_auth()
    if address.startswith("ray://"):
        return  # Ray Client: ray.init reports its own failures (RayExecutor words them)
    key = (address, auth)
    if key in _checked:
        return
    env = dict(os.environ)
    if auth.mode is not None:
        env["RAY_AUTH_MODE"] = auth.mode
    cmd = [sys.executable, "-c", "import sys; from tuneloop.evaluation.executors import _probe_gcs; "
           "_probe_gcs(sys.argv[1])", hostport]
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=RAY_PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"no Ray cluster answered at {address!r} within {RAY_PROBE_TIMEOUT_S:g} s: check that "
                        "--ray-address is the head node's address and the --port of its `ray start --head`") \
            from None
    lines = proc.stdout.strip().splitlines()
    try:
        got = json.loads(lines[-1])
    except (IndexError, ValueError):
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise UserError(f"cannot connect to the Ray cluster at {address!r} (the Ray client stopped: "
                        f"{_scrub(last[0], auth)[:300]}): check --ray-address and the RAY_AUTH_* variables") \
            from None
    if not got["ok"]:
        raise UserError(_connect_error(address, auth, got["error"], got["message"]))
    _check_versions(address, got.get("ray"), got.get("python"))
    _checked.add(key)


def _connect_error(address: str, auth: RayAuth, kind: str, message: str) -> str:
    """One line for a failed connection: what went wrong and what to check."""
    text = _scrub(message, auth)
    if kind == "AuthenticationError" or "InvalidAuthToken" in text or "Unauthenticated" in text:
        if auth.mode is None or auth.mode.lower() != "token":
            mode = os.environ.get("RAY_AUTH_MODE")
            why = f"RAY_AUTH_MODE is {mode}, so no token was sent" if mode else "no auth token is set here"
            return f"the Ray cluster at {address!r} wants an auth token and {why}: {TOKEN_HELP}"
        return (f"the Ray cluster at {address!r} refused the auth token from {auth.source}: {TOKEN_HELP}")
    if "Timed out" in text or "TimedOut" in text:
        return (f"no Ray cluster answered at {address!r} ({text[:200]}): check that --ray-address is the head "
                "node's address and the --port of its `ray start --head`")
    return (f"cannot connect to the Ray cluster at {address!r} ({kind}: {text[:300]}): check --ray-address, "
            "that the cluster runs, and the RAY_AUTH_* variables")


def _check_versions(address: str, ray_version: str | None, python_version: str | None) -> None:
    """Ray's rule (ray._private.utils.check_version_info): the same Ray, and the same Python
    to the patch level (to the minor one with RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL=minor)."""
    import platform

    import ray

    if not ray_version or not python_version:
        return
    mine = platform.python_version()
    level = 2 if os.environ.get("RAY_DEFAULT_PYTHON_VERSION_MATCH_LEVEL", "patch") == "minor" else 3
    if ray_version != ray.__version__ or python_version.split(".")[:level] != mine.split(".")[:level]:
        raise UserError(f"the Ray cluster at {address!r} runs Ray {ray_version} on Python {python_version}, this "
                        f"machine Ray {ray.__version__} on Python {mine}: use the same Ray and Python versions as "
                        "the cluster")


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

        with contextlib.ExitStack() as stack:
            if not ray.is_initialized():
                self._start(stack)
            self._run(jobs, on_done)

    def _start(self, stack: contextlib.ExitStack) -> None:
        """Connect to the cluster at the address, or start a Ray of our own (address
        "local": never the cluster that RAY_ADDRESS or a running `ray start` would give
        `ray.init()`); shut it down when `stack` closes. Any failure is one UserError line."""
        import ray

        if self.address:
            check_ray_address(self.address)  # checked already by the CLI: remembered, not redone
        auth = ray_auth(local=not self.address)
        stack.enter_context(_auth_env(auth))
        try:
            # ray.init annotates logging_level as int, but takes a level name too (its own default is 'info')
            if self.address:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")  # type: ignore[arg-type]
            else:
                ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                         log_to_driver=False, logging_level="ERROR")  # type: ignore[arg-type]
        except Exception as e:  # noqa: BLE001 -- every way Ray fails to start or connect: one line
            with contextlib.suppress(Exception):
                ray.shutdown()  # whatever half of it came up
            if self.address:
                raise UserError(_connect_error(self.address, auth, type(e).__name__, str(e))) from None
            raise UserError(f"cannot start a local Ray ({type(e).__name__}: {_scrub(str(e), auth)[:300]})") \
                from None
        stack.callback(ray.shutdown)

    def _run(self, jobs: list[CellJob], on_done: Callable[[tuple], None]) -> None:
        import ray

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

