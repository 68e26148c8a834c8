"""Fast constrained decoding for the embedded model: token masks, not a grammar pass.

llama.cpp's grammar sampler checks all 262,144 tokens of Gemma's vocabulary against the
grammar at every step (about 0.1 s per token on two cores, four times the model's own
step). The values a tool call needs are far simpler: a sentence of a finite language
(`agent.gbnf.value_sentences`: a bounded number, an integer, one of an enum's literals) or
the text of a JSON string. So:

- once per model file the vocabulary is read and two things are kept (cached on disk,
  it takes a second): the few hundred tokens made only of number characters, and which
  tokens may stand inside a JSON string (no quote, backslash, control character or
  special token);
- at each step the tokens allowed next are those whose text continues the value toward
  a sentence of its language (for numbers, among the number tokens; for an enum's
  literals, `true` or `"relu"`, which need other tokens, along each literal's spelling by
  the model's tokenizer); the other logits are dropped and the token is sampled in
  NumPy, from a seeded generator, with llama.cpp's own filter order (top-k, top-p,
  min-p, then temperature);
- keys and punctuation are written into the reply by us, never decoded.

Prompt reuse: each evaluation compares its tokens with those already in llama.cpp's KV
cache and runs only the rest through the model (`Evaluated.cached` says how many were
reused), so a prompt whose stable part comes first costs only its new tail.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from tuneloop.agent.gbnf import choice_literals, is_choice, is_free_string, value_sentences
from tuneloop.agent.near_repeats import near_repeats
from tuneloop.agent.vocabulary import Vocabulary
from tuneloop.tools.space import json_key

STRING_TOKENS = 48  # a rationale: a sentence or two (each token is a model step)
STRING_SENTENCES = 1  # ... closed at the end of its first sentence
# a sentence's end: a word, then . ! or ?, then a space or the end of the text so far; after
# a digit, "." ends a sentence only once a space follows ("momentum of 0." may go on "9")
SENTENCE_END = re.compile(r"(?:[^\W\d][.!?]|\d[!?])(?:\s|$)|\d\.\s")
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass(frozen=True)
class Sampling:
    """Sampling settings, applied in llama.cpp's order. top_k 0 means no top-k cut."""

    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05


def sample(logits: np.ndarray, ids: np.ndarray, rng: np.random.Generator, s: Sampling) -> int:
    """One token among `ids` (the allowed ones), from the full-vocabulary `logits`.

    >>> logits = np.array([0.0, 5.0, 1.0, 9.0])
    >>> sample(logits, np.array([0, 1, 2]), np.random.default_rng(0), Sampling(temperature=0.0))
    1
    """
    z = logits[ids].astype(np.float64)
    if s.temperature <= 0.0 or len(ids) == 1:
        return int(ids[int(np.argmax(z))])
    k = len(z) if s.top_k <= 0 else min(s.top_k, len(z))
    top = np.argpartition(-z, k - 1)[:k] if k < len(z) else np.arange(len(z))
    top = top[np.argsort(-z[top], kind="stable")]
    p = np.exp(z[top] - z[top[0]])
    p /= p.sum()
    keep = (np.cumsum(p) - p) < s.top_p  # the smallest prefix holding top_p of the mass
    keep &= p >= s.min_p * p[0]
    keep[0] = True
    top = top[keep]
    q = np.exp((z[top] - z[top[0]]) / s.temperature)
    return int(ids[top[rng.choice(len(top), p=q / q.sum())]])


class Language(Protocol):
    """A value's language as the decoder walks it: the tokens allowed after `text` (among
    the candidates `ids`, whose texts are `pieces`), and whether `text` is complete."""

    terminator: str
    longest: int  # the most tokens a sentence and its terminator can take

    def allowed(self, text: str, ids: np.ndarray, pieces: list[str]) -> np.ndarray: ...

    def done(self, text: str) -> bool: ...


