"""ONNX Runtime layer: provider choice as a pure function, config ⇄ graph checks, sessions on tiny models."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from service import runtime
from service.config import Device, ModelConfig, parse_model_config
from service.errors import ConfigError, ModelLoadError
from service.runtime import (
    CPU,
    CUDA,
    ModelSession,
    check_device,
    check_signature,
    choose_providers,
    intra_op_threads,
    load_step_model,
)
from tests.tiny_models import CONFIGS, add_sub, bytes_identity, token_sum

BOTH = [CUDA, CPU]
CPU_ONLY = [CPU]


# ---- provider selection ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("device", "preferred", "available", "expected"),
    [
        (Device.AUTO, None, BOTH, [CUDA, CPU]),
        (Device.AUTO, None, CPU_ONLY, [CPU]),
        (Device.AUTO, None, ["TensorrtExecutionProvider", *BOTH], [CUDA, CPU]),
        (Device.CPU, None, BOTH, [CPU]),
        (Device.CPU, ("cuda",), BOTH, [CPU]),
        (Device.CUDA, None, BOTH, [CUDA, CPU]),
        (Device.AUTO, ("cpu",), BOTH, [CPU]),
        (Device.AUTO, ("cuda",), BOTH, [CUDA, CPU]),
        (Device.AUTO, ("cuda",), CPU_ONLY, [CPU]),
        (Device.AUTO, ("cpu", "cuda"), BOTH, [CPU, CUDA]),
        (Device.CUDA, ("cpu",), BOTH, [CPU]),
        (Device.AUTO, (), BOTH, [CUDA, CPU]),
    ],
)
def test_choose_providers(
    device: Device, preferred: tuple[str, ...] | None, available: list[str], expected: list[str]
) -> None:
    assert choose_providers(device, preferred, available) == expected


@pytest.mark.parametrize("preferred", [None, ("cuda",), ("cuda", "cpu")])
def test_cuda_requested_without_cuda_is_a_config_error(preferred: tuple[str, ...] | None) -> None:
    with pytest.raises(ConfigError) as info:
        choose_providers(Device.CUDA, preferred, CPU_ONLY)
    assert "no CUDAExecutionProvider" in str(info.value)


def test_check_device_message_says_what_is_available_and_how_to_fix() -> None:
    with pytest.raises(ConfigError) as info:
        check_device(Device.CUDA, ["CPUExecutionProvider", "AzureExecutionProvider"])
    message = str(info.value)
    assert "--device cuda was requested" in message
    assert "available: CPUExecutionProvider, AzureExecutionProvider" in message
    assert "onnxruntime-gpu" in message and "--device auto|cpu" in message
    with pytest.raises(ConfigError, match="available: none"):
        check_device(Device.CUDA, [])


@pytest.mark.parametrize(("device", "available"), [(Device.CUDA, BOTH), (Device.AUTO, CPU_ONLY), (Device.CPU, [])])
def test_check_device_accepts(device: Device, available: list[str]) -> None:
    check_device(device, available)


# ---- config ⇄ graph -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def add_sub_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runtime") / "add_sub" / "1" / "model.onnx"
    add_sub(path)
    return path


def add_sub_config(**changes: object) -> ModelConfig:
    data = copy.deepcopy(CONFIGS["add_sub"][0])
    data.update(changes)
    return parse_model_config(data, "add_sub")


def tensor(name: str, datatype: str = "FP32", dims: tuple[int, ...] = (4,)) -> dict:
    return {"name": name, "datatype": datatype, "dims": list(dims)}


def test_matching_config_passes(add_sub_file: Path) -> None:
    config = add_sub_config()
    check_signature(ModelSession(add_sub_file, config, [CPU]), config, "add_sub")


def test_config_may_declare_a_subset_of_outputs(add_sub_file: Path) -> None:
    config = add_sub_config(outputs=[tensor("OUTPUT1")])
    session = ModelSession(add_sub_file, config, [CPU])
    check_signature(session, config, "add_sub")


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (
            {"inputs": [tensor("INPUT0"), tensor("IN1")]},
            ["inputs `IN1` is not in the ONNX graph", "['INPUT0', 'INPUT1']", "rename it in config.yaml"],
        ),
        (
            {"outputs": [tensor("OUTPUT0"), tensor("SUM")]},
            ["outputs `SUM` is not in the ONNX graph", "rename it in config.yaml"],
        ),
        (
            {"inputs": [tensor("INPUT0", "FP16"), tensor("INPUT1")]},
            ["inputs `INPUT0` has datatype FP16 in config.yaml but FP32 in the ONNX graph", "set `datatype: FP32`"],
        ),
        (
            {"outputs": [tensor("OUTPUT0", "INT64"), tensor("OUTPUT1")]},
            ["outputs `OUTPUT0` has datatype INT64", "set `datatype: FP32`"],
        ),
        (
            {"inputs": [tensor("INPUT0", dims=(5,)), tensor("INPUT1")]},
            ["inputs `INPUT0` has dims [5] in config.yaml", "shape is [-1, 4]", "set `dims: [4]`"],
        ),
        (
            {"inputs": [tensor("INPUT0", dims=(4, 1)), tensor("INPUT1")]},
            ["inputs `INPUT0` has dims [4, 1]", "(first dim is the batch)", "set `dims: [4]`"],
        ),
        (
            {"max_batch_size": 0, "dynamic_batching": {}},
            ["`INPUT0` has dims [4] in config.yaml but the ONNX graph's shape is [-1, 4]", "set `dims: [-1, 4]`"],
        ),
        (
            {"inputs": [tensor("INPUT0")]},
            ["the ONNX graph needs inputs ['INPUT1'] that config.yaml does not declare", "add them under `inputs`"],
        ),
    ],
)
def test_signature_mismatch_names_model_key_and_fix(add_sub_file: Path, changes: dict, fragments: list[str]) -> None:
    config = add_sub_config(**changes)
    session = ModelSession(add_sub_file, config, [CPU])
    with pytest.raises(ModelLoadError) as info:
        check_signature(session, config, "add_sub")
    message = info.value.message
    assert message.startswith("model 'add_sub': ")
    for fragment in fragments:
        assert fragment in message


def test_fixed_batch_axis_asks_for_a_dynamic_one(tmp_path: Path) -> None:
    """A graph exported with batch 1 fixed cannot serve batches: the message says to re-export."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "fixed" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    config = parse_model_config(
        {"max_batch_size": 4, "inputs": [tensor("x")], "outputs": [tensor("y")]},
        "fixed",
    )
    with pytest.raises(ModelLoadError, match="export a dynamic batch axis"):
        check_signature(ModelSession(path, config, [CPU]), config, "fixed")


