"""The service's ask/tell studies: a Python `Study` (evaluation/study.py) per study, held
open in memory while its client asks and tells over HTTP, and the list of every ask/tell
run in the runs dir.

A study is a run like any other: its method runs in a thread of its own and writes
manifest.json and trace.jsonl into runs_dir/<id>/ (so `tuneloop trace ...` reads it).
The method starts when the study is created, so its first proposal is usually ready by
the first ask. Rules, as the Python Study's: asking again before telling hands out another
trial (parallel workers; the budget counts asks, and once it is all handed out an ask is
refused, naming the trials to tell); a trial is told once. An ask waits for the method at
most `ask_wait_s` (then the route answers 202: ask again); at most `MAX_WAITING_ASKS` asks
per study wait at a time (more answer 202 at once), and at most `max_open` studies are
running, so waiting asks cannot take every worker thread of the server; a study of an LLM
method on the embedded model runs one at a time (its llama.cpp takes every core).

Status: running while open here; else from the trace (finished, failed, or interrupted:
closed early, or running when a server stopped). Studies are not resumed after a
restart: their trials stay in their traces, listed and readable.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tuneloop.agent.gguf import is_local
from tuneloop.agent.models import ModelFactory, ModelSettings, check_settings, make_chat_model
from tuneloop.evaluation.service.run_index import RunIndex
from tuneloop.evaluation.service.sessions import FAILED_STOPS, INTERRUPTED_STOPS, SESSION_ID
from tuneloop.evaluation.service.study_schemas import (
    AskedTrial,
    StudyDetail,
    StudyRequest,
    StudyRow,
    StudyStatus,
    TellRequest,
    Told,
)
from tuneloop.evaluation.strategies import LLM_METHODS
from tuneloop.tools.errors import TuneloopError, UserError
from tuneloop.tools.record import TraceError, read_trace
from tuneloop.tools.tasks import is_ask_tell, outcome_of
from tuneloop.tools.trials import TrialResult

if TYPE_CHECKING:  # the method's machinery loads with the first study, not with the server
    from tuneloop.evaluation.study import Study, Trial

ASK_WAIT_S = 5.0  # how long an ask waits for the method before answering 202 (see api_studies.py)
CLOSE_WAIT_S = 5.0  # how long a close waits for the method to finish its current proposal (then 202)
RETRY_AFTER_S = 1  # what the 202 tells the client to wait before asking again
SERVER_STOPPED = "server_stopped"  # a file in a study's run dir: the server (not its client) ended it
CONTINUED_IN = "continued_in"  # a file in a study's run dir: the id of the run that continues it
MAX_WAITING_ASKS = 4  # asks of one study waiting for its method at once (parallel workers)
MAX_OPEN = 16  # studies running at once (each holds a thread, and at most one waiting ask); the
# embedded model's: one at a time (its llama.cpp takes every core)


class StudyConflict(TuneloopError):
    """A request the study cannot answer in its state (409): the message says why."""


class StudyRefused(UserError):
    """A study the method cannot run as asked (422 on `field`)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


class TooManyStudies(TuneloopError):
    """`max_open` studies are running (429)."""


@dataclass
class OpenStudy:
    """A study this server runs: its Study, and what its client holds."""

    study: Study
    req: StudyRequest
    created: str
    asking: threading.BoundedSemaphore = field(  # asks waiting for the method
        default_factory=lambda: threading.BoundedSemaphore(MAX_WAITING_ASKS))
    state: threading.Lock = field(default_factory=threading.Lock)  # out, ready, told, ended and the Study's calls
    out: dict[int, Trial] = field(default_factory=dict)  # handed to the client, not yet told, by id
    ready: Trial | None = None  # proposed before anyone asked (when the study was created)
    told: set[int] = field(default_factory=set)
    ended: str | None = None  # why asks are refused now
    closer: threading.Thread | None = None  # closing it (the method may be finishing a proposal)
    stopped: str | None = None  # how its run ended, once closed


@dataclass(frozen=True)
class OnDisk:
    """What a study's run dir says."""

    manifest: dict[str, Any]
    finished: dict[str, Any] | None
    trials: list[TrialResult]


