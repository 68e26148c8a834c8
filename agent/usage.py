"""What a session spent: model calls, tokens, seconds, retries. One model, filled by the
trace callback (agent sessions) or by Centaur's proposer, read by whoever ends the session."""

from __future__ import annotations

from pydantic import BaseModel


class Usage(BaseModel):
    """Counters of one session (or one segment of a resumed one)."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    model_s: float = 0.0
    tool_s: float = 0.0
    retries: int = 0

    def add_call(self, latency_s: float, input_tokens: int = 0, output_tokens: int = 0) -> None:
        self.calls += 1
        self.model_s += latency_s
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
