"""Fast constrained decoding for the embedded model: token masks, not a grammar pass.

llama.cpp's grammar sampler checks all 262,144 tokens of Gemma's vocabulary against the
grammar at every step (about 0.1 s per token on two cores, four times the model's own
step). The values a tool call needs are far simpler: a bounded number from a finite
language (`agent.gbnf.number_sentences`) or the text of a JSON string. So:

- once per model file the vocabulary is read and two things are kept (cached on disk,
  it takes a second): the few hundred tokens made only of number characters, and which
  tokens may stand inside a JSON string (no quote, backslash, control character or
  special token);
- at each step the tokens allowed next are those whose text continues the value toward
  a sentence of its language; the other logits are dropped and the token is sampled in
  NumPy, from a seeded generator, with llama.cpp's own filter order (top-k, top-p,
  min-p, then temperature);
- keys and punctuation are written into the reply by us, never decoded.

Prompt reuse: each evaluation compares its tokens with those already in llama.cpp's KV
cache and runs only the rest through the model (`Evaluated.cached` says how many were
reused), so a prompt whose stable part comes first costs only its new tail.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.agent.gbnf import number_sentences
from tuneloop.tools.files import atomic_write_text

NUMBER_CHARS = frozenset("0123456789.e-,}")  # a number's characters and the terminators after it
NUMBER_TOKENS = 12  # a number of the decoding language takes at most 7 tokens and its terminator
STRING_TOKENS = 48  # a rationale: a sentence or two (each token is a model step)
STRING_SENTENCES = 1  # ... closed at the end of its first sentence
# a sentence's end: a word, then . ! or ?, then a space or the end of the text so far; after
# a digit, "." ends a sentence only once a space follows ("momentum of 0." may go on "9")
SENTENCE_END = re.compile(r"(?:[^\W\d][.!?]|\d[!?])(?:\s|$)|\d\.\s")
CACHE_VERSION = 3
_LOCKS: dict[int, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()
_VOCABS: dict[str, Vocabulary] = {}
_VOCAB_LOCK = threading.Lock()


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


class NumberLanguage:
    """Which candidate tokens may come next while writing a number of `sentences`
    followed by `terminator` (',' or '}'): those whose text keeps the reply a prefix of
    some sentence + terminator. Decoding ends when the terminator is written."""

    def __init__(self, sentences: tuple[str, ...], terminator: str) -> None:
        self.terminator = terminator
        self.prefixes = {w[:i] for s in sentences for w in [s + terminator] for i in range(1, len(w) + 1)}
        self._cache: dict[str, np.ndarray] = {}

    def allowed(self, text: str, ids: np.ndarray, pieces: list[str]) -> np.ndarray:
        if text not in self._cache:
            self._cache[text] = np.array(
                [i for i, p in zip(ids, pieces, strict=False) if text + p in self.prefixes], dtype=np.int64
            )
        return self._cache[text]

    def done(self, text: str) -> bool:
        return text.endswith(self.terminator)


@dataclass(frozen=True)
class Vocabulary:
    """What constrained decoding needs to know about a model's vocabulary."""

    number_ids: np.ndarray  # tokens made only of NUMBER_CHARS, one per piece
    number_pieces: list[str]
    string_ids: np.ndarray  # tokens that may stand inside a JSON string
    quote_id: int  # the token '"' alone: ends a string

    @staticmethod
    def read(llama: Any) -> Vocabulary:
        n = llama.n_vocab()
        number: dict[str, int] = {}  # piece -> its token (byte tokens such as <0x2C> repeat ',')
        string_ok = np.zeros(n, dtype=bool)
        quote: int | None = None
        for i in range(n):
            raw = llama.detokenize([i])
            try:
                piece = raw.decode("utf-8")
            except UnicodeDecodeError:  # a byte of a multi-byte character: not whole text
                continue
            if not piece:  # special tokens (turn markers, <eos>) detokenize to nothing
                continue
            if set(piece) <= NUMBER_CHARS:
                number.setdefault(piece, i)
            if not any(c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F for c in piece):
                string_ok[i] = True
            if piece == '"' and quote is None:
                quote = i
        for piece in number:  # prefer the token the tokenizer itself uses for the piece
            ids = llama.tokenize(piece.encode(), add_bos=False, special=False)
            # (a SentencePiece tokenizer that adds a leading space returns " 1" for "1": not it)
            if len(ids) == 1 and llama.detokenize([int(ids[0])]) == piece.encode():
                number[piece] = int(ids[0])
        ids = llama.tokenize(b'"', add_bos=False, special=False)
        if len(ids) == 1 and llama.detokenize([int(ids[0])]) == b'"':
            quote = int(ids[0])
        if quote is None:
            raise ValueError("the model's vocabulary has no '\"' token")
        return Vocabulary(np.array(list(number.values()), dtype=np.int64), list(number),
                          np.flatnonzero(string_ok), quote)

    def to_json(self) -> str:
        mask = np.zeros(int(self.string_ids.max()) + 1 if len(self.string_ids) else 0, dtype=bool)
        mask[self.string_ids] = True
        return json.dumps(
            {
                "version": CACHE_VERSION,
                "number": dict(zip(map(int, self.number_ids), self.number_pieces, strict=False)),
                "string_mask": base64.b64encode(np.packbits(mask).tobytes()).decode(),
                "string_len": len(mask),
                "quote_id": self.quote_id,
            }
        )

    @staticmethod
    def from_json(text: str) -> Vocabulary:
        d = json.loads(text)
        if d.get("version") != CACHE_VERSION:
            raise ValueError("old cache")
        bits = np.frombuffer(base64.b64decode(d["string_mask"]), dtype=np.uint8)
        mask = np.unpackbits(bits)[: d["string_len"]].astype(bool)
        return Vocabulary(np.array([int(k) for k in d["number"]], dtype=np.int64), list(d["number"].values()),
                          np.flatnonzero(mask), int(d["quote_id"]))


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tuneloop"


