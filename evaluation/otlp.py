"""Traces as OpenTelemetry: a session's trace.jsonl rendered as OTLP/JSON spans that follow
the GenAI semantic conventions, written to a file or POSTed to an OTLP/HTTP collector.

One OTLP trace per session; ids are hashes of the session id and event seq, so exporting
twice gives the same ids and the same file.

    root      "invoke_agent tuneloop" (agent sessions) or the method ("cmaes", "centaur", ...)
    chat      "chat <model>": one per model_called, child of the root
    tool      "execute_tool <tool>": one per tool call, child of the root, with the trial
              the Evaluator recorded during it
    evaluate  "evaluate": one per trial_evaluated / tool_error outside a tool call
              (classical and hybrid runs), child of the root
    retry, tool_choice_fallback, rate_limited, session_resumed: events of the root span

    >>> trace_id("20250101T000000-llm-abc123")
    'ba4b4f0ae346a755e6815111968696d2'
    >>> unix_nano("1970-01-01T00:00:01.000002+00:00")
    1000002000

Usage: `send_otlp(otlp_request([read_trace(d) for d in dirs]), "http://localhost:4318/v1/traces")`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneloop.agent.gguf import is_local
from tuneloop.evaluation.strategies import AGENT_METHOD
from tuneloop.tools.errors import UserError
from tuneloop.tools.files import atomic_write_text
from tuneloop.tools.record import Redactor, Trace

SCOPE = AGENT_NAME = "tuneloop"
KIND_INTERNAL, KIND_CLIENT, STATUS_ERROR = 1, 3, 2  # SpanKind and StatusCode: OTLP/JSON writes enums as integers
TRIAL_FIELDS = ("trial", "learning_rate", "momentum", "status", "final_value", "iterations", "score", "repeat",
                "charged", "budget_left", "source")
FINISHED_FIELDS = ("trials_charged", "invalid_proposals", "repeated_proposals", "text_replies", "retries",
                   "model_calls", "stop_reason", "best_trial", "cost_usd", "wall_s", "model_s", "tool_s",
                   "retry_wait_s", "overhead_s")
ROOT_EVENTS = ("retry", "tool_choice_fallback", "rate_limited", "session_resumed")
# numbers under these names are doubles even when JSON wrote them as 1 or 0, so that one
# attribute keeps one type across spans (backends index attributes by type)
_DOUBLE = re.compile(r"(learning_rate|momentum|value|score|_s|usd|tol|x0)$")


def trace_id(session_id: str) -> str:
    """32 hex chars: the first 16 bytes of sha256(session id)."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


def span_id(session_id: str, key: str | int) -> str:
    """16 hex chars from the session id and `key` (an event's seq, or "root")."""
    return hashlib.sha256(f"{session_id}\x00{key}".encode()).hexdigest()[:16]


def unix_nano(timestamp: str) -> int:
    """A trace timestamp (ISO 8601, UTC) in integer nanoseconds, without going through a
    float (a float of ~1.7e18 ns keeps only ~256 ns of precision)."""
    dt = datetime.fromisoformat(timestamp)
    d = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)) - datetime.fromtimestamp(0, UTC)
    return (d.days * 86_400 + d.seconds) * 1_000_000_000 + d.microseconds * 1_000


