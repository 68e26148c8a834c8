"""What constrained decoding reads from a model's vocabulary once (agent/decoding.py uses
it): the tokens made only of number characters, which tokens may stand inside a JSON
string, and the quote token; cached on disk per model file, since reading 262,144 tokens
takes a second."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuneloop.tools.files import atomic_write_text

__all__ = ["CACHE_VERSION", "NUMBER_CHARS", "Vocabulary", "cache_dir", "vocabulary"]

NUMBER_CHARS = frozenset("0123456789.e-,}")  # a number's characters and the terminators after it
CACHE_VERSION = 3
_VOCABS: dict[str, Vocabulary] = {}
_VOCAB_LOCK = threading.Lock()


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
