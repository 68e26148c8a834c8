"""THE trace format, the run record of every method (LLM or not): run directories, writing
the JSONL trace (structlog) and reading it back. No LangChain here: the callback that feeds
an LLM session's events into it is agent/tracing.py's.

RUNS_DIR/<session id>/manifest.json   everything needed to re-run the session
RUNS_DIR/<session id>/trace.jsonl     one JSON event per line, flushed as written

Every event carries event, timestamp (UTC ISO 8601), session_id, seq and format. Secrets
never reach the file: the known key values, `Bearer ...` and `sk-...` strings and any
field named like a credential are replaced by "***" in a structlog processor.

Readers are forgiving where a killed process is the likely cause (a cut last line: a
warning, the events before it are used) and strict otherwise (an empty file, a file
that is not a trace, a newer format: one clear TraceError).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog
from structlog.typing import EventDict, WrappedLogger

from tuneloop.tools.errors import UserError
from tuneloop.tools.files import atomic_write_text
from tuneloop.tools.formatting import hide_password, json_safe

TRACE_FORMAT = 1
# UTC, microseconds, "+00:00": what datetime.isoformat() writes for an aware UTC time
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"
_SECRET_PATTERNS = [re.compile(r"Bearer\s+\S+", re.I), re.compile(r"sk-[A-Za-z0-9_\-]{8,}")]
_SECRET_KEYS = re.compile(r"(api[_-]?key|authorization|secret|password|access[_-]?token)", re.I)


def new_session_id(method: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
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
        # `api_key_env` names the variable that holds the key, not the key: resume needs it
        if key and _SECRET_KEYS.search(key) and not key.endswith("_env") and value not in (None, ""):
            return "***"
        if isinstance(value, str):
            for k in self.known:
                value = value.replace(k, "***")
            value = hide_password(value)  # a base_url with credentials
            for pat in _SECRET_PATTERNS:
                value = pat.sub("***", value)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def __call__(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> dict[str, Any]:
        return {k: self.scrub(v, k) for k, v in event_dict.items()}


def _json_default(o: Any) -> Any:
    if hasattr(o, "model_dump"):
        return o.model_dump()
    return str(o)


def dumps(obj: Any, **kw: Any) -> str:
    """JSON as the trace and the manifest write it: nan/inf (not JSON) become null."""
    return json.dumps(json_safe(obj), default=_json_default, **kw)


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
                structlog.processors.TimeStamper(fmt=TIMESTAMP_FORMAT, utc=True, key="timestamp"),
                self._head,
                self.redactor,
                lambda _l, _n, ed: json_safe(ed),
                structlog.processors.JSONRenderer(default=_json_default),
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

    def _head(self, _logger: WrappedLogger, _name: str, event_dict: EventDict) -> dict[str, Any]:
        """The keys every event starts with, in this order (the timestamp is structlog's)."""
        self._seq += 1
        head = {
            "event": event_dict.pop("event"),
            "timestamp": event_dict.pop("timestamp"),
            "session_id": self.session_id,
            "seq": self._seq,
            "format": TRACE_FORMAT,
        }
        return {**head, **event_dict}

    def write_manifest(self, manifest: dict[str, Any]) -> Path:
        # atomic: never a half-written manifest
        return atomic_write_text(self.dir / "manifest.json", dumps(self.redactor.scrub(manifest), indent=2) + "\n")

    def emit(self, event: str, **fields: Any) -> None:
        self.logger.info(event, **fields)

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()


class TraceError(UserError):
    """A trace that cannot be read; the message says why."""


@dataclass
class Trace:
    run_dir: Path
    manifest: dict[str, Any] | None
    events: list[dict[str, Any]]
    warnings: list[str] = field(default_factory=list)

    @property
    def session_id(self) -> str:
        return self.events[0].get("session_id", self.run_dir.name) if self.events else self.run_dir.name

    def of(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == name]

    @property
    def finished(self) -> dict[str, Any] | None:
        f = self.of("session_finished")
        return f[-1] if f else None

    @property
    def method(self) -> str:
        if self.manifest:
            return str(self.manifest.get("method", "?"))
        s = self.of("session_started")
        return str(s[0].get("method", "?")) if s else "?"

    @property
    def objective(self) -> str:
        if self.manifest:
            return str(self.manifest.get("objective", "?"))
        s = self.of("session_started")
        return str(s[0].get("objective", "?")) if s else "?"


def read_trace(path: Path | str) -> Trace:
    p = Path(path)
    run_dir = p if p.is_dir() else p.parent
    tfile = p / "trace.jsonl" if p.is_dir() else p
    if not tfile.exists():
        raise TraceError(f"no trace found: {tfile} does not exist")
    raw = tfile.read_bytes()
    if not raw.strip():
        raise TraceError(f"{tfile} is empty: the session wrote no events")
    lines = raw.split(b"\n")
    ends_clean = raw.endswith(b"\n")
    if ends_clean:
        lines = lines[:-1]
    events: list[dict[str, Any]] = []
    warnings: list[str] = []
    loads: Callable[[bytes], Any]
    decode_errors: tuple[type[Exception], ...]
    try:  # orjson (a langsmith dependency) parses 3-4x faster; json is the fallback
        from orjson import JSONDecodeError as _OrjsonError
        from orjson import loads
        decode_errors = (_OrjsonError, json.JSONDecodeError, UnicodeDecodeError)
    except ImportError:  # pragma: no cover
        loads = json.loads
        decode_errors = (json.JSONDecodeError, UnicodeDecodeError)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            ev = loads(line)
        except decode_errors:
            if i == len(lines) and not ends_clean and events:
                warnings.append(f"the last line of {tfile} is cut off (the process was killed?); "
                                f"using the {len(events)} events before it")
                break
            raise TraceError(f"{tfile} is not a tuneloop trace: line {i} is not JSON") from None
        if not isinstance(ev, dict) or "event" not in ev or "seq" not in ev:
            raise TraceError(f"{tfile} is not a tuneloop trace: line {i} has no 'event'/'seq'")
        fmt = ev.get("format", 1)
        if isinstance(fmt, int) and fmt > TRACE_FORMAT:
            raise TraceError(f"{tfile} uses trace format {fmt}, newer than this tuneloop reads "
                             f"({TRACE_FORMAT}): upgrade tuneloop")
        events.append(ev)
    manifest = None
    mfile = run_dir / "manifest.json"
    if mfile.exists():
        try:
            manifest = json.loads(mfile.read_text())
        except json.JSONDecodeError:
            warnings.append(f"{mfile} is not valid JSON; settings are taken from the trace")
    return Trace(run_dir, manifest, events, warnings)
