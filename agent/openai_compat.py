"""ChatOpenAI for any OpenAI-compatible server (OpenAI itself, vLLM, Ollama, llama.cpp's
server): servers differ in the `tool_choice` they accept.

    named     {"type": "function", "function": {"name": ...}}  (OpenAI, vLLM, llama.cpp)
    required  "required"                                       (OpenAI, vLLM; llama.cpp: HTTP 500)
    auto      "auto"                                           (everyone; the model may answer in text)

A forced call with exactly one tool is sent named, the form most servers accept. When a
server rejects the form it was given (an HTTP error naming tool_choice, or any HTTP error
on the session's first call that goes away with the next form), the model steps down
named -> required -> auto at once, not through the retry policy, and keeps the form that
worked for the rest of the session. Each step is reported in the reply's
response_metadata["tool_choice_fallbacks"], which the trace records as a
`tool_choice_fallback` event; every reply says which form it was sent with. Assistant
turns that only call tools are sent with content "" rather than null (llama.cpp's
server refuses null).
"""

from __future__ import annotations

from typing import Any

from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

TOOL_CHOICE_FORMS = ("named", "required", "auto")
REJECTING_STATUS = (400, 422, 500, 501)  # what servers answer a tool_choice they do not take


def rejects_tool_choice(exc: BaseException, first_call: bool) -> bool:
    """Whether `exc` may be the server refusing the tool_choice form (worth the next form)."""
    import openai

    if not isinstance(exc, openai.APIStatusError) or exc.status_code not in REJECTING_STATUS:
        return False
    return first_call or "tool_choice" in str(exc).lower()


def _forced(choice: Any) -> bool:
    return choice == "required" or isinstance(choice, dict)


def choice_in_form(choice: Any, form: str) -> Any:
    """The bound tool_choice re-expressed in `form`; unforced choices pass unchanged."""
    if not _forced(choice) or form == "named":
        return choice
    return "required" if form == "required" else "auto"


class CompatChatOpenAI(ChatOpenAI):
    """ChatOpenAI that names the tool when one is forced and steps down the tool_choice
    forms a server rejects (see the module docstring)."""

    _form: str = PrivateAttr(default="named")
    _settled: bool = PrivateAttr(default=False)  # a call has succeeded: the server took a form
    _explored: bool = PrivateAttr(default=False)  # the forms were tried once on a failing first call
    _pending: list = PrivateAttr(default_factory=list)

    @property
    def tool_choice_form(self) -> str:
        return self._form

    def bind_tools(self, tools, *, tool_choice=None, **kwargs):
        if tool_choice in ("any", "required", True) and len(tools) == 1:
            from langchain_core.utils.function_calling import convert_to_openai_tool

            tool_choice = convert_to_openai_tool(tools[0])["function"]["name"]
        return super().bind_tools(tools, tool_choice=tool_choice, **kwargs)

    def _get_request_payload(self, input_, *, stop=None, **kwargs):
        payload = super()._get_request_payload(input_, stop=stop, **kwargs)
        # An assistant turn that only calls tools carries content null, which the OpenAI
        # API allows and llama-cpp-python's server rejects (HTTP 500, "7 validation
        # errors"); an empty string means the same to both.
        for m in payload.get("messages", ()):
            if m.get("role") == "assistant" and m.get("content") is None:
                m["content"] = ""
        return payload

    def _generate(self, messages, stop=None, run_manager=None, **kwargs):
        requested = kwargs.get("tool_choice")
        first_call = not self._settled and not self._explored
        if not _forced(requested):
            return self._stamp(super()._generate(messages, stop=stop, run_manager=run_manager, **kwargs))
        start_form = self._form
        first_error: BaseException | None = None
        while True:
            try:
                result = super()._generate(messages, stop=stop, run_manager=run_manager,
                                           **(kwargs | {"tool_choice": choice_in_form(requested, self._form)}))
                return self._stamp(result)
            except Exception as e:  # noqa: BLE001 - classified here, re-raised otherwise
                first_error = first_error or e
                i = TOOL_CHOICE_FORMS.index(self._form)
                if i + 1 >= len(TOOL_CHOICE_FORMS) or not rejects_tool_choice(e, first_call):
                    if first_call:  # every form failed: the server is down, not picky; retry as usual
                        self._form, self._pending, self._explored = start_form, [], True
                        raise first_error from None
                    raise
                self._pending.append({"from": self._form, "to": TOOL_CHOICE_FORMS[i + 1],
                                      "error": f"HTTP {getattr(e, 'status_code', '?')}: {str(e)[:200]}"})
                self._form = TOOL_CHOICE_FORMS[i + 1]

    def _stamp(self, result):
        self._settled = True
        meta = result.generations[0].message.response_metadata
        meta["tool_choice_form"] = self._form
        if self._pending:
            meta["tool_choice_fallbacks"], self._pending = self._pending, []
        return result
