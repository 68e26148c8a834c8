"""Defaults of a study (`tuneloop eval`), as plain constants: EvalConfig and the eval
command both take them from here, so the CLI can show them without importing pydantic."""

from pathlib import Path
from typing import Literal

from tuneloop.agent.prompts import TASK_TEMPLATES

FUNCTIONS = ("rosenbrock", "rastrigin")
METHODS = ("grid", "random", "cmaes", "tpe")
SEEDS = (0, 1, 2)
BUDGET = 12  # the study's grid size
X0: Literal["paper", "random"] = "random"  # drawn per seed, shared by every method under that seed
MAX_ITER = 2000  # the study's T for random search and the LLM
PROMPT = "default"
CENTAUR_PROMPT = "centaur"
TASK_PROMPT, CENTAUR_TASK_PROMPT = TASK_TEMPLATES  # the templates on a task (tools/tasks.py) instead of GD
SLLMBO_PROMPT = "sllmbo"  # GD or a task alike (its variables are both's)
# an LLM strategy's own template: (on GD, on a task)
STRATEGY_PROMPTS = {"centaur": (CENTAUR_PROMPT, CENTAUR_TASK_PROMPT), "sllmbo": (SLLMBO_PROMPT, SLLMBO_PROMPT),
                    "llambo": ("llambo", "llambo"), "hollm": ("hollm", "hollm")}
CONCURRENCY = 8  # cells waiting on a remote model at once, in threads
CENTAUR_RATIO = 0.3  # the fraction r of post-warm-up trials the LLM proposes
OUT = Path("results")
MAX_DIM = 1000  # the largest --dim a study or a request may ask for
# `tuneloop serve`: what one request may cost (422 above)
SERVE_MAX_BUDGET = 200  # charged evaluations of one session
SERVE_MAX_ITER = 100_000  # iterations of one run (max_iter)
