"""The tool itself over HTTP: one momentum-GD run, the objectives, the prompt templates,
and a health check."""

from typing import TYPE_CHECKING, Any, TypeAlias

from fastapi import APIRouter

from tuneloop.evaluation.service.api_sessions import INVALID
from tuneloop.evaluation.service.schemas import EvaluateRequest, Limits, capped


def tools_router(limits: Limits) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["tools"])
    if TYPE_CHECKING:  # what the checker sees: the body is an EvaluateRequest (capped subclasses it)
        Request_: TypeAlias = EvaluateRequest
    else:  # what FastAPI reads, at run time: this server's capped model
        Request_ = capped(EvaluateRequest, limits)

    @router.get("/health")
    def health() -> dict[str, bool]:
        """Whether the server answers."""
        return {"ok": True}

    @router.post("/evaluate", responses=INVALID)
    def evaluate(req: Request_) -> dict[str, Any]:  # the body model is built per server (its caps)
        """One momentum-GD run: status, final value, iterations, score."""
        from tuneloop.tools.cli import run_json
        from tuneloop.tools.momentum import run, start_point
        from tuneloop.tools.objectives import get_objective
        from tuneloop.tools.scoring import score

        obj = get_objective(req.function)  # the body's validators checked that x0 fits it
        x0 = tuple(req.x0) if isinstance(req.x0, list) else start_point(req.x0)
        out = run_json(run(obj, req.learning_rate, req.momentum, x0=x0, max_iter=req.max_iter, tol=req.tol))
        return out | {"score": score(out["final_value"], out["iterations"], req.max_iter, obj.minimum(len(x0)))}

    @router.get("/prompts")
    def prompts() -> list[dict[str, Any]]:
        """The built-in prompt templates."""
        from tuneloop.agent.prompts import list_templates, load_template

        templates = [load_template(n) for n in list_templates()]
        return [{"name": t.name, "description": t.description, "sha256": t.sha256} for t in templates]

    @router.get("/functions")
    def functions() -> list[dict[str, Any]]:
        """The built-in objectives."""
        from tuneloop.tools.cli import function_rows

        return function_rows()

    return router
