"""The (log10 alpha, beta) landscape under a method's proposals: numbers only (no
matplotlib), for the plots (report.py) and the service's page alike."""

from __future__ import annotations

from typing import Any

from tuneloop.tools.gd_space import DEFAULT_SPACE
from tuneloop.tools.sweep import Landscape, sweep


def search_landscape(objective: str, x0: Any, max_iter: int, resolution: int = 96, **kw: Any) -> Landscape:
    """The landscape over the default space's box (learning_rate, momentum), the backdrop
    of every plot of proposals on those two axes."""
    (lo, b_lo), (hi, b_hi) = DEFAULT_SPACE.lows, DEFAULT_SPACE.highs
    return sweep(objective, (10.0**lo, 10.0**hi), (b_lo, b_hi), resolution, x0=x0, max_iter=max_iter, **kw)