class NumberLanguage:
    """Which candidate tokens may come next while writing a number of `sentences`
    followed by `terminator` (',' or '}'): those whose text keeps the reply a prefix of
    some sentence + terminator. Decoding ends when the terminator is written."""

    def __init__(self, sentences: tuple[str, ...], terminator: str) -> None:
        self.terminator = terminator
        self.prefixes = {w[:i] for s in sentences for w in [s + terminator] for i in range(1, len(w) + 1)}
        self.longest = max(len(s) for s in sentences) + len(terminator)  # a token has a character or more
        # per candidate array (one per model's vocabulary, held so that its id is never
        # reused): text -> allowed tokens. Languages are shared by every model in the process.
        self._cache: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]] = {}

    def allowed(self, text: str, ids: np.ndarray, pieces: list[str]) -> np.ndarray:
        cache = self._cache.setdefault(id(ids), (ids, {}))[1]
        if text not in cache:
            cache[text] = np.array(
                [i for i, p in zip(ids, pieces, strict=False) if text + p in self.prefixes], dtype=np.int64
            )
        return cache[text]

    def done(self, text: str) -> bool:
        return text.endswith(self.terminator)


Spelling = list[tuple[int, str]]  # a text as tokens: (token, its text), in order


class ChoiceLanguage:
    """Which tokens may come next while writing one of an enum's literals (`true`,
    `"relu"`, `16`) followed by `terminator`. The number tokens cannot write `"relu"`, and
    reading the whole vocabulary for each enum would be slow, so each literal + terminator
    is spelled by the model's own tokenizer (the split it reads in prompts) and the tokens
    allowed after a text are the next tokens of the spellings passing through it: a trie
    of token sequences, keyed by text. A JSON literal ends before a ',' or '}' after it,
    so the words are prefix-free and a text is complete exactly when it is one of them."""

    def __init__(self, spellings: Sequence[Spelling], terminator: str) -> None:
        self.terminator = terminator
        self.words = {"".join(p for _, p in sp) for sp in spellings}
        after: dict[str, list[int]] = {}
        for sp in spellings:
            text = ""
            for token, piece in sp:
                nxt = after.setdefault(text, [])
                if token not in nxt:
                    nxt.append(token)
                text += piece
        self._next = {t: np.array(ids, dtype=np.int64) for t, ids in after.items()}
        self.longest = max(len(sp) for sp in spellings)

    @staticmethod
    def spelled(llama: Any, literals: Sequence[str], terminator: str) -> ChoiceLanguage:
        """The language of `literals` + `terminator` in the tokens of `llama`'s tokenizer."""
        return ChoiceLanguage([spelling(llama, x + terminator) for x in literals], terminator)

    def allowed(self, text: str, ids: np.ndarray | None = None, pieces: list[str] | None = None) -> np.ndarray:
        """The next tokens after `text` (`ids` and `pieces` go unused: the spellings hold them)."""
        return self._next.get(text, np.zeros(0, dtype=np.int64))

    def done(self, text: str) -> bool:
        return text in self.words


def _piece(llama: Any, token: int) -> str | None:
    try:
        return llama.detokenize([token]).decode("utf-8")
    except UnicodeDecodeError:  # a byte of a multi-byte character: not whole text
        return None


def spelling(llama: Any, text: str) -> Spelling:
    """`text` in the model's tokens: the tokenizer's split when its pieces give the text
    back, else one token per character (a tokenizer that adds a leading space, say); a
    ValueError when neither writes it."""
    ids = [int(i) for i in llama.tokenize(text.encode(), add_bos=False, special=False)]
    pieces = [_piece(llama, i) for i in ids]
    if all(p is not None for p in pieces) and "".join(p or "" for p in pieces) == text:
        return [(i, p or "") for i, p in zip(ids, pieces, strict=True)]
    out: Spelling = []
    for c in text:
        one = llama.tokenize(c.encode(), add_bos=False, special=False)
        if len(one) != 1 or _piece(llama, int(one[0])) != c:
            raise ValueError(f"constrained decoding cannot spell {text!r} in tokens of this model: "
                             "its vocabulary does not suit it")
        out.append((int(one[0]), c))
    return out


