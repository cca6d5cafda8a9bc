"""The `warmup` section: its validation, the feeds it builds, and what a failed warm-up does to a load."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pytest

from service.config import ModelConfig, parse_model_config
from service.errors import ModelLoadError
from service.repository import ModelRepository
from service.runtime import CPU, ModelSession
from service.warmup import sample_feed
from tests.tiny_models import CONFIGS, token_sum
from tests.triton_models import SIMPLE_STRING_WARMUP, add_sub_config, add_sub_graph

TOKENS = copy.deepcopy(CONFIGS["token_sum"][0])


def config_with(warmup: object, base: dict = TOKENS) -> ModelConfig:
    return parse_model_config({**copy.deepcopy(base), "warmup": warmup}, "m")


def simple_string(tmp_path: Path, warmup: object = None) -> tuple[Path, ModelConfig]:
    path = tmp_path / "simple_string" / "1" / "model.onnx"
    add_sub_graph(path, "BYTES")
    config = add_sub_config("BYTES") | ({"warmup": warmup} if warmup is not None else {})
    return path, parse_model_config(config, "simple_string")


# ---- config.yaml ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("warmup", "fragment"),
    [
        ([{"name": "a"}, {"name": "a"}], "warmup sample names must be unique"),
        ([{"name": "a", "batch_size": 17}], "warmup sample 'a': batch_size 17 exceeds max_batch_size 16; lower it"),
        ([{"name": "a", "inputs": {"ids": {}}}], "warmup sample 'a': `ids` is not an input; inputs: ['token_ids']"),
        ([{"name": "a", "inputs": {"token_ids": {"dims": [2, 3]}}}], "input `token_ids` has dims [-1]; give as many"),
        ([{"name": "a", "inputs": {"token_ids": {"dims": [0]}}}], "positive `dims`"),
        ([{"name": "a", "inputs": {"token_ids": {"data": "ones"}}}], "`warmup.0.inputs.token_ids.data`: Input should"),
        (
            [{"name": "a", "inputs": {"token_ids": {"zero_data": True}}}],
            "unknown key `warmup.0.inputs.token_ids.zero_data`",
        ),
        ([{"name": "a", "inputs": {"token_ids": {"file": "x.npy", "data": "random"}}}], "a `file` brings its own data"),
        ([{"name": "a", "inputs": {"token_ids": {"file": "x.raw"}}}], "`file` must be a .npy file (numpy.save)"),
        ([{"name": "a", "count": 0}], "`warmup.0.count`: Input should be greater than or equal to 1"),
        ([{"batch_size": 1}], "`warmup.0.name`: Field required"),
    ],
)
def test_bad_samples_are_config_errors_naming_the_sample(warmup: object, fragment: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        config_with(warmup)
    assert fragment in str(info.value)


def test_a_model_without_a_batch_dimension_warms_up_one_item() -> None:
    with pytest.raises(
        ModelLoadError, match=r"batch_size 2 exceeds max_batch_size 0 \(no batch dimension\); make it 1"
    ):
        config_with([{"name": "a", "batch_size": 2}], {**TOKENS, "max_batch_size": 0})


def test_fixed_dims_may_be_repeated_and_no_section_means_the_default() -> None:
    base = add_sub_config("INT32")
    assert config_with([{"name": "a", "inputs": {"INPUT0": {"dims": [16]}}}], base).warmup is not None
    assert parse_model_config(base, "m").warmup is None


# ---- feeds --------------------------------------------------------------------------------------------------
def test_default_and_zero_samples_are_zeros_with_one_position_per_variable_dim(tmp_path: Path) -> None:
    assert sample_feed(parse_model_config(TOKENS, "m"), 0, tmp_path, "m")["token_ids"].tolist() == [[0]]
    feed = sample_feed(
        config_with([{"name": "a", "batch_size": 3, "inputs": {"token_ids": {"dims": [5]}}}]), 0, tmp_path, "m"
    )
    assert feed["token_ids"].shape == (3, 5) and feed["token_ids"].dtype == np.int64 and not feed["token_ids"].any()
    unbatched = sample_feed(parse_model_config({**TOKENS, "max_batch_size": 0}, "m"), 0, tmp_path, "m")
    assert unbatched["token_ids"].shape == (1,)
    strings = sample_feed(parse_model_config(add_sub_config("BYTES"), "m"), 0, tmp_path, "m")
    assert strings["INPUT0"].shape == (1, 16) and set(strings["INPUT0"].flat) == {b""}


def test_random_data_respects_value_range_and_datatype_and_repeats(tmp_path: Path) -> None:
    inputs = [
        {"name": "ids", "datatype": "INT64", "dims": [50], "value_range": [3, 5]},
        {"name": "small", "datatype": "UINT8", "dims": [50]},
        {"name": "x", "datatype": "FP16", "dims": [50]},
        {"name": "flag", "datatype": "BOOL", "dims": [50]},
        {"name": "text", "datatype": "BYTES", "dims": [50]},
    ]
    base = {"max_batch_size": 4, "inputs": inputs, "outputs": [{"name": "y", "datatype": "FP32", "dims": [1]}]}
    sample = {"name": "r", "batch_size": 4, "inputs": {t["name"]: {"data": "random"} for t in inputs}}
    config = config_with([sample], base)
    feed = sample_feed(config, 0, tmp_path, "m")
    assert set(np.unique(feed["ids"])) == {3, 4, 5} and feed["ids"].dtype == np.int64
    assert feed["small"].dtype == np.uint8 and feed["small"].min() >= 0 and feed["small"].max() <= 9
    assert feed["x"].dtype == np.float16 and feed["x"].min() >= 0 and feed["x"].max() <= 1
    assert feed["flag"].dtype == bool and feed["flag"].any() and not feed["flag"].all()
    assert {int(b) for b in feed["text"].flat} <= set(range(10)) and all(
        isinstance(b, bytes) for b in feed["text"].flat
    )
    assert all(v.shape[0] == 4 for v in feed.values())
    again = sample_feed(config, 0, tmp_path, "m")
    assert all(np.array_equal(feed[k], again[k]) for k in feed)


def npy_sample(tmp_path: Path, arr: np.ndarray, base: dict = TOKENS, batch_size: int = 2) -> ModelConfig:
    (tmp_path / "warmup").mkdir(exist_ok=True)
    np.save(tmp_path / "warmup" / "data.npy", arr)
    name = base["inputs"][0]["name"]
    return config_with([{"name": "f", "batch_size": batch_size, "inputs": {name: {"file": "warmup/data.npy"}}}], base)


def test_a_file_holds_one_item_or_the_whole_batch(tmp_path: Path) -> None:
    one = npy_sample(tmp_path, np.array([1, 2, 3], dtype=np.int32))  # int32 converts safely to INT64
    assert sample_feed(one, 0, tmp_path, "m")["token_ids"].tolist() == [[1, 2, 3], [1, 2, 3]]
    batch = npy_sample(tmp_path, np.array([[1, 2], [3, 4]], dtype=np.int64))
    assert sample_feed(batch, 0, tmp_path, "m")["token_ids"].tolist() == [[1, 2], [3, 4]]
    strings = {**TOKENS, "inputs": [{"name": "text", "datatype": "BYTES", "dims": [2]}]}
    text = npy_sample(tmp_path, np.array(["7", "é"]), strings)
    assert sample_feed(text, 0, tmp_path, "m")["text"].tolist() == [[b"7", "é".encode()]] * 2
    raw = npy_sample(tmp_path, np.array([[b"1", b"2"]]), strings, batch_size=1)
    assert sample_feed(raw, 0, tmp_path, "m")["text"].tolist() == [[b"1", b"2"]]


@pytest.mark.parametrize(
    ("arr", "fragment"),
    [
        (np.array([1.5, 2.5]), "holds float64 values, which do not convert safely to INT64"),
        (
            np.zeros((3, 2), dtype=np.int64),
            "has shape [3, 2]; the input takes [-1] per item (-1: any size): give one item, or a batch of 2",
        ),
        (np.zeros((1, 2, 2), dtype=np.int64), "has shape [1, 2, 2]"),
        (np.array([b"a"], dtype=object), "is not a .npy file numpy can read without pickle"),
    ],
)
def test_a_bad_file_is_a_load_error_naming_sample_input_and_file(
    tmp_path: Path, arr: np.ndarray, fragment: str
) -> None:
    config = npy_sample(tmp_path, arr)
    with pytest.raises(ModelLoadError) as info:
        sample_feed(config, 0, tmp_path, "m")
    assert str(info.value).startswith("model 'm': warmup sample 'f': input `token_ids`: 'warmup/data.npy' ")
    assert fragment in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_a_missing_file_or_one_outside_the_model_folder_does_not_load(tmp_path: Path) -> None:
    config = config_with([{"name": "f", "inputs": {"token_ids": {"file": "nothing.npy"}}}])
    with pytest.raises(ModelLoadError, match=r"there is no file 'nothing.npy' in the model's folder"):
        sample_feed(config, 0, tmp_path, "m")
    root = tmp_path / "models"
    (root / "m" / "1").mkdir(parents=True)
    token_sum(root / "m" / "1" / "model.onnx")
    np.save(tmp_path / "outside.npy", np.zeros(1, dtype=np.int64))
    warmup = [{"name": "f", "inputs": {"token_ids": {"file": "../../outside.npy"}}}]
    (root / "m" / "config.yaml").write_text(
        f"max_batch_size: 16\ninputs: [{{name: token_ids, datatype: INT64, dims: [-1]}}]\n"
        f"outputs: [{{name: total, datatype: INT64, dims: [1]}}]\nwarmup: {warmup}\n"
    )
    with pytest.raises(ModelLoadError, match=r"`warmup.0.inputs.token_ids.file` must name a file inside the model's"):
        ModelRepository(root).load("m")


# ---- loading ------------------------------------------------------------------------------------------------
def test_a_failed_default_warmup_warns_and_the_model_still_loads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, config = simple_string(tmp_path)
    session = ModelSession(path, config, [CPU])
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        session.warmup()
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "warm-up on zeros failed; the model loads anyway" in record.getMessage()
    assert record.model == "simple_string" and "stoll" in record.error  # type: ignore[attr-defined]
    numbers = np.array([[str(i).encode() for i in range(16)]], dtype=object)
    out = session.run({"INPUT0": numbers, "INPUT1": np.full((1, 16), b"1", dtype=object)})
    assert [int(s) for s in out["OUTPUT0"][0]] == list(range(1, 17))


def test_a_sample_that_fails_is_a_load_error_naming_it(tmp_path: Path) -> None:
    path, config = simple_string(tmp_path, [{"name": "empty strings", "inputs": {"INPUT0": {"data": "zeros"}}}])
    with pytest.raises(ModelLoadError) as info:
        ModelSession(path, config, [CPU]).warmup()
    assert str(info.value) == (
        "model 'simple_string': 1/model.onnx failed its warm-up run of `warmup` sample 'empty strings'; check "
        "that it accepts the sample's data (the server log has the details)"
    )


def test_random_numbers_warm_up_a_model_that_casts_text_to_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, config = simple_string(tmp_path, [{**SIMPLE_STRING_WARMUP[0], "count": 3}])
    session = ModelSession(path, config, [CPU])
    runs: list[tuple[int, ...]] = []
    real = session.run
    monkeypatch.setattr(
        session, "run", lambda feed, outputs=None, quiet=False: runs.append(feed["INPUT0"].shape) or real(feed)
    )
    with caplog.at_level(logging.WARNING, logger="service.runtime"):
        session.warmup()
    assert runs == [(8, 16)] * 3 and not caplog.records


def test_an_empty_section_turns_warmup_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, config = simple_string(tmp_path, [])
    session = ModelSession(path, config, [CPU])
    monkeypatch.setattr(session, "run", lambda feed, outputs=None, quiet=False: pytest.fail("no warm-up was asked for"))
    session.warmup()
