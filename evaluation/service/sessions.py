"""The service's sessions: a bounded pool that runs them in the background, and the list
of every session in the runs dir, whoever started it (the CLI, `eval`, the service).

A session started here is a session like any other: run_method writes its manifest.json
and trace.jsonl into the runs dir. A session's request is kept in its folder
(request.json; a refused one leaves no folder), so a server that stops with sessions waiting queues them
again when it starts. A session that fails before its trace could say so (its model cannot
be built) still gets a trace that says why. Remote-model and classical sessions
run in threads, up to `max_running` at once; the embedded model runs one session at a
time per process (its llama.cpp uses every core). Status comes from memory while a
session is queued or running, else from its trace: a trace without session_finished is
a session that was running when a server stopped, so it is interrupted, and resumable.

The list is a query on an index of the runs dir in SQLite (run_index.py): rebuilt from
the files when missing or stale, re-synced in the background, and the sessions running
here re-read before every listing, so a page of 50 of 10,000 sessions costs what a page of
50 of 50 does.
"""

from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

from tuneloop.agent.models import ModelFactory, is_local, make_chat_model
from tuneloop.evaluation.service.run_index import Page, Query, RunIndex
from tuneloop.evaluation.service.schemas import SessionRequest, SessionRow, SessionStatus
from tuneloop.tools.errors import TuneloopError, UserError
from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.tasks import is_ask_tell

SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,200}$")
FAILED_STOPS = ("model_error",)
INTERRUPTED_STOPS = ("interrupted",)
REQUEST_FILE = "request.json"  # a session's request, kept from the moment it is queued


class QueueFull(TuneloopError, RuntimeError):
    pass


