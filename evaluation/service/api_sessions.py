"""The sessions API: start, list, read, follow (Server-Sent Events), cancel, resume, and
the landscape a session's proposals sit on."""

import asyncio
import functools
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response, StreamingResponse

from tuneloop.agent import AGENT_METHOD
from tuneloop.evaluation.service.run_index import CURSOR_PATTERN, CursorError
from tuneloop.evaluation.service.run_index import Query as IndexQuery
from tuneloop.evaluation.service.schemas import (
    Accepted,
    Limits,
    Problem,
    SessionDetail,
    SessionList,
    SessionRequest,
    SessionStatus,
    ValidationProblem,
    capped,
)
from tuneloop.evaluation.service.sessions import QueueFull, SessionManager
from tuneloop.tools.errors import UserError

POLL_S = 0.2  # how often an event stream looks for new lines
# a trace nobody here runs, without session_finished, silent this long: a process that
# died (or another one that is slow); the stream ends, the page can reconnect
ABANDONED_S = 30.0
DEFAULT_PAGE = 100  # sessions per page when the client does not say
MAX_PAGE = 1000


class EventStream(StreamingResponse):
    """Server-Sent Events (the OpenAPI document says text/event-stream)."""

    media_type = "text/event-stream"


def manager_of(request: Request) -> SessionManager:
    return request.app.state.manager


Manager = Annotated[SessionManager, Depends(manager_of)]


def _problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


Responses = dict[int | str, dict[str, Any]]  # a route's `responses`: status -> OpenAPI response
NOT_FOUND: Responses = {404: _problem("no such session")}
INVALID: Responses = {
    422: {"model": ValidationProblem, "description": "a field, query or path parameter the server refuses"}}
BUSY: Responses = {429: _problem("the queue is full, or the session is already queued or running")}


def run_dir_or_404(manager: SessionManager, session_id: str) -> Path:
    d = manager.run_dir(session_id)
    if d is None:
        raise HTTPException(404, f"no session {session_id!r}")
    return d


def trace_or_409(manager: SessionManager, session_id: str, what: str):
    """The session's trace; a session queued (or not yet writing) has none: 409, saying so."""
    from tuneloop.tools.record import TraceError, read_trace

    d = run_dir_or_404(manager, session_id)
    try:
        return read_trace(d)
    except TraceError:
        raise HTTPException(409, f"session {session_id} is {manager.status_of(session_id)} and has no trace "
                                 f"yet: {what} once it has started") from None


