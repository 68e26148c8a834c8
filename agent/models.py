"""Chat-model factory: `local` (embedded, offline), `openai:<model>`, and any
OpenAI-compatible server (`openai:<model>` with a base URL).

Faults: ChatOpenAI's own retries are switched off (max_retries=0) so that one policy
applies everywhere: the RetryMiddleware in agent/middleware.py retries transient faults
with tenacity and classifies permanent ones with `classify_error` below.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from tuneloop.agent.gguf import DEFAULT_N_CTX, EMBEDDED_NAME, is_local

if TYPE_CHECKING:  # LangChain takes a second to import: not needed to read settings
    from langchain_core.language_models.chat_models import BaseChatModel

from tuneloop.tools.errors import TuneloopError, UserError

# the null model's spec (--model uniform), here below LangChain so that plots and arms can name it
UNIFORM_MODEL = "uniform"


class ModelSettings(BaseModel):
    """Model choice and sampling settings (recorded in the manifest; never the key)."""

    model: str = "local"
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=200, ge=16, le=8192)
    seed: int = 0
    timeout_s: float = Field(default=60.0, gt=0)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    retry_attempts: int = Field(default=5, ge=1, le=20)
    retry_initial_s: float = Field(default=1.0, gt=0)
    retry_total_s: float = Field(default=120.0, gt=0)
    n_threads: int | None = Field(default=None, ge=1)  # local models only; None: every core
    n_ctx: int = Field(default=DEFAULT_N_CTX, ge=512, le=131072)  # local models only: context tokens
    rpm: float | None = Field(default=None, gt=0)  # requests per minute, shared by a process's sessions
    tpm: float | None = Field(default=None, gt=0)  # tokens per minute, likewise
    price_in: float | None = Field(default=None, ge=0)  # USD per 1M input tokens (else the built-in table)
    price_out: float | None = Field(default=None, ge=0)  # USD per 1M output tokens


ModelFactory = Callable[[ModelSettings], "BaseChatModel"]
"""Makes the chat model a session uses from its settings: `make_chat_model`, or a test's."""


class ModelError(TuneloopError):
    """A model fault that retrying will not fix; the message says what to do."""


def api_key_for(settings: ModelSettings) -> str | None:
    return os.environ.get(settings.api_key_env) or None


def check_settings(settings: ModelSettings) -> None:
    """What `make_chat_model` would refuse, found without building the model (no load, no
    network): an unknown spec, a GGUF file that is not there, a missing API key. A
    UserError says what is wrong."""
    spec = settings.model.strip()
    if is_local(spec):
        local_model_path(spec)
        return
    if spec == UNIFORM_MODEL:  # the null model: nothing to check
        return
    if spec.startswith("openai:") and len(spec) > len("openai:"):
        if api_key_for(settings) is None and (settings.base_url is None or settings.api_key_env != "OPENAI_API_KEY"):
            raise UserError(f"{settings.api_key_env} is not set: export it with your API key"
                            + ("" if settings.base_url else " (or pass --base-url for a local server)"))
        return
    raise UserError(f"unknown model {spec!r}: use 'local', 'gguf:PATH' (a GGUF file), 'openai:<model>' "
                    "(e.g. openai:gpt-4o-mini) or 'uniform' (the null model: uniform valid answers, no LLM)")


def make_chat_model(settings: ModelSettings) -> BaseChatModel:
    check_settings(settings)
    spec = settings.model.strip()
    if is_local(spec):
        path = local_model_path(spec)
        from tuneloop.agent.local_model import LocalChatModel

        return LocalChatModel(model_path=path, temperature=settings.temperature, max_tokens=settings.max_tokens,
                              seed=settings.seed, n_threads=settings.n_threads, n_ctx=settings.n_ctx,
                              model_name=spec if path else EMBEDDED_NAME)
    if spec == UNIFORM_MODEL:
        from tuneloop.agent.uniform_model import UniformChatModel

        return UniformChatModel(seed=settings.seed)
    if spec.startswith("openai:") and len(spec) > len("openai:"):
        name = spec.split(":", 1)[1]
        # check_settings let a missing key through only for a local server: many take no key
        key = api_key_for(settings) or "not-needed"
        from tuneloop.agent.openai_compat import CompatChatOpenAI

        kwargs: dict[str, Any] = dict(model=name, api_key=key, temperature=settings.temperature,
                                      max_tokens=settings.max_tokens, seed=settings.seed,
                                      timeout=settings.timeout_s, max_retries=0)
        if settings.base_url:
            kwargs["base_url"] = settings.base_url
        return CompatChatOpenAI(**kwargs)
    raise AssertionError(f"check_settings accepted {spec!r}")  # unreachable: every other spec was refused


def local_model_path(spec: str) -> str | None:
    """The GGUF file of a `gguf:PATH` spec, checked (a UserError says what is wrong);
    None for the embedded model."""
    if spec == "local":
        return None
    from tuneloop.agent.gguf import check_file

    return check_file(spec.split(":", 1)[1])


def classify_error(exc: BaseException) -> tuple[bool, str]:
    """(transient?, message). Transient: timeouts, dropped connections, 429, 5xx."""
    classified = _classify_openai(exc)
    if classified is not None:
        return classified
    if isinstance(exc, (TimeoutError, ConnectionError)):
        return True, f"{type(exc).__name__}: {exc}"
    return False, f"{type(exc).__name__}: {_short(exc)}"


def _classify_openai(exc: BaseException) -> tuple[bool, str] | None:
    """classify_error for the OpenAI client's errors; None for any other error (or when
    openai is not installed)."""
    try:
        import openai
    except ImportError:  # pragma: no cover - langchain-openai depends on openai
        return None
    if isinstance(exc, openai.AuthenticationError):
        return False, "the API rejected the key (401): check the key in your API-key variable"
    if isinstance(exc, openai.PermissionDeniedError):
        return False, "the API refused access (403): this key may not use this model"
    if isinstance(exc, openai.NotFoundError):
        return False, "the API does not know this model or URL (404): check --model and --base-url"
    if isinstance(exc, openai.BadRequestError):
        return False, f"the API rejected the request (400): {_short(exc)}"
    if isinstance(exc, openai.APITimeoutError):
        return True, "APITimeoutError: the request timed out (raise --timeout, or check the server)"
    if isinstance(exc, openai.APIConnectionError):
        url = getattr(getattr(exc, "request", None), "url", None)
        where = f"{url.scheme}://{url.host}:{url.port}" if url is not None else "the server"
        return (
            True,
            f"cannot reach {where} (connection refused or closed): is the server running, and is --base-url right?",
        )
    if isinstance(exc, (openai.RateLimitError, openai.InternalServerError)):
        return True, f"{type(exc).__name__}: {_short(exc)}"
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code == 429, f"HTTP {exc.status_code}: {_short(exc)}"
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]
