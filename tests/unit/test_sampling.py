"""Next-token sampling: greedy, temperature, top-k, top-p, and one draw per token from the request's generator."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest

from service.batching import sampling
from service.batching.sampling import sample, sample_batch
from service.types import SamplingParams

LOGITS = np.array([1.0, 3.0, 2.0, 0.5, 2.9], dtype=np.float32)


def distribution(logits: np.ndarray, params: SamplingParams, generated: Sequence[int] = ()) -> np.ndarray:
    """The probabilities `sample` draws from: the repetition penalty, temperature, top-k and top-p applied by the
    sampler's own steps (float64, sums to 1)."""
    probs = np.zeros(logits.shape[-1])
    params = replace(params, temperature=max(params.temperature, 1e-6))
    penalized = sampling.penalize(logits[None, :], [params], [generated])
    for _, candidates, group in sampling._groups(penalized, [params]):
        probs[candidates[0]] = group[0]
    return probs


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


def reference_distribution(logits: np.ndarray, params: SamplingParams) -> np.ndarray:
    """The row-by-row sampler this module had before it was vectorized (full-vocabulary sort for top-p)."""
    scaled = logits.astype(np.float64) / max(params.temperature, 1e-6)
    if 0 < params.top_k < scaled.size:
        kth = np.partition(scaled, -params.top_k)[-params.top_k]
        scaled = np.where(scaled >= kth, scaled, -np.inf)
    probs = np.exp(scaled - np.max(scaled))
    probs /= probs.sum()
    if params.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), params.top_p)) + 1]
        nucleus = np.zeros_like(probs)
        nucleus[keep] = probs[keep]
        probs = nucleus / nucleus.sum()
    return probs


def reference_sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator) -> int:
    if params.temperature == 0:
        return int(np.argmax(logits))
    cdf = np.cumsum(reference_distribution(logits, params))
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), len(cdf) - 1)


def test_batch_sampling_matches_row_by_row_with_mixed_parameters_and_ties() -> None:
    """Same tokens as the reference; the probabilities agree to rounding (top-k rows normalize over their
    candidates only, so sums may differ in the last bit)."""
    rng = np.random.default_rng(7)
    temperatures, top_ks, top_ps = [0.0, 0.3, 0.8, 1.0, 2.5], [0, 1, 5, 50, 300, 512], [1.0, 0.95, 0.5, 1e-6]
    for trial in range(60):
        logits = (rng.normal(size=(12, 512)) * rng.uniform(0.5, 6)).astype(np.float32)
        logits[::3, :8] = logits[::3, 8:16]  # tied values, some of them among the top k
        logits[1, :100] = logits[1, 0]
        params = [
            SamplingParams(float(rng.choice(temperatures)), int(rng.choice(top_ks)), float(rng.choice(top_ps)))
            for _ in range(12)
        ]
        seeds = rng.integers(0, 2**32, 12)
        rngs = [np.random.default_rng(s) for s in seeds]
        expected = [
            reference_sample(logits[i], p, np.random.default_rng(s))
            for i, (p, s) in enumerate(zip(params, seeds, strict=True))
        ]
        assert sample_batch(logits, params, rngs) == expected, trial
        for i, p in enumerate(params):
            want = reference_distribution(logits[i], p)
            np.testing.assert_allclose(distribution(logits[i], p), want, rtol=1e-12, atol=1e-15)


def test_a_row_samples_the_same_alone_and_in_any_batch() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 300)).astype(np.float32) * 3
    params = [
        SamplingParams(0.9, 40, 0.9),
        SamplingParams(1.0),
        SamplingParams(0.0),
        SamplingParams(0.7, 40, 1.0),
        SamplingParams(1.2, 0, 0.8),
        SamplingParams(0.9, 40, 0.9),
    ]
    together = sample_batch(logits, params, [np.random.default_rng(i) for i in range(6)])
    alone = [sample(logits[i], params[i], np.random.default_rng(i)) for i in range(6)]
    assert together == alone
    reversed_ = sample_batch(logits[::-1], params[::-1], [np.random.default_rng(i) for i in reversed(range(6))])
    assert reversed_[::-1] == together


