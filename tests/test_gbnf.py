"""The embedded model's grammars and message formatting: pure text, no llama.cpp needed."""

import json
import random
import re

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from tuneloop.agent.gbnf import is_log_scale, number_sentences, object_gbnf, tool_call_schema
from tuneloop.agent.local_model import to_llama_messages

SCHEMA = {"type": "object", "properties": {
    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}}}


def gbnf_regex(gbnf: str) -> re.Pattern:
    """Our GBNF (literals, [digit] classes, groups with | and ?, rule references; no
    recursion) as a Python regex: an independent reading of the grammar text."""
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())

    def expand(body: str) -> str:
        out, i = [], 0
        while i < len(body):
            c = body[i]
            if c == '"':
                j = i + 1
                while body[j] != '"':
                    j += 2 if body[j] == "\\" else 1
                out.append(re.escape(json.loads(body[i:j + 1])))
                i = j + 1
            elif c == "[":
                j = body.index("]", i)
                out.append(body[i:j + 1])
                i = j + 1
            elif c in "()|?":
                out.append(c if c != "(" else "(?:")
                i += 1
            elif c == " ":
                i += 1
            else:
                m = re.match(r"[a-z0-9]+", body[i:])
                out.append("(?:" + expand(rules[m.group()]) + ")")
                i += m.end()
        return "".join(out)

    return re.compile(expand(rules["root"]))


def reference_language(lo: float, hi: float, lo_incl: bool, hi_incl: bool, log: bool) -> set[str]:
    """The numbers a bounded property admits, built independently of agent/gbnf.py: every
    string of the notation's shape, kept when its value lies inside the bounds."""
    if log:  # two significant digits, a one-digit negative exponent (or 0)
        shapes = [
            f"{m}e{e}"
            for m in [str(d) for d in range(1, 10)] + [f"{d}.{k}" for d in range(1, 10) for k in range(1, 10)]
            for e in range(-6, 1)
        ]
    else:  # up to three decimals, no trailing zero
        shapes = ["0", "1"] + [f"0.{k:03d}".rstrip("0") for k in range(1, 1000)]
    inside = lambda v: (v >= lo if lo_incl else v > lo) and (v <= hi if hi_incl else v < hi)  # noqa: E731
    return {s for s in shapes if inside(float(s))}


LANGUAGES = [  # (property, lo, hi, lo inclusive, hi inclusive, log scale)
    ({"type": "number", "minimum": 1e-4, "maximum": 0.1}, 1e-4, 0.1, True, True, True),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, 0, 1, False, True, True),
    ({"type": "number", "minimum": 0, "maximum": 0.99}, 0, 0.99, True, True, False),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, 0, 1, True, False, False),
    ({"type": "number", "minimum": 0.25, "maximum": 0.5}, 0.25, 0.5, True, True, False),
]


@pytest.mark.parametrize("prop,lo,hi,lo_incl,hi_incl,log", LANGUAGES)
def test_number_language_is_exactly_the_bounded_notation(prop, lo, hi, lo_incl, hi_incl, log):
    sentences = number_sentences(prop)
    assert set(sentences) == reference_language(lo, hi, lo_incl, hi_incl, log)
    assert len(set(sentences)) == len(sentences)
    assert all(float(s) == json.loads(s) for s in sentences)  # each one a JSON number


@pytest.mark.parametrize("prop,lo,hi,lo_incl,hi_incl,log", LANGUAGES)
def test_gbnf_accepts_exactly_the_language(prop, lo, hi, lo_incl, hi_incl, log):
    pattern = gbnf_regex(object_gbnf({"type": "object", "properties": {"x": prop}}))
    sentences = set(number_sentences(prop))
    for s in sentences:
        assert pattern.fullmatch(f'{{"x": {s}}}'), s
    # near misses: every sentence with one character changed, added or removed, and values
    # just outside the bounds
    rng = random.Random(0)
    alphabet = "0123456789.e-"
    probes = {"2e-1", "1e-5", "1.0e-3", "0.9991", "0.990", "1", "0", "1e0", "0.", ".5", "5e-01", "1e-7", "10e-3"}
    for s in rng.sample(sorted(sentences), min(200, len(sentences))):
        i = rng.randrange(len(s))
        probes |= {s[:i] + rng.choice(alphabet) + s[i + 1:], s[:i] + rng.choice(alphabet) + s[i:], s[:i] + s[i + 1:]}
    for s in probes:
        assert bool(pattern.fullmatch(f'{{"x": {s}}}')) == (s in sentences), s


def test_learning_rates_are_written_in_scientific_notation_and_momenta_as_decimals():
    assert is_log_scale({"type": "number", "minimum": 1e-4, "maximum": 0.1})
    assert not is_log_scale({"type": "number", "minimum": 0, "maximum": 0.99})
    assert number_sentences({"type": "number", "minimum": 1e-4, "maximum": 0.1})[:2] == ("1e-4", "2e-4")
    assert number_sentences({"type": "number"}) is None  # unbounded: any JSON number


def test_unbounded_or_non_flat_schemas_are_left_to_llama_cpp():
    assert object_gbnf({"type": "object", "properties": {"x": {"type": "array"}}}) is None
    g = object_gbnf({"type": "object", "properties": {"x": {"type": "number"}}})
    assert '[0-9]{1,12}' in g  # a plain JSON number, digit runs capped


def test_tool_call_schema_forces_one_of_the_tools():
    tools = [{"function": {"name": "run_momentum_gd", "parameters": SCHEMA}}]
    forced = tool_call_schema(tools, allow_text=False)
    assert forced["properties"]["name"] == {"const": "run_momentum_gd"}
    assert set(forced["properties"]["arguments"]["properties"]) == {"learning_rate", "momentum"}
    free = tool_call_schema(tools, allow_text=True)
    assert [set(o["properties"]) for o in free["anyOf"]] == [{"name", "arguments"}, {"answer"}]


def test_messages_fold_system_into_first_user_turn():
    msgs = [SystemMessage("sys"), HumanMessage("hi"),
            AIMessage("", tool_calls=[{"name": "t", "args": {"a": 1}, "id": "1"}]),
            ToolMessage("res", tool_call_id="1", name="t"), HumanMessage("turn")]
    out = to_llama_messages(msgs, [])
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"] == "sys\n\nhi"
    assert out[1]["content"] == '{"name": "t", "arguments": {"a": 1}}'
    assert out[2]["content"] == "Result of t: res\n\nturn"


def test_prompts_write_learning_rates_as_the_model_does():
    """fmt_lr (what prompts show) writes every sentence of the learning-rate language back
    unchanged, so the model reads what it would write."""
    from tuneloop.tools.formatting import fmt_lr

    for s in number_sentences({"type": "number", "minimum": 1e-4, "maximum": 0.1}):
        assert fmt_lr(float(s)) == s


def test_narrow_or_tiny_ranges_still_have_a_language_or_none():
    tiny = number_sentences({"type": "number", "minimum": 1e-4, "maximum": 9e-4})  # below the 0.001 step
    assert tiny[0] == "1e-4" and "9e-4" in tiny and "9.1e-4" not in tiny
    assert number_sentences({"type": "number", "exclusiveMinimum": 0, "maximum": 1e-7}) is None  # nothing fits
