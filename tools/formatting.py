"""Numbers as people and JSON read them: one definition each, used by every floor.

    >>> fmt_value(None), fmt_value(1.23456789e-8), fmt_value(0.5, digits=6)
    ('nan', '1.235e-08', '0.5')
    >>> json_safe({"f": float("nan"), "xs": (1.0, float("inf"))})
    {'f': None, 'xs': [1.0, None]}
"""

from __future__ import annotations

import math
import re
from typing import Any


def finite_or_none(v: float | None) -> float | None:
    """A float, or None where it is None, nan or infinite (JSON has no nan)."""
    return float(v) if v is not None and math.isfinite(v) else None


def json_safe(v: Any) -> Any:
    """Non-finite floats -> None, recursively through dicts, lists and tuples (tuples
    become lists, as JSON writes them)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    return v


PARAM_DIGITS = 6  # learning rates and momenta: two proposals that differ print differently


def fmt_param(v: float) -> str:
    """A learning rate or momentum as written wherever trials are listed: its shortest
    exact form when that has at most PARAM_DIGITS significant digits (what a model
    wrote: 0.15805), else PARAM_DIGITS of them, so 0.15805 and 0.15821 never both read
    0.158.

    >>> fmt_param(0.15805), fmt_param(0.15821), fmt_param(1e-3), fmt_param(0.0013130280280658597), fmt_param(10.0)
    ('0.15805', '0.15821', '0.001', '0.00131303', '10')
    """
    for digits in range(1, PARAM_DIGITS + 1):
        text = f"{v:.{digits}g}"
        if float(text) == v:
            return f"{v:.{PARAM_DIGITS}g}" if "e+" in text else text  # 10, not 1e+01 (a gradient clip)
    return f"{v:.{PARAM_DIGITS}g}"


def fmt_value(v: float | None, digits: int = 4) -> str:
    """A final value: `digits` significant digits, "nan" when the run diverged."""
    return "nan" if v is None else format(v, f".{digits}g")


def fmt_sci(v: float) -> str:
    """A power of ten as people write it: 0.001 -> "1e-3", 1e-06 -> "1e-6"."""
    mantissa, exp = f"{v:.0e}".split("e")
    return f"{mantissa}e{int(exp)}"


def fmt_lr(v: float) -> str:
    """A learning rate as prompts show it: scientific notation, shortest exact form up to
    PARAM_DIGITS significant digits, so every decade reads alike (1e-4 ... 1e-1) and a
    model writes back what it read (the embedded model writes this notation).

    >>> fmt_lr(1e-3), fmt_lr(0.0015), fmt_lr(0.1), fmt_lr(0.0013130280280658597), fmt_lr(1.0)
    ('1e-3', '1.5e-3', '1e-1', '1.31303e-3', '1e0')
    """
    if v == 0 or v != v or v in (float("inf"), float("-inf")):
        return fmt_param(v)
    for digits in range(PARAM_DIGITS):
        mantissa, exp = f"{v:.{digits}e}".split("e")
        if float(f"{mantissa}e{exp}") == v or digits == PARAM_DIGITS - 1:
            return f"{mantissa}e{int(exp)}"
    raise AssertionError("unreachable")


def fmt_cell(v: Any, spec: str = ".4g", missing: str = "-") -> str:
    """A table cell: `missing` for None, floats with `spec`, anything else as str."""
    if v is None:
        return missing
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


_URL_PASSWORD = re.compile(r"(?P<keep>\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def spoken_list(items: list[str]) -> str:
    """Items as a sentence lists them.

    >>> spoken_list(["a"]), spoken_list(["a", "b", "c"])
    ('a', 'a, b and c')
    """
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def hide_password(text: str) -> str:
    """Every `scheme://user:password@` in `text` (a URL, or a message that quotes one)
    with the password masked: the one rule for printing and logging URLs.

    >>> hide_password("cannot use postgresql://me:hunter2@db:5432/optuna: refused")
    'cannot use postgresql://me:***@db:5432/optuna: refused'
    >>> hide_password("http://localhost:4318/v1/traces")
    'http://localhost:4318/v1/traces'
    """
    return _URL_PASSWORD.sub(r"\g<keep>***@", text)