@pytest.mark.parametrize("vocab", [1024, 1500, 2048])
def test_top_k_over_a_large_vocabulary_matches_row_by_row(vocab: int) -> None:
    """Vocabularies large enough for `_top_k`'s pooled bound (including one that pools do not divide), with
    ties at the k-th logit, coarse logits and masked-out (-inf) tokens."""
    rng = np.random.default_rng(vocab)
    for trial in range(40):
        logits = (rng.normal(size=(10, vocab)) * rng.uniform(0.5, 6)).astype(np.float32)
        if trial % 4 == 1:
            logits = np.round(logits * 2) / 2  # many ties
        elif trial % 4 == 2:
            logits[:, : vocab // 2] = -np.inf
        elif trial % 4 == 3:
            logits[::2, :60] = logits[::2, 60:120]
        params = [
            SamplingParams(
                float(rng.choice([0.0, 0.7, 1.0])),
                int(rng.choice([1, 5, 50, 64, 256, 300])),
                float(rng.choice([1.0, 0.9, 0.5])),
            )
            for _ in range(10)
        ]
        seeds = rng.integers(0, 2**32, 10)
        expected = [
            reference_sample(logits[i], p, np.random.default_rng(s))
            for i, (p, s) in enumerate(zip(params, seeds, strict=True))
        ]
        assert sample_batch(logits, params, [np.random.default_rng(s) for s in seeds]) == expected, trial


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits_of_generated_tokens() -> None:
    logits = np.array([1.0, 3.0, -2.0, 0.5, 2.9], dtype=np.float32)
    params = SamplingParams(temperature=1.0, repetition_penalty=1.5)
    expected = np.array([1.0, 2.0, -3.0, 0.5, 2.9])  # tokens 1 and 2 were generated (token 1 twice: once only)
    reference = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
    np.testing.assert_allclose(distribution(logits, params, [1, 2, 1]), reference, rtol=1e-6)
    np.testing.assert_allclose(
        distribution(logits, replace(params, repetition_penalty=1.0), [1, 2]), distribution(logits, params), rtol=1e-12
    )
    assert sample(logits, replace(params, temperature=0.0), np.random.default_rng(0), [1]) == 4  # 3/1.5 < 2.9
    assert sample(logits, replace(params, temperature=0.0), np.random.default_rng(0)) == 1  # nothing generated yet


def test_repetition_penalty_in_a_batch_matches_a_numpy_reference_and_leaves_the_logits_alone() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 2, (4, 50)).astype(np.float32)
    before = logits.copy()
    params = [
        SamplingParams(temperature=0.0, repetition_penalty=1.3),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0, repetition_penalty=2.0),
        SamplingParams(temperature=0.0, repetition_penalty=1.2),
    ]
    generated = [list(np.argsort(-logits[0])[:3]), list(np.argsort(-logits[1])[:3]), [], [7, 7, 49]]
    expected = before.astype(np.float64)
    for row, (p, seen) in enumerate(zip(params, generated, strict=True)):
        for token in set(seen):
            value = expected[row, token]
            expected[row, token] = value / p.repetition_penalty if value > 0 else value * p.repetition_penalty
    rngs = [np.random.default_rng(i) for i in range(4)]
    assert sample_batch(logits, params, rngs, generated) == np.argmax(expected, axis=1).tolist()
    assert sample_batch(logits, params, rngs)[1] == int(np.argmax(before[1]))  # no history: no penalty
    np.testing.assert_array_equal(logits, before)
    draws = [
        sample_batch(logits[:1], [replace(params[0], temperature=1.0)], [np.random.default_rng(s)], generated[:1])[0]
        for s in range(3000)
    ]
    p = np.exp(expected[0] - expected[0].max())
    np.testing.assert_allclose(np.bincount(draws, minlength=50) / 3000, p / p.sum(), atol=0.03)


def test_top_p_over_the_whole_vocabulary_matches_row_by_row() -> None:
    """Rows with top-p and no top-k take their nucleus from their most probable tokens (`_nucleus_heads`): peaked
    rows settle among the first HEAD, flat ones among four or sixteen times as many, the flattest over the whole
    vocabulary; with ties at the HEAD-th logit, masked-out (-inf) tokens, and rows of every other kind beside them.
    Same tokens as the reference, probabilities equal to rounding."""
    rng = np.random.default_rng(11)
    vocab = 4096
    for trial in range(30):
        scale = rng.uniform(0.5, 4, size=(12, 1))
        logits = (rng.normal(size=(12, vocab)) * scale).astype(np.float32)
        logits[0] = np.round(logits[0])  # ties everywhere, the HEAD-th logit among them
        logits[1, : vocab // 2] = -np.inf
        logits[2, rng.choice(vocab, 3, replace=False)] += 12  # a peak of three tokens
        temperatures = [0.01, 0.2, 0.4, 0.7, 1.0, 1.5, 3.0, 10.0]
        params = [
            SamplingParams(
                float(rng.choice(temperatures)), 0, float(rng.choice([1e-6, 0.5, 0.9, 0.95, 0.99, 0.999999]))
            )
            for _ in range(9)
        ]
        params += [SamplingParams(0.0), SamplingParams(0.8, 40, 0.9), SamplingParams(1.0, 0, 1.0)]
        seeds = rng.integers(0, 2**32, 12)
        expected = [
            reference_sample(logits[i], p, np.random.default_rng(s))
            for i, (p, s) in enumerate(zip(params, seeds, strict=True))
        ]
        assert sample_batch(logits, params, [np.random.default_rng(s) for s in seeds]) == expected, trial
        for i, p in enumerate(params[:9]):
            np.testing.assert_allclose(
                distribution(logits[i], p), reference_distribution(logits[i], p), rtol=1e-6, atol=1e-12
            )


def test_a_peaked_nucleus_is_taken_from_the_head_and_a_flat_one_widens() -> None:
    """Where a row's nucleus lies: among its HEAD most probable tokens when they reach top_p, among more when they
    do not, and nowhere in `_nucleus_heads` (left to the whole-vocabulary path) when only the whole vocabulary
    reaches it."""
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(3, 4096)).astype(np.float32)
    logits[0, :10] += 20  # ten tokens hold nearly all the mass
    params = [SamplingParams(1.0, 0, 0.9), SamplingParams(1.0, 0, 0.3), SamplingParams(1.0, 0, 0.999999)]
    logits[2] *= 1e-3  # nearly uniform: 0.999999 needs more than a quarter of the 4,096 tokens
    found = {
        row: candidates.shape[1] for rows, candidates, _ in sampling._nucleus_heads(logits, params) for row in rows
    }
    assert found[0] == sampling.HEAD
    assert sampling.HEAD < found[1] < 4096
    assert 2 not in found
    for row, width in found.items():
        nucleus = distribution(logits[row], params[row])
        assert np.count_nonzero(nucleus) <= width
