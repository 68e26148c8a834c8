"""Cross-cutting agent concerns as LangChain middleware: what the model sees each turn
(budget, history, when to give the final answer) and retries of transient model faults."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langchain.agents.middleware.types import hook_config
from langchain_core.messages import AIMessage, HumanMessage
from tenacity import Retrying, retry_if_exception, stop_after_attempt, stop_after_delay, wait_exponential_jitter

from tuneloop.agent.models import ModelError, classify_error
from tuneloop.agent.prompt_state import tool_name
from tuneloop.tools.trials import Evaluator
from tuneloop.tools.usage import Usage

# a local model's next configuration stays this share of each number's range away from
# every tried one: a 1/50 grid (0.02 of a momentum in [0, 0.99], 0.06 of a decade on a
# three-decade learning rate). Measured in docs/sessions.md.
NEAR_REPEAT_RADIUS = 0.02


class TurnMiddleware(AgentMiddleware):
    """Shapes each model call from the Evaluator's state, not from the model's memory:

    - while budget is left, only run_momentum_gd is offered (tool choice forced), and the
      template's per-turn part (trials, incumbent, budget left) is appended;
    - once the budget is spent, only the FinalAnswer tool is offered, with the template's
      final message;
    - after a repeated or invalid proposal the temperature rises (by `repeat_heat` per
      proposal in a row that was not charged, capped at 1.5), so a small model that
      repeats itself moves on;
    - a reply with no tool call while budget is left is answered with a reminder;
    - with `compact=True` (the small embedded model) the conversation is not sent at all:
      the per-turn message alone carries the state (trials, incumbent, budget), after the
      system prompt. A 270M model otherwise copies its own earlier calls from the
      context, and every token sent costs it about 4 ms to read, so a stable system
      prompt (reused from llama.cpp's cache) and one fresh message are all it gets;
    - with `avoid_repeats=True` (the embedded model, whose decoder can honour it) every
      configuration tried so far is passed to the model as `avoid`, and its constrained
      decoder does not complete one of them: a repeat costs a model call and teaches
      nothing; nor, with `avoid_radius` > 0, a near-repeat (within that share of each
      number's range of a tried configuration, agent/near_repeats.py).
    """

    def __init__(self, evaluator: Evaluator, render_turn: Callable[[], str], render_final: Callable[[], str],
                 base_temperature: float, repeat_heat: float = 0.3, max_temperature: float = 1.5,
                 compact: bool = False, avoid_repeats: bool = False, avoid_radius: float = 0.0,
                 usage: Usage | None = None) -> None:
        super().__init__()
        self.ev = evaluator
        self.usage = usage
        self.render_turn = render_turn
        self.render_final = render_final
        self.base_temperature = base_temperature
        self.repeat_heat = repeat_heat
        self.max_temperature = max_temperature
        self.compact = compact
        self.avoid_repeats = avoid_repeats
        self.avoid_radius = avoid_radius

    def wrap_model_call(self, request, handler):
        messages = [] if self.compact else list(request.messages)
        if self.ev.exhausted:
            request = request.override(tools=[], messages=[*messages, HumanMessage(self.render_final())])
        else:
            settings = dict(request.model_settings)
            heat = self.ev.uncharged_streak
            if heat:
                settings["temperature"] = min(self.max_temperature, self.base_temperature + self.repeat_heat * heat)
            if self.avoid_repeats:
                settings["avoid"] = self.ev.known_params
                if self.avoid_radius > 0:
                    settings["avoid_radius"] = self.avoid_radius
            request = request.override(
                response_format=None, tool_choice="any", model_settings=settings,
                messages=[*messages, HumanMessage(self.render_turn())])
        return handler(request)

    @hook_config(can_jump_to=["model"])
    def after_model(self, state, runtime) -> dict[str, Any] | None:
        last = state["messages"][-1] if state.get("messages") else None
        if isinstance(last, AIMessage) and not last.tool_calls and not self.ev.exhausted:
            if self.usage is not None:
                self.usage.text_replies += 1  # a turn that proposed nothing (a server under "auto")
            return {"messages": [HumanMessage(
                f"You have {self.ev.budget_left} evaluations left. Call {tool_name(self.ev)} now.")],
                "jump_to": "model"}
        return None


class SessionCancelled(KeyboardInterrupt):
    """Raised before a model call once the session was asked to stop: it ends as
    interrupted, exactly like Ctrl-C, with its trace resumable."""


class CancelMiddleware(AgentMiddleware):
    """Stops the session before its next model call once `should_stop()` says so (the
    service's cancel button). A KeyboardInterrupt, so no retry policy catches it."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        super().__init__()
        self.should_stop = should_stop

    def wrap_model_call(self, request, handler):
        if self.should_stop():
            raise SessionCancelled("cancelled")
        return handler(request)


class RetryMiddleware(AgentMiddleware):
    """Retries transient model faults (timeouts, dropped connections, 429, 5xx) with
    exponential backoff and jitter, bounded in attempts and in total time; a 429's
    Retry-After is honoured. Each retry is a `retry` trace event and its wait is counted
    apart (Usage.retry_wait_s). Permanent faults raise ModelError at once.

    `sleep` waits between attempts: `time.sleep` unless given, or unless the class attribute
    is replaced (tests record the waits instead of sleeping them)."""

    sleep: Callable[[float], None] = staticmethod(time.sleep)

    def __init__(self, emit: Callable[..., None], usage: Usage | None = None, attempts: int = 5,
                 total_s: float = 120.0, initial_s: float = 1.0, max_wait_s: float = 20.0,
                 sleep: Callable[[float], None] | None = None) -> None:
        super().__init__()
        if sleep is not None:
            self.sleep = sleep
        self.emit = emit
        self.usage = usage
        self.attempts = attempts
        self.total_s = total_s
        self.initial_s = initial_s
        self.max_wait_s = max_wait_s

    def wrap_model_call(self, request, handler):
        def before_sleep(rs) -> None:
            exc = rs.outcome.exception()
            if self.usage is not None:
                self.usage.retries += 1
                self.usage.retry_wait_s += rs.next_action.sleep
            self.emit("retry", attempt=rs.attempt_number, wait_s=round(rs.next_action.sleep, 3),
                      error=classify_error(exc)[1])

        backoff = wait_exponential_jitter(multiplier=self.initial_s, max=self.max_wait_s, jitter=self.initial_s)

        def wait(rs) -> float:
            asked = retry_after_s(rs.outcome.exception())
            return min(asked, self.total_s) if asked is not None else backoff(rs)

        retrying = Retrying(
            retry=retry_if_exception(lambda e: classify_error(e)[0]),
            stop=stop_after_attempt(self.attempts) | stop_after_delay(self.total_s),
            wait=wait,
            before_sleep=before_sleep,
            reraise=True,
            sleep=self.sleep,
        )
        try:
            return retrying(handler, request)
        except ModelError:
            raise
        except Exception as e:  # noqa: BLE001 - classified and re-raised with a clear message
            transient, msg = classify_error(e)
            if transient:
                raise ModelError(f"model call failed after {self.attempts} attempts: {msg}") from e
            raise ModelError(msg) from e


def retry_after_s(exc: BaseException | None) -> float | None:
    """The seconds a 429's Retry-After header asks for (None if it asks nothing)."""
    response = getattr(exc, "response", None)
    if getattr(exc, "status_code", None) != 429 or response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare from APIs; fall back to the backoff
        return None
