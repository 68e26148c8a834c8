"""Token-mask decoding (agent/decoding.py) without llama.cpp: sampling, the number
languages walked token by token over a vocabulary with multi-character and duplicate
pieces, repeats kept out, and the vocabulary's cache."""

import numpy as np
import pytest

from tuneloop.agent.decoding import NumberLanguage, Sampling, Vocabulary, completing, number_language, sample
from tuneloop.agent.gbnf import number_sentences

LR = {"type": "number", "minimum": 1e-4, "maximum": 0.1}
MOM = {"type": "number", "minimum": 0, "maximum": 0.99}
# single characters plus multi-character pieces, as real vocabularies have ("e-", "0.", "},")
PIECES = list("0123456789.e-,}") + ["e-", "0.", "},", ".5", "00", "1e", "-3,", "99"]
IDS = np.arange(100, 100 + len(PIECES))


def walk(lang: NumberLanguage) -> set[str]:
    """Every string the mask lets a decoder write, to the terminator (breadth first)."""
    done, frontier = set(), {""}
    while frontier:
        nxt = set()
        for text in frontier:
            for i in lang.allowed(text, IDS, PIECES):
                t = text + PIECES[int(i) - 100]
                (done if lang.done(t) else nxt).add(t)
        frontier = nxt
    return done


@pytest.mark.parametrize("prop,term", [(LR, ","), (MOM, "}")])
def test_the_mask_writes_exactly_the_language(prop, term):
    sentences = number_sentences(prop)
    assert walk(NumberLanguage(sentences, term)) == {s + term for s in sentences}


def test_random_decodes_always_end_in_the_language():
    lang, rng = NumberLanguage(number_sentences(LR), ","), np.random.default_rng(0)
    sentences = set(number_sentences(LR))
    for _ in range(300):
        text = ""
        while not lang.done(text):
            logits = np.zeros(400)
            logits[IDS] = rng.normal(0, 3, len(IDS))
            token = sample(
                logits, lang.allowed(text, IDS, PIECES), rng, Sampling(temperature=1.5, top_k=0, top_p=1, min_p=0)
            )
            text += PIECES[token - 100]
        assert text[:-1] in sentences


def test_sampling_follows_llama_cpp_filters():
    logits = np.array([0.0, 5.0, 1.0, 9.0, 4.9])
    ids = np.array([0, 1, 2, 4])  # token 3 is masked out, however likely
    greedy = Sampling(temperature=0.0)
    assert sample(logits, ids, np.random.default_rng(0), greedy) == 1
    top1 = Sampling(temperature=1.0, top_k=1)
    assert {sample(logits, ids, np.random.default_rng(s), top1) for s in range(50)} == {1}
    # min_p 0.5 keeps tokens at least half as likely as the best: 1 (e^5) and 4 (e^4.9)
    minp = Sampling(temperature=1.0, top_k=0, top_p=1.0, min_p=0.5)
    assert {sample(logits, ids, np.random.default_rng(s), minp) for s in range(200)} == {1, 4}
    # reproducible: the same seed, the same token
    hot = Sampling(temperature=2.0, top_k=0, top_p=1.0, min_p=0.0)
    assert [sample(logits, ids, np.random.default_rng(7), hot) for _ in range(3)] == [
        sample(logits, ids, np.random.default_rng(7), hot)] * 3


def test_repeats_are_kept_out_of_the_last_value():
    avoid = [{"learning_rate": 1e-3, "momentum": 0.9}, {"learning_rate": 1e-3, "momentum": 0.5},
             {"learning_rate": 2e-3, "momentum": 0.1}]
    assert completing(avoid, {"learning_rate": 1e-3}, "momentum") == {0.9, 0.5}
    assert completing(avoid, {}, "learning_rate") == frozenset()  # nothing is a repeat yet
    lang = number_language('{"maximum": 0.99, "minimum": 0, "type": "number"}', "}", frozenset({0.9, 0.5}))
    written = {t[:-1] for t in walk(lang)}
    assert "0.9" not in written and "0.5" not in written and "0.95" in written and "0.91" in written


class FakeLlama:
    """A vocabulary as llama.cpp reports it: special tokens (empty pieces), byte tokens
    repeating characters, a partial UTF-8 byte, quotes and control characters."""

    pieces = [b"", b"<0x2C>", b",", b"1", b"e-", b" the", b'"', b'a"b', b"\n", b"\xe2", b"\xc3\xa9t\xc3\xa9", b"}"]

    def n_vocab(self):
        return len(self.pieces)

    def detokenize(self, ids, special=False):
        return b"," if ids == [1] else self.pieces[ids[0]]  # <0x2C> is a byte token for ','

    def tokenize(self, text, add_bos=False, special=False):
        return [self.pieces.index(text)] if text in self.pieces else [0]


def test_vocabulary_keeps_one_token_per_piece_and_string_safe_tokens(tmp_path, monkeypatch):
    v = Vocabulary.read(FakeLlama())
    assert dict(zip(v.number_pieces, v.number_ids.tolist(), strict=False)) == {",": 2, "1": 3, "e-": 4, "}": 11}
    assert set(v.string_ids.tolist()) == {2, 3, 4, 5, 10, 11, 1}  # no quote, newline, partial byte, special
    assert v.quote_id == 6
    again = Vocabulary.from_json(v.to_json())
    assert again.number_pieces == v.number_pieces and again.quote_id == v.quote_id
    assert np.array_equal(again.number_ids, v.number_ids) and np.array_equal(again.string_ids, v.string_ids)


def test_a_rationale_ends_at_its_first_sentence_not_inside_a_number():
    from tuneloop.agent.decoding import SENTENCE_END

    assert SENTENCE_END.findall("Trial 3 converged fastest.") and SENTENCE_END.findall("It converged. Then")
    assert not SENTENCE_END.findall("learning rate 2.5e-4 with momentum 0.981")
    # a decimal point at the end of the text so far is not yet a sentence's end
    assert not SENTENCE_END.findall("a learning rate of 1e-1 with momentum of 0.")
    assert SENTENCE_END.findall("with momentum of 0.9. ") and SENTENCE_END.findall("momentum 0. Then")
