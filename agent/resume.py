"""Rebuilding a session's state from its recorded events (plain dicts, as read from
trace.jsonl): the trials for the Evaluator, the conversation for the agent, and the
recorded model replies for a replay."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from agent.models import ModelSettings
from tools.trials import Bounds, EvaluatorConfig, TrialResult

TRIAL_KEYS = set(TrialResult.model_fields)


def config_from_manifest(m: dict[str, Any]):
    """The SessionConfig a manifest describes (the prompt by its recorded text)."""
    from agent.session import SessionConfig

    ev = EvaluatorConfig(objective=m["objective"], x0=tuple(m["x0"]), max_iter=m["max_iter"], tol=m["tol"],
                         budget=m["budget"], bounds=Bounds(**(m.get("bounds") or {})))
    model = ModelSettings(**{k: v for k, v in (m.get("model") or {}).items() if k in ModelSettings.model_fields})
    prompt = m.get("prompt") or {}
    return SessionConfig(evaluator=ev, model=model, prompt=prompt.get("name") or "default",
                         prompt_text=prompt.get("text"), seed=m.get("seed", 0), x0_spec=m.get("x0_spec", "explicit"),
                         method=m.get("method", "llm"))


def restored_trials(events: list[dict]) -> list[TrialResult]:
    return [TrialResult.model_validate({k: v for k, v in e.items() if k in TRIAL_KEYS})
            for e in events if e.get("event") == "trial_evaluated"]


def restored_invalid(events: list[dict]) -> int:
    return sum(1 for e in events if e.get("event") == "tool_error" and "source" in e)


def recorded_replies(events: list[dict]) -> list[AIMessage]:
    out = []
    for e in events:
        if e.get("event") != "model_called":
            continue
        calls = [{"name": c["name"], "args": c["args"], "id": c.get("id") or f"call_{e['seq']}_{i}"}
                 for i, c in enumerate(e.get("tool_calls") or [])]
        msg = AIMessage(content=e.get("reply", "") if not calls else "", tool_calls=calls)
        msg.usage_metadata = {"input_tokens": int(e.get("input_tokens", 0)), "output_tokens": int(e.get("output_tokens", 0)),
                              "total_tokens": int(e.get("input_tokens", 0)) + int(e.get("output_tokens", 0))}
        out.append(msg)
    return out


def restored_conversation(events: list[dict]) -> list[BaseMessage]:
    """The model's tool calls and the tool's answers, in order (the opening message and the
    per-turn state are rendered afresh). A final call without an answer is dropped."""
    replies = recorded_replies(events)
    outputs = [e.get("output", "") for e in events if e.get("event") == "tool_called"]
    msgs: list[BaseMessage] = []
    k = 0
    for r in replies:
        calls = [c for c in r.tool_calls if c["name"] != "FinalAnswer"]
        if not calls:
            continue
        if k + len(calls) > len(outputs):
            break
        msgs.append(AIMessage(content="", tool_calls=calls))
        for c in calls:
            msgs.append(ToolMessage(outputs[k], tool_call_id=c["id"], name=c["name"]))
            k += 1
    return msgs


class ReplayDivergence(RuntimeError):
    pass


class ReplayChatModel(BaseChatModel):
    """Answers with the recorded replies, in order: no network, no model load."""

    replies: list[Any]
    _i: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "replay"

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        if self._i >= len(self.replies):
            raise ReplayDivergence(f"the replayed session asked for model call {self._i + 1}, "
                                   f"but the trace recorded only {len(self.replies)}")
        msg = self.replies[self._i].model_copy(deep=True)
        self._i += 1
        return ChatResult(generations=[ChatGeneration(message=msg)])


def finished_reason(events: list[dict]) -> str | None:
    fin = [e for e in events if e.get("event") == "session_finished"]
    return fin[-1].get("stop_reason") if fin else None


def dumps_compact(o: Any) -> str:
    return json.dumps(o, sort_keys=True, default=str)
