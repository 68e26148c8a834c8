"""GBNF grammars and JSON schemas for constrained tool calls: pure text, no llama.cpp,
so they can be read and tested on their own.

The embedded model (agent/local_model.py) decodes each value from a finite language
(`value_sentences`: a bounded number, `number_sentences`; an integer, `integer_sentences`;
one of an enum's JSON literals, `choice_literals`), through a token mask
(agent/decoding.py) or this GBNF, which accept the same strings, so a 270M model can only
write a well-formed call whose values lie inside the tool's bounds and choices.

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
import math
from collections.abc import Iterator
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, TypeGuard

# digit runs are capped: an uncapped grammar lets a small model write digits until max_tokens
JSON_NUMBER = '"-"? [0-9]{1,12} ("." [0-9]{1,12})? ([eE] [-+]? [0-9]{1,3})?'
JSON_INTEGER = '"-"? [0-9]{1,12}'
JSON_STRING = '"\\"" ([^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ["\\\\/bfnrt]){0,%d} "\\""'


LOG_SCALE_RATIO = 100.0  # a positive range at least this wide (hi/lo) is written in scientific notation
SCI_FLOOR_EXP = -6  # lowest decade written when a log-scale range is open at 0 ("(0, ...")
LINEAR_PLACES = 3  # decimals of a number on a linear range inside [0, 1]: 0.001 steps
LINEAR_DECADES = 2  # elsewhere a linear range's step is 10 ** (floor(log10(hi - lo)) - 2)
INT_INTERVALS = 1000  # an integer range with more steps than this is thinned (see integer_sentences)
BOUND_KEYS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
MANTISSAS = tuple([str(m) for m in range(1, 10)] + [f"{m}.{d}" for m in range(1, 10) for d in range(1, 10)])

Bounds = tuple[Decimal, Decimal, bool, bool]  # (lo, hi, lo inclusive, hi inclusive)


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _bounds(prop: dict) -> Bounds | None:
    """(lo, hi, lo inclusive, hi inclusive) when both ends are known, finite and lo < hi."""
    lo = prop.get("minimum", prop.get("exclusiveMinimum"))
    hi = prop.get("maximum", prop.get("exclusiveMaximum"))
    if not (_finite(lo) and _finite(hi) and lo < hi):
        return None
    return (Decimal(repr(float(lo))), Decimal(repr(float(hi))),
            "minimum" in prop, "maximum" in prop)


def _in_unit(b: Bounds) -> bool:
    """A range inside [0, 1] (a momentum, a learning rate): its notation is fixed, since
    seeded sessions of the embedded model depend on it token for token."""
    return 0 <= b[0] and b[1] <= 1


def linear_step(b: Bounds) -> Decimal:
    """The step of a linear range's decimals: 0.001 inside [0, 1] (as it always was), else
    the power of ten two decades below the width, so that the range holds 100 to 1000
    steps whatever its scale ([-5, 5]: 0.1; [0, 1000]: 10; [0.5, 2]: 0.01).

    >>> linear_step((Decimal(-5), Decimal(5), True, True)), linear_step((Decimal(0), Decimal("0.25"), True, True))
    (Decimal('0.1'), Decimal('0.001'))
    """
    if _in_unit(b):
        return Decimal(10) ** -LINEAR_PLACES
    return Decimal(10) ** ((b[1] - b[0]).adjusted() - LINEAR_DECADES)


def is_log_scale(prop: dict) -> bool:
    """A positive range spanning two decades or more (a learning rate, a clipping norm),
    one open at 0, or one starting below the linear notation's step (0.001 in [0, 1])."""
    b = _bounds(prop)
    if b is None:
        return False
    lo, hi, lo_incl, _ = b
    return (lo == 0 and not lo_incl) or (lo > 0 and (hi / lo >= Decimal(LOG_SCALE_RATIO) or lo < linear_step(b)))


def _inside(v: Decimal, b: Bounds) -> bool:
    lo, hi, lo_incl, hi_incl = b
    return (v >= lo if lo_incl else v > lo) and (v <= hi if hi_incl else v < hi)


def _scientific(b: Bounds) -> list[str]:
    """Two significant digits, no trailing zero (1 ... 9, 1.1 ... 9.9), over every decade
    touching the range; from SCI_FLOOR_EXP's decade when it is open at 0."""
    lo, hi = b[0], b[1]
    first = SCI_FLOOR_EXP if lo == 0 else lo.adjusted()
    return [s for e in range(first, hi.adjusted() + 1) for m in MANTISSAS if _inside(Decimal(s := f"{m}e{e}"), b)]


