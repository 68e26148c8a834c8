"""What a session spent: model calls, tokens, seconds, retries. One model, filled by the
trace callback (agent sessions) or by Centaur's proposer, read by whoever ends the session."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from pydantic import BaseModel

_Num = TypeVar("_Num", int, float)


def known_sum(values: Iterable[_Num | None]) -> _Num | None:
    """The sum of the figures that are known; None when none is (a server that reports no
    usage, a model without a price): unknown, not zero.

    >>> known_sum([3, None, 4]), known_sum([None, None])
    (7, None)
    """
    known = [v for v in values if v is not None]
    return sum(known) if known else None


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
        self.input_tokens = known_sum((self.input_tokens, input_tokens))
        self.output_tokens = known_sum((self.output_tokens, output_tokens))
