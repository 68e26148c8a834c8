"""What the embedded model would write, as probabilities: each value of a tool call under
the same token masks the decoder samples from (agent/decoding.py), so a habit such as
"proposes the lower bound" can be traced to the digit where it is decided.

`value_distribution` walks the value's language token by token from the model's
probabilities (softmax of the allowed tokens' logits, temperature 1, before top-k/p
filters), keeping every branch above `floor`; `call_distributions` does so for each
argument in turn, the earlier ones fixed at their most probable value (the mode).
`tuneloop trace tokens RUN --trial K` shows them for a recorded session's call.
"""

from __future__ import annotations

import json
from typing import Any

from tuneloop.agent.decoding import ConstrainedDecoder, Language, Sampling, lock_for
from tuneloop.agent.gbnf import is_free_string
from tuneloop.agent.vocabulary import Vocabulary

FLOOR = 0.01  # branches below this probability are not followed


def value_distribution(llama: Any, vocab: Vocabulary, prompt: str, prefix: str, lang: Language,
                       floor: float = FLOOR) -> list[tuple[str, float]]:
    """Every sentence of `lang` the model writes after `prompt` + `prefix` with probability
    >= `floor`, most probable first (the mass below `floor` is left out, so the sum may be
    below 1)."""
    out: dict[str, float] = {}
    frontier: list[tuple[str, float]] = [("", 1.0)]
    with lock_for(llama):
        while frontier:
            text, p = frontier.pop()
            if lang.done(text):
                out[text[: -len(lang.terminator)]] = out.get(text[: -len(lang.terminator)], 0.0) + p
                continue
            ids = lang.allowed(text, vocab.number_ids, vocab.number_pieces)
            if len(ids) == 0:
                continue
            decoder = ConstrainedDecoder(llama, vocab, Sampling(), 0, prompt)
            decoder.write(prefix + text)
            probs = decoder.probabilities(ids) if len(ids) > 1 else [1.0]
            for token, q in zip(ids, probs, strict=True):
                if p * q >= floor:
                    frontier.append((text + llama.detokenize([int(token)]).decode("utf-8", "replace"), p * float(q)))
    return sorted(out.items(), key=lambda kv: -kv[1])


def call_distributions(llama: Any, vocab: Vocabulary, prompt: str, props: dict[str, dict],
                       floor: float = FLOOR, given: dict[str, Any] | None = None) -> dict[str, list[tuple[str, float]]]:
    """Per argument of a tool call (free strings skipped), the distribution of its value,
    the arguments before it fixed at the values `given` (what a recorded call wrote), else
    at their modes, written as decode_arguments writes them."""
    decoder = ConstrainedDecoder(llama, vocab, Sampling(), 0, prompt)
    prefix, out = "{", {}
    items = [(k, p) for k, p in props.items() if not is_free_string(p)]
    for i, (name, prop) in enumerate(items):
        prefix += f'"{name}": '
        last = i == len(items) - 1
        lang = decoder.language(prop, "}" if last else ",")
        dist = value_distribution(llama, vocab, prompt, prefix, lang, floor)
        out[name] = dist
        if not dist:
            break
        chosen = dist[0][0] if given is None or name not in given else _sentence(lang, given[name])
        prefix += chosen + ("" if last else ", ")
    return out


def _sentence(lang: Language, value: Any) -> str:
    """How the decoder wrote `value` (a recorded argument): its sentence in the language
    (1e-2 for 0.01), found by walking nothing but the value's JSON when no sentence matches."""
    for text in getattr(lang, "prefixes", ()):
        if text.endswith(lang.terminator) and json.loads(text[: -len(lang.terminator)]) == value:
            return text[: -len(lang.terminator)]
    return json.dumps(value)
