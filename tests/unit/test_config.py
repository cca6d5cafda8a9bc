"""`config.yaml` validation: every error names the model and the key, and says how to fix it."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from service.config import (
    ModelConfig,
    ServerSettings,
    Task,
    dump_model_config,
    load_model_config,
    parse_model_config,
)
from service.errors import ModelLoadError

BASE: dict = {
    "max_batch_size": 8,
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [4]}],
    "outputs": [{"name": "y", "datatype": "FP32", "dims": [-1]}],
}


def config(**changes: object) -> dict:
    data = copy.deepcopy(BASE)
    data.update(changes)
    return data


def load_error(data: object, model: str = "m") -> str:
    with pytest.raises(ModelLoadError) as info:
        parse_model_config(data, model)
    message = info.value.message
    assert f"model '{model}'" in message
    return message


def test_minimal_config_gets_documented_defaults() -> None:
    cfg = parse_model_config(config(), "m")
    assert cfg.task is Task.RAW and cfg.platform == "onnxruntime"
    assert cfg.batched and cfg.instances == 1
    assert cfg.dynamic_batching.enabled and cfg.dynamic_batching.max_queue_size == 1024
    assert cfg.input("x") is not None and cfg.input("nope") is None
    assert cfg.outputs[0].variable and not cfg.inputs[0].variable


@pytest.mark.parametrize(
    ("data", "key"),
    [
        (config(bogus=1), "bogus"),
        (config(dynamic_batching={"max_queue_delay": 3}), "dynamic_batching.max_queue_delay"),
        (config(inputs=[{"name": "x", "datatype": "FP32", "dims": [4], "shape": [4]}]), "inputs.0.shape"),
        (config(execution={"provider": ["cuda"]}), "execution.provider"),
    ],
)
def test_unknown_key_is_named(data: dict, key: str) -> None:
    message = load_error(data)
    assert f"unknown key `{key}`" in message
    assert "check its spelling" in message


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"max_batch_size": -1}, ["`max_batch_size`", "greater than or equal to 0"]),
        ({"max_batch_size": "eight"}, ["`max_batch_size`"]),
        ({"instances": 0}, ["`instances`"]),
        ({"task": "translation"}, ["`task`", "image_classification"]),
        ({"platform": "tensorflow"}, ["`platform`", "onnxruntime"]),
        ({"inputs": []}, ["`inputs`", "at least 1"]),
        ({"inputs": [{"name": "x", "datatype": "FLOAT", "dims": [4]}]}, ["`inputs.0.datatype`", "FP32"]),
        ({"inputs": [{"name": "x", "datatype": "FP32", "dims": [0]}]}, ["`inputs.0.dims`", "positive or -1"]),
        ({"inputs": [{"name": "x", "datatype": "FP32", "dims": [-2]}]}, ["`inputs.0.dims`", "got [-2]"]),
        ({"inputs": [{"name": "", "datatype": "FP32", "dims": [1]}]}, ["`inputs.0.name`"]),
        ({"dynamic_batching": {"max_queue_delay_ms": -1}}, ["`dynamic_batching.max_queue_delay_ms`"]),
        ({"dynamic_batching": {"max_queue_size": 0}}, ["`dynamic_batching.max_queue_size`"]),
        ({"dynamic_batching": {"preferred_batch_sizes": [0, 2]}}, ["preferred_batch_sizes must be positive"]),
        ({"execution": {"providers": ["tpu"]}}, ["`execution.providers.0`", "'cuda'"]),
        ({"execution": {"graph_optimization_level": "max"}}, ["`execution.graph_optimization_level`"]),
        ({"version_policy": {"latest": 0}}, ["`version_policy.latest`"]),
        ({"version_policy": {"latest": 1, "specific": [1]}}, ["either version_policy.latest or", "not both"]),
    ],
)
def test_bad_values_name_key_and_problem(changes: dict, fragments: list[str]) -> None:
    message = load_error(config(**changes))
    assert "invalid config.yaml" in message
    for fragment in fragments:
        assert fragment in message


def test_preferred_batch_sizes_above_max_batch_size() -> None:
    message = load_error(config(dynamic_batching={"preferred_batch_sizes": [4, 16, 32]}))
    assert "preferred_batch_sizes [16, 32] exceed max_batch_size 8" in message
    assert "raise max_batch_size or drop those sizes" in message


def test_preferred_batch_sizes_are_sorted_and_deduplicated() -> None:
    cfg = parse_model_config(config(dynamic_batching={"preferred_batch_sizes": [8, 2, 2, 4]}), "m")
    assert cfg.dynamic_batching.preferred_batch_sizes == (2, 4, 8)


def test_duplicate_tensor_names_rejected() -> None:
    dup = [{"name": "x", "datatype": "FP32", "dims": [4]}] * 2
    assert "input names must be unique, got ['x', 'x']" in load_error(config(inputs=dup))
    dup = [{"name": "y", "datatype": "FP32", "dims": [4]}] * 2
    assert "output names must be unique" in load_error(config(outputs=dup))


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"task": "image_classification", "labels": "labels.txt"}, "task image_classification needs a `image` section"),
        ({"task": "image_classification", "image": {"height": 8, "width": 8}}, "needs `labels`"),
        ({"task": "sentiment", "labels": "labels.txt"}, "task sentiment needs a `text` section"),
        ({"task": "sentiment", "text": {"max_length": 16}}, "task sentiment needs `labels`"),
        ({"task": "text_generation"}, "task text_generation needs a `generation` section"),
        ({"task": "text_generation", "generation": {"context_length": 8}}, "needs a `text` section naming its"),
        (
            {"task": "text_generation", "generation": {"context_length": 8, "engine": "process"}},
            "engine: process runs the KV-cache step model in child processes, and this model has no step_model",
        ),
        (
            {"task": "text_generation", "generation": {"context_length": 8, "engine": "fork"}},
            "'thread', 'process' or 'auto'",
        ),
    ],
)
def test_task_sections_required(changes: dict, expected: str) -> None:
    assert expected in load_error(config(**changes))


def test_task_with_its_sections_is_accepted() -> None:
    cfg = parse_model_config(config(task="sentiment", labels="labels.txt", text={"max_length": 16}), "m")
    assert cfg.task is Task.SENTIMENT and cfg.text is not None and cfg.text.tokenizer == "tokenizer.json"


@pytest.mark.parametrize("engine", ["thread", "auto"])
def test_generation_without_a_step_model_accepts_thread_or_auto_lanes(engine: str) -> None:
    """`auto` chooses thread lanes for a model without a step model; only `process` needs one."""
    text = {"max_length": 8}
    cfg = parse_model_config(
        config(task="text_generation", text=text, generation={"context_length": 8, "engine": engine}), "m"
    )
    assert cfg.generation is not None and cfg.generation.engine == engine and cfg.generation.step_model is None


def test_name_must_match_folder() -> None:
    message = load_error(config(name="other"), model="folder")
    assert "`name` is 'other' but the folder is 'folder'" in message
    assert "make them equal or drop `name`" in message
    assert parse_model_config(config(name="folder"), "folder").name == "folder"


@pytest.mark.parametrize("data", [None, [], "max_batch_size: 1", 3])
def test_config_must_be_a_mapping(data: object) -> None:
    assert "config.yaml must be a mapping" in load_error(data)


def test_load_model_config_missing_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(ModelLoadError, match=r"model 'm': no config.yaml in its folder$"):
        load_model_config(tmp_path / "m")


def test_load_model_config_invalid_yaml(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text("inputs: [unclosed\n")
    with pytest.raises(ModelLoadError, match=r"model 'm': config.yaml is not valid YAML at line 2, column 1$"):
        load_model_config(tmp_path / "m")


def test_load_model_config_empty_file(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text("")
    with pytest.raises(ModelLoadError, match="must be a mapping"):
        load_model_config(tmp_path / "m")


def test_dump_then_load_round_trips(tmp_path: Path) -> None:
    original = parse_model_config(
        config(dynamic_batching={"max_queue_delay_ms": 3, "preferred_batch_sizes": [2, 4]}, instances=2), "m"
    )
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text(dump_model_config(original))
    assert load_model_config(tmp_path / "m") == original


def test_model_config_is_frozen() -> None:
    cfg = ModelConfig.model_validate(config())
    with pytest.raises(ValueError, match="frozen"):
        cfg.max_batch_size = 3  # type: ignore[misc]


def test_server_settings_read_env_and_reject_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPSERVE_PORT", "9001")
    monkeypatch.setenv("DEEPSERVE_MAX_MESSAGE_BYTES", "1024")
    settings = ServerSettings()
    assert settings.port == 9001 and settings.max_message_bytes == 1024
    with pytest.raises(ValueError, match="port"):
        ServerSettings(port=70000)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        ServerSettings(bogus=1)  # type: ignore[call-arg]


def test_strict_readiness_is_the_default_and_reads_true_or_false(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPSERVE_STRICT_READINESS", raising=False)
    assert ServerSettings().strict_readiness is True
    monkeypatch.setenv("DEEPSERVE_STRICT_READINESS", "false")
    assert ServerSettings().strict_readiness is False
    assert ServerSettings(strict_readiness="true").strict_readiness is True  # type: ignore[arg-type]  # as the flag
    with pytest.raises(ValueError, match="strict_readiness"):
        ServerSettings(strict_readiness="maybe")  # type: ignore[arg-type]
