"""Prompt templates: plain files in prompts/ (or any path), string.Template syntax.

A template has a system part and a per-turn part, and optionally the message that asks
for the final answer once the budget is spent, separated by marker lines:

    --- system ---
    ...$objective_name...
    --- turn ---
    ...$history...
    --- final ---
    ...Call FinalAnswer...

Without a final part the final message is DEFAULT_FINAL: the trials, the incumbent and
FINAL_INSTRUCTION.

Lines starting with '#' are comments. Every $variable must be one of VARIABLES; an
unknown one, a missing part or a missing file is a UserError before any model is called.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tuneloop.tools.errors import UserError

VARIABLES = {
    "objective_name": "the objective's name",
    "formula": "the objective's formula (plain text)",
    "x0": "the start point",
    "max_iter": "iteration cap T",
    "tol": "early-stop tolerance",
    "space": "every parameter with its range or choices, e.g. learning_rate (alpha) in [1e-4, 1e-1] and "
             "momentum (beta) in [0, 0.99]",
    "parameters": "the parameters' names, e.g. learning_rate and momentum",
    "alpha_range": "allowed learning rates, e.g. [1e-4, 1e-1]",
    "beta_range": "allowed momenta, e.g. [0, 0.99] ([0, 0] when the space has no momentum)",
    "budget": "charged evaluations allowed",
    "budget_left": "charged evaluations left",
    "history": "trials so far, a compact table in the order tried",
    "incumbent": "the best trial so far",
    "tried": "every configuration tried so far",
    "failed": "configurations that diverged or ended poorly",
    "best": "the best trial by number and result, without its values, e.g. trial 3 (converged, "
            "final_value=1e-09)",
    "near_best": "a step from the best trial into the untried: per parameter, the middle of the wider untried "
                 "stretch next to its value, as a configuration (while no trial has converged: $untried)",
    "untried": "per parameter, the middle of the widest range no trial has tried yet, as a configuration, "
               "e.g. learning_rate=3.2e-3, momentum=0.49",
    # Centaur only
    "n_trials": "trials told to CMA-ES so far",
    "sigma": "CMA-ES step size",
    "mean": "CMA-ES mean",
    "suggestion": "CMA-ES's own next proposal",
    "tool": "the tool that runs a trial: run_momentum_gd, or run_trial on a task",
    "direction_text": "which way is better, in words (a task: lower or higher value)",
    "cma_names": "CMA-ES's coordinates by name, e.g. log10 lr, momentum",
    "answer_json": "the JSON of an answer, every parameter with its kind of value",
    "cma_axes": "CMA-ES's coordinates, one line per continuous parameter, and the parameters it does not search",
    "covariance": "CMA-ES covariance matrix",
    "top5": "the five best configurations",
    "recent": "the last 20 trials",
    # LLAMBO and HOLLM (candidates in one call)
    "n_candidates": "how many candidate configurations to write",
    "target": "LLAMBO: the value the candidates should reach, e.g. a final_value of 3e-9",
    "region": "HOLLM: the box the candidates must lie in, e.g. learning_rate in [0.002, 0.03], momentum in "
              "[0.5, 0.9]",
}
TASK_TEMPLATES = ("task", "centaur-task")  # the agent's and Centaur's templates on a task, not GD
SYSTEM_MARK = "--- system ---"
TURN_MARK = "--- turn ---"
FINAL_MARK = "--- final ---"
FINAL_INSTRUCTION = (
    "The evaluation budget is spent. Call FinalAnswer with your recommended $parameters "
    "(normally the best trial) and a one-paragraph rationale."
)
# the final part of a template without one: the state the answer is about, then the ask
DEFAULT_FINAL = f"Trials so far, in the order tried:\n$history\nBest so far: $incumbent\n{FINAL_INSTRUCTION}"


def builtin_dir() -> Path:
    return Path(str(resources.files("tuneloop.prompts")))


def list_templates() -> list[str]:
    return sorted(p.stem for p in builtin_dir().glob("*.txt"))


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str
    system: string.Template
    turn: string.Template
    final: string.Template

    @property
    def description(self) -> str:
        """The template's first comment line: what it is, in one line."""
        return next((line.lstrip()[1:].strip() for line in self.text.splitlines() if line.lstrip().startswith("#")),
                    "(no description: start the file with a # comment line)")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def render_system(self, **values) -> str:
        return self.system.substitute(values).strip()

    def render_turn(self, **values) -> str:
        return self.turn.substitute(values).strip()

    def render_final(self, **values) -> str:
        return self.final.substitute(values).strip()


def parse_template(name: str, text: str) -> PromptTemplate:
    """A template from its text (e.g. the one recorded in a manifest)."""
    return _parse(name, text)


def _parse(name: str, text: str) -> PromptTemplate:
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    if SYSTEM_MARK not in body or TURN_MARK not in body:
        raise UserError(f"prompt {name!r} needs a '{SYSTEM_MARK}' line and a '{TURN_MARK}' line")
    _, rest = body.split(SYSTEM_MARK, 1)
    system, turn = rest.split(TURN_MARK, 1)
    turn, _, final = turn.partition(FINAL_MARK)
    parts = (string.Template(system), string.Template(turn), string.Template(final.strip() or DEFAULT_FINAL))
    for part in parts:
        if not part.is_valid():
            raise UserError(f"prompt {name!r} has a malformed $placeholder (write $$ for a dollar sign)")
        unknown = set(part.get_identifiers()) - set(VARIABLES)
        if unknown:
            raise UserError(
                f"prompt {name!r} uses unknown variable(s) {', '.join(sorted('$' + u for u in unknown))}; "
                f"known: {', '.join('$' + v for v in VARIABLES)}"
            )
    return PromptTemplate(name, text, *parts)


def template_for(name_or_path: str, text: str | None = None) -> PromptTemplate:
    """A session's template: the recorded `text` when there is one (replay, resume), else
    the template `name_or_path` names."""
    return parse_template(name_or_path, text) if text else load_template(name_or_path)


def load_template(name_or_path: str) -> PromptTemplate:
    """A built-in template by name (`default`, `paper`, ...) or a file by path."""
    path = Path(name_or_path)
    if path.suffix or "/" in name_or_path or path.exists():
        if not path.is_file():
            raise UserError(f"prompt file not found: {name_or_path}")
        try:
            return _parse(path.name, path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"prompt file is not UTF-8 text: {name_or_path}") from None
    builtin = builtin_dir() / f"{name_or_path}.txt"
    if not builtin.is_file():
        raise UserError(f"unknown prompt {name_or_path!r}; built-in: {', '.join(list_templates())} (or give a path)")
    return _parse(name_or_path, builtin.read_text(encoding="utf-8"))
