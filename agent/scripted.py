"""A chat model that answers from a script: the replay of a recorded session, and the
test double of agent logic. One class for both, so a replay exercises exactly the code
path the tests do.

    >>> from langchain_core.messages import HumanMessage
    >>> m = ScriptedChatModel(script=[{"name": "run_momentum_gd", "args": {"learning_rate": 1e-3, "momentum": 0.9}}])
    >>> m.invoke([HumanMessage("go")]).tool_calls[0]["args"]
    {'learning_rate': 0.001, 'momentum': 0.9}
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import PrivateAttr

from tuneloop.tools.errors import TuneloopError


class ScriptExhausted(TuneloopError, RuntimeError):
    """A strict script was asked for more replies than it holds (a replay diverged)."""


class ScriptedChatModel(BaseChatModel):
    """Replies from a script, in order. Each item is:

    - an AIMessage (a recorded reply, usage included), sent as it is;
    - a tool call dict {"name", "args"}, sent as an AIMessage with that call;
    - a str, sent as plain text;
    - a callable(messages, {"tools": bound tool names, **kwargs}) returning one of the above.

    After the script ends the last item repeats, or, with `strict=True` (replay),
    ScriptExhausted is raised. Every bind_tools call is recorded in `bindings`.
    """

    script: list[Any]
    strict: bool = False
    _i: int = PrivateAttr(default=0)
    _seen: list = PrivateAttr(default_factory=list)
    _tools: list = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        from langchain_core.utils.function_calling import convert_to_openai_tool

        names = [convert_to_openai_tool(t)["function"]["name"] for t in tools]
        self._seen.append({"tools": names, "tool_choice": tool_choice, **kwargs})
        self._tools = names
        return self

    @property
    def bindings(self) -> list[dict]:
        return self._seen

    @property
    def calls_made(self) -> int:
        return self._i

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        if self._i >= len(self.script) and (self.strict or not self.script):
            raise ScriptExhausted(f"the session asked for model call {self._i + 1}, "
                                  f"but the script holds only {len(self.script)}")
        item = self.script[min(self._i, len(self.script) - 1)]
        self._i += 1
        if callable(item):
            item = item(messages, {"tools": self._tools, **kwargs})
        if isinstance(item, AIMessage):
            return ChatResult(generations=[ChatGeneration(message=item.model_copy(deep=True))])
        if isinstance(item, str):
            msg = AIMessage(content=item)
        else:
            msg = AIMessage(content="", tool_calls=[{**item, "id": f"call_{self._i}"}])
        n_in = 10 * len(messages)  # a made-up but deterministic count, so usage is visible
        msg.usage_metadata = {"input_tokens": n_in, "output_tokens": 7, "total_tokens": n_in + 7}
        return ChatResult(generations=[ChatGeneration(message=msg)])