@dataclass
class Evaluated:
    """Prompt tokens of one model call: sent to the model, and of those the ones run
    through it (the rest were reused from the KV cache)."""

    sent: int = 0
    evaluated: int = 0

    @property
    def cached(self) -> int:
        return max(0, self.sent - self.evaluated)


class ConstrainedDecoder:
    """Writes a reply into llama.cpp's context piece by piece: text we fix (`write`),
    values and strings the model chooses (`value`, `string`).

    One call at a time per llama.cpp instance (its KV cache is shared state): hold
    `lock` around a call.
    """

    def __init__(self, llama: Any, vocab: Vocabulary, sampling: Sampling, seed: int, prompt: str) -> None:
        self.llama = llama
        self.vocab = vocab
        self.sampling = sampling
        self.rng = np.random.default_rng(seed)
        self.prompt = prompt
        self.reply = ""  # what follows the prompt: written by us or decoded
        self.tokens = Evaluated()
        self.generated = 0
        self._context = 0  # tokens in llama.cpp's context after our last step
        self._synced = False  # is the context exactly prompt + reply?
        self.lock = lock_for(llama)

    def write(self, text: str) -> None:
        """Fixed text of the reply (keys, punctuation): evaluated, never sampled."""
        self.reply += text
        self._synced = False

    def _sync(self) -> None:
        """Make prompt + reply the context: only the tokens after the longest prefix
        already in the KV cache are run through the model."""
        if self._synced:
            return
        llama = self.llama
        tokens = llama.tokenize((self.prompt + self.reply).encode("utf-8"), add_bos=True, special=True)
        if len(tokens) + 64 > llama.n_ctx():
            raise ValueError(f"the prompt has {len(tokens)} tokens, too many for the model's context of "
                             f"{llama.n_ctx()} (raise --n-ctx)")
        cached = 0
        for a, b in zip(llama.input_ids[: llama.n_tokens].tolist(), tokens, strict=False):
            if a != b:
                break
            cached += 1
        cached = min(cached, len(tokens) - 1)  # the last token is always run: its logits are needed
        # sent: the whole prompt the first time, then what we add (keys, punctuation)
        self.tokens.sent += max(0, len(tokens) - self._context)
        self.tokens.evaluated += len(tokens) - cached
        llama.n_tokens = cached  # llama.eval drops the KV cache beyond n_tokens first
        if len(tokens) - cached > 1:
            # Logits we sample from come from a token run alone, whatever an earlier call left
            # in the cache (a decoded token is run alone too): run in a batch with others, the
            # last token takes another matrix kernel whose rounding differs, and greedy
            # decoding of one prompt gave momentum 0.5 on a first call and 0.501 on the next,
            # which found the prompt in the cache (AVX-512 build, no AMX).
            llama.eval(tokens[cached:-1])
        llama.eval(tokens[-1:])
        self._context = len(tokens)
        self._synced = True

    def warm(self) -> None:
        """Run the prompt through the model now (a later call reuses it from the cache)."""
        self._sync()

    def _logits(self) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self.llama.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.llama.n_vocab(),)).copy()

    def _step(self, ids: np.ndarray) -> str:
        if len(ids) == 0:  # the vocabulary cannot write the value's next character
            raise ValueError("constrained decoding found no token for the value's next character "
                             f"after {self.reply[-20:]!r}: this model's vocabulary does not suit it")
        if len(ids) == 1:  # only one way on: written, no model step
            piece = self.llama.detokenize([int(ids[0])]).decode("utf-8")
            self.write(piece)
            return piece
        self._sync()
        token = sample(self._logits(), ids, self.rng, self.sampling)
        self.llama.eval([token])
        self.generated += 1
        self._context += 1
        piece = self.llama.detokenize([token]).decode("utf-8", errors="replace")
        self.reply += piece
        return piece

    def language(self, prop: dict, terminator: str, exclude: Collection[Any] = ()) -> Language:
        """The language of a property's value followed by `terminator`, less the values in
        `exclude` (compared as JSON values, see json_key): its choices spelled in this
        model's tokens, or its numbers over the number tokens."""
        literals = choice_literals(prop) if is_choice(prop) else None
        if literals is None:
            return number_language(json.dumps(prop, sort_keys=True), terminator, exclude)
        keys = {json_key(v) for v in exclude}
        kept = tuple(x for x in literals if json_key(json.loads(x)) not in keys)
        return ChoiceLanguage.spelled(self.llama, kept or literals, terminator)  # all tried: any may repeat

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """The model's probabilities of the tokens `ids` next, after the reply so far
        (softmax of their logits at temperature 1, before any filter): what `value`
        samples from, for inspection (agent/value_probe.py)."""
        self._sync()
        z = self._logits()[ids].astype(np.float64)
        p = np.exp(z - z.max())
        return p / p.sum()

    def value(self, lang: Language, max_tokens: int) -> str | None:
        """The model writes one sentence of `lang` and then its terminator. Returns the
        sentence, or None if it had not finished after max_tokens."""
        value = ""
        for _ in range(max_tokens):
            value += self._step(lang.allowed(value, self.vocab.number_ids, self.vocab.number_pieces))
            if lang.done(value):
                return value[: -len(lang.terminator)]
        return None

    def string(self, max_tokens: int, sentences: int = 0) -> str:
        """The model writes a JSON string's text (the opening quote already written) and
        closes it; we close it after max_tokens, or with `sentences` > 0 at the end of
        that many sentences (each token is a model step: a rationale needs few)."""
        ids = np.append(self.vocab.string_ids, self.vocab.quote_id)
        out = ""
        for _ in range(max_tokens):
            piece = self._step(ids)
            if piece == '"':
                return out
            out += piece
            if sentences and len(SENTENCE_END.findall(out)) >= sentences:
                break
        self.write('"')
        return out


