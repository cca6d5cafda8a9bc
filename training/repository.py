"""Writes a model repository entry: models/<name>/{config.yaml, assets, model_card.json, 1/model.onnx}."""

from __future__ import annotations

import json
import platform
import shutil
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import yaml

from service.config import CONFIG_FILE, ModelConfig, dump_model_config, load_model_config

VERSION = 1
MODEL_FILE = "model.onnx"
CARD_FILE = "model_card.json"
LIBRARIES = ("tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "tokenizers", "scikit-learn", "numpy")


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


TASK_SECTIONS = ("image", "text", "generation")


def config_yaml(config: ModelConfig) -> str:
    """Like `dump_model_config`, but the task sections are written in full, defaults included, so the
    preprocessing contract (normalization, layout, resize, ...) is explicit in the file."""
    data = yaml.safe_load(dump_model_config(config))
    for section in TASK_SECTIONS:
        value = getattr(config, section)
        if value is not None:
            data[section] = value.model_dump(mode="json")
    return yaml.safe_dump(data, sort_keys=False)


def write_entry(
    output: Path,
    name: str,
    config: ModelConfig,
    onnx_file: Path,
    assets: dict[str, str | bytes],
    card: dict,
    version_files: Sequence[Path] = (),
) -> Path:
    """Replace models/<name>/ with a fresh entry and check the server can parse its config. `version_files`
    are copied next to model.onnx (e.g. the KV-cache step model)."""
    entry = output / name
    if entry.exists():
        shutil.rmtree(entry)
    (entry / str(VERSION)).mkdir(parents=True)
    shutil.copyfile(onnx_file, entry / str(VERSION) / MODEL_FILE)
    for extra in version_files:
        shutil.copyfile(extra, entry / str(VERSION) / extra.name)
    for file_name, content in assets.items():
        target = entry / file_name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    (entry / CONFIG_FILE).write_text(config_yaml(config), encoding="utf-8")
    files = [*assets, f"{VERSION}/{MODEL_FILE}", *(f"{VERSION}/{extra.name}" for extra in version_files)]
    card = {**card, "files": {f: (entry / f).stat().st_size for f in files}}
    (entry / CARD_FILE).write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    load_model_config(entry)
    return entry
