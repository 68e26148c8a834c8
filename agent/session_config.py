"""What an agent or hybrid session is run with (SessionConfig), its manifest and the way
back from a manifest. No LangChain here: classical runs and the service use it too."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tuneloop.agent import AGENT_METHOD
from tuneloop.agent.models import ModelSettings
from tuneloop.tools.objectives import USER_FID, UserObjective, get_objective
from tuneloop.tools.tasks import load_task
from tuneloop.tools.trials import EvaluatorConfig

# The model-call cap (MODEL_CALLS_PER_TRIAL x budget + MODEL_CALLS_EXTRA) and the tool-call
# cap (TOOL_CALLS_PER_TRIAL x budget) make sure a model that only talks, or only repeats
# itself, still ends.
MODEL_CALLS_PER_TRIAL = 3
MODEL_CALLS_EXTRA = 3
TOOL_CALLS_PER_TRIAL = 3


def call_limits(budget: int) -> tuple[int, int]:
    """(model calls, tool calls) a session of this budget may make."""
    return MODEL_CALLS_PER_TRIAL * budget + MODEL_CALLS_EXTRA, TOOL_CALLS_PER_TRIAL * budget


class SessionConfig(BaseModel):
    evaluator: EvaluatorConfig = EvaluatorConfig()
    model: ModelSettings = ModelSettings()
    prompt: str = "default"
    seed: int = 0
    prompt_text: str | None = None  # a recorded template's text (replay, resume) instead of a name
    x0_spec: str = "paper"  # how the start point was chosen: paper | random | explicit
    method: str = AGENT_METHOD
    runs_dir: Path = Path("runs")
    manifest_extra: dict[str, Any] = {}  # recorded in the manifest as well (e.g. where a cell ran)



def manifest_for(cfg: SessionConfig, session_id: str, template_name: str | None, template_sha: str | None,
                 template_text: str | None, extra: dict[str, Any] | None = None,
                 with_model: bool = True) -> dict[str, Any]:
    """The manifest of any session, LLM or not (`with_model=False` for classical methods)."""
    from tuneloop.tools.record import package_versions  # here: naming a method needs no structlog

    ev = cfg.evaluator
    model_calls, tool_calls = call_limits(ev.budget)
    model = cfg.model.model_dump() if with_model else None
    source: dict[str, Any] = {}
    if ev.task is not None:  # a task: which one, from which file, exactly which content
        task = load_task(ev.task)
        source = {"task": {"spec": ev.task, "name": task.name, "path": task.path, "sha256": task.sha256,
                           "direction": task.direction, "description": task.description,
                           **({"timeout_s": task.timeout_s} if task.timeout_s is not None else {})},
                  "task_seed": ev.seed}
    else:
        obj = get_objective(ev.objective)
        if obj.fid == USER_FID:  # an objective from a file: which file, and exactly which content
            assert isinstance(obj, UserObjective)  # the only objectives with USER_FID
            source = {"objective_file": {"path": obj.path, "sha256": obj.sha256}}
    return (extra or {}) | source | {
        "format": 1,
        "session_id": session_id,
        "method": cfg.method,
        "objective": load_task(ev.task).name if ev.task is not None else ev.objective,
        "x0": list(ev.x0),
        "x0_spec": cfg.x0_spec,
        "max_iter": ev.max_iter,
        "tol": ev.tol,
        "budget": ev.budget,
        "space": ev.space.to_json(),
        "seed": cfg.seed,
        "model": model,
        "prompt": {"name": template_name, "sha256": template_sha, "text": template_text} if template_name else None,
        "limits": dict(model_calls=model_calls, tool_calls=tool_calls),
        "versions": package_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def model_from_manifest(m: dict[str, Any]) -> ModelSettings:
    """The model settings a manifest records (settings this release does not know left out;
    a classical run's none: the defaults)."""
    return ModelSettings(**{k: v for k, v in (m.get("model") or {}).items() if k in ModelSettings.model_fields})


def config_from_manifest(m: dict[str, Any]) -> SessionConfig:
    """The SessionConfig a manifest describes (the prompt by its recorded text)."""
    task = (m.get("task") or {}).get("spec")
    ev = EvaluatorConfig(objective=m["objective"] if task is None else EvaluatorConfig().objective, task=task,
                         seed=m.get("task_seed", 0), x0=tuple(m["x0"]), max_iter=m["max_iter"], tol=m["tol"],
                         budget=m["budget"],
                         **({"space": m["space"]} if "space" in m else {"bounds": m.get("bounds") or {}}))
    model = model_from_manifest(m)
    prompt = m.get("prompt") or {}
    return SessionConfig(evaluator=ev, model=model, prompt=prompt.get("name") or "default",
                         prompt_text=prompt.get("text"), seed=m.get("seed", 0), x0_spec=m.get("x0_spec", "explicit"),
                         method=m.get("method", AGENT_METHOD))