def test_unreadable_model_file_is_a_load_error_naming_model_and_file(tmp_path: Path) -> None:
    path = tmp_path / "broken" / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an onnx file")
    with pytest.raises(ModelLoadError) as info:
        ModelSession(path, add_sub_config(), [CPU])
    assert info.value.message.startswith("model 'broken': cannot load 1/model.onnx: the file is not a valid ONNX model")
    assert str(tmp_path) not in info.value.message and "Protobuf" not in info.value.message


# ---- sessions -----------------------------------------------------------------------------------------
def test_session_runs_and_filters_outputs(add_sub_file: Path) -> None:
    session = ModelSession(add_sub_file, add_sub_config(), [CPU])
    assert session.providers == [CPU]
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    out = session.run({"INPUT0": a, "INPUT1": b})
    np.testing.assert_array_equal(out["OUTPUT0"], a + b)
    np.testing.assert_array_equal(out["OUTPUT1"], a - b)
    assert list(session.run({"INPUT0": a, "INPUT1": b}, ["OUTPUT1"])) == ["OUTPUT1"]


def test_bytes_elements_reach_the_model_as_text(tmp_path: Path) -> None:
    """BYTES inputs arrive as `bytes`; onnxruntime would feed the model their repr ("b'hi'")."""
    path = tmp_path / "bytes_identity" / "1" / "model.onnx"
    bytes_identity(path)
    config = parse_model_config(copy.deepcopy(CONFIGS["bytes_identity"][0]), "bytes_identity")
    session = ModelSession(path, config, [CPU])
    text = np.empty((3, 1), dtype=object)
    text[:, 0] = [b"hi", "é".encode(), b""]
    echo = session.run({"text": text})["echo"]
    assert [str(e) for e in echo[:, 0]] == ["hi", "é", ""]
    session.warmup()


def test_variable_dims_warm_up_with_one_position(tmp_path: Path) -> None:
    path = tmp_path / "token_sum" / "1" / "model.onnx"
    token_sum(path)
    ModelSession(path, parse_model_config(copy.deepcopy(CONFIGS["token_sum"][0]), "token_sum"), [CPU]).warmup()


