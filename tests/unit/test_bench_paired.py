"""bench/paired.py's verdicts over paired rounds, and the peers' statistics that perf_analyzer reads for them."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path

import numpy as np
import pytest

from bench.paired import DEEPSERVE, Round, summary
from bench.peers.common import RPCS, Statistics, aio_variant
from bench.peers.inline_server import InlineServer
from service.grpc._generated.inference import grpc_service_pb2 as pb

MODEL = Path(__file__).resolve().parents[2] / "models" / "digits_cnn"


def a_round(raw=(400.0, 400.0), deepserve=(900.0, 440.0), spinning=(880.0, 430.0), inline=(1000.0, 600.0)) -> Round:
    """p50 and model time in µs per server; the spinning peer on grpc.aio 890 µs, the canned servers 500 and 480."""
    p50 = {DEEPSERVE: deepserve[0], "inline-spinning": spinning[0], "inline": inline[0]}
    compute = {DEEPSERVE: deepserve[1], "inline-spinning": spinning[1], "inline": inline[1]}
    p50 |= {"inline-spinning-aio": 890.0, "canned-aio": 500.0, "canned-sync": 480.0}
    compute |= {"inline-spinning-aio": 430.0, "canned-aio": 0.0, "canned-sync": 0.0}
    return Round(raw[0], raw[1], p50, compute)


def test_the_gap_is_to_the_better_peer_and_the_ratio_to_the_mean_raw_figure():
    one = a_round(raw=(380.0, 420.0))
    assert one.p50_gap_ms == pytest.approx(0.020)
    assert one.compute_ratio() == pytest.approx(440 / 400)
    assert one.compute_ratio("inline") == pytest.approx(600 / 400)
    assert a_round(spinning=(1100.0, 430.0)).p50_gap_ms == pytest.approx(-0.100), "the inline peer is better there"


def test_a_round_whose_raw_figures_disagree_saw_the_machine_change_speed():
    assert not a_round(raw=(370.0, 400.0)).flipped(0.10)
    assert a_round(raw=(370.0, 452.0)).flipped(0.10)
    assert a_round(raw=(452.0, 370.0)).flipped(0.10)


def test_the_summary_counts_kept_rounds_only():
    rounds = [
        a_round(deepserve=(900.0, 440.0)),  # gap +0.020 ms, ratio 1.10: both goals met
        a_round(deepserve=(1000.0, 480.0)),  # gap +0.120 ms, ratio 1.20: neither
        a_round(deepserve=(940.0, 456.0)),  # gap +0.060 ms, ratio 1.14: goal 3 only
        a_round(raw=(370.0, 452.0), deepserve=(700.0, 300.0)),  # left out, though it would meet both
    ]
    lines = summary(rounds, 0.10)
    assert lines[0].startswith("rounds: 4, kept 3")
    assert "median +0.060 (from +0.020 to +0.120) ms; met in 1 of 3 rounds" in lines[1]
    assert "median 1.14 (from 1.10 to 1.20); met in 2 of 3 rounds" in lines[2]
    assert "grpc.aio on uvloop - sync grpcio" in lines[5] and "median +0.020" in lines[5]
    assert "deepserve - inline-spinning: median +0.026" in lines[6]
    assert "(goal 1's floor there): median +0.010" in lines[7]
    assert "(deepserve's own work): median +0.050 (from +0.010 to +0.110)" in lines[8]


def test_no_round_kept_gives_no_verdict():
    assert summary([a_round(raw=(370.0, 452.0))], 0.10) == [
        "rounds: 1, kept 0 (left out: raw figures before and after > 10% apart)"
    ]


def test_a_peer_counts_each_request_of_a_batch_with_the_batch_time():
    stats = Statistics()
    stats.add(3, 1_000)
    stats.add(1, 500)
    got = stats.response("m").model_stats[0]
    assert (got.name, got.version, got.inference_count, got.execution_count) == ("m", "1", 4, 2)
    assert got.inference_stats.compute_infer == pb.StatisticDuration(count=4, ns=3_500)
    assert got.inference_stats.success == got.inference_stats.compute_infer


def test_the_inline_peer_times_its_model_runs():
    peer = InlineServer(MODEL, 1)
    sample = np.zeros((1, 32, 32, 1), np.float32)
    request = pb.ModelInferRequest(model_name="digits_cnn", raw_input_contents=[sample.tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=[1, 32, 32, 1])
    for _ in range(3):
        peer.ModelInfer(request, None)
    got = peer.ModelStatistics(pb.ModelStatisticsRequest(name="digits_cnn"), None).model_stats[0]
    assert got.inference_count == 3
    assert got.inference_stats.compute_infer.ns > 0
    assert "statistics" in peer.ServerMetadata(None, None).extensions


def test_the_aio_variant_answers_every_rpc_perf_analyzer_calls_from_coroutines():
    peer = aio_variant(InlineServer)(MODEL, 1)
    sample = np.zeros((1, 32, 32, 1), np.float32)
    request = pb.ModelInferRequest(model_name="digits_cnn", raw_input_contents=[sample.tobytes()])
    request.inputs.add(name="image", datatype="FP32", shape=[1, 32, 32, 1])
    assert all(inspect.iscoroutinefunction(getattr(peer, name)) for name in RPCS)
    answer = asyncio.run(peer.ModelInfer(request, None))
    assert answer.outputs[0].name == "probabilities"
    assert asyncio.run(peer.ModelStatistics(pb.ModelStatisticsRequest(), None)).model_stats[0].inference_count == 1
