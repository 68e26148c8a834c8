import os

# numba's thread pool: the two cores of the machines this runs on
os.environ.setdefault("NUMBA_NUM_THREADS", "2")

import pytest  # noqa: E402


@pytest.fixture
def instant_retries(monkeypatch):
    """Retries wait no real time: the waits RetryMiddleware would sleep are recorded here
    instead (the trace still holds each wait as computed)."""
    from tuneloop.agent.middleware import RetryMiddleware

    waits: list[float] = []
    monkeypatch.setattr(RetryMiddleware, "sleep", staticmethod(waits.append))
    return waits