# ---- threads ------------------------------------------------------------------------------------------------
def test_intra_op_threads_default_to_the_container_cpu_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "cgroup").mkdir()
    (tmp_path / "cgroup" / "cpu.max").write_text("150000 100000\n")
    real = runtime.options.cpu_budget
    monkeypatch.setattr(runtime.options, "cpu_budget", lambda: real(tmp_path / "cgroup", affinity=8))
    config = parse_model_config(copy.deepcopy(CONFIGS["add_sub"][0]), "add_sub")
    assert intra_op_threads(config.execution) == (2, "container CPU limit of 1.5 CPUs, 8 CPUs in affinity")
    configured = config.execution.model_copy(update={"intra_op_threads": 3})
    assert intra_op_threads(configured) == (3, "execution.intra_op_threads")
    path = tmp_path / "add_sub" / "1" / "model.onnx"
    add_sub(path)
    with caplog.at_level("INFO", logger="service.runtime"):
        session = ModelSession(path, config, [CPU])
    assert session._session.get_session_options().intra_op_num_threads == 2
    [record] = [r for r in caplog.records if r.getMessage() == "session threads"]
    assert (record.model, record.file, record.intra_op_threads) == ("add_sub", "1/model.onnx", 2)  # type: ignore[attr-defined]
    (tmp_path / "cgroup" / "cpu.max").write_text("max 100000\n")
    assert intra_op_threads(config.execution) == (0, "ONNX Runtime's default (no container CPU limit)")


# ---- the KV-cache step model ------------------------------------------------------------------------------
LM_CONFIG = {
    "task": "text_generation",
    "max_batch_size": 4,
    "inputs": [{"name": "token_ids", "datatype": "INT64", "dims": [-1]}],
    "outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 40]}],
    "text": {"max_length": 24},
    "generation": {"context_length": 24, "step_model": "decoder_step.onnx"},
}


def step_file(tmp_path: Path, edit=None) -> Path:  # type: ignore[no-untyped-def]
    import onnx

    from tests.tiny_task_models import random_transformer
    from training.decoder_step import build_step_graph

    proto = build_step_graph(random_transformer(40, 24, 16, 2), heads=2)
    if edit is not None:
        edit(proto.graph)
    path = tmp_path / "lm" / "1" / "decoder_step.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(proto, str(path))
    return path


def test_step_model_loads_with_its_cache_shape(tmp_path: Path) -> None:
    step = load_step_model(step_file(tmp_path), parse_model_config(LM_CONFIG, "lm"), [CPU], "lm")
    assert (step.layers, step.heads, step.head_dim) == (2, 2, 8)


def _rename(old: str, new: str):  # type: ignore[no-untyped-def]
    def edit(graph) -> None:  # type: ignore[no-untyped-def]
        for value in [*graph.input, *graph.output]:
            if value.name == old:
                value.name = new
        for node in graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]

    return edit


@pytest.mark.parametrize(
    ("edit", "config", "fragment"),
    [
        (_rename("past_mask", "mask"), {}, "needs an INT64 input `past_mask`"),
        (_rename("new_value_1", "new_value_7"), {}, "new_key_<l>, new_value_<l> outputs"),
        (None, {"outputs": [{"name": "logits", "datatype": "FP32", "dims": [-1, 41]}]}, "logits` [batch, new, 41]"),
    ],
)
def test_step_model_off_contract_is_a_load_error_naming_the_key(
    tmp_path: Path, edit: object, config: dict, fragment: str
) -> None:
    path = step_file(tmp_path, edit)
    with pytest.raises(ModelLoadError) as info:
        load_step_model(path, parse_model_config({**LM_CONFIG, **config}, "lm"), [CPU], "lm")
    assert info.value.message.startswith("model 'lm': `generation.step_model` decoder_step.onnx: ")
    assert fragment in info.value.message


def test_step_model_can_have_its_own_intra_op_threads(tmp_path: Path) -> None:
    path = step_file(tmp_path)
    config = {**LM_CONFIG, "generation": {**LM_CONFIG["generation"], "step_intra_op_threads": 1}}
    config["execution"] = {"intra_op_threads": 2}
    step = load_step_model(path, parse_model_config(config, "lm"), [CPU], "lm")
    assert step.session._session.get_session_options().intra_op_num_threads == 1
    default = load_step_model(path, parse_model_config({**LM_CONFIG, "execution": {"intra_op_threads": 2}}, "lm"),
                              [CPU], "lm")  # fmt: skip
    assert default.session._session.get_session_options().intra_op_num_threads == 2


def test_lone_requests_get_a_session_that_spins_only_during_runs(add_sub_file: Path) -> None:
    a = np.arange(8, dtype=np.float32).reshape(2, 4)
    b = np.ones((2, 4), dtype=np.float32)
    session = ModelSession(add_sub_file, add_sub_config(), [CPU])  # spinning: lone_runs, the default
    assert session.run_lone is not None
    np.testing.assert_array_equal(session.run_lone({"INPUT0": a, "INPUT1": b})["OUTPUT0"], a + b)
    lone = runtime.session_options(add_sub_config().execution, 2, lone=True)
    assert lone.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert lone.get_session_config_entry("session.force_spinning_stop") == "1"
    batches = runtime.session_options(add_sub_config().execution, 2)
    assert batches.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    for mode in ("never", "during_runs", "always"):
        assert ModelSession(add_sub_file, add_sub_config(execution={"spinning": mode}), [CPU]).run_lone is None


