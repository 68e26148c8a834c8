"""What a session spent: model calls, tokens, seconds, retries. One model, filled by the
trace callback (agent sessions) or by Centaur's proposer, read by whoever ends the session."""

from __future__ import annotations

from pydantic import BaseModel


class Usage(BaseModel):
    """Counters of one session (or one segment of a resumed one). Tokens are None while no
    call has reported them (some servers return no usage): unknown, not zero."""

    calls: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    model_s: float = 0.0
    tool_s: float = 0.0
    retries: int = 0
    retry_wait_s: float = 0.0
    text_replies: int = 0  # replies without a tool call while budget was left

    def add_call(self, latency_s: float, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        self.calls += 1
        self.model_s += latency_s
        if input_tokens is not None:
            self.input_tokens = (self.input_tokens or 0) + input_tokens
        if output_tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + output_tokens

    @property
    def tokens(self) -> int | None:
        known = [t for t in (self.input_tokens, self.output_tokens) if t is not None]
        return sum(known) if known else None
