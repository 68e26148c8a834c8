"""Local models run by llama.cpp, offline: the embedded Gemma 3 270M (GGUF, Q4_K_M) by
default, or any GGUF file (`--model gguf:PATH`, see agent/gguf.py).

LangChain's ChatLlamaCpp cannot serve `create_agent` (its bind_tools rejects the "any"
tool choice), so this is a small BaseChatModel of our own:
  - `bind_tools` records the tools (OpenAI tool schemas) and the tool choice;
  - when one tool must be called (every proposal, the final answer), its name and keys
    are written by us and the model chooses only the values, under token masks
    (agent/decoding.py): a bounded number, an integer or one of an enum's choices from
    the finite languages of agent/gbnf.py, or a string's text, so even a 270M model
    always emits a well-formed call inside the bounds and choices, at about the
    unconstrained token rate. With `avoid` (passed by TurnMiddleware) it does not
    complete a configuration already tried (unless every value of the last one was
    tried with the others);
  - a free choice between tools and text goes through llama.cpp's grammar sampler;
  - token usage goes into usage_metadata, with the prompt tokens reused from the KV
    cache as input_token_details.cache_read;
  - sampling is seeded from (seed, the prompt), so a session is reproducible.
The embedded GGUF has no chat template: Gemma's turn format, with the system prompt
folded into the first user turn (Gemma has no system role). A user's GGUF brings its own.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from tuneloop.agent.decoding import Sampling, decode_arguments, lock_for, value_supported
from tuneloop.agent.gbnf import object_gbnf, tool_call_schema
from tuneloop.agent.gguf import (
    DEFAULT_N_CTX,
    EMBEDDED_NAME,
    adapt_threads,
    embedded_file,
    file_template,
    fold_system,
    format_chat,
    load_llama,
)
from tuneloop.agent.value_probe import FLOOR, call_distributions
from tuneloop.agent.vocabulary import vocabulary


@functools.lru_cache(maxsize=32)
def grammar_for(schema_json: str):
    """GBNF for a JSON schema. A flat object of numbers, integers, enums, booleans and
    strings (every tool we bind) gets our own grammar, which writes each value in the
    language the token masks use (agent/gbnf.py value_sentences), so bounds are enforced
    (llama.cpp's converter ignores minimum/maximum); anything else goes to llama.cpp's."""
    from llama_cpp import LlamaGrammar

    schema = json.loads(schema_json)
    gbnf = object_gbnf(schema)
    if gbnf is not None:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


def _tools_preamble(tools: list[dict]) -> str:
    lines = ["Reply with one JSON object that calls a tool: {\"name\": <tool>, \"arguments\": {...}}.",
             "Tools:"]
    for t in tools:
        fn = t["function"]
        args = ", ".join(f"{k}: {v.get('description', v.get('type', ''))}"
                         for k, v in (fn.get("parameters") or {}).get("properties", {}).items())
        lines.append(f"- {fn['name']}({args}): {fn.get('description', '')}")
    return "\n".join(lines)


def to_llama_messages(messages: Sequence[BaseMessage], tools: list[dict]) -> list[dict]:
    """LangChain messages -> alternating Gemma user/model turns."""
    system = "\n\n".join(str(m.content) for m in messages if isinstance(m, SystemMessage))
    if tools:
        system = (system + "\n\n" + _tools_preamble(tools)).strip()
    out: list[dict] = []

    def add(role: str, text: str) -> None:
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + text
        else:
            out.append({"role": role, "content": text})

    for m in messages:
        if isinstance(m, SystemMessage):
            continue
        if isinstance(m, AIMessage):
            if m.tool_calls:
                tc = m.tool_calls[0]
                add("assistant", json.dumps({"name": tc["name"], "arguments": tc["args"]}))
            else:
                add("assistant", str(m.content))
        elif isinstance(m, ToolMessage):
            add("user", f"Result of {m.name or 'the tool'}: {m.content}")
        else:
            add("user", str(m.content))
    if system:
        if out and out[0]["role"] == "user":
            out[0]["content"] = fold_system(system, out[0]["content"])
        else:
            out.insert(0, {"role": "user", "content": system})
    if out and out[-1]["role"] == "assistant":
        add("user", "Continue.")
    return out


class LocalChatModel(BaseChatModel):
    """A GGUF model through llama.cpp (the embedded Gemma 3 270M when model_path is None),
    with constrained tool calls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model_path: str | None = None
    temperature: float = 1.0
    max_tokens: int = 200
    seed: int = 0
    n_ctx: int = DEFAULT_N_CTX
    n_threads: int | None = None
    top_p: float = Sampling.top_p
    model_name: str = Field(default=EMBEDDED_NAME)
    _n_calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "tuneloop-local-llama-cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_name, "temperature": self.temperature, "seed": self.seed,
                "max_tokens": self.max_tokens}

    def _path(self) -> str:
        return self.model_path or embedded_file()

    def _template(self, llama) -> str | None:
        """The chat template: a user's GGUF must carry one; the embedded one has none."""
        return None if self.model_path is None else file_template(llama, self.model_path)

    def bind_tools(self, tools: Sequence[Any], *, tool_choice: Any = None, **kwargs: Any):
        formatted = [convert_to_openai_tool(t) for t in tools]
        return self.bind(tools=formatted, tool_choice=tool_choice, **kwargs)

    def _seed_for(self, chat: list[dict], temperature: float) -> int:
        digest = hashlib.sha256(json.dumps([chat, temperature], sort_keys=True).encode()).digest()
        return (int.from_bytes(digest[:4], "little") ^ self.seed) & 0x7FFFFFFF

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        tools: list[dict] | None = None,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        tools = tools or []
        llama = load_llama(self._path(), self.n_ctx, self.n_threads)
        if self.n_threads is None:  # no share given: the cores free now (a share is kept as given)
            adapt_threads(llama)
        forced = tool_choice in ("any", "required") or isinstance(tool_choice, dict) or (
            isinstance(tool_choice, str) and tool_choice not in ("auto", "none"))
        prefix = ""
        if tools and forced and len(tools) == 1:
            # One tool, and a call is required: its name is known, so we write it into the
            # reply and the model writes only the arguments. The prompt then needs no tool
            # list, so it is the same for every call (and read once, from the KV cache).
            fn = tools[0]["function"]
            prefix = f'{{"name": "{fn["name"]}", "arguments": '
            schema = tool_call_schema(tools, allow_text=False)["properties"]["arguments"]
        else:
            schema = tool_call_schema(tools, allow_text=not forced) if tools else None
        chat = to_llama_messages(messages, [] if prefix else tools)
        prompt = format_chat(llama, chat, self._template(llama))
        temperature = float(kwargs.get("temperature", self.temperature))
        max_tokens = int(kwargs.get("max_tokens", self.max_tokens))
        # Above the base temperature (TurnMiddleware heats up after repeats) also lift the
        # top-p / min-p filters: they act before temperature, so on a peaked distribution
        # they would otherwise keep proposing the same digits however hot the sampling.
        explore = temperature > self.temperature
        sampling = Sampling(temperature=temperature, top_p=self.top_p)
        if explore:
            sampling = dataclasses.replace(sampling, top_k=0, top_p=1.0, min_p=0.0)
        seed = self._seed_for(chat, temperature)
        props = (schema or {}).get("properties") or {}
        if prefix and props and all(value_supported(p) for p in props.values()):
            # the reply is the arguments object alone (the name costs prompt tokens, and
            # is known): the message gets the name back here
            args, tokens, out_tok, finish = decode_arguments(
                llama, vocabulary(llama, self._path()), prompt, props, seed, sampling, max_tokens,
                avoid=kwargs.get("avoid") or [], avoid_radius=float(kwargs.get("avoid_radius") or 0.0))
            text = prefix + args + "}"
            in_tok, cached = tokens.sent, tokens.cached
        else:  # free choice between tools and text, or a schema the masks do not cover
            with lock_for(llama):
                out = llama.create_completion(
                    prompt + prefix, seed=seed, temperature=sampling.temperature, top_p=sampling.top_p,
                    min_p=sampling.min_p, top_k=sampling.top_k, max_tokens=max_tokens,
                    stop=["<end_of_turn>", *(stop or [])],
                    grammar=grammar_for(json.dumps(schema, sort_keys=True)) if schema else None)
            text = prefix + (out["choices"][0].get("text") or "") + ("}" if prefix else "")
            usage = out.get("usage") or {}
            in_tok, out_tok, cached = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)), 0
            finish = out["choices"][0].get("finish_reason")
        self._n_calls += 1
        message = self._to_message(text, tools)
        message.usage_metadata = {"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok,
                                  "input_token_details": {"cache_read": cached}}
        message.response_metadata = {"model_name": self.model_name, "finish_reason": finish}
        return ChatResult(generations=[ChatGeneration(message=message)])

    def argument_distributions(self, messages: Sequence[BaseMessage], tool: Any, floor: float = FLOOR,
                               given: dict[str, Any] | None = None) -> dict[str, list[tuple[str, float]]]:
        """What this model would write for each argument of a forced call of `tool` after
        `messages`, as probabilities (agent/value_probe.py), on the very prompt `_generate`
        gives the decoder; before the avoid list and any raised temperature. `given`: the
        values of earlier arguments to condition later ones on (else their modes)."""
        llama = load_llama(self._path(), self.n_ctx, self.n_threads)
        schema = tool_call_schema([convert_to_openai_tool(tool)], allow_text=False)["properties"]["arguments"]
        prompt = format_chat(llama, to_llama_messages(messages, []), self._template(llama))
        return call_distributions(llama, vocabulary(llama, self._path()), prompt, schema.get("properties") or {}, floor,
                                  given)

    def _to_message(self, text: str, tools: list[dict]) -> AIMessage:
        names = {t["function"]["name"] for t in tools}
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            return AIMessage(content=text)  # cut off at max_tokens: shown to the agent as text
        if isinstance(obj, dict) and obj.get("name") in names and isinstance(obj.get("arguments"), dict):
            self_id = f"call_{self._n_calls}_{hashlib.sha1(text.encode()).hexdigest()[:8]}"
            return AIMessage(content="", tool_calls=[{"name": obj["name"], "args": obj["arguments"], "id": self_id}])
        if isinstance(obj, dict) and isinstance(obj.get("answer"), str):
            return AIMessage(content=obj["answer"])
        return AIMessage(content=text)

