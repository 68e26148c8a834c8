"""Run directories, the JSONL trace (structlog), and the LangChain callback that feeds it.

RUNS_DIR/<session id>/manifest.json   everything needed to re-run the session
RUNS_DIR/<session id>/trace.jsonl     one JSON event per line, flushed as written

Every event carries event, timestamp (UTC ISO 8601), session_id, seq and format. Secrets
never reach the file: the known key values, `Bearer ...` and `sk-...` strings and any
field named like a credential are replaced by "***" in a structlog processor.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any
from uuid import UUID

import structlog
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import BaseMessage
from langchain_core.outputs import LLMResult

TRACE_FORMAT = 1
_SECRET_PATTERNS = [re.compile(r"Bearer\s+\S+", re.I), re.compile(r"sk-[A-Za-z0-9_\-]{8,}")]
_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|secret|password|access[_-]?token)", re.I)


def new_session_id(method: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{method}-{secrets.token_hex(3)}"


def package_versions() -> dict[str, str]:
    out = {}
    for name in ("tuneloop", "numpy", "numba", "langchain", "langchain-core", "langchain-openai",
                 "llama-cpp-python", "cmaes", "optuna", "pydantic", "structlog"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


class Redactor:
    """structlog processor: scrub secrets from every value, recursively."""

    def __init__(self, known: list[str] | None = None) -> None:
        self.known = [k for k in (known or []) if k and len(k) >= 4]

    def scrub(self, value: Any, key: str = "") -> Any:
        if key and _SECRET_KEYS.search(key) and value not in (None, ""):
            return "***"
        if isinstance(value, str):
            for k in self.known:
                value = value.replace(k, "***")
            for pat in _SECRET_PATTERNS:
                value = pat.sub("***", value)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(self, _logger, _name, event_dict: dict) -> dict:
        return {k: self.scrub(v, k) for k, v in event_dict.items()}


def _json_default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump()
    return str(o)


def _dumps(obj: Any, **kw) -> str:
    # nan/inf are not JSON: write them as null
    return json.dumps(_nan_to_none(obj), default=_json_default, **kw)


def _nan_to_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _nan_to_none(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_nan_to_none(x) for x in v]
    return v


class TraceWriter:
    """Owns one run directory: writes the manifest and appends events to trace.jsonl."""

    def __init__(self, runs_dir: Path | str, session_id: str, secrets_to_hide: list[str] | None = None,
                 append: bool = False) -> None:
        self.session_id = session_id
        self.dir = Path(runs_dir) / session_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "trace.jsonl"
        self.redactor = Redactor(secrets_to_hide)
        self._seq = 0
        if append and self.path.exists():
            self._seq = self._drop_cut_line()
        self._file = self.path.open("a", encoding="utf-8")
        self.logger = structlog.wrap_logger(
            structlog.WriteLogger(self._file),
            processors=[
                self._stamp,
                self.redactor,
                lambda _l, _n, ed: _dumps(ed),
            ],
        )

    def _drop_cut_line(self) -> int:
        """Before appending to the trace of a killed session: remove a last line cut off
        mid-write (readers already skip it with a warning) so that new events start on a
        line of their own; returns the last seq number written."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            with self.path.open("r+b") as f:
                f.truncate(len(data))
        last = data.rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            return int(json.loads(last).get("seq", 0)) if last else 0
        except (json.JSONDecodeError, AttributeError, ValueError):
            return data.count(b"\n")

    def _stamp(self, _logger, _name, event_dict: dict) -> dict:
        self._seq += 1
        head = {
            "event": event_dict.pop("event"),
            "timestamp": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
            "session_id": self.session_id,
            "seq": self._seq,
            "format": TRACE_FORMAT,
        }
        return head | event_dict

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        path = self.dir / "manifest.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(_dumps(self.redactor.scrub(manifest), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: never a half-written manifest
        return path

    def emit(self, event: str, **fields: Any) -> None:
        self.logger.info(event, **fields)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


def _messages_digest(messages: list[BaseMessage]) -> str:
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
        self.model_seconds = 0.0
        self.tool_seconds = 0.0
        self.model_calls = 0
        self.input_tokens = 0
        self.output_tokens = 0

    def on_chat_model_start(self, serialized, messages, *, run_id: UUID, **kw) -> None:
        self._starts[run_id] = (time.perf_counter(), messages[0] if messages else [])

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kw) -> None:
        t0, msgs = self._starts.pop(run_id, (time.perf_counter(), []))
        latency = time.perf_counter() - t0
        self.model_seconds += latency
        self.model_calls += 1
        gen = response.generations[0][0] if response.generations and response.generations[0] else None
        msg = getattr(gen, "message", None)
        usage = getattr(msg, "usage_metadata", None) or {}
        tin, tout = int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))
        self.input_tokens += tin
        self.output_tokens += tout
        self.writer.emit(
            "model_called",
            model=self.model_name,
            n_messages=len(msgs),
            messages_sha256=_messages_digest(msgs),
            last_message=str(msgs[-1].content) if msgs else "",
            reply=str(getattr(msg, "content", "") if msg is not None else getattr(gen, "text", "")),
            tool_calls=[{"name": tc["name"], "args": tc["args"], "id": tc.get("id")}
                        for tc in (getattr(msg, "tool_calls", None) or [])],
            input_tokens=tin,
            output_tokens=tout,
            latency_s=round(latency, 6),
        )

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kw) -> None:
        t0, _ = self._starts.pop(run_id, (time.perf_counter(), []))
        self.model_seconds += time.perf_counter() - t0

    def on_tool_start(self, serialized, input_str: str, *, run_id: UUID, inputs=None, **kw) -> None:
        name = (serialized or {}).get("name", "?")
        self._tool_starts[run_id] = (time.perf_counter(), name, input_str)

    def on_tool_end(self, output: Any, *, run_id: UUID, **kw) -> None:
        t0, name, args = self._tool_starts.pop(run_id, (time.perf_counter(), "?", ""))
        latency = time.perf_counter() - t0
        self.tool_seconds += latency
        content = getattr(output, "content", output)
        self.writer.emit("tool_called", tool=name, input=args, output=str(content), latency_s=round(latency, 6))

    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kw) -> None:
        t0, name, args = self._tool_starts.pop(run_id, (time.perf_counter(), "?", ""))
        self.tool_seconds += time.perf_counter() - t0
        self.writer.emit("tool_error", tool=name, input=args, error=f"{type(error).__name__}: {error}")
