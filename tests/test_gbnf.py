"""The embedded model's grammars and message formatting: pure text, no llama.cpp needed."""

import re

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from agent.gbnf import object_gbnf, tool_call_schema
from agent.local_model import to_llama_messages

SCHEMA = {"type": "object", "properties": {
    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "momentum": {"type": "number", "minimum": 0, "exclusiveMaximum": 1}}}


def test_bounds_become_grammar():
    g = object_gbnf(SCHEMA)
    # learning_rate in (0, 1]: decimals in (0, 1) or "1", never "0"; momentum in [0, 1): "0" but not "1"
    lr, mom = re.findall(r'\(("0\." \[0-9\]\{0,6\} \[1-9\](?: \| "[01]")*)\)', g)
    assert lr == '"0." [0-9]{0,6} [1-9] | "1"'
    assert mom == '"0." [0-9]{0,6} [1-9] | "0"'
    assert g.startswith('root ::= "{\\"learning_rate\\": "') and g.endswith('"}"')


def test_unbounded_or_non_flat_schemas_are_left_to_llama_cpp():
    assert object_gbnf({"type": "object", "properties": {"x": {"type": "array"}}}) is None
    g = object_gbnf({"type": "object", "properties": {"x": {"type": "number"}}})
    assert '[0-9]{1,12}' in g  # a plain JSON number, digit runs capped


def test_tool_call_schema_forces_one_of_the_tools():
    tools = [{"function": {"name": "run_momentum_gd", "parameters": SCHEMA}}]
    forced = tool_call_schema(tools, allow_text=False)
    assert forced["properties"]["name"] == {"const": "run_momentum_gd"}
    assert set(forced["properties"]["arguments"]["properties"]) == {"learning_rate", "momentum"}
    free = tool_call_schema(tools, allow_text=True)
    assert [set(o["properties"]) for o in free["anyOf"]] == [{"name", "arguments"}, {"answer"}]


def test_messages_fold_system_into_first_user_turn():
    msgs = [SystemMessage("sys"), HumanMessage("hi"),
            AIMessage("", tool_calls=[{"name": "t", "args": {"a": 1}, "id": "1"}]),
            ToolMessage("res", tool_call_id="1", name="t"), HumanMessage("turn")]
    out = to_llama_messages(msgs, [])
    assert [m["role"] for m in out] == ["user", "assistant", "user"]
    assert out[0]["content"] == "sys\n\nhi"
    assert out[1]["content"] == '{"name": "t", "arguments": {"a": 1}}'
    assert out[2]["content"] == "Result of t: res\n\nturn"
