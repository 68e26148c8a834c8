"""Traces as OpenTelemetry: a session's trace.jsonl rendered as OTLP/JSON spans that follow
the GenAI semantic conventions, written to a file or sent to an OTLP/HTTP collector
(protobuf, the OTLP/HTTP default, or JSON).

One OTLP trace per run, its ids hashed from the session id and the run's start: the first
event's timestamp in integer microseconds (written once, when the run starts; a resumed
session keeps it). Session ids alone repeat across studies (an eval names a session after
its cell); runs do not. Exporting the same run twice gives the same ids and the same file.

    trace id  the first 16 bytes of sha256(session id, NUL, start)
    span id   the first 8 bytes of sha256(session id, NUL, start, NUL, key), key an event's seq or "root"

    root      "invoke_agent tuneloop" (agent sessions) or the method ("cmaes", "centaur", ...)
    chat      "chat <model>": one per model_called, child of the root
    tool      "execute_tool <tool>": one per tool call, child of the root, with the trial
              the Evaluator recorded during it
    evaluate  "evaluate": one per trial_evaluated / tool_error outside a tool call
              (classical and hybrid runs), child of the root
    retry, tool_choice_fallback, rate_limited, session_resumed: events of the root span

    >>> start = unix_nano("2025-01-01T00:00:00.000001+00:00") // 1000  # as run_start_us reads it
    >>> start, trace_id("20250101T000000-llm-abc123", start), span_id("20250101T000000-llm-abc123", start, "root")
    (1735689600000001, 'e3294b3b2d6bb3809d98100225521cff', '3b9819ca16c988b3')
    >>> unix_nano("1970-01-01T00:00:01.000002+00:00")
    1000002000

Sending, as OpenTelemetry's exporters read their settings (a flag beats its variable): the
endpoint is --otlp-endpoint (a URL without a path gets /v1/traces), else
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (as is), else OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces; the
protocol --otlp-protocol, else OTEL_EXPORTER_OTLP_TRACES_PROTOCOL, else ..._PROTOCOL, else
http/protobuf; headers OTEL_EXPORTER_OTLP_TRACES_HEADERS, else ..._HEADERS ("k1=v1,k2=v2",
URL-encoded), their values never shown (they may hold tokens).

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
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuneloop.agent.gguf import is_local
from tuneloop.evaluation.strategies import AGENT_METHOD
from tuneloop.evaluation.trace_params import flat_params, float_params, gd_values, recommended_params, run_space
from tuneloop.tools.errors import UserError
from tuneloop.tools.files import atomic_write_text
from tuneloop.tools.formatting import hide_password
from tuneloop.tools.record import Redactor, Trace
from tuneloop.tools.space import params_of

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


def trace_id(session_id: str, start_us: int) -> str:
    """32 hex chars from the session id and the run's start (see the module's docstring)."""
    return hashlib.sha256(f"{session_id}\x00{start_us}".encode()).hexdigest()[:32]


def span_id(session_id: str, start_us: int, key: str | int) -> str:
    """16 hex chars from the session id, the run's start and `key` (an event's seq, or "root")."""
    return hashlib.sha256(f"{session_id}\x00{start_us}\x00{key}".encode()).hexdigest()[:16]


def run_start_us(t: Trace) -> int:
    """The run's identity beside its session id: its first event's time in microseconds."""
    return unix_nano(t.events[0]["timestamp"]) // 1000


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


def _trial_attrs(e: dict[str, Any], floats: Collection[str] = ()) -> dict[str, Any]:
    """The Evaluator's record of one proposal, every parameter of the space; an invalid one
    (tool_error) its error and raw arguments (JSON text), its GD values read from them."""
    invalid = {"tuneloop.status": "error", "error.type": "invalid_proposal", "tuneloop.error": e.get("error"),
               "tuneloop.arguments": e.get("arguments")}
    trial = {f"tuneloop.{k}": e.get(k) for k in TRIAL_FIELDS} | {f"tuneloop.{k}": v for k, v in gd_values(e).items()}
    trial |= flat_params("tuneloop.", params_of(e), floats, TRIAL_FIELDS)
    return trial | (invalid if e["event"] == "tool_error" else {})


def _session_spans(t: Trace, include_content: bool, redact: Redactor) -> list[dict[str, Any]]:
    sid, man, evs = t.session_id, t.manifest or {}, t.events
    floats = float_params(run_space(t))
    start_us = run_start_us(t)
    tid, root = trace_id(sid, start_us), span_id(sid, start_us, "root")
    ns = [unix_nano(e["timestamp"]) for e in evs]
    prev = [ns[max(i - 1, 0)] for i in range(len(evs))]  # an event without a latency began after its predecessor
    spans: list[dict[str, Any]] = []
    root_events: list[dict[str, Any]] = []
    pending: list[int] = []  # Evaluator events not yet claimed by the tool call they were written in
    calls: list[dict[str, Any]] = []  # the last reply's tool calls, not yet matched to a tool_called

    def evaluate(i: int, parent: str) -> None:
        error = redact.scrub(evs[i].get("error")) if evs[i]["event"] == "tool_error" else None
        spans.append(_span(tid, span_id(sid, start_us, evs[i]["seq"]), parent, "evaluate", KIND_INTERNAL, prev[i],
                           ns[i], _attrs(_trial_attrs(evs[i], floats), redact), error))

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
                a |= _trial_attrs(evs[pending[0]], floats)
                error = evs[pending[0]].get("error") if evs[pending[0]]["event"] == "tool_error" else error
            me = span_id(sid, start_us, e["seq"])
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
                spans.append(_span(tid, span_id(sid, start_us, e["seq"]), root, f"chat {model}", KIND_CLIENT,
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
    space = run_space(t)  # the parameters beyond the two: tuneloop.best_<name>, tuneloop.recommendation.<name>
    a |= flat_params("tuneloop.best_", params_of(best), float_params(space))
    a |= flat_params("tuneloop.recommendation.", recommended_params(rec, space.names), float_params(space))
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


PROTOCOLS = {"http/protobuf": "application/x-protobuf", "http/json": "application/json"}
ENV = "OTEL_EXPORTER_OTLP_"
_IDS = ("traceId", "spanId", "parentSpanId")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_BAD_HEADER_VALUE = re.compile(r"[^\t\x20-\x7e\x80-\xff]")  # what http.client refuses to send


def _pb() -> Any:
    """opentelemetry-proto's trace service messages, imported only to send protobuf."""
    try:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as pb
    except ImportError:
        raise UserError("sending OTLP as protobuf (http/protobuf, the default) needs the opentelemetry-proto package: "
                        "pip install opentelemetry-proto (or send JSON: --otlp-protocol http/json)") from None
    return pb


