"""A final answer worth reading: the recommendation a session reports is one it has
evidence for, and its rationale is text.

A small model may recommend a configuration that diverged, or one it never tried, while
a finite trial exists, and may write a "rationale" that is punctuation ("},"). The
session then reports its best trial instead, and says so; a rationale that is not text
is replaced by a factual summary of the trials. The model's own answer stays in the
trace (`model_recommendation`), so nothing is hidden.

    >>> is_text("},"), is_text("trial 3 converged fastest")
    (False, True)
"""

from __future__ import annotations

import re

from tuneloop.tools.formatting import fmt_value
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trials import Evaluator, TrialResult

MIN_LETTERS = 12  # fewer letters than this is not a rationale


def is_text(rationale: str) -> bool:
    return len(re.findall(r"[A-Za-z]", rationale or "")) >= MIN_LETTERS


def _describe(t: TrialResult, space: SearchSpace) -> str:
    return (f"trial {t.trial} ({space.format(t.params, sci=False)}) "
            f"{t.status} at f={fmt_value(t.final_value, 4)} after {t.iterations} iterations")


def _summary(ev: Evaluator, picked: TrialResult | None) -> str:
    """What the trials say about the recommendation, in plain words."""
    charged = [t for t in ev.trials if t.charged]
    if not charged:
        return "No trial was charged."
    space = ev.config.space
    parts = [f"The recommended configuration is {_describe(picked, space)}." if picked is not None
             else "The recommended configuration was never tried."]
    if all(t.status == "diverged" for t in charged):
        parts.append(f"All {len(charged)} charged trials diverged.")
    else:
        best = ev.incumbent
        assert best is not None  # a charged trial is never a repeat, so it is a candidate
        if best is not picked:
            parts.append(f"The best of {len(charged)} charged trials: {_describe(best, space)}.")
    return " ".join(parts)


def vetted(answer, ev: Evaluator):
    """(the answer to report, whether it differs from the model's). `answer` is the
    session's FinalAnswer (or None)."""
    if answer is None:
        return None, False
    best = ev.incumbent
    space = ev.config.space
    tried = {space.key(t.params): t for t in ev.trials if not t.repeat}
    params = {n: getattr(answer, n, None) for n in space.names}
    picked = tried.get(space.key(params)) if None not in params.values() else None
    update, notes = dict(params), []
    # a finite trial exists, and the model picked no finite one
    if best is not None and best.status != "diverged" and (picked is None or picked.status == "diverged"):
        why = "never tried" if picked is None else "diverged"
        notes.append(f"The model recommended {space.format(params, sci=False)}, which {why}; "
                     f"the best trial is reported instead.")
        update, picked = dict(best.params), best
    rationale = answer.rationale
    if not is_text(rationale):
        notes.append(f"(The model's rationale was not text: {rationale!r}.) {_summary(ev, picked)}")
        rationale = ""
    if not notes:
        return answer, False
    if rationale:  # the model's words, quoted and attributed: they were about its own pick
        rationale = f'The model wrote: "{rationale}"'
    return answer.model_copy(update=update | {"rationale": " ".join([*notes, rationale]).strip()}), True
