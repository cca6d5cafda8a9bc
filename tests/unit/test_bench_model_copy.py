"""bench/load.py's model_copy: the model variants that A/B benches compare."""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.load import model_copy
from service.config import load_model_config

MODEL = Path(__file__).resolve().parents[2] / "models" / "digits_cnn"


def test_a_copy_with_an_override_merges_sections_and_replaces_values(tmp_path):
    copy = model_copy(MODEL, tmp_path, {"execution": {"spinning": "never"}, "max_batch_size": 8})
    assert copy == tmp_path / "digits_cnn"
    config = load_model_config(copy)
    assert config.execution.spinning == "never"
    assert config.max_batch_size == 8
    assert config.image == load_model_config(MODEL).image, "sections not named stay as they were"
    assert (copy / "1" / "model.onnx").read_bytes() == (MODEL / "1" / "model.onnx").read_bytes()


def test_a_section_override_keeps_the_sections_other_keys(tmp_path):
    first = model_copy(MODEL, tmp_path / "a", {"execution": {"spinning": "never", "intra_op_threads": 1}})
    second = model_copy(first, tmp_path / "b", {"execution": {"spinning": "always"}})
    assert yaml.safe_load((second / "config.yaml").read_text())["execution"] == {
        "spinning": "always",
        "intra_op_threads": 1,
    }


def test_no_override_is_an_exact_copy(tmp_path):
    copy = model_copy(MODEL, tmp_path)
    assert (copy / "config.yaml").read_text() == (MODEL / "config.yaml").read_text()
