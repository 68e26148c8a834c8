"""Test doubles: tool-call items for the scripted chat model (agent.scripted) and a fake
OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tuneloop.agent.scripted import ScriptedChatModel

__all__ = ["ScriptedChatModel", "FakeOpenAIServer", "call", "final", "openai_tool_reply"]


def call(lr: Any, mom: Any, name: str = "run_momentum_gd") -> dict:
    return {"name": name, "args": {"learning_rate": lr, "momentum": mom}}


def final(lr: float, mom: float, why: str = "best seen") -> dict:
    return {"name": "FinalAnswer", "args": {"learning_rate": lr, "momentum": mom, "rationale": why}}


def openai_reply(i: int, name: str | None = None, args: dict | None = None, text: str | None = None,
                 usage: bool = True) -> dict:
    """A chat.completion: a tool call (name, args) or a text reply; with or without usage."""
    if name is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}
    else:
        message = {"role": "assistant", "content": text}
    reply = {"id": f"chatcmpl-{i}", "object": "chat.completion", "created": int(time.time()), "model": "fake-model",
             "choices": [{"index": 0, "finish_reason": "tool_calls" if name else "stop", "message": message}]}
    if usage:
        reply["usage"] = {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62}
    return reply


def openai_tool_reply(name: str, args: dict, i: int) -> dict:
    return openai_reply(i, name, args)


class FakeOpenAIServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 serving a script of
    responses: ("ok", name, args) | ("text", content) | ("status", code[, headers]) |
    ("sleep", seconds, then-item) | ("drop",) | a callable(body, n) -> one of these.
    After the script's last item, that item repeats. `usage=False` leaves usage out of
    replies (as some servers do); `delay_s` holds every reply that long. Records every
    request (headers included) for assertions; serves many clients at once."""

    def __init__(self, script: list, usage: bool = True, delay_s: float = 0.0) -> None:
        self.script = list(script)
        self.usage = usage
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0  # the most requests it was answering at once
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    item = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                    n = len(server.requests)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self._answer(item, body, n)
                finally:
                    with server._lock:
                        server.in_flight -= 1

            def _answer(self, item, body, n):
                if callable(item):
                    item = item(body, n)
                if server.delay_s:
                    time.sleep(server.delay_s)
                while item[0] == "sleep":
                    time.sleep(item[1])
                    item = item[2]
                if item[0] == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                headers = {}
                if item[0] == "status":
                    payload = json.dumps({"error": {"message": f"fake error {item[1]}", "type": "fake",
                                                    "code": str(item[1])}}).encode()
                    headers = item[2] if len(item) > 2 else {}
                    self.send_response(item[1])
                elif item[0] == "text":
                    payload = json.dumps(openai_reply(n, text=item[1], usage=server.usage)).encode()
                    self.send_response(200)
                else:
                    payload = json.dumps(openai_reply(n, item[1], item[2], usage=server.usage)).encode()
                    self.send_response(200)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
