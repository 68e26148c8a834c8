"""Test doubles: tool-call items for the scripted chat model (agent.scripted) and a fake
OpenAI-compatible HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.scripted import ScriptedChatModel

__all__ = ["ScriptedChatModel", "FakeOpenAIServer", "call", "final", "openai_tool_reply"]


def call(lr: Any, mom: Any, name: str = "run_momentum_gd") -> dict:
    return {"name": name, "args": {"learning_rate": lr, "momentum": mom}}


def final(lr: float, mom: float, why: str = "best seen") -> dict:
    return {"name": "FinalAnswer", "args": {"learning_rate": lr, "momentum": mom, "rationale": why}}


def openai_tool_reply(name: str, args: dict, i: int) -> dict:
    return {
        "id": f"chatcmpl-{i}", "object": "chat.completion", "created": int(time.time()), "model": "fake-model",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": f"call_{i}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)}}]}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 12, "total_tokens": 62},
    }


class FakeOpenAIServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 serving a script of
    responses: ("ok", name, args) | ("status", code) | ("sleep", seconds, then-item) |
    ("drop",). Records every request (headers included) for assertions."""

    def __init__(self, script: list[tuple]) -> None:
        self.script = list(script)
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    item = server.script.pop(0) if len(server.script) > 1 else server.script[0]
                    n = len(server.requests)
                while item[0] == "sleep":
                    time.sleep(item[1])
                    item = item[2]
                if item[0] == "drop":
                    self.connection.close()
                    return
                if item[0] == "status":
                    payload = json.dumps({"error": {"message": f"fake error {item[1]}", "type": "fake",
                                                    "code": str(item[1])}}).encode()
                    self.send_response(item[1])
                else:
                    payload = json.dumps(openai_tool_reply(item[1], item[2], n)).encode()
                    self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                try:
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeOpenAIServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
