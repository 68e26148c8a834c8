

# the method name of an agent session, wherever a method is named (tables, manifests, the
# service): here, in the package itself, so naming it imports nothing
AGENT_METHOD = "llm"
