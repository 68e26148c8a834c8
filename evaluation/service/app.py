"""The FastAPI app: the routers (api_sessions.py: sessions and their Server-Sent Events;
api_studies.py: ask/tell studies; api_tools.py: the tool itself), the guard in front of
them, the OpenAPI contract and the page.

Security: every /api request needs `Authorization: Bearer <token>` when the app has a
token (compared in constant time; `?token=` works too, for EventSource, which cannot set
headers); request bodies are capped; session ids are validated and resolved inside the
runs dir, so no other path is ever read; manifests and traces are returned as written,
and they never hold a key.
"""

from __future__ import annotations

import secrets
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.routing import Match

from tuneloop.evaluation.service.api_sessions import sessions_router
from tuneloop.evaluation.service.api_studies import studies_router
from tuneloop.evaluation.service.api_tools import tools_router
from tuneloop.evaluation.service.schemas import Limits, Problem
from tuneloop.evaluation.service.sessions import SessionManager
from tuneloop.evaluation.service.studies import StudyManager

MAX_BODY = 64 * 1024  # bytes: a session request is a few hundred
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def create_app(manager: SessionManager, token: str | None = None, limits: Limits | None = None,
               studies: StudyManager | None = None) -> FastAPI:
    """The app over `manager`; with a `token`, every /api request must carry it; `limits`
    caps what one request may cost (the defaults of `tuneloop serve`); `studies`: the
    ask/tell studies (default: a StudyManager over the same runs dir and model factory)."""
    limits = limits or Limits()
    app = FastAPI(title="tuneloop", version="1", summary="LLM agents tuning momentum gradient descent: "
                  "sessions, ask/tell studies, traces, the tool itself.")
    app.state.manager = manager
    app.state.studies = studies or StudyManager(manager.runs_dir, model_factory=manager.factory, index=manager.index)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # each error names the field and the reason; the input is left out (it may be NaN,
        # which JSON cannot carry, or long)
        errors = [{"field": field_of(e["loc"]), "reason": e["msg"]} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)

    app.add_middleware(Guard, token=token)
    app.add_middleware(AllowHeader)
    app.include_router(sessions_router(limits))
    app.include_router(studies_router(limits))
    app.include_router(tools_router(limits))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return (resources.files("tuneloop.evaluation.service") / "static" / "index.html").read_text(encoding="utf-8")

    app.openapi = lambda: contract(app, token is not None)  # type: ignore[method-assign]
    return app


def field_of(loc: tuple[Any, ...]) -> str:
    """The dotted field a validation error is about: `("body", "x0", "literal['paper']")`
    -> "x0" (where it is, not pydantic's name for the union member it tried)."""
    parts = []
    for p in loc[1:] if loc and loc[0] in ("body", "query", "path") else loc:
        if not (isinstance(p, int) or str(p).isidentifier()):
            break
        parts.append(str(p))
    return ".".join(parts) or "body"


def contract(app: FastAPI, with_token: bool) -> dict[str, Any]:
    """The OpenAPI document, completed with what the layers under the routes add: the
    Guard's 401 (with a token) and 413 (a body over MAX_BODY) on every /api route, the
    400 of a body that is not JSON, errors as JSON on the event stream too, and the bearer
    scheme. Built once."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        problem = {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        for path, ops in schema["paths"].items():
            if not path.startswith("/api"):
                continue
            for op in ops.values():
                for status, response in op["responses"].items():
                    if not status.startswith("2") and "text/event-stream" in response.get("content", {}):
                        response["content"] = {"application/json": response["content"].pop("text/event-stream")}
                if "requestBody" in op:
                    op["responses"]["400"] = {"description": "the body is not JSON", "content": problem}
                op["responses"]["413"] = {"description": f"request body over {MAX_BODY} bytes", "content": problem}
                if with_token:
                    op["responses"]["401"] = {"description": "missing or wrong bearer token", "content": problem}
                    op["security"] = [{"bearer": []}]
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {})["Problem"] = Problem.model_json_schema()
        if with_token:
            components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer",
                                                        "description": "the server's --token-env variable"}}
        app.openapi_schema = schema
    return app.openapi_schema


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
            too_large = JSONResponse({"detail": f"request body larger than {MAX_BODY} bytes"}, status_code=413)
            size = headers.get("content-length")
            if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
                return await too_large(scope, receive, send)
            if size is None and "chunked" in headers.get("transfer-encoding", ""):
                # no length announced: read the body here, at most MAX_BODY, and hand it on
                messages, total = [], 0
                while True:
                    message = await receive()
                    messages.append(message)
                    total += len(message.get("body", b""))
                    if total > MAX_BODY:
                        return await too_large(scope, receive, send)
                    if message["type"] != "http.request" or not message.get("more_body"):
                        break
                receive = _replay(messages, receive)
        await self.app(scope, receive, send)


def _replay(messages: list[dict[str, Any]], receive: Any) -> Any:
    """An ASGI receive that gives `messages` first, then whatever `receive` gives."""
    pending = list(messages)

    async def replayed() -> dict[str, Any]:
        return pending.pop(0) if pending else await receive()

    return replayed


def _authorised(headers: dict[str, str], query: bytes, token: str) -> bool:
    header = headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        given = header[7:]
    else:  # EventSource cannot set headers: ?token= instead
        from urllib.parse import parse_qs

        given = (parse_qs(query.decode("latin-1")).get("token") or [""])[0]
    return secrets.compare_digest(given.encode(), token.encode())


class AllowHeader:
    """A 405 lists every method the path takes (Starlette's lists only those of the first
    route that matched the path, so GET and POST on one path answered `Allow: POST`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_allow(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] == 405:
                routes = scope["app"].routes
                methods = [m for m in HTTP_METHODS
                           if any(r.matches(scope | {"method": m})[0] == Match.FULL for r in routes)]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"allow"]
                message = message | {"headers": [*headers, (b"allow", ", ".join(methods).encode())]}
            await send(message)

        await self.app(scope, receive, send_with_allow)
