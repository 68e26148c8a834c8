"""The LangChain callback that feeds an LLM session's model and tool calls into its trace
(tools/record.py holds the trace format itself) and counts what the session spent."""

from __future__ import annotations

import hashlib
import time
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

from tuneloop.tools.record import TraceWriter
from tuneloop.tools.usage import Usage


def messages_digest(messages: list[BaseMessage]) -> str:
    """The `messages_sha256` of a model_called event: what the model was sent, by type and text."""
    h = hashlib.sha256()
    for m in messages:
        h.update(m.type.encode())
        h.update(str(m.content).encode())
    return h.hexdigest()


class TraceCallbackHandler(BaseCallbackHandler):
    """Records every model call (reply, tool calls, tokens, latency) and tool call."""

    def __init__(self, writer: TraceWriter, model_name: str) -> None:
        self.writer = writer
        self.model_name = model_name
        self._starts: dict[UUID, tuple[float, list[BaseMessage]]] = {}
        self._tool_starts: dict[UUID, tuple[float, str, str]] = {}
        self.usage = Usage()

    def on_chat_model_start(self, serialized, messages, *, run_id: UUID, **kw) -> None:
        self._starts[run_id] = (time.perf_counter(), messages[0] if messages else [])

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kw) -> None:
        t0, msgs = self._starts.pop(run_id, (time.perf_counter(), []))
        latency = time.perf_counter() - t0
        gen = response.generations[0][0] if response.generations and response.generations[0] else None
        msg = getattr(gen, "message", None)
        usage = getattr(msg, "usage_metadata", None)
        # no usage from the server: unknown (null), not zero
        tin = int(usage["input_tokens"]) if usage and usage.get("input_tokens") is not None else None
        tout = int(usage["output_tokens"]) if usage and usage.get("output_tokens") is not None else None
        # prompt tokens reused from the server's / llama.cpp's cache (not evaluated again)
        cached = ((usage or {}).get("input_token_details") or {}).get("cache_read")
        self.usage.add_call(latency, tin, tout)
        meta = getattr(msg, "response_metadata", None) or {}
        for step in meta.get("tool_choice_fallbacks", ()):
            self.writer.emit("tool_choice_fallback", model=self.model_name, **step)
        self.writer.emit(
            "model_called",
            model=self.model_name,
            n_messages=len(msgs),
            messages_sha256=messages_digest(msgs),
            last_message=str(msgs[-1].content) if msgs else "",
            reply=str(getattr(msg, "content", "") if msg is not None else getattr(gen, "text", "")),
            tool_calls=[{"name": tc["name"], "args": tc["args"], "id": tc.get("id")}
                        for tc in (getattr(msg, "tool_calls", None) or [])],
            input_tokens=tin,
            input_tokens_cached=int(cached) if cached is not None else None,
            output_tokens=tout,
            latency_s=round(latency, 6),
            **({"tool_choice": meta["tool_choice_form"]} if "tool_choice_form" in meta else {}),
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw) -> None:
        t0, _ = self._starts.pop(run_id, (time.perf_counter(), []))
        self.usage.model_s += time.perf_counter() - t0

    def on_tool_start(self, serialized, input_str: str, *, run_id: UUID, inputs=None, **kw) -> None:
        name = (serialized or {}).get("name", "?")
        self._tool_starts[run_id] = (time.perf_counter(), name, input_str)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw) -> None:
        t0, name, args = self._tool_starts.pop(run_id, (time.perf_counter(), "?", ""))
        latency = time.perf_counter() - t0
        self.usage.tool_s += latency
        content = getattr(output, "content", output)
        self.writer.emit("tool_called", tool=name, input=args, output=str(content), latency_s=round(latency, 6))

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw) -> None:
        t0, name, args = self._tool_starts.pop(run_id, (time.perf_counter(), "?", ""))
        self.usage.tool_s += time.perf_counter() - t0
        self.writer.emit("tool_error", tool=name, input=args, error=f"{type(error).__name__}: {error}")


# ------------------------------------------------------------------ reading
