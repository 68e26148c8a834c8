"""The ask/tell studies API: create a study, ask for a trial, tell its result, close it,
list, read and follow them (Server-Sent Events). The studies themselves: studies.py.

An ask waits for the method's next proposal at most the server's ask wait (5 s by
default), then answers 202 with a Retry-After header and nothing is lost: the proposal
is handed to the next ask. A long poll rather than an immediate 202: a classical method
proposes in milliseconds and answers within the same request, and an LLM proposal (the
embedded model's calls: p95 1.65 s) mostly does too, so a client rarely loops. Not longer:
every response comes within the 10 s the contract test allows (schemathesis's response
time check), far under proxy timeouts, and a waiting ask holds a worker thread. A close
likewise waits at most 5 s for the method to finish its current proposal, then answers 202.

(No `from __future__ import annotations` here: FastAPI reads the body model of `create`,
built per server, from its annotation at run time.)"""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse

from tuneloop.evaluation.service.api_sessions import INVALID, POLL_S, EventStream, Responses
from tuneloop.evaluation.service.schemas import Limits, Problem, capped
from tuneloop.evaluation.service.studies import (
    RETRY_AFTER_S,
    StudyConflict,
    StudyManager,
    StudyRefused,
    TooManyStudies,
)
from tuneloop.evaluation.service.study_schemas import (
    AskedTrial,
    Closed,
    StudyCreated,
    StudyDetail,
    StudyList,
    StudyRequest,
    TellRequest,
    Told,
    Waiting,
)
from tuneloop.tools.errors import UserError

KEEPALIVE_S = 15.0  # a comment line on a quiet event stream (a client evaluating for long), for proxies


def studies_of(request: Request) -> StudyManager:
    return request.app.state.studies


Studies = Annotated[StudyManager, Depends(studies_of)]


@contextmanager
def answered(study_id: str) -> Iterator[None]:
    """A study's refusals as HTTP: no such study 404, a conflict with its state 409 (one
    place for ask, tell and close)."""
    try:
        yield
    except KeyError:
        raise HTTPException(404, f"no study {study_id!r}") from None
    except StudyConflict as e:
        raise HTTPException(409, str(e)) from None


def problem(description: str) -> dict[str, Any]:
    return {"model": Problem, "description": description}


NOT_FOUND: Responses = {404: problem("no such study")}
CONFLICT: Responses = {409: problem("the study cannot do that now (see detail): the trial is not out or was told, "
                                    "its budget is handed out or spent, it ended, or it is not open here")}
EVENTS: Responses = {200: {
    "description": "every trace event so far, then each new one: one JSON object per `data:` line",
    "content": {"text/event-stream": {"schema": {
        "type": "object", "required": ["data"],
        "properties": {"data": {"type": "string", "contentMediaType": "application/json",
                                "description": "one trace event (see the trace format)"},
                       "event": {"type": "string"}, "id": {"type": "string"}}}}}}}