def otlp_protobuf(request: dict[str, Any]) -> bytes:
    """The OTLP/JSON request as a protobuf ExportTraceServiceRequest, the same spans. OTLP/JSON
    writes ids as hex where proto3's JSON mapping of bytes is base64: they are converted."""
    message = _pb().ExportTraceServiceRequest
    from google.protobuf.json_format import ParseDict  # type: ignore[import-untyped]

    def b64(span: dict[str, Any]) -> dict[str, Any]:
        return {k: base64.b64encode(bytes.fromhex(v)).decode() if k in _IDS else v for k, v in span.items()}

    req = {"resourceSpans": [rs | {"scopeSpans": [ss | {"spans": [b64(sp) for sp in ss["spans"]]}
                                                  for ss in rs["scopeSpans"]]} for rs in request["resourceSpans"]]}
    return ParseDict(req, message()).SerializeToString(deterministic=True)


@dataclass(frozen=True)
class OtlpTarget:
    """Where and how spans are sent. `shown` is the URL without a password, for messages;
    `source` says where the endpoint came from; `headers` are never shown (tokens)."""

    url: str
    shown: str
    protocol: str
    source: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)


def _parse_headers(raw: str, source: str) -> dict[str, str]:
    """"k1=v1,k2=v2" with URL-encoded values, as every OTLP exporter reads it; entries without
    "=" are left out. A value http cannot carry is an error that names its key, not its value."""
    out = {}
    for k, _, v in (p.partition("=") for p in raw.split(",")):
        k, v = urllib.parse.unquote(k).strip(), urllib.parse.unquote(v).strip()
        if not k or not v:
            continue
        if not _HEADER_NAME.fullmatch(k) or _BAD_HEADER_VALUE.search(v):
            raise UserError(f"{source}: header {k!r} has a name or value that HTTP cannot carry (value not shown)")
        out[k] = v
    return out


def otlp_target(endpoint: str | None = None, protocol: str | None = None, headers: dict[str, str] | None = None,
                env: Mapping[str, str] | None = None) -> OtlpTarget | None:
    """Where, how and with which headers to send (a flag beats its variable; see the module's
    docstring); None when no endpoint is given nor set. Checks the URL and the protocol."""
    env = os.environ if env is None else env
    first = [k for k in (ENV + "TRACES_ENDPOINT", ENV + "ENDPOINT") if env.get(k, "").strip()]
    if endpoint is not None:  # a URL without a path gets /v1/traces, as OTEL_EXPORTER_OTLP_ENDPOINT does
        source, u = "--otlp-endpoint", urllib.parse.urlsplit(endpoint.strip())
        url = (u._replace(path="/v1/traces") if u.path in ("", "/") else u).geturl()
    elif first:
        source, url = first[0], env[first[0]].strip()
        url = url if source.endswith("TRACES_ENDPOINT") else url.rstrip("/") + "/v1/traces"
    else:
        return None
    via = "" if endpoint is not None else f" (from {source})"
    u = urllib.parse.urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise UserError(f"OTLP endpoint {hide_password(url)!r}{via} is not an http(s) URL (e.g. http://localhost:4318/v1/traces)")
    pkey = next((k for k in (ENV + "TRACES_PROTOCOL", ENV + "PROTOCOL") if env.get(k, "").strip()), None)
    proto = protocol if protocol is not None else env[pkey].strip() if pkey else "http/protobuf"
    if proto not in PROTOCOLS:
        given = "" if protocol is not None or not pkey else f" (from {pkey})"
        raise UserError(f"OTLP protocol {proto!r}{given} is not supported: use http/protobuf or http/json"
                        + (" (tuneloop sends OTLP over HTTP, not gRPC)" if proto == "grpc" else ""))
    if proto == "http/protobuf":
        _pb()  # a missing package is said before any work
    if headers is None:
        hkey = next((k for k in (ENV + "TRACES_HEADERS", ENV + "HEADERS") if env.get(k, "").strip()), None)
        headers = _parse_headers(env[hkey], hkey) if hkey else {}
    # the URL without user:password: what the request goes to (the credentials go as HTTP basic
    # auth) and what messages show
    shown = u._replace(netloc=u.netloc.rpartition("@")[2]).geturl()
    return OtlpTarget(url, shown, proto, source, dict(headers))