def value_supported(prop: dict) -> bool:
    """A property this decoder writes: a free string, or a value with a finite language
    (a bounded number or integer, an enum, a boolean: agent.gbnf.value_sentences)."""
    return is_free_string(prop) or value_sentences(prop) is not None


def lock_for(llama: Any) -> threading.Lock:
    """The lock of a llama.cpp instance: its KV cache is shared state, so one call at a
    time (sessions, the preloading thread, llama.cpp's own completions)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(llama), threading.Lock())


def decode_arguments(llama: Any, vocab: Vocabulary, prompt: str, props: dict, seed: int, sampling: Sampling,
                     max_tokens: int, avoid: Sequence[dict] = (), string_tokens: int = STRING_TOKENS,
                     value_tokens: int | None = None, avoid_radius: float = 0.0):
    """A tool call's arguments object written after `prompt`: keys and punctuation by us,
    each value by the model under its mask, by its type (value_supported). `avoid`:
    argument sets never to complete (configurations already tried), compared as JSON
    values; with `avoid_radius` > 0 also none within that distance of one on every number's
    axis (`near_repeats`). `value_tokens` caps a value's tokens; by default its language's
    longest sentence bounds them (a finite language cannot run on). Returns (the object's
    text, Evaluated, tokens the model sampled, finish reason: "stop", or "length" when a
    value was cut off)."""
    decoder = ConstrainedDecoder(llama, vocab, sampling, seed, prompt)
    finish = "stop"
    chosen: dict[str, Any] = {}
    with decoder.lock:
        decoder.write("{")
        items = list(props.items())
        for i, (name, prop) in enumerate(items):
            last = i == len(items) - 1
            left = max_tokens - decoder.generated
            decoder.write(f'"{name}": ')
            if is_free_string(prop):
                decoder.write('"')
                decoder.string(min(left, string_tokens), sentences=STRING_SENTENCES)
                decoder.write("}" if last else ", ")
                continue
            rest = [p for _, p in items[i + 1:] if not is_free_string(p)]
            exclude = exhausted(avoid, chosen, name, rest)
            if avoid_radius > 0 and not rest:
                near = near_repeats(avoid, chosen, props, name, avoid_radius)
                if len({json_key(v) for v in [*exclude, *near]}) < len(value_sentences(prop) or ()):
                    exclude += near  # else every value is near one tried: keep out the exact repeats only
            lang = decoder.language(prop, "}" if last else ",", exclude=exclude)
            value = decoder.value(lang, min(left, lang.longest if value_tokens is None else value_tokens))
            if value is None:
                finish = "length"  # left unparseable: the caller shows it as text
                break
            chosen[name] = json.loads(value)
            if not last:
                decoder.write(" ")
    return decoder.reply, decoder.tokens, decoder.generated, finish


def _completed(avoid: Sequence[dict[str, Any]], chosen: dict[str, Any], name: str) -> list[Any]:
    """The values of `name` that would complete one of the `avoid` argument sets, given
    the values already `chosen`, all compared as JSON values (json_key); a list, since a
    set would merge true and 1."""
    return [a[name] for a in avoid
            if name in a and set(a) - {name} == set(chosen)
            and all(json_key(a[k]) == json_key(chosen[k]) for k in chosen)]


def exhausted(avoid: Sequence[dict[str, Any]], chosen: dict[str, Any], name: str, rest: Sequence[dict]) -> list[Any]:
    """The values of `name` that lead, given the values already `chosen`, only to argument
    sets in `avoid`: for the last value those that would complete one (`_completed`); for
    an earlier one those whose every completion over the `rest` of the properties'
    languages was tried (a learning rate and momentum whose two Nesterov settings were
    both run), so that the model never writes itself into a repeat it cannot leave.

    >>> tried = [{"a": 1, "b": False}, {"a": 1, "b": True}, {"a": 2, "b": False}]
    >>> exhausted(tried, {}, "a", [{"enum": [False, True]}]), exhausted(tried, {"a": 2}, "b", [])
    ([1], [False])
    """
    if not rest:
        return _completed(avoid, chosen, name)
    sizes = [len(s) if (s := value_sentences(p)) else 0 for p in rest]
    if 0 in sizes:  # a later value from an unbounded language: never exhausted
        return []
    room = math.prod(sizes)
    counts: dict[tuple[str, Any], int] = {}
    values: dict[tuple[str, Any], Any] = {}
    for a in avoid:
        if name in a and all(k in a and json_key(a[k]) == json_key(v) for k, v in chosen.items()):
            key = json_key(a[name])
            counts[key] = counts.get(key, 0) + 1
            values[key] = a[name]
    return [values[k] for k, n in counts.items() if n >= room]


def completing(avoid: Sequence[dict[str, Any]], chosen: dict[str, Any], name: str) -> frozenset[Any]:
    """The values of `name` that would complete one of the `avoid` argument sets, given
    the values already `chosen` (as a set: decode_arguments uses _completed's list, which
    keeps true and 1 apart).

    >>> sorted(completing([{"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 0.9}, {"a": 2.0, "b": 0.1}], {"a": 1.0}, "b"))
    [0.5, 0.9]
    >>> completing([{"a": True, "b": 0.5}, {"a": 1, "b": 0.9}], {"a": True}, "b")
    frozenset({0.5})
    """
    return frozenset(_completed(avoid, chosen, name))


_LANGS: dict[tuple[str, str], NumberLanguage] = {}


def number_language(prop_json: str, terminator: str, exclude: Collection[Any] = ()) -> NumberLanguage:
    """The NumberLanguage of a number or integer property (its JSON, keys sorted), less
    the values in `exclude` (compared as JSON values); cached when nothing is excluded."""
    sentences = value_sentences(json.loads(prop_json))
    assert sentences is not None
    if exclude:  # a few milliseconds: built each time
        keys = {json_key(v) for v in exclude}
        kept = tuple(s for s in sentences if json_key(json.loads(s)) not in keys)
        return NumberLanguage(kept or sentences, terminator)
    key = (prop_json, terminator)
    if key not in _LANGS:
        _LANGS[key] = NumberLanguage(sentences, terminator)
    return _LANGS[key]
