"""The measures behind textgen_transformer's held-out completion figures (training/textgen_eval.py) and its
n-gram baseline (training/baselines.py), on hand-made inputs."""

from __future__ import annotations

import numpy as np
import pytest

from training.baselines import KneserNeyTrigram
from training.textgen_corpus import load_stdlib, part_of
from training.textgen_eval import function_body, load_prompts, loops, parses

pytestmark = pytest.mark.training


def test_function_body_ends_where_the_code_returns_to_column_0() -> None:
    # the prompt goes in with its final newline: text at column 0 on the first line ends the function at once
    assert function_body("def g():\n    return 1\n", cut_by_budget=True) == ("", True)
    assert function_body("    return 1\n\n\ndef g():\n    pass\n", cut_by_budget=True) == ("    return 1\n\n", True)
    assert function_body("    x = 1\n    return x", cut_by_budget=False) == ("    x = 1\n    return x", True)
    assert function_body("    x = 1\n    y = (2,", cut_by_budget=True) == ("    x = 1", False)


def test_parses_needs_a_body_that_completes_the_prompt() -> None:
    prompt = 'def f(x):\n    """Twice x."""\n'
    assert parses(prompt, "    return 2 * x\n")
    assert not parses(prompt, "    return (2 * x\n")
    assert not parses(prompt, "   \n")


def test_loops_are_blocks_repeated_over_a_long_span() -> None:
    assert loops([7] * 48) and not loops([7] * 47)
    assert loops(list(range(10)) + [1, 2, 3, 4] * 12)
    assert not loops(list(range(200)))
    assert not loops([1, 2, 3, 4, 5, 6, 7, 8] * 2 + list(range(100, 160)))  # a repeat, but short


def test_kneser_ney_is_a_distribution_and_prefers_what_it_saw() -> None:
    rng = np.random.default_rng(0)
    stream = np.tile([3, 4, 5], 200)
    stream[rng.integers(0, len(stream), 60)] = rng.integers(0, 20, 60)
    model = KneserNeyTrigram(20).fit(stream)
    for a, b in ((3, 4), (19, 19), (0, 7)):
        p = model.probabilities(np.full(20, a), np.full(20, b), np.arange(20))
        assert np.all(p > 0) and p.sum() == pytest.approx(1.0)
    assert model.probabilities(np.array([3]), np.array([4]), np.array([5]))[0] > 0.8
    assert len(model.nll(stream[:50], start=1)) == 49


def test_the_evaluation_prompts_come_from_held_out_modules() -> None:
    prompts = load_prompts()
    assert len(prompts) == 50 and len({p.id for p in prompts}) == 50
    assert all(part_of(p.module.split(".")[0]) == "test" for p in prompts)
    assert all(p.prompt.startswith(("def ", "async def ")) and p.prompt.endswith("\n") for p in prompts)
    trained = {source.module for source in load_stdlib().train}
    assert not trained & {p.module for p in prompts}