def vocabulary(llama: Any, model_path: str) -> Vocabulary:
    """The model's Vocabulary: from memory, else from the disk cache (keyed by the file's
    path, size and modification time), else read from the model and cached."""
    with _VOCAB_LOCK:  # a preloading thread may be reading it already
        return _vocabulary(llama, model_path)


def _vocabulary(llama: Any, model_path: str) -> Vocabulary:
    st = os.stat(model_path)
    key = hashlib.sha256(
        f"{os.path.abspath(model_path)}|{st.st_size}|{st.st_mtime_ns}|{CACHE_VERSION}".encode()
    ).hexdigest()[:20]
    if key in _VOCABS:
        return _VOCABS[key]
    path = cache_dir() / f"vocab-{key}.json"
    try:
        vocab = Vocabulary.from_json(path.read_text())
    except (OSError, ValueError, KeyError):
        vocab = Vocabulary.read(llama)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, vocab.to_json())
        except OSError:  # a read-only home: fine, read again next time
            pass
    _VOCABS[key] = vocab
    return vocab


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
    numbers and strings the model chooses (`number`, `string`).

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
        llama.eval(tokens[cached:])
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

    def number(
        self, prop: dict, terminator: str, max_tokens: int, exclude: frozenset[float] = frozenset()
    ) -> str | None:
        """The model writes one number of the property's language (minus the values in
        `exclude`) and then `terminator`. Returns the number, or None if it had not
        finished after max_tokens."""
        lang = number_language(json.dumps(prop, sort_keys=True), terminator, exclude)
        value = ""
        for _ in range(max_tokens):
            value += self._step(lang.allowed(value, self.vocab.number_ids, self.vocab.number_pieces))
            if lang.done(value):
                return value[: -len(terminator)]
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


def number_supported(prop: dict) -> bool:
    """A property this decoder writes: a bounded number or a string."""
    return prop.get("type") == "string" or number_sentences(prop) is not None


def lock_for(llama: Any) -> threading.Lock:
    """The lock of a llama.cpp instance: its KV cache is shared state, so one call at a
    time (sessions, the preloading thread, llama.cpp's own completions)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(id(llama), threading.Lock())


def decode_arguments(llama: Any, vocab: Vocabulary, prompt: str, props: dict, seed: int, sampling: Sampling,
                     max_tokens: int, avoid: Sequence[dict] = (), string_tokens: int = STRING_TOKENS,
                     number_tokens: int = NUMBER_TOKENS):
    """A tool call's arguments object written after `prompt`: keys and punctuation by us,
    each value by the model under its mask. `avoid`: argument sets never to complete
    (configurations already tried). Returns (the object's text, Evaluated, tokens the
    model sampled, finish reason: "stop", or "length" when a number was cut off)."""
    decoder = ConstrainedDecoder(llama, vocab, sampling, seed, prompt)
    finish = "stop"
    chosen: dict[str, float] = {}
    with decoder.lock:
        decoder.write("{")
        items = list(props.items())
        for i, (name, prop) in enumerate(items):
            last = i == len(items) - 1
            left = max_tokens - decoder.generated
            decoder.write(f'"{name}": ')
            if prop.get("type") == "string":
                decoder.write('"')
                decoder.string(min(left, string_tokens), sentences=STRING_SENTENCES)
                decoder.write("}" if last else ", ")
                continue
            value = decoder.number(prop, "}" if last else ",", min(left, number_tokens),
                                   exclude=completing(avoid, chosen, name))
            if value is None:
                finish = "length"  # left unparseable: the caller shows it as text
                break
            chosen[name] = float(value)
            if not last:
                decoder.write(" ")
    return decoder.reply, decoder.tokens, decoder.generated, finish


def completing(avoid: Sequence[dict[str, float]], chosen: dict[str, float], name: str) -> frozenset[float]:
    """The values of `name` that would complete one of the `avoid` argument sets, given
    the values already `chosen`.

    >>> sorted(completing([{"a": 1.0, "b": 0.5}, {"a": 1.0, "b": 0.9}, {"a": 2.0, "b": 0.1}], {"a": 1.0}, "b"))
    [0.5, 0.9]
    """
    return frozenset(a[name] for a in avoid
                     if name in a and set(a) - {name} == set(chosen) and all(a[k] == chosen[k] for k in chosen))


_LANGS: dict[tuple[str, str], NumberLanguage] = {}


def number_language(prop_json: str, terminator: str, exclude: frozenset[float] = frozenset()) -> NumberLanguage:
    """The NumberLanguage of a property (its JSON, keys sorted), less the values in
    `exclude`; cached when nothing is excluded."""
    sentences = number_sentences(json.loads(prop_json))
    assert sentences is not None
    if exclude:  # rare enough (a repeat in the making) to build each time
        kept = tuple(s for s in sentences if float(s) not in exclude)
        return NumberLanguage(kept or sentences, terminator)
    key = (prop_json, terminator)
    if key not in _LANGS:
        _LANGS[key] = NumberLanguage(sentences, terminator)
    return _LANGS[key]
