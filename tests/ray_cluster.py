"""A real Ray head node for tests, started with `ray start --head --block` in a session
of its own, on a free port, with its own temp dir and HOME, and stopped by ending that
session: only the processes it started (GCS, raylet, agents, workers), never another
Ray on the machine, which `ray stop` would kill as well."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY_VARS = ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without Ray's address and auth variables, HOME set to
    `home` (so ~/.ray/auth_token is the test's), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in RAY_VARS}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def session_pids(sid: int) -> list[int]:
    """The processes in session `sid` (Linux /proc)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid:
            pids.append(int(d.name))
    return pids


def end_session(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM to the session leader (`ray start --block` stops what it started), then
    SIGKILL to whatever of its session is left."""
    sid = proc.pid
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + grace_s
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in session_pids(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@dataclass
class RayHead:
    """A running head node: `address` to pass as --ray-address."""

    address: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path
    token: str | None
    home: Path  # its HOME: holds .ray/auth_token when `token` is set
    env: dict = field(repr=False, default_factory=dict)

    def stop(self) -> None:
        end_session(self.proc)
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def info(self, env: dict[str, str]) -> dict:
        """The cluster's node ids and how many jobs (drivers) it has seen, read from its
        GCS with `env`'s credentials."""
        code = ("import json, sys; from ray._raylet import GcsClient; c = GcsClient(address=sys.argv[1]); "
                "print(json.dumps({'nodes': [n.hex() for n in c.get_all_node_info()], "
                "'jobs': len(c.get_all_job_info())}))")
        env = {**env, "RAY_AUTH_MODE": "token"} if self.token else env  # Ray's GcsClient sends no token unasked
        out = subprocess.run([sys.executable, "-c", code, self.address], env=env, capture_output=True, text=True,
                             timeout=60, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])


def start_head(token: str | None, start_timeout_s: float = 90.0) -> RayHead:
    """`ray start --head` as the cluster recipe runs it, one CPU and a small object store.
    With `token`, HOME/.ray/auth_token holds it and RAY_AUTH_MODE is unset: Ray 2.52+
    turns token auth on by itself when a token is at hand (ray/scripts/scripts.py calls
    maybe_enable_token_auth_if_token_available). Without, no token exists: no auth."""
    temp_dir = Path(tempfile.mkdtemp(prefix="tlray-", dir="/tmp"))  # short: Ray's socket paths live under it
    home = temp_dir / "home"
    (home / ".ray").mkdir(parents=True)
    if token:
        (home / ".ray" / "auth_token").write_text(token)
    port = free_port()
    log = temp_dir / "head.log"
    env = clean_env(home)
    cmd = ["ray", "start", "--head", "--port", str(port), "--num-cpus", "1", "--object-store-memory", "100000000",
           "--include-dashboard", "false", "--dashboard-port", str(free_port()), "--disable-usage-stats",
           "--temp-dir", str(temp_dir / "ray"), "--block"]
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    head = RayHead(f"127.0.0.1:{port}", proc, temp_dir, log, token, home, env)
    deadline = time.monotonic() + start_timeout_s
    while b"Ray runtime started" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace")[-3000:]
            head.stop()
            raise RuntimeError(f"ray start --head did not come up:\n{text}")
        time.sleep(0.25)
    return head


def run_cli(args: list[str], env: dict[str, str], timeout_s: float = 240.0) -> subprocess.CompletedProcess:
    """`python -m tuneloop.evaluation.cli ARGS` in a session of its own (a Ray it starts is
    ended with it if it overruns)."""
    proc = subprocess.Popen([sys.executable, "-m", "tuneloop.evaluation.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        end_session(proc, grace_s=5)
        out, err = proc.communicate()
        raise AssertionError(f"tuneloop {' '.join(args)} ran over {timeout_s} s\n{err[-3000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
