"""tuneloop.tools: what gets evaluated (objectives, the momentum-GD kernel, the Evaluator).

Kept import-light on purpose: `tuneloop gd` imports only numpy and numba through here.
This package never imports `agent` or `evaluation`.
"""
