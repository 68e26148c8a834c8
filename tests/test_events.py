"""Every line a real run writes matches its typed event kind (tools/events.py), extra
fields refused: a writer that renames or adds a field fails here, not in a reader."""

from pydantic import TypeAdapter

from tests.fakes import ScriptedChatModel, call, final
from tuneloop.evaluation.methods import MethodSpec, run_method
from tuneloop.tools.events import EVENT_TYPES
from tuneloop.tools.record import read_trace


def check_every_event(run_dir) -> set[str]:
    kinds = set()
    for e in read_trace(run_dir).events:
        kind = EVENT_TYPES[e["event"]]  # an unknown kind is a KeyError: every kind is typed
        TypeAdapter(kind).validate_python(e)
        extra = set(e) - kind.__required_keys__ - kind.__optional_keys__
        assert not extra, f"{e['event']} has fields its type lacks: {sorted(extra)}"
        kinds.add(e["event"])
    return kinds


def test_a_classical_run_writes_typed_events(tmp_path):
    r = run_method(MethodSpec(method="cmaes", budget=5, seed=1, runs_dir=tmp_path))
    assert check_every_event(r.run_dir) == {"session_started", "trial_evaluated", "session_finished"}


def test_an_agent_session_writes_typed_events(tmp_path):
    model = ScriptedChatModel(script=[call(1e-3, 0.9), call(2.0, 0.5), call(1e-3, 0.9), call(1e-4, 0.5),
                                      final(1e-3, 0.9, "trial 1 was best")])
    r = run_method(MethodSpec(method="llm", budget=2, runs_dir=tmp_path), chat_model=model)
    kinds = check_every_event(r.run_dir)
    assert {"session_started", "model_called", "tool_called", "tool_error", "trial_evaluated",
            "session_finished"} <= kinds