class StudyManager:
    def __init__(self, runs_dir: Path, model_factory: ModelFactory = make_chat_model, max_open: int = MAX_OPEN,
                 ask_wait_s: float = ASK_WAIT_S, close_wait_s: float = CLOSE_WAIT_S,
                 index: RunIndex | None = None) -> None:
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.factory = model_factory
        self.max_open = max_open
        self.ask_wait_s = ask_wait_s
        self.close_wait_s = close_wait_s
        self.lock = threading.Lock()
        self.open: dict[str, OpenStudy] = {}
        self.disk: dict[str, tuple[tuple[Any, ...], OnDisk | None]] = {}  # id -> (files' stat, what they say)
        self.index = index  # the runs dir's index (the sessions'): which runs are studies, without a scan

    # ------------------------------------------------------------------ creating
    def settings(self, req: StudyRequest) -> ModelSettings:
        kw: dict[str, Any] = {k: v for k, v in dict(base_url=req.base_url, api_key_env=req.api_key_env).items()
                              if v is not None}
        return ModelSettings(model=req.model, seed=req.seed, **kw)

    @staticmethod
    def uses_embedded_model(req: StudyRequest) -> bool:
        return req.method in LLM_METHODS and is_local(req.model)

    def check(self, req: StudyRequest) -> None:
        """Refuse at once an LLM method whose model this server cannot build now (a
        UserError: its key variable unset, say); an injected factory (tests) is trusted."""
        if self.factory is make_chat_model and req.method in LLM_METHODS:
            check_settings(self.settings(req))

    def create(self, req: StudyRequest) -> str:
        from tuneloop.evaluation.study import Study, StudyError

        with self.lock:
            running = [sid for sid, s in self.open.items() if self.status(sid, s) == "running"]
            if len(running) >= self.max_open:
                raise TooManyStudies(f"{self.max_open} studies are running: close one (or finish it) first")
            embedded = [sid for sid in running if self.uses_embedded_model(self.open[sid].req)]
            if embedded and self.uses_embedded_model(req):
                raise TooManyStudies(f"the embedded model runs one study at a time (it takes every core): close "
                                     f"study {embedded[0]} first, or use an openai: model")
            settings = self.settings(req)
            chat_model = None
            if req.method in LLM_METHODS and self.factory is not make_chat_model:  # else built in the study's thread
                try:
                    chat_model = self.factory(settings)
                except Exception as e:  # noqa: BLE001 - whatever the factory raised, the client hears why
                    raise StudyConflict(f"model: {type(e).__name__}: {e}") from None
            try:
                study = Study(req.space, method=req.method, budget=req.budget, seed=req.seed, model=settings,
                              prompt=req.prompt, runs_dir=self.runs_dir, direction=req.direction,
                              description=req.description, name=req.name, chat_model=chat_model)
            except ValidationError as e:
                raise StudyRefused("method", str(e.errors()[0]["msg"]).removeprefix("Value error, ")) from None
            except (UserError, ValueError) as e:
                raise StudyRefused("body", str(e)) from None
            s = OpenStudy(study, req, datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
            self.open[study.session_id] = s
        with s.state:  # start the method now: its first proposal is ready when the client asks
            try:
                s.ready = study.ask(timeout=0)
            except StudyError:
                pass  # still thinking (the usual case)
        return study.session_id

    # ------------------------------------------------------------------ ask, tell, close
    def running(self, study_id: str) -> OpenStudy:
        """The open study; a study the server stopped (a restart) is continued; 409
        (StudyConflict) for one ended otherwise, KeyError for none."""
        s = self.open.get(study_id)
        if s is None:
            found = self.on_disk(study_id)
            if found is None:
                raise KeyError(study_id)
            d = self.run_dir(study_id)
            assert d is not None  # on disk
            if found.finished is None or (d / SERVER_STOPPED).exists():
                return self.reopen(study_id, d)
            raise StudyConflict(f"study {study_id} is {self.status(study_id, None)} and not open on this server: "
                                "its trials are in its trace")
        return s

    def reopen(self, study_id: str, d: Path) -> OpenStudy:
        """Continue a study the server stopped (Study.load: a new run directory, named in
        the old one's `continued_in` file); its old id leads to it from now on."""
        from tuneloop.evaluation.study import Study

        while (d / CONTINUED_IN).exists():  # continued before, and stopped again: the latest run
            d = self.runs_dir / (d / CONTINUED_IN).read_text().strip()
        found = self.on_disk(d.name)
        if found is None:
            raise StudyConflict(f"study {study_id} cannot be continued: its run {d.name} is not readable")
        m, task = found.manifest, found.manifest.get("task") or {}
        try:
            req = StudyRequest(space=m["space"], method=m["method"], budget=m["budget"], seed=m.get("seed", 0),
                               model=(m.get("model") or {}).get("model", "local"),
                               prompt=(m.get("prompt") or {}).get("name"), direction=task.get("direction", "minimize"),
                               description=task.get("description", ""), name=task.get("name", "study"))
        except ValidationError as e:
            raise StudyConflict(f"study {study_id} cannot be continued here: {e.errors()[0]['msg']}") from None
        chat_model = self.factory(self.settings(req)) if (
            req.method in LLM_METHODS and self.factory is not make_chat_model) else None
        with self.lock:
            study = Study.load(d, chat_model=chat_model)
            (d / CONTINUED_IN).write_text(study.session_id)
            (d / SERVER_STOPPED).unlink(missing_ok=True)
            s = OpenStudy(study, req, str(m.get("created") or ""))
            self.open[study_id] = s
        return s

    def ask(self, study_id: str) -> AskedTrial | None:
        """The next trial, or None when the method proposed nothing within ask_wait_s (or
        MAX_WAITING_ASKS asks of this study are waiting already)."""
        from tuneloop.evaluation.study import StudyError

        s = self.running(study_id)
        with s.state:
            self.refuse_ask(s)
            if s.ready is not None:
                trial, s.ready = s.ready, None
                s.out[trial.id] = trial
                return AskedTrial(trial=trial.id, params=trial.params)
        if not s.asking.acquire(blocking=False):
            return None  # as many asks wait already: this one is answered 202, ask again
        try:
            with s.state:
                self.refuse_ask(s)
            t0 = time.monotonic()
            try:
                trial = s.study.ask(timeout=self.ask_wait_s)
            except StudyError as e:
                # a queue's get raises on its timeout only once the whole wait has passed: an
                # error before that is the budget handed out, or the end of the study (its
                # budget spent, or its method failed)
                if time.monotonic() - t0 >= self.ask_wait_s:
                    return None
                with s.state:
                    if not s.study.handed_out:
                        s.ended = str(e)
                raise StudyConflict(str(e)) from None
            with s.state:
                s.out[trial.id] = trial
            return AskedTrial(trial=trial.id, params=trial.params)
        finally:
            s.asking.release()

    @staticmethod
    def refuse_ask(s: OpenStudy) -> None:
        if s.ended is not None or s.closer is not None:
            raise StudyConflict(s.ended or "the study is closing")

    def tell(self, study_id: str, req: TellRequest) -> Told:
        s = self.running(study_id)
        with s.state:
            if s.closer is not None:
                raise StudyConflict(s.ended or "the study is closing")
            trial = s.out.get(req.trial)
            if trial is None:
                out = ", ".join(str(i) for i in s.out)
                raise StudyConflict(f"trial {req.trial} " + ("was already told" if req.trial in s.told else
                                                             "is not out") +
                                    (f" (out now: {out})" if out else " (none is out: ask first)"))
            result = req.result()
            outcome = outcome_of(result)  # what the Study makes of it, for the answer
            s.study.tell(trial, result)
            s.told.add(req.trial)
            del s.out[req.trial]
        return Told(trial=req.trial, status=outcome.status, value=outcome.value, error=outcome.error)

    def close(self, study_id: str, wait_s: float | None = None) -> str | None:
        """End the study (a trial out, untold, is dropped uncharged): how its run ended, or
        None when the method is still finishing its current proposal after `wait_s` (default
        close_wait_s; an LLM call: the close goes on, and the study's status says when it is done)."""
        s = self.running(study_id)
        with s.state:
            if s.closer is None:  # asks and tells are refused from now on
                s.closer = threading.Thread(target=self.finish_closing, args=(study_id, s), daemon=True,
                                            name=f"close-{study_id}")
                s.closer.start()
        s.closer.join(self.close_wait_s if wait_s is None else wait_s)
        return s.stopped

    @staticmethod
    def finish_closing(study_id: str, s: OpenStudy) -> None:
        from tuneloop.evaluation.study import StudyError

        for _ in range(MAX_WAITING_ASKS):  # the asks in flight end within ask_wait_s: never asked and closed at once
            s.asking.acquire()
        try:
            with s.state:
                s.out, s.ready = {}, None  # a tell now finds no trial out: it never meets the close
            try:
                reason = s.study.close()
            except StudyError as e:
                s.ended, reason = str(e), "failed"
        finally:
            for _ in range(MAX_WAITING_ASKS):
                s.asking.release()
        s.ended = s.ended or f"study {study_id} was closed ({reason})"
        s.stopped = reason

    def shutdown(self) -> None:
        """Close every study still running (their traces end as interrupted), waiting at
        most close_wait_s in all for the methods to finish their proposals."""
        for sid, s in list(self.open.items()):
            if self.status(sid, s) == "running":
                self.close(sid, wait_s=0)
                d = s.study.run_dir
                if d.exists():  # the server, not the client, ended it: the next server continues it
                    (d / SERVER_STOPPED).write_text("")
        deadline = time.monotonic() + self.close_wait_s
        for s in list(self.open.values()):
            if s.closer is not None:
                s.closer.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ reading
    def run_dir(self, study_id: str) -> Path | None:
        """The study's directory (it may not exist yet), or None: never outside the runs dir."""
        if not SESSION_ID.match(study_id):
            return None
        d = (self.runs_dir / study_id).resolve()
        return d if d.parent == self.runs_dir.resolve() else None

    def on_disk(self, study_id: str) -> OnDisk | None:
        """What an ask/tell run's files say (read once per change of them); None for a
        run that is not an ask/tell study, or for no run at all."""
        d = self.run_dir(study_id)
        if d is None:
            return None
        files = (d / "manifest.json", d / "trace.jsonl")
        stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.exists() else None for p in files)
        cached = self.disk.get(study_id)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        found: OnDisk | None = None
        if None not in stamp and is_study_manifest(files[0]):  # the small file first: most runs are sessions
            try:
                t = read_trace(d)
            except TraceError:
                t = None
            if t is not None and t.manifest:
                trials = [TrialResult.from_event(e)
                          for e in t.of("trial_evaluated") if e.get("charged")]
                found = OnDisk(t.manifest, t.finished, trials)
        self.disk[study_id] = (stamp, found)
        return found

    def status(self, study_id: str, s: OpenStudy | None) -> StudyStatus:
        found = self.on_disk(study_id)
        fin = found.finished if found is not None else None
        if fin is not None:
            stop = fin.get("stop_reason")
            return "failed" if stop in FAILED_STOPS else "interrupted" if stop in INTERRUPTED_STOPS else "finished"
        if s is None:
            return "interrupted"  # no end in its trace and not open here: running when a server stopped
        if s.closer is not None:
            return "running" if s.stopped is None else "failed" if s.stopped == "failed" else "interrupted"
        return "failed" if s.ended is not None else "running"  # ended with no end written: its method raised

    def is_open(self, study_id: str) -> bool:
        s = self.open.get(study_id)
        return s is not None and self.status(study_id, s) == "running"

    def detail(self, study_id: str) -> StudyDetail | None:
        s = self.open.get(study_id)
        found = self.on_disk(study_id)
        if s is None and found is None:
            return None
        m = found.manifest if found is not None else {}
        trials = found.trials if found is not None else []
        status = self.status(study_id, s)
        out = list(s.out.values()) if s is not None else []
        reason = None
        if status == "failed":
            from_trace = (found.finished or {}).get("error") if found is not None else None
            reason = from_trace or (s.ended if s is not None else None)
        return StudyDetail(
            id=study_id, name=s.req.name if s else (m.get("task") or {}).get("name"),
            method=s.req.method if s else m.get("method"), status=status,
            budget=s.req.budget if s else m.get("budget"),
            direction=s.req.direction if s else (m.get("task") or {}).get("direction"),
            created=m.get("created") or (s.created if s else None), trials=trials,
            best=min(trials, key=lambda r: r.score, default=None),
            pending=[AskedTrial(trial=t.id, params=t.params) for t in out],
            stop_reason=(found.finished or {}).get("stop_reason") if found is not None else None, reason=reason)

    def rows(self) -> list[StudyRow]:
        """Every study: those open here and every ask/tell run of the runs dir, newest first."""
        if self.index is not None:
            self.index.synced.wait()
            on_disk = set(self.index.ids(studies=True))
        else:
            on_disk = {d.name for d in self.runs_dir.iterdir() if d.is_dir() and SESSION_ID.match(d.name)}
        ids = set(self.open) | on_disk
        rows = []
        for sid in ids:
            d = self.detail(sid)
            if d is not None:
                rows.append(StudyRow(id=sid, name=d.name, method=d.method, status=d.status, budget=d.budget,
                                     trials=len(d.trials), best=d.best.final_value if d.best else None,
                                     created=d.created))
        return sorted(rows, key=lambda r: (r.created or "", r.id), reverse=True)


def is_study_manifest(path: Path) -> bool:
    """A run's manifest.json says it is an ask/tell study (its task is in memory, not a file)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return is_ask_tell(manifest)