def sessions_router(limits: Limits) -> APIRouter:
    """The routes, with request bodies capped by this server's `limits`."""
    router = APIRouter(prefix="/api/sessions", tags=["sessions"])
    if TYPE_CHECKING:  # what the checker sees: the body is a SessionRequest (capped subclasses it)
        Request_: TypeAlias = SessionRequest
    else:  # what FastAPI reads, at run time: this server's capped model
        Request_ = capped(SessionRequest, limits)

    @router.post("", status_code=202, response_model=Accepted, responses=INVALID | BUSY | {
        409: _problem("this server cannot use the model now (e.g. its API-key variable is not set)")})
    def start(req: Request_, manager: Manager) -> Accepted:  # the body model is built per server (its caps)
        """Start a session of any method; it runs in the background (poll it, or follow its events)."""
        try:
            manager.check(req)
        except UserError as e:  # the body is valid; the server's own state (its environment) refuses it
            raise HTTPException(409, f"model: {e}") from None
        try:
            sid, status = manager.start(req)
        except QueueFull as e:
            raise HTTPException(429, str(e)) from None
        return Accepted(id=sid, status=status)

    @router.get("", response_model=SessionList, responses=INVALID)
    async def sessions(  # async: an index query and a stat per running session, no thread hop
        manager: Manager,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")] = DEFAULT_PAGE,
        cursor: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="the `next` of the previous "
                                                  "page: `<created>~<id>` of its last row")] = None,
        method: Annotated[str | None, Query(max_length=100)] = None,
        function: Annotated[str | None, Query(max_length=200)] = None,
        status: Annotated[SessionStatus | None, Query()] = None,
        model: Annotated[str | None, Query(max_length=200)] = None,
        prompt: Annotated[str | None, Query(max_length=200)] = None,
        since: Annotated[str | None, Query(max_length=40, description="ISO time: created at or after it")] = None,
    ) -> Response:
        """The sessions of the runs dir and the queue, newest first, a page at a time
        (`limit` rows; `next` is the cursor of the following page), filtered by method,
        function, status, model, prompt and creation time (`since`)."""
        try:
            page = manager.page(IndexQuery(limit=limit, cursor=cursor, method=method, function=function,
                                           status=status, model=model, prompt=prompt, since=since))
        except CursorError as e:
            raise HTTPException(422, [{"field": "cursor", "reason": str(e).removeprefix("cursor: ")}]) from None
        body = {"sessions": [r.model_dump() for r in page.rows], "total": page.total, "next": page.next}
        return Response(json.dumps(body).encode(), media_type="application/json")

    @router.get("/{session_id}", response_model=SessionDetail, responses=NOT_FOUND | INVALID)
    def session(session_id: str, manager: Manager) -> SessionDetail:
        """A session's manifest and the numbers of `tuneloop trace summary`."""
        from tuneloop.evaluation.traces import summary
        from tuneloop.tools.record import TraceError, read_trace

        d = run_dir_or_404(manager, session_id)
        try:
            t = read_trace(d)
        except TraceError:  # queued: nothing written yet
            return SessionDetail(id=session_id, status=manager.status_of(session_id), manifest=None, summary=None)
        return SessionDetail(id=session_id, status=manager.status_of(session_id, t), manifest=t.manifest,
                             summary=json.loads(json.dumps(summary(t), default=str)))

    @router.get("/{session_id}/events", response_class=EventStream, responses=NOT_FOUND | INVALID | {
        200: {"description": "every trace event so far, then each new one: one JSON object per `data:` line",
              "content": {"text/event-stream": {"schema": {
                  "type": "object", "required": ["data"],
                  "properties": {"data": {"type": "string", "contentMediaType": "application/json",
                                          "description": "one trace event (see the trace format)"},
                                 "event": {"type": "string"}, "id": {"type": "string"}}}}}}})
    async def events(session_id: str, request: Request, manager: Manager) -> EventStream:
        """Follow a session's trace as it is written (Server-Sent Events)."""
        d = run_dir_or_404(manager, session_id)
        return EventStream(_follow(d / "trace.jsonl", session_id, manager, request),
                           headers={"Cache-Control": "no-cache"})

    @router.post("/{session_id}/cancel", status_code=202, responses=NOT_FOUND | INVALID | {
        409: _problem("the session is not running")})
    def cancel(session_id: str, manager: Manager) -> dict[str, str]:
        """Stop a running session before its next proposal (it can be resumed)."""
        run_dir_or_404(manager, session_id)
        if not manager.cancel(session_id):
            raise HTTPException(409, f"session {session_id} is not running")
        return {"id": session_id, "status": "cancelling"}

    @router.post("/{session_id}/resume", status_code=202, response_model=Accepted, responses=NOT_FOUND | INVALID | BUSY
                 | {409: _problem("the session is not an interrupted agent session")})
    def resume(session_id: str, manager: Manager) -> Accepted:
        """Continue an interrupted agent session with its remaining budget."""
        t = trace_or_409(manager, session_id, "resume it")
        status = manager.status_of(session_id, t)
        if status != "interrupted":
            raise HTTPException(409, f"session {session_id} is {status}, not interrupted")
        if t.method != AGENT_METHOD or not t.manifest:
            raise HTTPException(409, f"session {session_id} is a {t.method} run; only agent sessions resume")
        try:
            return Accepted(id=session_id, status=manager.resume(session_id))
        except QueueFull as e:
            raise HTTPException(429, str(e)) from None

    @router.get("/{session_id}/landscape", responses=NOT_FOUND | INVALID | {
        409: _problem("the session has no trace or manifest yet")})
    def landscape(session_id: str, manager: Manager,
                  resolution: Annotated[int, Query(ge=8, le=64)] = 32) -> dict[str, Any]:
        """The (log10 alpha, beta) landscape the session's proposals sit on: log10 of the
        final value's gap over the search box, null where a run diverged."""
        m = trace_or_409(manager, session_id, "ask for its landscape").manifest or {}
        if not m.get("objective") or not m.get("x0"):
            raise HTTPException(409, "the session has no manifest yet")
        if m.get("task"):
            raise HTTPException(409, "a task's run (a study, or --task) has no landscape: it is not GD on an objective")
        return landscape_of(m["objective"], tuple(m["x0"]), int(m.get("max_iter") or 1000), resolution)

    return router


def warm_up() -> None:
    """Load (or compile, on a new machine) the batch kernel the landscapes run on, so the
    first page view does not wait for numba; `tuneloop serve` calls it in a thread."""
    from tuneloop.evaluation.landscape import search_landscape

    search_landscape("rosenbrock", (-1.5, 2.0), 10, 8)


@functools.lru_cache(maxsize=64)
def landscape_of(objective: str, x0: tuple[float, ...], max_iter: int, resolution: int) -> dict[str, Any]:
    """The landscape as the page draws it; many sessions share one (same objective, start
    and T), and a page that polls asks again: computed once each."""
    from tuneloop.evaluation.landscape import search_landscape

    land = search_landscape(objective, x0, max_iter, resolution)
    floor = land.f_star if math.isfinite(land.f_star) else float(np.nanmin(land.final_value))
    with np.errstate(all="ignore"):
        level = np.log10(np.maximum(land.final_value - floor, 1e-16))
    return {"log10_alphas": land.log10_alphas.tolist(), "betas": land.betas.tolist(),
            "level": [[None if not math.isfinite(v) else round(float(v), 3) for v in row] for row in level]}


async def _follow(path: Path, session_id: str, manager: SessionManager, request: Request) -> AsyncIterator[str]:
    """Every trace event so far, then each new one as it is written, one JSON object per
    `data:` line; ends after session_finished once the session is no longer running, or
    as soon as the client has gone. What one read finds goes out as one chunk, so a
    client that leaves costs at most one write before the next check notices."""
    offset, buffer, finished, quiet = 0, b"", False, 0.0
    while True:
        if await request.is_disconnected():
            return
        chunk = b""
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")  # a line not yet ended waits for the next read
            out = []
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event: dict[str, Any] = json.loads(line)
                except json.JSONDecodeError:
                    continue
                finished = event.get("event") == "session_finished"
                out.append(f"data: {json.dumps(event)}\n\n")
            if out:
                yield "".join(out)
        active = manager.is_active(session_id)
        quiet = 0.0 if chunk else quiet + POLL_S
        if not active and (finished or not path.exists() or quiet > ABANDONED_S):
            return
        await asyncio.sleep(POLL_S)
