"""GBNF grammars and JSON schemas for constrained tool calls: pure text, no llama.cpp,
so they can be read and tested on their own.

The embedded model (agent/local_model.py) decodes a bounded number from a finite
language (`number_sentences`), through a token mask (agent/decoding.py) or this GBNF,
which accept the same strings, so a 270M model can only write a well-formed call whose
numbers lie inside the tool's bounds.

    >>> print(object_gbnf({"type": "object",
    ...                    "properties": {"momentum": {"type": "number", "minimum": 0, "maximum": 0.5}}}))
    root ::= "{\\"momentum\\": " "0" n0x5 "}"
    n0x0 ::= [123456789]
    n0x1 ::= ([123456789])?
    n0x2 ::= ("0" n0x0 | [123456789] n0x1)
    n0x3 ::= (("0" n0x0 | [123456789] n0x1))?
    n0x4 ::= ("0" n0x2 | [1234] n0x3 | "5")
    n0x5 ::= ("." n0x4)?
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from typing import Any

# digit runs are capped: an uncapped grammar lets a small model write digits until max_tokens
JSON_NUMBER = '"-"? [0-9]{1,12} ("." [0-9]{1,12})? ([eE] [-+]? [0-9]{1,3})?'
JSON_STRING = '"\\"" ([^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ["\\\\/bfnrt]){0,%d} "\\""'


LOG_SCALE_RATIO = 100.0  # a positive range at least this wide (hi/lo) is written in scientific notation
SCI_FLOOR_EXP = -6  # lowest decade written when a log-scale range is open at 0 ("(0, ...")
LINEAR_PLACES = 3  # decimals of a number on a linear range: 0.001 steps


def _bounds(prop: dict) -> tuple[Decimal, Decimal, bool, bool] | None:
    """(lo, hi, lo inclusive, hi inclusive) when both ends are known and lie in [0, 1]."""
    lo = prop.get("minimum", prop.get("exclusiveMinimum"))
    hi = prop.get("maximum", prop.get("exclusiveMaximum"))
    if lo is None or hi is None or not (0 <= lo < hi <= 1):
        return None
    return (Decimal(repr(float(lo))), Decimal(repr(float(hi))),
            "minimum" in prop, "maximum" in prop)


def is_log_scale(prop: dict) -> bool:
    """A positive range spanning two decades or more (a learning rate), one open at 0, or
    one starting below the linear notation's step (0.001)."""
    b = _bounds(prop)
    if b is None:
        return False
    lo, hi, lo_incl, _ = b
    return (lo == 0 and not lo_incl) or (lo > 0 and (hi / lo >= Decimal(LOG_SCALE_RATIO)
                                                     or lo < Decimal(10) ** -LINEAR_PLACES))


def _inside(v: Decimal, b: tuple[Decimal, Decimal, bool, bool]) -> bool:
    lo, hi, lo_incl, hi_incl = b
    return (v >= lo if lo_incl else v > lo) and (v <= hi if hi_incl else v < hi)


@functools.lru_cache(maxsize=64)
def _sentences(prop_json: str) -> tuple[str, ...]:
    prop = json.loads(prop_json)
    b = _bounds(prop)
    assert b is not None
    out = []
    if is_log_scale(prop):
        lo, hi = b[0], b[1]
        first = SCI_FLOOR_EXP if lo == 0 else lo.adjusted()
        # two significant digits, no trailing zero: 1 ... 9, 1.1 ... 9.9
        mantissas = [str(m) for m in range(1, 10)] + [f"{m}.{d}" for m in range(1, 10) for d in range(1, 10)]
        for e in range(first, hi.adjusted() + 1):
            out += [s for m in mantissas if _inside(Decimal(s := f"{m}e{e}"), b)]
    else:
        for k in range(10 ** LINEAR_PLACES + 1):
            s = f"{k / 10 ** LINEAR_PLACES:.{LINEAR_PLACES}f}".rstrip("0").rstrip(".")
            if _inside(Decimal(s), b):
                out.append(s)
    return tuple(out)


