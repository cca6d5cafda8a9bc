"""ONNX Runtime session options: spinning, batch buckets (padding, a session per bucket) and I/O binding."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from service import runtime
from service.config import parse_model_config
from service.errors import ModelLoadError
from service.runtime import CPU, CUDA, ModelSession
from tests.tiny_models import CONFIGS
from tests.unit.runtime_helpers import add_sub_config


def conv_model() -> bytes:
    """A convolution big enough for ONNX Runtime to split across its intra-op threads."""
    weights = np.random.default_rng(1).random((16, 8, 3, 3), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
        "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.ravel())],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def cpu_after(run: Callable[[], object], runs: int = 1) -> float:
    """The process's CPU seconds in the 60 ms after `runs` back-to-back calls of `run`, made after 0.1 s idle."""
    time.sleep(0.1)
    for _ in range(runs):
        run()
    began = time.process_time()
    time.sleep(0.06)
    return time.process_time() - began


# ---- spinning ----------------------------------------------------------------------------------------------
def test_lone_requests_get_a_session_that_spins_during_runs_and_briefly_after(add_sub_file: Path) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    session = ModelSession(add_sub_file, add_sub_config(), [CPU])  # spinning: lone_runs, the default
    assert session.run_lone is not None
    np.testing.assert_array_equal(session.run_lone({"INPUT0": a, "INPUT1": b})["OUTPUT0"], a + b)
    lone = runtime.session_options(add_sub_config().execution, 2, lone=True)
    assert lone.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert lone.get_session_config_entry("session.intra_op.spin_duration_us") == "1000"  # lone_spin_us
    with pytest.raises(Exception):  # noqa: B017 - onnxruntime raises its own type for a missing key
        lone.get_session_config_entry("session.force_spinning_stop")
    stopped = runtime.session_options(add_sub_config(execution={"lone_spin_us": 0}).execution, 2, lone=True)
    assert stopped.get_session_config_entry("session.force_spinning_stop") == "1"
    batches = runtime.session_options(add_sub_config().execution, 2)
    assert batches.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for mode in ("never", "during_runs", "always"):
        assert ModelSession(add_sub_file, add_sub_config(execution={"spinning": mode}), [CPU]).run_lone is None