WAITING: Responses = {202: {
    "model": Waiting, "description": "the method has not proposed yet: ask again",
    "headers": {"Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}}}}


def study_or_404(studies: StudyManager, study_id: str) -> StudyDetail:
    d = studies.detail(study_id)
    if d is None:
        raise HTTPException(404, f"no study {study_id!r}")
    return d


def studies_router(limits: Limits) -> APIRouter:
    """The routes, with the budget capped by this server's `limits`."""
    router = APIRouter(prefix="/api/studies", tags=["studies"])
    if TYPE_CHECKING:  # the checker sees a StudyRequest; FastAPI reads this server's capped model
        Body_: TypeAlias = StudyRequest
    else:
        Body_ = capped(StudyRequest, limits)

    @router.post("", status_code=201, response_model=StudyCreated, responses=INVALID | {
        409: problem("this server cannot use the model now (e.g. its API-key variable is not set)"),
        429: problem("the server runs as many studies as it may: close one first")})
    def create(req: Body_, studies: Studies) -> StudyCreated:
        """Create an ask/tell study; its method starts proposing at once."""
        try:
            studies.check(req)
        except UserError as e:
            raise HTTPException(409, f"model: {e}") from None
        try:
            return StudyCreated(id=studies.create(req), status="running")
        except TooManyStudies as e:
            raise HTTPException(429, str(e)) from None
        except StudyConflict as e:  # an injected model factory failed
            raise HTTPException(409, str(e)) from None
        except StudyRefused as e:
            raise HTTPException(422, [{"field": e.field, "reason": str(e)}]) from None

    @router.get("", response_model=StudyList)
    def listing(studies: Studies) -> StudyList:
        """Every study: those running here and every ask/tell run of the runs dir, newest first."""
        return StudyList(studies=studies.rows())

    @router.get("/{study_id}", response_model=StudyDetail, responses=NOT_FOUND | INVALID)
    def study(study_id: str, studies: Studies) -> StudyDetail:
        """A study's status, its trials (as the trace records them), the best, the trial out."""
        return study_or_404(studies, study_id)

    @router.post("/{study_id}/ask", response_model=AskedTrial, responses=NOT_FOUND | INVALID | WAITING | CONFLICT)
    def ask(study_id: str, studies: Studies) -> Any:
        """The next trial to evaluate. Waits for the method up to the server's ask wait,
        then 202 (ask again). Asking again before telling hands out another trial (parallel
        workers); once the budget is all handed out, 409 naming the trials to tell."""
        with answered(study_id):
            trial = studies.ask(study_id)
        if trial is None:
            waiting = Waiting(detail=f"the method has proposed nothing within {studies.ask_wait_s:g} s: ask again",
                              retry_after=RETRY_AFTER_S)
            return JSONResponse(waiting.model_dump(), status_code=202, headers={"Retry-After": str(RETRY_AFTER_S)})
        return trial

    @router.post("/{study_id}/tell", response_model=Told, responses=NOT_FOUND | INVALID | CONFLICT)
    def tell(study_id: str, req: TellRequest, studies: Studies) -> Told:
        """The result of the trial out: a value, metrics with a value, or failed. NaN
        ("nan", or null) is a failed trial, charged."""
        with answered(study_id):
            return studies.tell(study_id, req)

    @router.post("/{study_id}/close", response_model=Closed, responses=NOT_FOUND | INVALID | CONFLICT | {
        202: {"model": Closed, "description": "closing: the method is finishing its current proposal (an LLM "
                                              "call); GET the study for its status"}})
    def close(study_id: str, studies: Studies) -> Any:
        """End the study now (a trial out, untold, is dropped uncharged); its stop reason.
        Asks and tells are refused from now on."""
        with answered(study_id):
            stop = studies.close(study_id)
        closed = Closed(id=study_id, stop_reason=stop)
        return closed if stop is not None else JSONResponse(closed.model_dump(), status_code=202)

    @router.get("/{study_id}/events", response_class=EventStream, responses=NOT_FOUND | INVALID | EVENTS)
    async def events(study_id: str, request: Request, studies: Studies) -> EventStream:
        """Follow a study's trace as it is written (Server-Sent Events), as a session's."""
        d = studies.run_dir(study_id)
        if d is None or (study_id not in studies.open and studies.on_disk(study_id) is None):
            raise HTTPException(404, f"no study {study_id!r}")
        return EventStream(follow(d / "trace.jsonl", study_id, studies, request), headers={"Cache-Control": "no-cache"})

    return router


async def follow(path: Path, study_id: str, studies: StudyManager, request: Request) -> AsyncIterator[str]:
    """Every trace event so far, then each new one, one JSON object per `data:` line; ends
    after session_finished, once the study is not running (all read), or when the client
    has gone. A quiet stream (the client is evaluating) sends a comment every KEEPALIVE_S."""
    offset, buffer, quiet = 0, b"", 0.0
    while True:
        if await request.is_disconnected():
            return
        chunk, finished = b"", False
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            *lines, buffer = (buffer + chunk).split(b"\n")  # a line not yet ended waits for the next read
            out = []
            for line in lines:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                finished = finished or event.get("event") == "session_finished"
                out.append(f"data: {json.dumps(event)}\n\n")
            if out:
                yield "".join(out)
        if finished or (not chunk and not studies.is_open(study_id)):
            return
        quiet = 0.0 if chunk else quiet + POLL_S
        if quiet >= KEEPALIVE_S:
            quiet = 0.0
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