def _any(v: Any, double: bool = False) -> dict[str, Any]:
    """One value as an OTLP/JSON AnyValue: int64 as a decimal string, lists as arrays, dicts as JSON text."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int) and not double:
        return {"intValue": str(v)}
    if isinstance(v, (int, float)):  # non-finite doubles as the strings proto3 JSON reads
        special = {"nan": "NaN", "inf": "Infinity"}.get(str(v), "-Infinity")
        return {"doubleValue": float(v) if math.isfinite(v) else special}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, (list, tuple)):
        return {"arrayValue": {"values": [_any(x, double) for x in v if x is not None]}}
    return {"stringValue": json.dumps(v, sort_keys=True)}


def _attrs(d: dict[str, Any], redact: Redactor) -> list[dict[str, Any]]:
    """KeyValues, None values left out (OTLP has no null), strings scrubbed of secrets."""
    return [{"key": k, "value": _any(redact.scrub(v), bool(_DOUBLE.search(k)))} for k, v in d.items() if v is not None]


def _model(spec: str | None, manifest: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    """(provider, model name, request and server attributes) for a tuneloop model spec."""
    settings = manifest.get("model") or {}
    spec = spec or settings.get("model") or "local"
    request = {f"gen_ai.request.{k}": settings.get(k) for k in ("max_tokens", "seed")}  # fixed for a session
    if spec.startswith("openai:"):
        url = urllib.parse.urlsplit(settings.get("base_url") or "https://api.openai.com/v1")
        server = {"server.address": url.hostname, "server.port": url.port or (443 if url.scheme == "https" else 80)}
        return "openai", spec.split(":", 1)[1], request | server
    if spec == "local":  # the embedded GGUF run by llama.cpp; the manifest may name it
        return "llama.cpp", settings.get("model_name") or settings.get("embedded_model") or "local", request
    if is_local(spec):  # gguf:PATH: the file's name
        return "llama.cpp", Path(spec.split(":", 1)[1]).name, request
    return None, spec, request


def _span(tid: str, sid: str, parent: str | None, name: str, kind: int, start: int, end: int,
          attrs: list, error: str | None = None, events: list | None = None) -> dict[str, Any]:
    optional = {"parentSpanId": parent, "events": events,
                "status": None if error is None else {"code": STATUS_ERROR, "message": error}}
    return {"traceId": tid, "spanId": sid, "name": name, "kind": kind, "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(max(start, end)), "attributes": attrs} | {k: v for k, v in optional.items() if v}


def _trial_attrs(e: dict[str, Any]) -> dict[str, Any]:
    """The Evaluator's record of one proposal; an invalid one (tool_error) carries its error."""
    invalid = {"tuneloop.status": "error", "error.type": "invalid_proposal", "tuneloop.error": e.get("error")}
    return {f"tuneloop.{k}": e.get(k) for k in TRIAL_FIELDS} | (invalid if e["event"] == "tool_error" else {})


def _session_spans(t: Trace, include_content: bool, redact: Redactor) -> list[dict[str, Any]]:
    sid, man, evs = t.session_id, t.manifest or {}, t.events
    tid, root = trace_id(sid), span_id(sid, "root")
    ns = [unix_nano(e["timestamp"]) for e in evs]
    prev = [ns[max(i - 1, 0)] for i in range(len(evs))]  # an event without a latency began after its predecessor
    spans: list[dict[str, Any]] = []
    root_events: list[dict[str, Any]] = []
    pending: list[int] = []  # Evaluator events not yet claimed by the tool call they were written in
    calls: list[dict[str, Any]] = []  # the last reply's tool calls, not yet matched to a tool_called

    def evaluate(i: int, parent: str) -> None:
        error = redact.scrub(evs[i].get("error")) if evs[i]["event"] == "tool_error" else None
        spans.append(_span(tid, span_id(sid, evs[i]["seq"]), parent, "evaluate", KIND_INTERNAL, prev[i], ns[i],
                           _attrs(_trial_attrs(evs[i]), redact), error))

    def flush() -> None:  # Evaluator events no tool call claimed (classical runs): children of the root
        for i in pending:
            evaluate(i, root)
        pending.clear()

    for i, e in enumerate(evs):
        name = e.get("event")
        if name == "trial_evaluated" or (name == "tool_error" and "source" in e):
            pending.append(i)
        elif name == "tool_called" or name == "tool_error":  # a tool_error without a source: the tool raised
            tool = str(e.get("tool", "?"))
            call = next((c for c in calls if c.get("name") == tool), None)  # matched in order, by name
            calls = [c for c in calls if c is not call]
            lat = e.get("latency_s")
            start = ns[i] - round(float(lat) * 1e9) if isinstance(lat, (int, float)) else prev[i]
            args = json.dumps(call["args"], sort_keys=True) if call and "args" in call else e.get("input")
            a = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool, "gen_ai.tool.type": "function",
                 "gen_ai.tool.call.id": (call or {}).get("id"), "gen_ai.tool.call.arguments": args,
                 "gen_ai.tool.call.result": e.get("output")}
            error = e.get("error") if name == "tool_error" else None
            if error is not None:  # "ValueError: ...": the exception's class, as error.type wants
                a["error.type"] = str(error).split(":", 1)[0] or "_OTHER"
            if len(pending) == 1:  # the usual case: one proposal, one Evaluator record
                a |= _trial_attrs(evs[pending[0]])
                error = evs[pending[0]].get("error") if evs[pending[0]]["event"] == "tool_error" else error
            me = span_id(sid, e["seq"])
            for j in pending if len(pending) > 1 else ():
                evaluate(j, me)
            pending.clear()
            spans.append(_span(tid, me, root, f"execute_tool {tool}", KIND_INTERNAL, start, ns[i],
                               _attrs(a, redact), redact.scrub(error)))
        else:
            flush()
            if name == "model_called":
                provider, model, request = _model(e.get("model"), man)
                calls = [c for c in e.get("tool_calls") or [] if isinstance(c, dict)]
                a = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model,
                     "gen_ai.conversation.id": sid, "gen_ai.usage.input_tokens": e.get("input_tokens"),
                     "gen_ai.usage.output_tokens": e.get("output_tokens"),
                     "gen_ai.response.finish_reasons": ["tool_calls" if calls else "stop"],
                     "tuneloop.n_messages": e.get("n_messages"), "tuneloop.messages_sha256": e.get("messages_sha256"),
                     "tuneloop.tool_choice": e.get("tool_choice")} | request
                if include_content:  # opt-in, in the GenAI message schema (role + parts)
                    parts = [{"type": "text", "content": e["reply"]}] if e.get("reply") else []
                    parts += [{"type": "tool_call", "id": c.get("id"), "name": c.get("name"),
                               "arguments": c.get("args")} for c in calls]
                    user = {"role": "user", "parts": [{"type": "text", "content": e.get("last_message") or ""}]}
                    a["gen_ai.input.messages"] = json.dumps([user])
                    a["gen_ai.output.messages"] = json.dumps([{"role": "assistant", "parts": parts,
                                                               "finish_reason": "tool_call" if calls else "stop"}])
                spans.append(_span(tid, span_id(sid, e["seq"]), root, f"chat {model}", KIND_CLIENT,
                                   ns[i] - round(float(e.get("latency_s") or 0) * 1e9), ns[i], _attrs(a, redact)))
            elif name in ROOT_EVENTS:
                fields = {f"tuneloop.{k}": v for k, v in e.items() if k not in ("event", "timestamp", "session_id",
                                                                                 "seq", "format")}
                root_events.append({"timeUnixNano": str(ns[i]), "name": name, "attributes": _attrs(fields, redact)})
    flush()
    spans.insert(0, _root(t, tid, root, ns, spans, root_events, include_content, redact))
    return spans


