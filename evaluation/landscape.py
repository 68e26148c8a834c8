"""The (log10 alpha, beta) landscape under a method's proposals: numbers only (no
matplotlib), for the plots (report.py) and the service's page alike."""

from __future__ import annotations

from typing import Any

from tuneloop.evaluation.strategies import SearchSpace
from tuneloop.tools.sweep import Landscape, sweep


def search_landscape(objective: str, x0: Any, max_iter: int, resolution: int = 96, **kw: Any) -> Landscape:
    """The landscape over the box every classical method searches (SearchSpace), the
    backdrop of every plot of proposals."""
    space = SearchSpace()
    lo, hi = space.log10_alpha
    return sweep(objective, (10.0**lo, 10.0**hi), space.beta, resolution, x0=x0, max_iter=max_iter, **kw)