@pytest.mark.parametrize(
    ("execution", "spin", "stop"),
    [({"spinning": "never"}, "0", None), ({"spinning": "during_runs"}, "1", "1"), ({"spinning": "always"}, "1", None),
     ({"allow_spinning": True}, "1", None), ({"allow_spinning": False}, "0", None)],
)  # fmt: skip
def test_spinning_modes_set_onnx_runtime_options(execution: dict, spin: str, stop: str | None) -> None:
    opts = runtime.session_options(add_sub_config(execution=execution).execution, 2)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == spin
    if stop is None:
        with pytest.raises(Exception):  # noqa: B017 - onnxruntime raises its own type for a missing key
            opts.get_session_config_entry("session.force_spinning_stop")
    else:
        assert opts.get_session_config_entry("session.force_spinning_stop") == stop


def test_allow_spinning_and_spinning_together_is_a_config_error() -> None:
    with pytest.raises(ModelLoadError, match="set `spinning` only"):
        add_sub_config(execution={"spinning": "never", "allow_spinning": True})


# ---- CUDA options, fallback, batch buckets, I/O binding (docs/gpu.md has the GPU measurements) ----------------
def test_cuda_options_reach_onnx_runtime_in_its_own_names() -> None:
    config = add_sub_config(execution={"cuda": {"device_id": 1, "gpu_mem_limit": "512MiB",
                                                "arena_extend_strategy": "next_power_of_two",
                                                "cudnn_conv_algo_search": "exhaustive", "use_tf32": True}})  # fmt: skip
    assert config.execution.cuda.provider_options() == {
        "device_id": "1",
        "gpu_mem_limit": str(512 * 1024**2),
        "arena_extend_strategy": "kNextPowerOfTwo",
        "cudnn_conv_algo_search": "EXHAUSTIVE",
        "use_tf32": "1",
        "do_copy_in_default_stream": "1",
    }
    defaults = add_sub_config().execution.cuda.provider_options()
    assert defaults["gpu_mem_limit"] == str(2 * 1024**3), "the arena must be limited unless configured"
    assert defaults["arena_extend_strategy"] == "kSameAsRequested"
    assert defaults["cudnn_conv_algo_search"] == "HEURISTIC"
    assert defaults["use_tf32"] == "0"


@pytest.mark.parametrize(
    ("cuda", "fragment"),
    [
        ({"gpu_mem_limit": "1KiB"}, "gpu_mem_limit"),
        ({"gpu_mem_limit": "lots"}, "gpu_mem_limit"),
        ({"device_id": -1}, "device_id"),
        ({"arena_extend_strategy": "grow"}, "arena_extend_strategy"),
        ({"cudnn_conv_algo_search": "fast"}, "cudnn_conv_algo_search"),
        ({"use_tf32": "yes"}, "use_tf32"),
        ({"graphs": True}, "graphs"),
    ],
)
def test_bad_cuda_options_are_load_errors_naming_the_key(cuda: dict, fragment: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        add_sub_config(execution={"cuda": cuda})
    assert "add_sub" in str(info.value) and fragment in str(info.value)


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


def test_cuda_that_does_not_start_is_a_load_error_under_device_cuda(
    add_sub_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """onnxruntime without CUDA here stands for CUDA failing to start: asked for CUDA first, ONNX Runtime runs
    the session on the CPU and only prints a notice. `--device cuda` (strict) refuses; `auto` warns."""
    if CUDA in runtime.available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be provoked this way")
    with pytest.raises(ModelLoadError) as info:
        ModelSession(add_sub_file, add_sub_config(), [CUDA, CPU], strict=True)
    message = str(info.value)
    assert "'add_sub'" in message and "1/model.onnx" in message and "CPUExecutionProvider" in message
    assert "--device cuda never falls back" in message
    session = ModelSession(add_sub_file, add_sub_config(), [CUDA, CPU], strict=False)
    assert session.providers == [CPU]
    assert any("asked for the CUDA execution provider" in r.getMessage() for r in caplog.records)


def test_cpu_sessions_never_count_as_a_fallback(add_sub_file: Path, caplog: pytest.LogCaptureFixture) -> None:
    ModelSession(add_sub_file, add_sub_config(), [CPU], strict=True)
    assert not any("CUDA" in r.getMessage() for r in caplog.records)
