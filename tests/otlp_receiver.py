"""OTLP test helpers: OTLP/JSON parsed with OpenTelemetry's protobuf classes, and an OTLP/HTTP
receiver on 127.0.0.1 that takes only the content types it is given (415 to any other, as
Arize Phoenix answers JSON) and decodes every request it takes with opentelemetry-proto."""

from __future__ import annotations

import base64
import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf.json_format import Parse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

PROTOBUF, JSON = "application/x-protobuf", "application/json"


def proto(req: dict) -> ExportTraceServiceRequest:
    """Parse OTLP/JSON with the protobuf classes. OTLP/JSON writes ids as hex where proto3's
    JSON mapping expects base64, so the ids are re-encoded first (as collectors do)."""
    req = copy.deepcopy(req)
    for rs in req["resourceSpans"]:
        for s in rs["scopeSpans"][0]["spans"]:
            for k in ("traceId", "spanId", "parentSpanId"):
                if k in s:
                    s[k] = base64.b64encode(bytes.fromhex(s[k])).decode()
    return Parse(json.dumps(req), ExportTraceServiceRequest())


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return {"string_value": v.string_value, "int_value": v.int_value, "double_value": v.double_value,
            "bool_value": v.bool_value}[kind]


def attrs(kvs) -> dict:
    return {kv.key: value(kv.value) for kv in kvs}


def spans_of(req: dict | ExportTraceServiceRequest) -> list:
    """Every span of a request (OTLP/JSON or decoded), in order."""
    msg = proto(req) if isinstance(req, dict) else req
    return [s for rs in msg.resource_spans for ss in rs.scope_spans for s in ss.spans]


class Receiver:
    """POST /v1/traces (any path) on 127.0.0.1: a body of an accepted type is decoded and
    recorded with its path, type and headers, then answered with `status` and `answer`
    (of type `answer_type`); any other type gets 415 and is recorded undecoded."""

    def __init__(self, accept: tuple[str, ...] = (PROTOBUF,), status: int = 200, answer: bytes = b"",
                 answer_type: str = PROTOBUF) -> None:
        self.requests: list[dict] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                kind = self.headers.get_content_type()
                got = {"path": self.path, "type": self.headers["Content-Type"], "headers": dict(self.headers),
                       "auth": self.headers.get("Authorization"), "key": self.headers.get("x-api-key")}
                rec.requests.append(got)
                if kind not in accept:
                    return self.reply(415, f"unsupported content type {kind}".encode(), "text/plain")
                if kind == PROTOBUF:
                    got["body"], got["decoded"] = raw, ExportTraceServiceRequest.FromString(raw)
                else:
                    got["body"] = json.loads(raw)
                    got["decoded"] = proto(got["body"])
                self.reply(status, answer, answer_type)

            def reply(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def json_spans(req: dict) -> list[dict]:
    """Every span of an OTLP/JSON request, in order."""
    return [s for rs in req["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
