"""Decoding speed of a local model behind `tuneloop bench`: timings only, no printing.

Three ways to write the same thing after the same (cached) prompt:
  unconstrained   free text, llama.cpp's own sampler: the model's plain token rate;
  grammar         a proposal's arguments object under llama.cpp's GBNF grammar sampler
                  (agent/gbnf.py object_gbnf: what the embedded model used before the
                  masks), which checks the whole vocabulary at every step;
  token mask      the same object written by agent/decoding.py: keys by us, values
                  sampled under precomputed masks;
and the token mask again with one core kept busy by another process (a busy loop), on
every core's threads and on the threads agent/free_cores.py picks.
Tokens are counted in the text each way produced (tokenized again), so a written key
counts as much as a sampled digit; seconds are wall time per call, prompt cached.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from tuneloop.agent.decoding import Sampling, decode_arguments, lock_for
from tuneloop.agent.gguf import DEFAULT_N_CTX, adapt_threads, embedded_file, format_chat, load_llama, threads_of
from tuneloop.agent.langchain_tools import args_schema
from tuneloop.agent.vocabulary import vocabulary
from tuneloop.tools.gd_space import DEFAULT_SPACE

PROMPT = ("You are tuning gradient descent with momentum on the Rosenbrock function. Propose a learning rate "
          f"in {DEFAULT_SPACE['learning_rate'].range_text()} and a momentum in "
          f"{DEFAULT_SPACE['momentum'].range_text()} as a JSON object.")


@dataclass(frozen=True)
class DecodeRow:
    name: str
    seconds: float  # all calls
    tokens: int  # in the text written, all calls
    sampled: int  # of those, the ones the model chose (a step of the model each)
    calls: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds

    @property
    def sampled_per_s(self) -> float:
        return self.sampled / self.seconds

    @property
    def seconds_per_call(self) -> float:
        return self.seconds / self.calls


def decode_rows(calls: int = 5, n_threads: int | None = None, path: str | None = None,
                busy: bool = True) -> list[DecodeRow]:
    """Time `calls` generations each way on the model (the embedded one by default); with
    `busy`, the token-mask way again while another process keeps one core busy: on every
    core's threads, then on the threads `adapt_threads` picks (a session's default)."""
    from llama_cpp import LlamaGrammar, llama_set_n_threads

    from tuneloop.agent.gbnf import object_gbnf

    path = path or embedded_file()
    llama = load_llama(path, DEFAULT_N_CTX, n_threads)
    vocab = vocabulary(llama, path)
    prompt = format_chat(llama, [{"role": "user", "content": PROMPT}], None)
    props = args_schema(DEFAULT_SPACE)["properties"]
    gbnf = object_gbnf({"type": "object", "properties": props})
    assert gbnf is not None  # a proposal's arguments are two numbers: object_gbnf covers them
    grammar = LlamaGrammar.from_string(gbnf, verbose=False)

    def count(text: str) -> int:
        return len(llama.tokenize(text.encode(), add_bos=False, special=False))

    def timed(name: str, write, before=lambda: None) -> DecodeRow:
        write(-1)  # warm: the prompt into the KV cache, the grammar compiled
        t0, tokens, sampled = time.perf_counter(), 0, 0
        for i in range(calls):
            before()
            text, n = write(i)
            tokens, sampled = tokens + count(text), sampled + n
        return DecodeRow(name, time.perf_counter() - t0, tokens, sampled, calls)

    s = Sampling()  # the same sampling every way

    def completion(i: int, **kw) -> tuple[str, int]:
        with lock_for(llama):
            out = llama.create_completion(prompt, seed=1000 + i, temperature=s.temperature, top_k=s.top_k,
                                          top_p=s.top_p, min_p=s.min_p, **kw)
        return out["choices"][0]["text"], int(out["usage"]["completion_tokens"])

    def masked(i: int) -> tuple[str, int]:
        text, _, sampled, _ = decode_arguments(llama, vocab, prompt, props, 1000 + i, s, max_tokens=64)
        return text, sampled

    rows = [
        timed("unconstrained", lambda i: completion(i, max_tokens=24)),
        timed("grammar (llama.cpp GBNF)", lambda i: completion(i, max_tokens=64, grammar=grammar)),
        timed("token mask (tuneloop)", masked),
    ]
    if busy and (os.cpu_count() or 1) > 1:
        every = threads_of(n_threads)
        loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process: one core busy
        try:
            time.sleep(0.5)
            llama_set_n_threads(llama.ctx, every, every)
            rows.append(timed(f"token mask, one core busy, {every} threads", masked))
            rows.append(timed("token mask, one core busy, threads adapted", masked, lambda: adapt_threads(llama)))
        finally:
            loop.kill()
            loop.wait()
            llama_set_n_threads(llama.ctx, every, every)
    return rows


def rows_json(rows: list[DecodeRow]) -> list[dict]:
    ref = rows[0].tokens_per_s
    ref_sampled = rows[0].sampled_per_s
    return [dict(name=r.name, seconds=r.seconds, calls=r.calls, tokens=r.tokens, sampled=r.sampled,
                 tokens_per_s=r.tokens_per_s, sampled_per_s=r.sampled_per_s, seconds_per_call=r.seconds_per_call,
                 ratio_to_unconstrained=r.tokens_per_s / ref, sampled_ratio=r.sampled_per_s / ref_sampled)
            for r in rows]


if __name__ == "__main__":  # pragma: no cover - a quick look without the CLI
    print(json.dumps(rows_json(decode_rows()), indent=2))
