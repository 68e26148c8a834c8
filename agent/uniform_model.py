"""The null model, `--model uniform`: a chat model that reads nothing and answers every
call with a tool call whose values are drawn uniformly, seeded, from the very language
the embedded model writes in (agent/gbnf.py `value_sentences`: the same numbers, integers
and choices). An LLM method run with it is that method's ablation: whatever it does
better than this, the LLM did.

    >>> from langchain_core.messages import HumanMessage
    >>> tool = {"type": "function", "function": {"name": "run", "parameters": {"type": "object", "properties": {
    ...     "momentum": {"type": "number", "minimum": 0, "maximum": 0.99}, "nesterov": {"enum": [False, True]}}}}}
    >>> m = UniformChatModel(seed=0).bind_tools([tool], tool_choice="any")
    >>> call = m.invoke([HumanMessage("go")]).tool_calls[0]
    >>> call["name"], sorted(call["args"]), 0 <= call["args"]["momentum"] <= 0.99
    ('run', ['momentum', 'nesterov'], True)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from tuneloop.agent.gbnf import is_free_string, value_sentences

RATIONALE = "drawn uniformly at random (the null model: no LLM read the trials)"
AVOID_TRIES = 20  # redraws to miss a configuration already tried


class UniformChatModel(BaseChatModel):
    """Seeded uniform answers in the embedded model's value language; no text, no tokens."""

    seed: int = 0
    _rng: np.random.Generator = PrivateAttr()
    _calls: int = PrivateAttr(default=0)

    def model_post_init(self, context: Any) -> None:
        self._rng = np.random.default_rng([int(self.seed), 0x0DD])

    @property
    def _llm_type(self) -> str:
        return "uniform"  # LangChain's type tag (the --model spec is agent/models.py's UNIFORM_MODEL)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):  # type: ignore[override]
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], tool_choice=tool_choice, **kwargs)

    def draw(self, props: dict[str, Any]) -> dict[str, Any]:
        """One argument object: each value uniformly among its language's sentences."""
        out: dict[str, Any] = {}
        for name, prop in props.items():
            sentences = value_sentences(prop) if isinstance(prop, dict) else None
            if sentences:
                out[name] = json.loads(sentences[int(self._rng.integers(len(sentences)))])
            elif isinstance(prop, dict) and is_free_string(prop):
                out[name] = RATIONALE
            else:  # an unbounded number: no language to draw from; a plain unit value
                out[name] = float(self._rng.uniform())
        return out

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, tools: list[dict] | None = None,
                  tool_choice: Any = None, avoid: Sequence[dict] = (), **kwargs: Any) -> ChatResult:
        self._calls += 1
        if not tools:
            message = AIMessage(content=RATIONALE)
        else:
            fn = tools[0]["function"]  # the run tool while budget is left, FinalAnswer after
            props = (fn.get("parameters") or {}).get("properties") or {}
            args = self.draw(props)
            for _ in range(AVOID_TRIES):  # as the embedded model, it does not write a tried configuration
                if not any(all(a.get(k) == args.get(k) for k in a) for a in avoid):
                    break
                args = self.draw(props)
            message = AIMessage(content="", tool_calls=[{"name": fn["name"], "args": args,
                                                         "id": f"call_uniform_{self._calls}"}])
        message.usage_metadata = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        return ChatResult(generations=[ChatGeneration(message=message)])