def _root(t: Trace, tid: str, root: str, ns: list[int], children: list[dict], events: list[dict],
          include_content: bool, redact: Redactor) -> dict[str, Any]:
    man, fin = t.manifest or {}, t.finished or {}
    agent = t.method == AGENT_METHOD or bool(t.of("tool_called"))
    prompt = man.get("prompt") or {}
    a: dict[str, Any] = {"tuneloop.session_id": t.session_id, "tuneloop.method": t.method,
                         "tuneloop.objective": t.objective, "tuneloop.x0": man.get("x0")}
    a |= {f"tuneloop.{k}": man.get(k) for k in ("budget", "seed", "max_iter", "tol")}
    a |= {"tuneloop.prompt": prompt.get("name"), "tuneloop.prompt_sha256": prompt.get("sha256")}
    a |= {f"tuneloop.executor.{k}": v for k, v in (man.get("executor") or {}).items()}
    a |= {f"tuneloop.{k}": fin.get(k) for k in FINISHED_FIELDS}
    best, rec = fin.get("best") or {}, fin.get("recommendation") or {}
    a |= {f"tuneloop.best_{k}": best.get(f) for k, f in (("value", "final_value"), ("learning_rate", "learning_rate"),
                                                           ("momentum", "momentum"), ("score", "score"))}
    # the rationale is the model's own text: content, opt-in
    a |= {f"tuneloop.recommendation.{k}": rec.get(k) for k in ("learning_rate", "momentum", "rationale")
          if include_content or k != "rationale"}
    if not fin:
        a["tuneloop.stop_reason"] = "unfinished (no session_finished event)"
    if agent:
        provider, model, _ = _model(None, man)
        a = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": AGENT_NAME, "gen_ai.conversation.id":
             t.session_id, "gen_ai.provider.name": provider, "gen_ai.request.model": model} | \
            {f"gen_ai.usage.{k}": fin.get(k) for k in ("input_tokens", "output_tokens")} | a
    # the root covers its children even where a latency reaches back before the first event
    start = min([ns[0]] + [int(s["startTimeUnixNano"]) for s in children])
    end_at = unix_nano(fin["timestamp"]) if fin else ns[-1]
    end = max([end_at] + [int(s["endTimeUnixNano"]) for s in children])
    error = redact.scrub(fin.get("error")) if fin.get("error") else None
    return _span(tid, root, None, f"invoke_agent {AGENT_NAME}" if agent else t.method,
                 KIND_INTERNAL, start, end, _attrs(a, redact), error, events)


