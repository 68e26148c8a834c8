"""Requests- and tokens-per-minute limits shared by every session of a process, so that a
study with many sessions at once does not hammer its provider into 429s.

A limiter is a pair of token buckets refilled continuously: one request costs one from
the request bucket before the call; the tokens a call used are taken from the token
bucket after it (the count is known only then), and the next call waits while that
bucket is in debt. `shared_limiter(rpm, tpm)` returns the one limiter of this process
for those limits, whichever session asks.

    >>> lim = RateLimiter(rpm=600)   # 10 requests a second, a burst of 10
    >>> lim.acquire()                 # the first one does not wait
    0.0
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware


class RateLimiter:
    """Token buckets for requests and tokens per minute; thread-safe. The request bucket
    holds ten seconds' worth (a burst never exceeds what the provider allows in a few
    seconds), the token bucket a minute's worth."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.rpm, self.tpm = rpm, tpm
        self.clock, self.sleep = clock, sleep
        self._lock = threading.Lock()
        self._req_cap = max(1.0, rpm / 60.0 * 10.0) if rpm else 0.0  # ten seconds' worth
        self._req = self._req_cap
        self._tok = float(tpm) if tpm else 0.0  # a full minute's worth of tokens
        self._t = clock()

    def _refill(self) -> None:
        now = self.clock()
        dt, self._t = now - self._t, now
        if self.rpm:
            self._req = min(self._req_cap, self._req + dt * self.rpm / 60.0)
        if self.tpm:
            self._tok = min(float(self.tpm), self._tok + dt * self.tpm / 60.0)

    def acquire(self) -> float:
        """Wait until one request may go out; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                self._refill()
                wait = 0.0
                if self.rpm and self._req < 1.0:
                    wait = (1.0 - self._req) * 60.0 / self.rpm
                if self.tpm and self._tok < 0.0:
                    wait = max(wait, -self._tok * 60.0 / self.tpm)
                if wait <= 0.0:
                    if self.rpm:
                        self._req -= 1.0
                    return waited
            self.sleep(wait)
            waited += wait

    def spend_tokens(self, n: int | None) -> None:
        """Charge the tokens a finished call used (unknown counts charge nothing)."""
        if self.tpm and n:
            with self._lock:
                self._refill()
                self._tok -= n


_SHARED: dict[tuple[float | None, float | None], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(rpm: float | None, tpm: float | None) -> RateLimiter | None:
    """This process's limiter for (rpm, tpm); None when neither is set."""
    if not rpm and not tpm:
        return None
    with _SHARED_LOCK:
        return _SHARED.setdefault((rpm, tpm), RateLimiter(rpm, tpm))


class RateLimitMiddleware(AgentMiddleware):
    """Every model call of the session waits for its limiter first; the wait is recorded
    as a `rate_limited` trace event when there was one."""

    def __init__(self, limiter: RateLimiter, emit: Callable[..., None]) -> None:
        super().__init__()
        self.limiter = limiter
        self.emit = emit

    def wrap_model_call(self, request, handler):
        waited = self.limiter.acquire()
        if waited > 0:
            self.emit("rate_limited", wait_s=round(waited, 3))
        response = handler(request)
        self.limiter.spend_tokens(_tokens_of(response))
        return response


def _tokens_of(response: Any) -> int | None:
    for msg in getattr(response, "result", None) or []:
        usage = getattr(msg, "usage_metadata", None)
        if usage:
            return int(usage.get("total_tokens") or 0)
    return None
