"""Next-token sampling: greedy, temperature, top-k, top-p, and one draw per token from the request's generator."""

from __future__ import annotations

import numpy as np
import pytest

from service.batching.sampling import distribution, sample
from service.types import SamplingParams

LOGITS = np.array([1.0, 3.0, 2.0, 0.5, 2.9], dtype=np.float32)


def test_temperature_zero_is_greedy_and_draws_nothing() -> None:
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    assert sample(LOGITS, SamplingParams(temperature=0.0), rng) == 1
    assert rng.bit_generator.state == state


def test_each_sampled_token_takes_exactly_one_draw() -> None:
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    sample(LOGITS, SamplingParams(top_k=3, top_p=0.8), a)
    b.random()
    assert a.bit_generator.state == b.bit_generator.state


def test_top_k_keeps_the_k_most_probable() -> None:
    probs = distribution(LOGITS, SamplingParams(top_k=2))
    assert set(np.flatnonzero(probs)) == {1, 4}
    assert probs.sum() == pytest.approx(1.0)


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    full = distribution(LOGITS, SamplingParams())
    probs = distribution(LOGITS, SamplingParams(top_p=0.5))
    assert full[1] < 0.5 <= full[1] + full[4]
    assert set(np.flatnonzero(probs)) == {1, 4}
    assert set(np.flatnonzero(distribution(LOGITS, SamplingParams(top_p=1e-6)))) == {1}


def test_temperature_sharpens_and_flattens() -> None:
    cold = distribution(LOGITS, SamplingParams(temperature=0.1))
    hot = distribution(LOGITS, SamplingParams(temperature=10.0))
    assert cold[1] > 0.5 > hot.max()
    assert np.ptp(hot) < np.ptp(distribution(LOGITS, SamplingParams()))


def test_samples_follow_the_distribution_and_the_seed() -> None:
    params = SamplingParams(temperature=1.0)
    draws = [sample(LOGITS, params, np.random.default_rng(s)) for s in range(4000)]
    freq = np.bincount(draws, minlength=5) / len(draws)
    np.testing.assert_allclose(freq, distribution(LOGITS, params), atol=0.03)
    rng1, rng2 = np.random.default_rng(42), np.random.default_rng(42)
    assert [sample(LOGITS, params, rng1) for _ in range(50)] == [sample(LOGITS, params, rng2) for _ in range(50)]
