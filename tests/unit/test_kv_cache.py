"""The KV-cache decoder's bookkeeping (rows, compaction, prefill/decode mix) on a tiny random step graph.

Every logit the decoder returns is compared with the same graph run once over the whole sequence (a
prefill with no past), which is what the full model computes for that sequence.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import pytest

from service.batching.kv_cache import KVCacheDecoder
from service.errors import InferenceError
from tests.tiny_task_models import random_transformer
from training.decoder_step import build_step_graph

VOCAB, CONTEXT, D_MODEL, HEADS, LAYERS = 40, 24, 16, 2, 2


@pytest.fixture(scope="module")
def step() -> ort.InferenceSession:
    proto = build_step_graph(random_transformer(VOCAB, CONTEXT, D_MODEL, LAYERS), HEADS)
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def decoder(step: ort.InferenceSession, rows: int = 4, min_span: int = 32) -> tuple[KVCacheDecoder, list[int]]:
    """A decoder and the number of tokens each of its graph runs fed (rows x new tokens)."""
    fed: list[int] = []

    def run(feed: dict[str, np.ndarray], outputs: Sequence[str]) -> dict[str, np.ndarray]:
        fed.append(feed["token_ids"].size)
        spans.append(feed["past_mask"].shape[1])
        return dict(zip(outputs, step.run(list(outputs), feed), strict=True))

    spans.clear()
    return KVCacheDecoder(run, LAYERS, HEADS, D_MODEL // HEADS, rows, CONTEXT, min_span=min_span), fed


spans: list[int] = []
"""The past span each graph run of the latest `decoder` was fed (0 for a prefill)."""


def full(step: ort.InferenceSession, tokens: Sequence[int]) -> np.ndarray:
    """Next-token logits after `tokens`, the whole sequence in one run."""
    feed = {
        "token_ids": np.array([tokens]),
        "positions": np.arange(len(tokens))[None],
        "past_mask": np.zeros((1, 0), np.int64),
    }
    feed |= {
        f"past_{k}_{i}": np.zeros((1, HEADS, 0, D_MODEL // HEADS), np.float32)
        for k in ("key", "value")
        for i in range(LAYERS)
    }
    return step.run(["logits"], feed)[0][0, -1]


def check(step: ort.InferenceSession, dec: KVCacheDecoder, seqs: dict[int, list[int]], ids: list[int]) -> None:
    logits = dec.next_logits(ids, [seqs[i] for i in ids])
    assert logits.shape == (len(ids), VOCAB)
    for row, seq_id in zip(logits, ids, strict=True):
        np.testing.assert_allclose(row, full(step, seqs[seq_id]), atol=1e-5)


def test_prefill_then_decode_matches_the_whole_sequence(step: ort.InferenceSession) -> None:
    dec, fed = decoder(step)
    seqs = {10: [1, 2, 3, 4, 5], 11: [7]}
    check(step, dec, seqs, [10, 11])  # two new sequences prefilled together (right-padded)
    assert fed == [2 * 5]
    for token in range(6):
        seqs[10].append(token)
        seqs[11].append(token + 9)
        check(step, dec, seqs, [11, 10])
    assert fed[1:] == [2] * 6  # then one token per sequence per step
    assert dec.active == 2


def test_joining_leaving_and_sitting_out(step: ort.InferenceSession) -> None:
    dec, fed = decoder(step)
    seqs = {1: [3, 4], 2: [5, 6, 7], 3: [8]}
    check(step, dec, seqs, [1, 2])
    seqs[1].append(9), seqs[2].append(10)
    check(step, dec, seqs, [1, 2, 3])  # 1 and 2 decode, 3 is prefilled: two runs
    assert fed[-2:] == [2, 1]
    dec.release([1, 99])  # the last row moves into the freed one; unknown ids are ignored
    assert dec.active == 2
    seqs[2].append(11), seqs[3].append(12)
    check(step, dec, seqs, [3, 2])
    seqs[3].append(13)
    check(step, dec, seqs, [3])  # 2 sits this step out: its row is gathered, not viewed
    seqs[2] += [14, 15]
    check(step, dec, seqs, [2])  # 2 grew by two tokens: its cache is dropped and refilled
    assert fed[-1] == len(seqs[2])


def test_sequences_fill_up_to_the_context(step: ort.InferenceSession) -> None:
    dec, _ = decoder(step, rows=1)
    seqs = {0: [1]}
    check(step, dec, seqs, [0])
    while len(seqs[0]) < CONTEXT:
        seqs[0].append(len(seqs[0]) % VOCAB)
        check(step, dec, seqs, [0])


def test_more_sequences_than_rows_is_an_inference_error(step: ort.InferenceSession) -> None:
    dec, _ = decoder(step, rows=1)
    with pytest.raises(InferenceError, match="do not fit"):
        dec.next_logits([0, 1], [[1], [2]])


def test_the_span_fed_grows_with_the_longest_sequence_and_shrinks_when_it_leaves(step: ort.InferenceSession) -> None:
    dec, _ = decoder(step, min_span=4)
    seqs = {0: [1, 2, 3], 1: [4]}
    check(step, dec, seqs, [0, 1])
    assert dec.span == 4
    while len(seqs[0]) < 17:  # the long one crosses 4, 8 and 16; the short one rides along
        seqs[0].append(len(seqs[0]) % VOCAB)
        seqs[1].append(5)
        check(step, dec, seqs, [0, 1])
    assert dec.span == min(32, CONTEXT)
    assert spans[-1] == dec.span and sorted(set(spans) - {0}) == [4, 8, 16, dec.span]
    dec.release([0])  # the long one leaves: the short one (15 tokens) needs 16 positions at its next step
    seqs[1].append(6)
    check(step, dec, seqs, [1])
    assert dec.span == 16 and spans[-1] == 16
    seqs[2] = [7, 8]
    check(step, dec, seqs, [1, 2])  # a prefill beside a decode, after the shrink
    assert dec.active == 2


def test_spans_are_capped_at_the_context(step: ort.InferenceSession) -> None:
    dec, _ = decoder(step, rows=1, min_span=4)
    seqs = {0: [1] * (CONTEXT - 1)}
    check(step, dec, seqs, [0])
    seqs[0].append(2)
    check(step, dec, seqs, [0])
    assert dec.span == CONTEXT and max(spans) == CONTEXT
