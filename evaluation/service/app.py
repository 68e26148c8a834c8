"""The FastAPI app: the JSON API over the session manager and the runs dir, Server-Sent
Events that follow a trace as it is written, and the page.

Security: every /api request needs `Authorization: Bearer <token>` when the app has a
token (compared in constant time; `?token=` works too, for EventSource, which cannot set
headers); request bodies are capped; session ids are validated and resolved inside the
runs dir, so no other path is ever read; manifests and traces are returned as written,
and they never hold a key.
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from tuneloop.evaluation.service.schemas import Accepted, EvaluateRequest, SessionDetail, SessionList, SessionRequest
from tuneloop.evaluation.service.sessions import QueueFull, SessionManager

MAX_BODY = 64 * 1024  # bytes: a session request is a few hundred
POLL_S = 0.2  # how often an event stream looks for new lines
# a trace nobody here runs, without session_finished, silent this long: a process that
# died (or another one that is slow); the stream ends, the page can reconnect
ABANDONED_S = 30.0


def create_app(manager: SessionManager, token: str | None = None) -> FastAPI:
    app = FastAPI(title="tuneloop", version="1", summary="LLM agents tuning momentum gradient descent: "
                  "sessions, traces, the tool itself.")

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        # each error names the field and the reason; the input is left out (it may be NaN,
        # which JSON cannot carry, or long)
        errors = [{"field": ".".join(str(p) for p in e["loc"] if p != "body"), "reason": e["msg"]}
                  for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_middleware(Guard, token=token)

    def run_dir_or_404(session_id: str) -> Path:
        d = manager.run_dir(session_id)
        if d is None:
            raise HTTPException(404, f"no session {session_id!r}")
        return d

    @app.get("/api/health")
    def health() -> dict:
        return {"ok": True}

    @app.post("/api/sessions", status_code=202, response_model=Accepted)
    def start(req: SessionRequest) -> Accepted:
        try:
            sid, status = manager.start(req)
        except QueueFull as e:
            raise HTTPException(429, str(e)) from None
        return Accepted(id=sid, status=status)

    @app.get("/api/sessions", response_model=SessionList)
    async def sessions() -> Response:  # async: a stat per session, no thread hop
        return Response(manager.listing_json(), media_type="application/json")

    @app.get("/api/sessions/{session_id}", response_model=SessionDetail)
    def session(session_id: str) -> SessionDetail:
        from tuneloop.evaluation.traces import summary
        from tuneloop.tools.record import TraceError, read_trace

        d = run_dir_or_404(session_id)
        try:
            t = read_trace(d)
        except TraceError:  # queued: nothing written yet
            return SessionDetail(id=session_id, status=manager.status_of(session_id), manifest=None, summary=None)
        return SessionDetail(id=session_id, status=manager.status_of(session_id, t), manifest=t.manifest,
                             summary=json.loads(json.dumps(summary(t), default=str)))

    @app.get("/api/sessions/{session_id}/events")
    async def events(session_id: str, request: Request) -> StreamingResponse:
        d = run_dir_or_404(session_id)
        return StreamingResponse(_follow(d / "trace.jsonl", session_id, manager, request),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/sessions/{session_id}/cancel", status_code=202)
    def cancel(session_id: str) -> dict:
        run_dir_or_404(session_id)
        if not manager.cancel(session_id):
            raise HTTPException(409, f"session {session_id} is not running")
        return {"id": session_id, "status": "cancelling"}

    @app.post("/api/sessions/{session_id}/resume", status_code=202, response_model=Accepted)
    def resume(session_id: str) -> Accepted:
        from tuneloop.tools.record import read_trace

        d = run_dir_or_404(session_id)
        t = read_trace(d)
        if manager.status_of(session_id, t) != "interrupted":
            raise HTTPException(409, f"session {session_id} is {manager.status_of(session_id, t)}, not interrupted")
        if t.method != "llm" or not t.manifest:
            raise HTTPException(409, f"session {session_id} is a {t.method} run; only agent sessions resume")
        try:
            return Accepted(id=session_id, status=manager.resume(session_id))
        except QueueFull as e:
            raise HTTPException(429, str(e)) from None

    @app.post("/api/evaluate")
    def evaluate(req: EvaluateRequest) -> dict:
        from tuneloop.tools.cli import run_json
        from tuneloop.tools.momentum import run, start_point
        from tuneloop.tools.objectives import get_objective
        from tuneloop.tools.scoring import score

        obj = get_objective(req.function)
        x0 = tuple(req.x0) if isinstance(req.x0, list) else start_point(req.x0)
        try:
            obj.check_dim(len(x0))
        except ValueError as e:
            raise HTTPException(422, f"x0: {e}") from None
        out = run_json(run(obj, req.learning_rate, req.momentum, x0=x0, max_iter=req.max_iter, tol=req.tol))
        return out | {"score": score(out["final_value"], out["iterations"], req.max_iter, obj.minimum(len(x0)))}

    @app.get("/api/sessions/{session_id}/landscape")
    def landscape(session_id: str, resolution: int = 32) -> dict:
        """The (log10 alpha, beta) landscape the session's proposals sit on: log10 of the
        final value's gap over the search box, null where a run diverged."""
        from tuneloop.evaluation.report import search_landscape
        from tuneloop.tools.record import read_trace

        m = read_trace(run_dir_or_404(session_id)).manifest or {}
        if not m.get("objective") or not m.get("x0"):
            raise HTTPException(409, "the session has no manifest yet")
        land = search_landscape(m["objective"], m["x0"], int(m.get("max_iter") or 1000), min(max(resolution, 8), 64))
        floor = land.f_star if math.isfinite(land.f_star) else float(np.nanmin(land.final_value))
        with np.errstate(all="ignore"):
            level = np.log10(np.maximum(land.final_value - floor, 1e-16))
        return {"log10_alphas": land.log10_alphas.tolist(), "betas": land.betas.tolist(),
                "level": [[None if not math.isfinite(v) else round(float(v), 3) for v in row] for row in level]}

    @app.get("/api/prompts")
    def prompts() -> list[dict]:
        from tuneloop.agent.prompts import list_templates, load_template

        templates = [load_template(n) for n in list_templates()]
        return [{"name": t.name, "description": t.description, "sha256": t.sha256} for t in templates]

    @app.get("/api/functions")
    def functions() -> list[dict]:
        from tuneloop.tools.cli import function_rows

        return function_rows()

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (resources.files("tuneloop.evaluation.service") / "static" / "index.html").read_text(encoding="utf-8")

    return app


