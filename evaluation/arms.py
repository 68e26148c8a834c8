"""The arms of a study: what a row of its tables is. A classical method is one arm; the
agent (`llm`) is one arm per (prompt, model) studied, Centaur one per (ratio, warm-up,
model) (its prompt is always the Centaur template; `--centaur-ratio 0 0.3 0.5 1` is the
paper's ablation in one study), so prompts, models and settings are compared seed for
seed like methods are.

    >>> Arm("llm", "paper", "openai:gpt-4o-mini").label
    'llm [paper, openai:gpt-4o-mini]'
    >>> Arm("llm", "default", "local").label, Arm("llm", "default", "local").slug
    ('llm', 'llm')
    >>> Arm("llm", "prompts/mine.txt", "openai:gpt-4o").slug
    'llm+prompts_mine.txt+openai_gpt-4o'
    >>> a = Arm("centaur", None, "local", ratio=0.5, warmup=0); a.label, a.slug
    ('centaur [r=0.5, warmup=0]', 'centaur+r0.5+warmup0')
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tuneloop.evaluation import defaults as D
from tuneloop.evaluation.strategies import AGENT_METHOD, LLM_METHODS

DEFAULT_MODEL = "local"


@dataclass(frozen=True)
class Arm:
    method: str
    prompt: str | None = None  # the agent's template (None: the method uses none of its own)
    model: str | None = None  # the model spec (None: no LLM)
    ratio: float | None = None  # Centaur's share of LLM trials (None: the default)
    warmup: int | None = None  # Centaur's CMA-ES-only trials first (None: one generation)

    def _parts(self) -> list[str]:
        # the defaults stay out of names, so a study that adds a prompt, a model or a
        # setting keeps the names (and the finished cells) it had
        return [p for p, default in ((self.prompt, D.PROMPT), (self.model, DEFAULT_MODEL)) if p and p != default]

    def _settings(self) -> list[tuple[str, str]]:
        """Centaur's settings that are not the default, as (name, value)."""
        out = []
        if self.ratio is not None and self.ratio != D.CENTAUR_RATIO:
            out.append(("r", f"{self.ratio:g}"))
        if self.warmup is not None:
            out.append(("warmup", str(self.warmup)))
        return out

    @property
    def label(self) -> str:
        """How tables, plots and progress name the arm."""
        parts = self._parts() + [f"{k}={v}" for k, v in self._settings()]
        return self.method + (f" [{', '.join(parts)}]" if parts else "")

    @property
    def slug(self) -> str:
        """Its part of a cell's directory name: safe in a path, stable across studies."""
        return (self.method + "".join("+" + re.sub(r"[^A-Za-z0-9._-]", "_", p) for p in self._parts())
                + "".join(f"+{k}{v}" for k, v in self._settings()))

    @property
    def uses_llm(self) -> bool:
        return self.model is not None


def study_arms(methods: list[str], prompts: list[str], models: list[str],
               centaur_ratios: Sequence[float] = (D.CENTAUR_RATIO,),
               centaur_warmups: Sequence[int | None] = (None,)) -> list[Arm]:
    """Every arm of a study, in table order: methods in the order given, then prompts (or
    Centaur's ratios, then warm-ups), then models. Classical methods run once, whatever
    the prompts and models.

    >>> [a.label for a in study_arms(["centaur"], ["default"], ["local", "uniform"], [0.3, 1.0])]
    ['centaur', 'centaur [uniform]', 'centaur [r=1]', 'centaur [uniform, r=1]']
    >>> [a.label for a in study_arms(["centaur"], ["default"], ["local"], [0.5])]  # one value: no arm of its own
    ['centaur']
    """
    arms = []
    for m in methods:
        if m == AGENT_METHOD:
            arms += [Arm(m, p, mod) for p in prompts for mod in models]
        elif m == "centaur":  # a setting with one value is the study's, not an arm's (the names stay)
            arms += [Arm(m, None, mod, ratio=r if len(centaur_ratios) > 1 else None,
                         warmup=w if len(centaur_warmups) > 1 else None)
                     for r in centaur_ratios for w in centaur_warmups for mod in models]
        elif m in LLM_METHODS:
            arms += [Arm(m, None, mod) for mod in models]
        else:
            arms.append(Arm(m))
    return arms
