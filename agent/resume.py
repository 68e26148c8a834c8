"""Rebuilding a session's state from its recorded events (plain dicts, as read from
trace.jsonl): the trials for the Evaluator, the invalid proposals, the conversation for
the agent, and the recorded model replies for a replay."""

from __future__ import annotations

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from tuneloop.tools.trials import Evaluator, TrialResult


def restore_into(ev: Evaluator, events: list[dict]) -> None:
    """Re-enter the recorded trials and invalid proposals (tool errors the Evaluator
    reported, which carry a source) into `ev`, in the order they happened."""
    for e in events:
        if e.get("event") == "trial_evaluated":
            ev.restore(TrialResult.from_event(e))
        elif e.get("event") == "tool_error" and "source" in e:
            ev.restore_invalid()


def recorded_replies(events: list[dict]) -> list[AIMessage]:
    out = []
    for e in events:
        if e.get("event") != "model_called":
            continue
        calls = [{"name": c["name"], "args": c["args"], "id": c.get("id") or f"call_{e['seq']}_{i}"}
                 for i, c in enumerate(e.get("tool_calls") or [])]
        msg = AIMessage(content=e.get("reply", "") if not calls else "", tool_calls=calls)
        tin, tout = int(e.get("input_tokens") or 0), int(e.get("output_tokens") or 0)
        msg.usage_metadata = {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout}
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


def finished_reason(events: list[dict]) -> str | None:
    fin = [e for e in events if e.get("event") == "session_finished"]
    return fin[-1].get("stop_reason") if fin else None