class Guard:
    """A plain ASGI middleware (lighter than Starlette's BaseHTTPMiddleware under load):
    on /api, the bearer token (when the app has one) and the body size limit."""

    def __init__(self, app, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/api"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            if self.token is not None and not _authorised(headers, scope.get("query_string", b""), self.token):
                return await JSONResponse({"detail": "missing or wrong bearer token"}, status_code=401,
                                          headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            size = headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
                return await JSONResponse({"detail": f"request body larger than {MAX_BODY} bytes"},
                                          status_code=413)(scope, receive, send)
        await self.app(scope, receive, send)


def _authorised(headers: dict[str, str], query: bytes, token: str) -> bool:
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:]
    else:  # EventSource cannot set headers: ?token= instead
        from urllib.parse import parse_qs

        given = (parse_qs(query.decode("latin-1")).get("token") or [""])[0]
    return secrets.compare_digest(given.encode(), token.encode())


async def _follow(path: Path, session_id: str, manager: SessionManager, request: Request):
    """Every trace event so far, then each new one as it is written, one JSON object per
    `data:` line; ends after session_finished once the session is no longer running."""
    offset, buffer, finished, quiet = 0, b"", False, 0.0
    while True:
        chunk = b""
        if path.exists():
            with path.open("rb") as f:
                f.seek(offset)
                chunk = f.read()
            offset += len(chunk)
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")  # a line not yet ended waits for the next read
            for line in lines:
                if not line.strip():
                    continue
                try:
                    event: dict[str, Any] = json.loads(line)
                except json.JSONDecodeError:
                    continue
                finished = event.get("event") == "session_finished"
                yield f"data: {json.dumps(event)}\n\n"
        active = manager.is_active(session_id)
        quiet = 0.0 if chunk else quiet + POLL_S
        if not active and (finished or not path.exists() or quiet > ABANDONED_S):
            return
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)