def number_sentences(prop: dict) -> tuple[str, ...] | None:
    """Every way the embedded model may write a bounded number, or None when the property
    has no bounds inside [0, 1], or bounds so narrow that no number of the notation falls
    inside (then any JSON number, see JSON_NUMBER).

    One language per property, used both by the token mask (agent/decoding.py) and by the
    GBNF below, so the two accept exactly the same strings. A learning-rate-like range
    (positive, >= two decades) is written in scientific notation with two significant
    digits, so every decade is as easy to write as any other: a small model writing
    decimals gravitates to 0.1 and 1. A linear range (a momentum) is written as a
    decimal with up to three places.

    >>> lr = {"type": "number", "minimum": 1e-4, "maximum": 0.1}
    >>> s = number_sentences(lr); s[:3], s[-2:], len(s)
    (('1e-4', '2e-4', '3e-4'), ('9.9e-2', '1e-1'), 271)
    >>> number_sentences({"type": "number", "minimum": 0, "maximum": 0.99})[-3:]
    ('0.988', '0.989', '0.99')
    """
    if prop.get("type") != "number" or _bounds(prop) is None:
        return None
    keep = ("type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
    return _sentences(json.dumps({k: prop[k] for k in keep if k in prop}, sort_keys=True)) or None  # () -> None


def _trie(sentences: tuple[str, ...]) -> dict:
    root: dict = {}
    for s in sentences:
        node = root
        for c in s:
            node = node.setdefault(c, {})
        node["$"] = {}
    return root


def _literal(chars: list[str]) -> str:
    if len(chars) == 1:
        return json.dumps(chars[0])
    return "[" + "".join(chars) + "]"  # digits only (see _trie_gbnf)


def _trie_gbnf(node: dict, rules: dict[str, str], prefix: str) -> str:
    """A GBNF expression for the strings below `node`; identical subtrees share one rule
    (so the language of a thousand decimals stays a few short rules)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for c in sorted(k for k in node if k != "$"):
        child = node[c]
        if set(child) == {"$"}:
            ref = ""
        else:
            body = _trie_gbnf(child, rules, prefix)
            ref = next((n for n, b in rules.items() if b == body), None) or f"{prefix}{len(rules)}"
            rules.setdefault(ref, body)
        # digits with the same continuation become one character class
        groups.setdefault(("digit" if c.isdigit() else c, ref), []).append(c)
    alts = [f"{_literal(chars)} {ref}".strip() for (_, ref), chars in groups.items()]
    body = alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"
    return f"({body})?" if "$" in node else body


def number_gbnf(prop: dict, rules: dict[str, str] | None = None) -> str:
    """The property's number language (number_sentences) as a GBNF expression, exactly;
    helper rules go into `rules`. JSON_NUMBER when the property is unbounded."""
    sentences = number_sentences(prop)
    if sentences is None:
        return JSON_NUMBER
    rules = {} if rules is None else rules
    return _trie_gbnf(_trie(sentences), rules, f"n{len(rules)}x")


def value_gbnf(prop: dict, rules: dict[str, str] | None = None) -> str:
    return number_gbnf(prop, rules) if prop["type"] == "number" else JSON_STRING % int(prop.get("maxLength", 400))


def object_gbnf(schema: dict) -> str | None:
    props = schema.get("properties") if schema.get("type") == "object" else None
    if not props or any(p.get("type") not in ("number", "string") for p in props.values()):
        return None
    parts: list[str] = []
    rules: dict[str, str] = {}
    for i, (name, p) in enumerate(props.items()):
        value = value_gbnf(p, rules)
        parts.append(('"{' if i == 0 else '", ') + f'\\"{name}\\": " {value}')
    return "\n".join(["root ::= " + " ".join(parts) + ' "}"', *(f"{n} ::= {b}" for n, b in rules.items())])


def grammar_friendly(prop: Any) -> dict:
    """Reduce a property schema to what llama.cpp's schema-to-grammar converter handles
    (it rejects e.g. a bare default); strings get a length cap so a reply always closes."""
    kind = prop.get("type") if isinstance(prop, dict) else None
    if kind == "string":
        return {"type": "string", "maxLength": 400}
    if kind == "number":
        keep = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        return {"type": "number", **{k: prop[k] for k in keep if k in prop}}
    if kind in ("integer", "boolean"):
        return {"type": kind}
    return {"type": "number"}


def tool_call_schema(tools: list[dict], allow_text: bool) -> dict:
    options = []
    for t in tools:
        fn = t["function"]
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        props = {k: grammar_friendly(v) for k, v in (params.get("properties") or {}).items()}
        options.append({
            "type": "object",
            "properties": {
                "name": {"const": fn["name"]},
                "arguments": {"type": "object", "properties": props,
                              "required": params.get("required", list(props))},
            },
            "required": ["name", "arguments"],
        })
    if allow_text or not options:
        options.append({"type": "object", "properties": {"answer": {"type": "string", "maxLength": 400}},
                        "required": ["answer"]})
    return options[0] if len(options) == 1 else {"anyOf": options}
