"""ONNX Runtime sessions on tiny models: config ⇄ graph checks, running, intra-op threads, the KV-cache step model."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from service import runtime
from service.config import parse_model_config
from service.errors import ModelLoadError
from service.runtime import CPU, ModelSession, check_signature, intra_op_threads, load_step_model
from tests.tiny_models import CONFIGS, add_sub, bytes_identity, token_sum
from tests.unit.runtime_helpers import add_sub_config

# ---- config ⇄ graph -----------------------------------------------------------------------------------


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
    default = load_step_model(
        path, parse_model_config({**LM_CONFIG, "execution": {"intra_op_threads": 2}}, "lm"), [CPU], "lm"
    )
    assert default.session._session.get_session_options().intra_op_num_threads == 2
