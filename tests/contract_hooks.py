"""Schemathesis hooks for the contract test (tests/test_service_contract.py, through the
SCHEMATHESIS_HOOKS variable): a search space can break rules JSON Schema cannot state
(low below high, a whole number of steps, the parameters momentum GD takes, `refined`
searching learning_rate and momentum only), so a body
carrying such a space is not positive data; the server's 422 for it is tested in
tests/test_service_api.py and tests/test_study_api.py."""

from __future__ import annotations

from typing import Any

import schemathesis

from tuneloop.evaluation.grids import check_refined_space
from tuneloop.tools.gd_space import check_gd_space
from tuneloop.tools.space import SearchSpace, SpaceError


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """(filter_case, not filter_body: the coverage phase applies only case hooks)"""
    body = getattr(case, "body", None)
    space = body.get("space") if isinstance(body, dict) else None
    if not isinstance(space, dict):
        return True
    try:
        parsed = SearchSpace.parse(space)
        if context.operation is not None and context.operation.path == "/api/sessions":
            check_gd_space(parsed)
        if body.get("method") == "refined":
            check_refined_space(parsed)
    except (SpaceError, ValueError):
        return False
    return True