class SessionManager:
    def __init__(self, runs_dir: Path, max_running: int = 4, max_queued: int = 64,
                 model_factory: ModelFactory = make_chat_model) -> None:
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.max_queued = max_queued
        self.factory = model_factory
        self.pool = ThreadPoolExecutor(max_running, thread_name_prefix="tuneloop-session")
        self.local_model = threading.Lock()  # the embedded model: one session at a time
        self.lock = threading.Lock()
        self.active: dict[str, dict[str, Any]] = {}  # id -> {"status", "cancel", "model"}
        self._was_active: set[str] = set()  # running at the last listing: re-read once more when done
        self.index = RunIndex(self.runs_dir, read_row=self._index_row, is_run_id=lambda n: bool(SESSION_ID.match(n)))
        self.index.start()
        self.requeued = self._requeue()

    # ------------------------------------------------------------------ paths
    def run_dir(self, session_id: str) -> Path | None:
        """The session's directory, or None: never a path outside the runs dir."""
        if not SESSION_ID.match(session_id):
            return None
        d = (self.runs_dir / session_id).resolve()
        if d.parent != self.runs_dir.resolve() or not (d.is_dir() or session_id in self.active):
            return None
        return d

    # ------------------------------------------------------------------ running
    def check(self, req: SessionRequest) -> None:
        """Refuse at once what cannot run (a UserError): an LLM method whose model the
        default factory could not build. An injected factory (tests) is trusted."""
        from tuneloop.agent.models import check_settings
        from tuneloop.evaluation.strategies import LLM_METHODS

        if self.factory is make_chat_model and req.method in LLM_METHODS:
            check_settings(self._settings(req))

    def start(self, req: SessionRequest) -> tuple[str, Literal["queued"]]:
        from tuneloop.tools.files import atomic_write_text
        from tuneloop.tools.record import new_session_id

        while True:  # two ids drawn in one second can collide (3 random bytes): draw again
            sid = new_session_id(req.method)
            try:
                (self.runs_dir / sid).mkdir()
                break
            except FileExistsError:
                continue
        atomic_write_text(self.runs_dir / sid / REQUEST_FILE, req.model_dump_json())
        try:
            return sid, self._submit(sid, lambda cancel: self._run_new(sid, req, cancel), req.model)
        except QueueFull:  # refused: nothing of it may stay (a restart would queue it again)
            shutil.rmtree(self.runs_dir / sid, ignore_errors=True)
            raise

    def _requeue(self) -> int:
        """Queue again the sessions a stopped server had queued (a request, no trace yet)."""
        n = 0
        for d in sorted(self.runs_dir.iterdir()):
            request = d / REQUEST_FILE
            if request.is_file() and not (d / "trace.jsonl").exists() and SESSION_ID.match(d.name):
                try:
                    req = SessionRequest.model_validate_json(request.read_text())
                except ValueError:
                    continue  # not a request this server wrote
                self._submit(d.name, lambda cancel, sid=d.name, req=req: self._run_new(sid, req, cancel), req.model,
                             bounded=False)
                n += 1
        return n

    def resume(self, session_id: str) -> Literal["queued"]:
        return self._submit(session_id, lambda cancel: self._run_resumed(session_id, cancel), None)

    def cancel(self, session_id: str) -> bool:
        with self.lock:
            entry = self.active.get(session_id)
            if entry is None:
                return False
            entry["cancel"].set()
            return True

    def _submit(self, sid: str, work, model: str | None, bounded: bool = True) -> Literal["queued"]:
        with self.lock:
            if sid in self.active:
                raise QueueFull(f"session {sid} is already queued or running")
            if bounded and sum(1 for e in self.active.values() if e["status"] == "queued") >= self.max_queued:
                raise QueueFull(f"the queue is full ({self.max_queued} sessions waiting)")
            entry = {"status": "queued", "cancel": threading.Event(), "model": model}
            self.active[sid] = entry

        def job() -> None:
            try:
                with self.lock:
                    entry["status"] = "running"
                work(entry["cancel"])
            finally:
                with self.lock:
                    self.active.pop(sid, None)
                self.index.refresh((), force=[sid])  # its final row, listed at once

        self.pool.submit(job)
        return "queued"

    def _settings(self, req: SessionRequest):
        from tuneloop.agent.models import ModelSettings

        kw: dict[str, Any] = {k: v for k, v in dict(temperature=req.temperature, base_url=req.base_url,
                                                    api_key_env=req.api_key_env).items() if v is not None}
        return ModelSettings(model=req.model, seed=req.seed, **kw)

    def _run_new(self, sid: str, req: SessionRequest, cancel: threading.Event) -> None:
        from tuneloop.evaluation.methods import MethodSpec, run_method
        from tuneloop.evaluation.strategies import AGENT_METHOD

        spec = MethodSpec(method=req.method, function=req.function, budget=req.budget, seed=req.seed,
                          x0=tuple(req.x0) if isinstance(req.x0, list) else req.x0, dim=req.dim or 2,
                          max_iter=req.max_iter, space=req.space or DEFAULT_SPACE,
                          model=self._settings(req), prompt=req.prompt if req.method == AGENT_METHOD else None,
                          runs_dir=self.runs_dir, manifest_extra={"started_by": "tuneloop serve"})
        try:
            with self._model_slot(spec.model.model if spec.uses_llm else None):
                run_method(spec, session_id=sid, model_factory=self.factory, should_stop=cancel.is_set)
        except Exception as e:  # noqa: BLE001 - whatever ended it, the session is listed as failed, with why
            print(f"tuneloop serve: session {sid} failed: {reason_of(e)}", file=sys.stderr, flush=True)
            if not (self.runs_dir / sid / "trace.jsonl").exists():
                try:
                    record_failed_start(spec, sid, reason_of(e))
                except Exception as e2:  # noqa: BLE001 - the line above already said why; say this too
                    print(f"tuneloop serve: session {sid}: its failure could not be recorded: {reason_of(e2)}",
                          file=sys.stderr, flush=True)

    def _run_resumed(self, sid: str, cancel: threading.Event) -> None:
        from tuneloop.agent.session import run_session
        from tuneloop.agent.session_config import config_from_manifest
        from tuneloop.tools.record import read_trace

        t = read_trace(self.runs_dir / sid)
        assert t.manifest is not None  # the resume route refuses a session without one; manifests stay
        cfg = config_from_manifest(t.manifest).model_copy(update={"runs_dir": self.runs_dir})
        try:
            with self._model_slot(cfg.model.model):
                run_session(cfg, model_factory=self.factory, session_id=sid, resume_events=t.events,
                            should_stop=cancel.is_set)
        except Exception as e:  # noqa: BLE001 - its trace stays as it was (interrupted, resumable); say why
            print(f"tuneloop serve: resuming session {sid} failed: {reason_of(e)}", file=sys.stderr, flush=True)

    def _model_slot(self, model: str | None):
        from contextlib import nullcontext

        return self.local_model if is_local(model or "") else nullcontext()

    # ------------------------------------------------------------------ status
    def status_of(self, session_id: str, trace=None) -> SessionStatus:
        with self.lock:
            entry = self.active.get(session_id)
            if entry is not None:
                return entry["status"]
        if trace is None:
            return "interrupted"
        fin = trace.finished
        if fin is None or fin.get("stop_reason") in INTERRUPTED_STOPS:
            return "interrupted"
        return "failed" if fin.get("stop_reason") in FAILED_STOPS else "finished"

    def is_active(self, session_id: str) -> bool:
        with self.lock:
            return session_id in self.active

    def rows(self) -> list[SessionRow]:
        """Every session of the runs dir and the queue, newest first."""
        rows: list[SessionRow] = []
        q: Query | None = Query(limit=1000)
        while q is not None:
            page = self.page(q)
            rows += page.rows
            q = Query(limit=1000, cursor=page.next) if page.next else None
        return rows

    def page(self, q: Query) -> Page:
        """One page of the list, newest first: sessions queued here (no files yet) on the
        first page, then the index's rows (a running session with its live status)."""
        self.index.synced.wait()  # the first sync after a start (a missing index: every trace read)
        with self.lock:
            active = {sid: e["status"] for sid, e in self.active.items()}
        # a session that ended since the last listing is read again even if its files look
        # unchanged: its row may have been taken while it was still running
        self.index.refresh(active, force=self._was_active - set(active))
        self._was_active = set(active)
        found = self.index.page(q)
        queued: list[SessionRow] = []  # active here, nothing written yet
        if q.cursor is None and q.status in (None, *active.values()) and not any(
                (q.method, q.function, q.model, q.prompt, q.since)):
            queued = [SessionRow(id=sid, method=None, function=None, status=st, budget=None,
                                 trials_charged=0, best_value=None, created=None)
                      for sid, st in active.items() if q.status in (None, st) and self.index.row_values(sid) is None]
        return Page(rows=queued + found.rows, total=found.total + len(queued), next=found.next)

    def _index_row(self, d: Path) -> tuple[SessionRow, bool] | None:
        """A run's row for the index, from its files (a running session: its live
        status), and whether it is an ask/tell study (listed by /api/studies instead)."""
        from tuneloop.tools.record import TraceError, read_trace

        try:
            t = read_trace(d)
        except TraceError:
            return None
        m = t.manifest or {}
        charged = [e for e in t.of("trial_evaluated") if e.get("charged")]
        best = min((e for e in charged if e.get("score") is not None), key=lambda e: e["score"], default=None)
        status = self.status_of(d.name, t)  # a session running here: its live status
        row = SessionRow(id=d.name, method=m.get("method") or t.method, function=m.get("objective"),
                         status=status, budget=m.get("budget"), trials_charged=len(charged),
                         best_value=best.get("final_value") if best else None, created=m.get("created"),
                         reason=(t.finished or {}).get("error") if status == "failed" else None,
                         model=(m.get("model") or {}).get("model"), prompt=(m.get("prompt") or {}).get("name"))
        return row, is_ask_tell(m)

    def shutdown(self) -> None:
        self.index.stop()
        with self.lock:
            for e in self.active.values():
                e["cancel"].set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def reason_of(e: BaseException) -> str:
    """A failure in one line: a user's mistake as its message, anything else with its type."""
    return str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"


def record_failed_start(spec: Any, session_id: str, error: str) -> None:
    """A session that ended before writing its trace (its model could not be built): its
    manifest and a `session_finished` event with the reason, so it is listed as failed."""

    from tuneloop.agent.session_config import manifest_for
    from tuneloop.tools.record import TraceWriter
    from tuneloop.tools.run_result import finish_session
    from tuneloop.tools.trials import Evaluator
    from tuneloop.tools.usage import Usage

    cfg = spec.session_config()
    t0 = time.perf_counter()
    writer = TraceWriter(spec.runs_dir, session_id)
    writer.write_manifest(manifest_for(cfg, session_id, None, None, None, extra=spec.manifest_extra,
                                       with_model=spec.uses_llm))
    finish_session(writer=writer, ev=Evaluator(cfg.evaluator), method=spec.method,
                   model=spec.model.model if spec.uses_llm else "-", prompt="-", stop="model_error",
                   wall_s=time.perf_counter() - t0, usage=Usage(), error=error)