def _plain(v: Decimal) -> str:
    """A decimal as JSON writes it by hand: no exponent, no trailing zero ("0.5", "-4", "20")."""
    text = format(v, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _linear(b: Bounds) -> list[str]:
    """The multiples of linear_step inside the range, as plain decimals."""
    step = linear_step(b)
    first = int((b[0] / step).to_integral_value(rounding=ROUND_CEILING))
    last = int((b[1] / step).to_integral_value(rounding=ROUND_FLOOR))
    return [s for k in range(first, last + 1) if _inside(Decimal(s := _plain(Decimal(k) * step)), b)]


@functools.lru_cache(maxsize=64)
def _sentences(prop_json: str) -> tuple[str, ...]:
    prop = json.loads(prop_json)
    b = _bounds(prop)
    assert b is not None
    return tuple(_scientific(b) if is_log_scale(prop) else _linear(b))


def number_sentences(prop: dict) -> tuple[str, ...] | None:
    """Every way the embedded model may write a bounded number, or None when the property
    is unbounded, or so narrow that no number of the notation falls inside (then any JSON
    number, see JSON_NUMBER).

    One language per property, used both by the token mask (agent/decoding.py) and by the
    GBNF below, so the two accept exactly the same strings. A learning-rate-like range
    (positive, >= two decades) is written in scientific notation with two significant
    digits, so every decade is as easy to write as any other: a small model writing
    decimals gravitates to 0.1 and 1. A linear range (a momentum, a weight in [-5, 5]) is
    written as a plain decimal on linear_step's grid: up to three places inside [0, 1].

    >>> lr = {"type": "number", "minimum": 1e-4, "maximum": 0.1}
    >>> s = number_sentences(lr); s[:3], s[-2:], len(s)
    (('1e-4', '2e-4', '3e-4'), ('9.9e-2', '1e-1'), 271)
    >>> number_sentences({"type": "number", "minimum": 0, "maximum": 0.99})[-3:]
    ('0.988', '0.989', '0.99')
    >>> s = number_sentences({"type": "number", "minimum": -5, "maximum": 5}); s[:3], s[-1], len(s)
    (('-5', '-4.9', '-4.8'), '5', 101)
    >>> s = number_sentences({"type": "number", "minimum": 0.1, "maximum": 100}); s[:2], s[-2:], len(s)
    (('1e-1', '2e-1'), ('9.9e1', '1e2'), 271)
    """
    if prop.get("type") != "number" or _bounds(prop) is None:
        return None
    keep = ("type", *BOUND_KEYS)
    return _sentences(json.dumps({k: prop[k] for k in keep if k in prop}, sort_keys=True)) or None  # () -> None


def _nice_strides() -> Iterator[int]:
    """1, 2, 5, 10, 20, 50, ...: strides that keep a thinned grid on round numbers."""
    scale = 1
    while True:
        yield from (scale, 2 * scale, 5 * scale)
        scale *= 10


def _integer_grid(first: int, last: int, step: int) -> list[int]:
    """first, first + step, ... up to last; past INT_INTERVALS steps, every stride-th step
    (the smallest 1-2-5 stride that fits), on multiples of the coarser step when the grid
    is made of multiples of step, and both ends always kept."""
    span = (last - first) // step
    stride = next(s for s in _nice_strides() if span <= INT_INTERVALS * s)
    if stride == 1:
        return list(range(first, last + 1, step))
    coarse = step * stride
    origin = 0 if first % step == 0 else first
    start = origin + -((origin - first) // coarse) * coarse  # the first coarse point >= first
    return sorted({first, last, *range(start, last + 1, coarse)})


def integer_sentences(prop: dict) -> tuple[str, ...] | None:
    """The integers an {"type": "integer"} property may take, written plainly: those in
    its bounds on the grid minimum, minimum + multipleOf, ... (a search space's low, low +
    step, ...; JSON schema's multipleOf means the multiples of step, the same grid whenever
    the minimum is one). More than INT_INTERVALS steps are thinned (_integer_grid), so the
    language stays about a thousand sentences. None when unbounded or empty.

    >>> integer_sentences({"type": "integer", "minimum": 1, "maximum": 4})
    ('1', '2', '3', '4')
    >>> s = integer_sentences({"type": "integer", "minimum": 8, "maximum": 512, "multipleOf": 8}); s[:3], len(s)
    (('8', '16', '24'), 64)
    >>> s = integer_sentences({"type": "integer", "minimum": 1, "maximum": 100000}); s[:3], s[-1], len(s)
    (('1', '100', '200'), '100000', 1001)
    """
    b = _bounds(prop) if prop.get("type") == "integer" else None
    if b is None:
        return None
    lo, hi, lo_incl, hi_incl = b
    first = int(lo.to_integral_value(rounding=ROUND_CEILING))
    first += 0 if lo_incl or first > lo else 1
    top = int(hi.to_integral_value(rounding=ROUND_FLOOR))
    top -= 0 if hi_incl or top < hi else 1
    multiple = prop.get("multipleOf", 1)
    step = int(multiple) if isinstance(multiple, int | float) and multiple >= 1 and multiple == int(multiple) else 1
    if top < first:
        return None
    return tuple(str(v) for v in _integer_grid(first, first + (top - first) // step * step, step))


def choice_literals(prop: dict) -> tuple[str, ...] | None:
    """An enum's choices as the JSON literals the model writes (`true`, `"relu"`, `16`), in
    order, without repeats; ASCII only (a non-ASCII character is escaped), so that every
    literal is made of whole tokens. A plain boolean is the enum [false, true].

    >>> choice_literals({"enum": [False, True]}), choice_literals({"enum": ["relu", 16]})
    (('false', 'true'), ('"relu"', '16'))
    """
    choices = prop.get("enum")
    if choices is None and prop.get("type") == "boolean":
        choices = [False, True]
    if not isinstance(choices, list) or not choices:
        return None
    return tuple(dict.fromkeys(json.dumps(c, sort_keys=True) for c in choices))


def is_choice(prop: dict) -> bool:
    """A property whose value is one of listed choices: an enum, or a boolean."""
    return "enum" in prop or prop.get("type") == "boolean"


def value_sentences(prop: dict) -> tuple[str, ...] | None:
    """The finite language of a property's value: its choices (an enum or a boolean), its
    integers, or its bounded numbers; None when it has none (a free string, an unbounded
    number). The token masks and the GBNF both write exactly these strings."""
    if is_choice(prop):
        return choice_literals(prop)
    if prop.get("type") == "integer":
        return integer_sentences(prop)
    return number_sentences(prop)


def is_free_string(prop: dict) -> bool:
    """A string property without choices: its text is the model's (a rationale)."""
    return prop.get("type") == "string" and "enum" not in prop


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
    """A property's value as a GBNF expression: its finite language (value_sentences)
    exactly, a capped JSON string, or a capped JSON number or integer when unbounded.
    Choices are an alternation of their literals; numbers and integers a shared-rule trie.

    >>> print(value_gbnf({"enum": [False, True]}), value_gbnf({"enum": ["relu", "tanh"]}))
    ("false" | "true") ("\\"relu\\"" | "\\"tanh\\"")
    """
    rules = {} if rules is None else rules
    if is_free_string(prop):
        return JSON_STRING % int(prop.get("maxLength", 400))
    literals = choice_literals(prop) if is_choice(prop) else None
    if literals is not None:
        alts = [json.dumps(x) for x in literals]
        return alts[0] if len(alts) == 1 else "(" + " | ".join(alts) + ")"
    if prop.get("type") == "integer":
        sentences = integer_sentences(prop)
        return JSON_INTEGER if sentences is None else _trie_gbnf(_trie(sentences), rules, f"n{len(rules)}x")
    return number_gbnf(prop, rules)


def gbnf_supported(prop: Any) -> bool:
    """A property object_gbnf writes: a string, a number, an integer, a boolean or an enum."""
    return isinstance(prop, dict) and (
        prop.get("type") in ("number", "string", "integer", "boolean")
        or (isinstance(prop.get("enum"), list) and bool(prop["enum"])))


def object_gbnf(schema: dict) -> str | None:
    """A flat object of supported properties (gbnf_supported) as GBNF: keys in order, one
    space after each ':' and ',', each value by value_gbnf. None for any other schema."""
    props = schema.get("properties") if schema.get("type") == "object" else None
    if not props or not all(gbnf_supported(p) for p in props.values()):
        return None
    parts: list[str] = []
    rules: dict[str, str] = {}
    for i, (name, p) in enumerate(props.items()):
        value = value_gbnf(p, rules)
        parts.append(('"{' if i == 0 else '", ') + f'\\"{name}\\": " {value}')
    return "\n".join(["root ::= " + " ".join(parts) + ' "}"', *(f"{n} ::= {b}" for n, b in rules.items())])


def grammar_friendly(prop: Any) -> dict:
    """Reduce a property schema to what llama.cpp's schema-to-grammar converter handles
    (it rejects e.g. a bare default) while keeping what our own masks and GBNF read (bounds,
    a step, choices); strings get a length cap so a reply always closes."""
    if not isinstance(prop, dict):
        return {"type": "number"}
    if isinstance(prop.get("enum"), list) and prop["enum"]:
        return {"enum": list(prop["enum"])}
    kind = prop.get("type")
    if kind == "string":
        return {"type": "string", "maxLength": 400}
    if kind in ("number", "integer"):
        keep = BOUND_KEYS + (("multipleOf",) if kind == "integer" else ())
        return {"type": kind, **{k: prop[k] for k in keep if k in prop}}
    if kind == "boolean":
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