def send_otlp(request: dict[str, Any], endpoint: str | OtlpTarget | None = None, timeout: float = 10.0,
              headers: dict[str, str] | None = None, protocol: str | None = None) -> OtlpTarget:
    """POST the request to an OTLP/HTTP collector, as protobuf (or JSON: protocol "http/json").
    The endpoint, protocol and headers default to OpenTelemetry's variables (see the module's
    docstring). Neither the headers nor a password in the URL appear in an error message.
    Returns where it sent."""
    t = endpoint if isinstance(endpoint, OtlpTarget) else otlp_target(endpoint, protocol, headers)
    if t is None:
        raise UserError(f"no OTLP endpoint: give --otlp-endpoint URL or set {ENV}ENDPOINT")
    url, where = urllib.parse.urlsplit(t.url), t.shown
    hide = Redactor(list(t.headers.values()))
    sent = {"Content-Type": PROTOCOLS[t.protocol], "User-Agent": "tuneloop", **t.headers}
    if url.username is not None:  # urllib cannot take user:password in the URL: HTTP basic auth, as curl does
        pair = f"{urllib.parse.unquote(url.username)}:{urllib.parse.unquote(url.password or '')}"
        sent.setdefault("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
    body = json.dumps(request, separators=(",", ":")).encode() if t.protocol == "http/json" else otlp_protobuf(request)
    req = urllib.request.Request(where, data=body, method="POST", headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            answer, kind = resp.read(), resp.headers.get_content_type()
    except urllib.error.HTTPError as e:
        try:
            raw = e.read(65536)
        except OSError:
            raw = b""
        detail = _detail(raw, e.headers.get_content_type() if e.headers else "", hide)
        other = "http/json" if t.protocol == "http/protobuf" else "http/protobuf"
        hint = f" (it does not take {t.protocol}: try --otlp-protocol {other})" if e.code == 415 else ""
        raise UserError(f"the OTLP collector at {where} answered HTTP {e.code} {e.reason}: {detail}{hint}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:  # also: a bad port, a server not HTTP
        reason = getattr(e, "reason", e)
        why = (reason.strerror or str(reason)).lower() if isinstance(reason, OSError) else str(reason)
        raise UserError(f"could not send traces to the OTLP collector at {where}: {why or 'timed out'} "
                        f"(is it running and listening for OTLP/HTTP, normally on port 4318?)") from None
    rejected, why = _partial_success(answer, kind)
    if rejected:  # a 2xx may still reject spans
        raise UserError(f"the OTLP collector at {where} rejected {rejected} spans: "
                        f"{' '.join(hide.scrub(why).split()) or 'no reason given'}")
    return t


def _partial_success(answer: bytes, kind: str) -> tuple[int, str]:
    """(spans rejected, why) from a 2xx answer, JSON or protobuf; any other body is an acceptance."""
    try:
        if "protobuf" in kind:
            p = _pb().ExportTraceServiceResponse.FromString(answer).partial_success
            return int(p.rejected_spans), p.error_message
        p = (json.loads(answer or b"{}") or {}).get("partialSuccess") or {}
        return int(p.get("rejectedSpans") or 0), str(p.get("errorMessage") or "")
    except Exception:  # not JSON, not protobuf, not an object
        return 0, ""


def _detail(body: bytes, kind: str, hide: Redactor) -> str:
    """A collector's error answer as one short line, header values hidden. A protobuf answer is
    a google.rpc.Status {int32 code = 1; string message = 2; ...}; ExportTracePartialSuccess has
    the same two first fields (an integer, a string), so it reads the message without google.rpc."""
    text = body.decode("utf-8", "replace")
    if "protobuf" in kind:
        try:
            text = _pb().ExportTracePartialSuccess.FromString(body).error_message
        except Exception:  # not a Status, or no opentelemetry-proto
            text = ""
    return " ".join(hide.scrub(text).split())[:200] or "(no body)"
