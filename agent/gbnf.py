"""GBNF grammars and JSON schemas for constrained tool calls: pure text, no llama.cpp,
so they can be read and tested on their own.

The embedded model (agent/local_model.py) decodes under these grammars, so a 270M model
can only write a well-formed call whose numbers lie inside the tool's bounds.

    >>> print(object_gbnf({"type": "object", "properties": {"momentum": {"type": "number", "minimum": 0, "maximum": 1}}}))
    root ::= "{\\"momentum\\": " ("0." [0-9]{0,6} [1-9] | "0" | "1") "}"
"""

from __future__ import annotations

from typing import Any

# digit runs are capped: an uncapped grammar lets a small model write digits until max_tokens
JSON_NUMBER = '"-"? [0-9]{1,12} ("." [0-9]{1,12})? ([eE] [-+]? [0-9]{1,3})?'
JSON_STRING = '"\\"" ([^"\\\\\\x7F\\x00-\\x1F] | "\\\\" ["\\\\/bfnrt]){0,%d} "\\""'


def number_gbnf(prop: dict) -> str:
    """Decimal numbers inside the property's bounds when those lie within [0, 1]."""
    lo = prop.get("minimum", prop.get("exclusiveMinimum"))
    hi = prop.get("maximum", prop.get("exclusiveMaximum"))
    if lo is None or hi is None or not (0 <= lo < hi <= 1):
        return JSON_NUMBER
    lo_excl = "exclusiveMinimum" in prop and "minimum" not in prop
    hi_excl = "exclusiveMaximum" in prop and "maximum" not in prop
    options = ['"0." [0-9]{0,6} [1-9]']  # every decimal in (0, 1) with up to 7 places
    if lo == 0 and not lo_excl:
        options.append('"0"')
    if hi == 1 and not hi_excl:
        options.append('"1"')
    return "(" + " | ".join(options) + ")"


def value_gbnf(prop: dict) -> str:
    return number_gbnf(prop) if prop["type"] == "number" else JSON_STRING % int(prop.get("maxLength", 400))


def object_gbnf(schema: dict) -> str | None:
    props = schema.get("properties") if schema.get("type") == "object" else None
    if not props or any(p.get("type") not in ("number", "string") for p in props.values()):
        return None
    parts = []
    for i, (name, p) in enumerate(props.items()):
        value = value_gbnf(p)
        parts.append(('"{' if i == 0 else '", ') + f'\\"{name}\\": " {value}')
    return "root ::= " + " ".join(parts) + ' "}"'


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