def otlp_request(traces: list[Trace], include_content: bool = False) -> dict[str, Any]:
    """An OTLP/JSON ExportTraceServiceRequest: one resourceSpans per session (its resource
    names the tuneloop version that wrote it). Messages and the model's rationale only
    with `include_content` (the GenAI conventions make them opt-in)."""
    out = []
    for t in traces:
        if not t.events:
            continue
        man = t.manifest or {}
        version = (man.get("versions") or {}).get("tuneloop")
        # the API keys of this environment are scrubbed again, in case an old trace kept one
        keys = {"OPENAI_API_KEY", str((man.get("model") or {}).get("api_key_env") or "OPENAI_API_KEY")}
        redact = Redactor([v for k in sorted(keys) if (v := os.environ.get(k))])
        resource = _attrs({"service.name": "tuneloop", "service.version": version}, redact)
        out.append({"resource": {"attributes": resource}, "scopeSpans": [{
            "scope": {"name": SCOPE, **({"version": version} if version else {})},
            "spans": _session_spans(t, include_content, redact)}]})
    return {"resourceSpans": out}


def write_otlp(request: dict[str, Any], path: Path | str) -> Path:
    """The request as one JSON document (what `otelcol`'s otlpjsonfile receiver reads per line)."""
    return atomic_write_text(path, json.dumps(request, separators=(",", ":")) + "\n")


def send_otlp(request: dict[str, Any], endpoint: str, timeout: float = 10.0,
              headers: dict[str, str] | None = None) -> None:
    """POST the request to an OTLP/HTTP collector (JSON encoding). An endpoint without a
    path gets /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT does. Headers default to
    OTEL_EXPORTER_OTLP_HEADERS; they never appear in an error message, nor does a
    password in the URL."""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise UserError(f"OTLP endpoint {endpoint!r} is not an http(s) URL (e.g. http://localhost:4318/v1/traces)")
    where = url._replace(netloc=url.netloc.rpartition("@")[2],  # without user:password
                         path=url.path if url.path not in ("", "/") else "/v1/traces").geturl()
    if headers is None:  # as every OTLP exporter: "k1=v1,k2=v2", values URL-encoded
        raw = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS") or os.environ.get("OTEL_EXPORTER_OTLP_HEADERS") or ""
        headers = {k.strip(): urllib.parse.unquote(v.strip()) for k, _, v in (p.partition("=") for p in raw.split(","))
                   if v}
    sent = {"Content-Type": "application/json", "User-Agent": "tuneloop", **headers}
    if url.username is not None:  # urllib cannot take user:password in the URL: HTTP basic auth, as curl does
        pair = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
        sent.setdefault("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    body = json.dumps(request, separators=(",", ":")).encode()
    req = urllib.request.Request(where, data=body, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer = resp.read()
    except urllib.error.HTTPError as e:
        detail = e.read()[:200].decode("utf-8", "replace").strip() or "(no body)"
        raise UserError(f"the OTLP collector at {where} answered HTTP {e.code} {e.reason}: {detail}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # also: a bad port, a server not HTTP
        reason = getattr(e, "reason", e)
        why = (reason.strerror or str(reason)).lower() if isinstance(reason, OSError) else str(reason)
        raise UserError(f"could not send traces to the OTLP collector at {where}: {why or 'timed out'} "
                        f"(is it running and listening for OTLP/HTTP, normally on port 4318?)") from None
    try:  # a 2xx may still reject spans (partial success); a body that is not JSON is an acceptance
        partial = (json.loads(answer or b"{}") or {}).get("partialSuccess") or {}
    except (json.JSONDecodeError, AttributeError):
        return
    if int(partial.get("rejectedSpans") or 0):
        raise UserError(f"the OTLP collector at {where} rejected {partial['rejectedSpans']} spans: "
                        f"{partial.get('errorMessage') or 'no reason given'}")
