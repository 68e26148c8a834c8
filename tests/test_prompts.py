"""Prompt templates: the optional final part, and every built-in one renders."""

import pytest

from tuneloop.agent.prompt_state import prompt_values
from tuneloop.agent.prompts import FINAL_INSTRUCTION, list_templates, load_template, parse_template
from tuneloop.tools.errors import UserError
from tuneloop.tools.trials import Evaluator, EvaluatorConfig

BASE = "# a template\n--- system ---\nTune $objective_name.\n--- turn ---\nBudget left: $budget_left.\n"


def test_without_a_final_part_the_final_message_shows_the_trials_then_asks():
    t = parse_template("t", BASE)
    ev = Evaluator(EvaluatorConfig(budget=1))
    ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9})
    final = t.render_final(**prompt_values(ev))
    assert final.startswith("Trials so far, in the order tried:\n") and "1 | 1e-3 | 0.9 |" in final
    assert final.endswith(FINAL_INSTRUCTION.replace("$parameters", "learning_rate and momentum"))
    assert t.render_turn(budget_left="2") == "Budget left: 2."


def test_a_final_part_is_rendered_with_the_state():
    t = parse_template("t", BASE + "--- final ---\nBest: $incumbent. Call FinalAnswer.\n")
    ev = Evaluator(EvaluatorConfig(budget=1))
    ev.evaluate({"learning_rate": 1e-3, "momentum": 0.9})
    final = t.render_final(**prompt_values(ev))
    assert final.startswith("Best: trial 1: learning_rate=1e-3, momentum=0.9") and final.endswith("Call FinalAnswer.")
    assert "Budget left" not in final  # the turn stops where the final part begins


def test_an_unknown_variable_in_the_final_part_is_reported():
    with pytest.raises(UserError, match=r"unknown variable\(s\) \$nope"):
        parse_template("t", BASE + "--- final ---\n$nope\n")


@pytest.mark.parametrize("name", list_templates())
def test_every_builtin_template_renders(name):
    t = load_template(name)
    values = prompt_values(Evaluator(EvaluatorConfig(budget=3)))
    assert t.render_system(**values) and t.render_turn(**values) and t.render_final(**values)