@pytest.mark.parametrize(
    ("execution", "spin", "stop"),
    [
        ({"spinning": "never"}, "0", None),
        ({"spinning": "during_runs"}, "1", "1"),
        ({"spinning": "always"}, "1", None),
        ({"allow_spinning": True}, "1", None),
        ({"allow_spinning": False}, "0", None),
    ],
)
def test_spinning_modes_set_onnx_runtime_options(execution: dict, spin: str, stop: str | None) -> None:
    opts = runtime.session_options(add_sub_config(execution=execution).execution, 2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == spin
    if stop is None:
        with pytest.raises(Exception):  # noqa: B017 - onnxruntime raises its own type for a missing key
            opts.get_session_config_entry("session.force_spinning_stop")
    else:
        assert opts.get_session_config_entry("session.force_spinning_stop") == stop


def test_a_lone_run_leaves_its_threads_spinning_for_lone_spin_us_only() -> None:
    """After a lone run the pool thread spins for `lone_spin_us`, then sleeps: the process's CPU time over the
    next 60 ms stays near that, where ONNX Runtime's own default (`spinning: always`) spins for about 40 ms. A
    busy machine only lowers what the spinning thread gets, so the bound holds under load too."""
    model = conv_model()
    feed = {"x": np.random.default_rng(0).random((1, 8, 32, 32), dtype=np.float32)}

    opts = runtime.session_options(add_sub_config(execution={"lone_spin_us": 2000}).execution, 2, lone=True)
    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    for _ in range(20):
        session.run(None, feed)

    lone = min(cpu_after(lambda: session.run(None, feed)) for _ in range(3))
    assert lone < 0.015, f"{lone * 1e3:.1f} ms of CPU in the 60 ms after a lone run"


def test_only_a_lone_request_that_follows_another_runs_on_the_spinning_session(tmp_path: Path) -> None:
    """An isolated lone request runs on the batch session, whose thread sleeps when the run returns; one that
    comes within `lone_spin_us` of the previous lone run runs on the lone session, whose thread then spins.
    Seen from the CPU time the process uses in the 60 ms after each run."""
    model = tmp_path / "conv.onnx"
    model.write_bytes(conv_model())
    config = add_sub_config(execution={"lone_spin_us": 30_000, "intra_op_threads": 2})
    run_lone = ModelSession(model, config, [CPU]).run_lone
    assert run_lone is not None
    feed = {"x": np.random.default_rng(0).random((1, 8, 32, 32), dtype=np.float32)}

    # cpu_after waits 0.1 s first, longer than lone_spin_us: its first run is isolated
    isolated = min(cpu_after(lambda: run_lone(feed)) for _ in range(3))
    assert isolated < 0.005, f"{isolated * 1e3:.1f} ms of CPU after an isolated lone run: its threads spun"
    followed = max(cpu_after(lambda: run_lone(feed), runs=2) for _ in range(3))
    assert followed > 0.003, f"{followed * 1e3:.1f} ms of CPU after a second lone run: its threads did not spin"


def test_lone_spin_us_without_lone_runs_is_a_config_error() -> None:
    with pytest.raises(ModelLoadError, match="lone_spin_us applies to `spinning: lone_runs` only"):
        add_sub_config(execution={"spinning": "always", "lone_spin_us": 500})
    with pytest.raises(ModelLoadError, match="lone_spin_us"):
        add_sub_config(execution={"lone_spin_us": -1})
    assert add_sub_config(execution={"lone_spin_us": 0}).execution.lone_spin_us == 0


def test_allow_spinning_and_spinning_together_is_a_config_error() -> None:
    with pytest.raises(ModelLoadError, match="set `spinning` only"):
        add_sub_config(execution={"spinning": "never", "allow_spinning": True})


# ---- batch buckets, I/O binding (docs/gpu.md has the GPU measurements) -------------------------------------
@pytest.mark.parametrize("buckets", [[8, 1], [1, 1, 8], [0, 8]])
def test_batch_buckets_must_increase_from_one(buckets: list[int]) -> None:
    with pytest.raises(ModelLoadError) as info:
        add_sub_config(execution={"batch_buckets": buckets})
    assert "batch_buckets" in str(info.value) and "increasing" in str(info.value)


@pytest.mark.parametrize(
    ("max_batch_size", "chosen", "provider", "expected"),
    [
        (64, None, CUDA, [1, 8, 64]),
        (16, None, CUDA, [1, 8, 16]),
        (8, None, CUDA, [1, 8]),
        (100, None, CUDA, [1, 8, 64, 100]),
        (64, None, CPU, []),
        (64, [], CUDA, []),
        (64, [1, 4], CPU, [1, 4, 64]),
        (64, [2, 64], CUDA, [2, 64]),
        (1, None, CUDA, []),
        (0, None, CUDA, []),
    ],
)
def test_bucket_sizes(max_batch_size: int, chosen: list[int] | None, provider: str, expected: list[int]) -> None:
    data = copy.deepcopy(CONFIGS["add_sub"][0])
    data.pop("dynamic_batching")
    data |= {"max_batch_size": max_batch_size, "execution": {"batch_buckets": chosen}}
    assert runtime.bucket_sizes(parse_model_config(data, "add_sub"), provider) == expected


def test_batch_buckets_beyond_max_batch_size_are_a_load_error(add_sub_file: Path) -> None:
    with pytest.raises(ModelLoadError) as info:
        ModelSession(add_sub_file, add_sub_config(execution={"batch_buckets": [1, 16]}), [CPU])
    assert "max_batch_size 8" in str(info.value) and "[1, 16]" in str(info.value)


def test_a_batch_runs_padded_to_its_bucket_and_comes_back_unpadded(add_sub_file: Path) -> None:
    bucketed = ModelSession(add_sub_file, add_sub_config(execution={"batch_buckets": [1, 4]}), [CPU])
    plain = ModelSession(add_sub_file, add_sub_config(), [CPU])
    sizes = [size for size, _ in bucketed._buckets]  # batch sizes with a session of their own
    assert sizes == [1, 4, 8] and plain._buckets == []
    rng = np.random.default_rng(0)
    seen: list[tuple[int, int]] = []
    for count in (1, 2, 3, 4, 5, 8):
        a, b = rng.random((count, 4), dtype=np.float32), rng.random((count, 4), dtype=np.float32)
        out = bucketed.run({"INPUT0": a, "INPUT1": b})
        assert {name: arr.shape for name, arr in out.items()} == {"OUTPUT0": (count, 4), "OUTPUT1": (count, 4)}
        np.testing.assert_array_equal(out["OUTPUT0"], plain.run({"INPUT0": a, "INPUT1": b})["OUTPUT0"])
        np.testing.assert_array_equal(out["OUTPUT1"], a - b)
        seen.append((count, next(size for size in sizes if size >= count)))
    assert seen == [(1, 1), (2, 4), (3, 4), (4, 4), (5, 8), (8, 8)]


def test_each_bucket_runs_on_its_own_session(add_sub_file: Path) -> None:
    """A session that only ever sees one batch size never re-plans cuDNN's convolutions (docs/gpu.md)."""
    session = ModelSession(add_sub_file, add_sub_config(execution={"batch_buckets": [1, 4]}), [CPU])
    sessions = [s for _, s in session._buckets]
    assert len({id(s) for s in sessions}) == 3 and sessions[-1] is session._session
    seen: list[int] = []
    for _, inner in session._buckets:
        original = inner.run

        def recording(names, feed, options=None, original=original):
            seen.append(len(next(iter(feed.values()))))
            return original(names, feed, options)

        try:
            object.__setattr__(inner, "run", recording)
        except AttributeError:
            pytest.skip("onnxruntime sessions don't take attributes")
    for count in (3, 1, 7):
        session.run({"INPUT0": np.zeros((count, 4), np.float32), "INPUT1": np.zeros((count, 4), np.float32)})
    assert seen == [4, 1, 8]


def test_padding_repeats_the_first_item() -> None:
    arr = np.array([[1, 2], [3, 4]], np.int64)
    np.testing.assert_array_equal(runtime.pad_batch(arr, 4), [[1, 2], [3, 4], [1, 2], [1, 2]])
    text = np.array([b"a", b"bc"], dtype=object)
    assert runtime.pad_batch(text, 3).tolist() == [b"a", b"bc", b"a"]


def test_io_binding_gives_the_same_outputs(add_sub_file: Path) -> None:
    bound = ModelSession(add_sub_file, add_sub_config(execution={"io_binding": True}), [CPU])
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.full((3, 4), 0.5, dtype=np.float32)
    out = bound.run({"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    assert list(bound.run({"INPUT0": a, "INPUT1": b}, ["OUTPUT1"])) == ["OUTPUT1"]
