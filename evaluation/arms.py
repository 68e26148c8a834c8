"""The arms of a study: what a row of its tables is. A classical method is one arm; the
agent (`llm`) is one arm per (prompt, model) studied, and Centaur one per model (its
prompt is always the Centaur template), so prompts and models are compared seed for
seed like methods are.

    >>> Arm("llm", "paper", "openai:gpt-4o-mini").label
    'llm [paper, openai:gpt-4o-mini]'
    >>> Arm("llm", "default", "local").label, Arm("llm", "default", "local").slug
    ('llm', 'llm')
    >>> Arm("llm", "prompts/mine.txt", "openai:gpt-4o").slug
    'llm+prompts_mine.txt+openai_gpt-4o'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.strategies import AGENT_METHOD, LLM_METHODS

DEFAULT_MODEL = "local"


@dataclass(frozen=True)
class Arm:
    method: str
    prompt: str | None = None  # the agent's template (None: the method uses none of its own)
    model: str | None = None  # the model spec (None: no LLM)

    def _parts(self) -> list[str]:
        # the defaults stay out of names, so a study that adds a prompt or a model keeps
        # the names (and the finished cells) it had
        return [p for p, default in ((self.prompt, D.PROMPT), (self.model, DEFAULT_MODEL)) if p and p != default]

    @property
    def label(self) -> str:
        """How tables, plots and progress name the arm."""
        parts = self._parts()
        return self.method + (f" [{', '.join(parts)}]" if parts else "")

    @property
    def slug(self) -> str:
        """Its part of a cell's directory name: safe in a path, stable across studies."""
        return self.method + "".join("+" + re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in self._parts())

    @property
    def uses_llm(self) -> bool:
        return self.model is not None


def study_arms(methods: list[str], prompts: list[str], models: list[str]) -> list[Arm]:
    """Every arm of a study, in table order: methods in the order given, then prompts,
    then models. Classical methods run once, whatever the prompts and models."""
    arms = []
    for m in methods:
        if m == AGENT_METHOD:
            arms += [Arm(m, p, mod) for p in prompts for mod in models]
        elif m in LLM_METHODS:
            arms += [Arm(m, None, mod) for mod in models]
        else:
            arms.append(Arm(m))
    return arms
