"""The model repository on disk: `<root>/<name>/config.yaml` and `<root>/<name>/<version>/model.onnx`.

Scanning and validating only; loading sessions is `registry.py`'s job. Names that come from requests
are checked so they can never reach outside the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from service.config import CONFIG_FILE, ModelConfig, load_model_config
from service.errors import ModelLoadError, ModelNotFoundError, quoted

MODEL_FILE = "model.onnx"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@dataclass(frozen=True, slots=True)
class ModelEntry:
    name: str
    path: Path
    config: ModelConfig
    versions: dict[str, Path]
    """Selected versions (by the config's version policy) → their model.onnx."""
    step_models: dict[str, Path] = field(default_factory=dict)
    """Selected versions → their KV-cache decoding graph (`generation.step_model`), when the config names one."""


class ModelRepository:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def exists(self) -> bool:
        return self.root.is_dir()

    def names(self) -> list[str]:
        """Folders that hold a config.yaml, sorted."""
        if not self.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / CONFIG_FILE).is_file())

    def model_dir(self, name: str) -> Path:
        """The folder of model `name`; NOT_FOUND for names that are not plain folder names in the repository."""
        if not _NAME.fullmatch(name) or name in (".", ".."):
            raise ModelNotFoundError(
                f"{quoted(name)} is not a valid model name (up to 128 letters, digits, '_', '.', '-'; "
                "no path separators)"
            )
        path = (self.root / name).resolve()
        if path.parent != self.root or not (path / CONFIG_FILE).is_file():
            raise ModelNotFoundError(f"model {quoted(name)} is not in the repository")
        return path

    def load(self, name: str) -> ModelEntry:
        path = self.model_dir(name)
        config = load_model_config(path)
        available = {int(p.name): p / MODEL_FILE for p in path.iterdir() if p.name.isdigit() and p.is_dir()}
        with_file = {v: f for v, f in available.items() if f.is_file()}
        if not with_file:
            raise ModelLoadError(
                f"model '{name}': no version folder with a {MODEL_FILE} (expected {path}/1/{MODEL_FILE})"
            )
        selected = config.version_policy.select(sorted(with_file))
        if not selected:
            raise ModelLoadError(
                f"model '{name}': version_policy selects none of the available versions {sorted(with_file)}; "
                "fix `version_policy.specific`"
            )
        versions = {str(v): with_file[v] for v in selected}
        return ModelEntry(name, path, config, versions, _step_models(name, config, versions))


def _step_models(name: str, config: ModelConfig, versions: dict[str, Path]) -> dict[str, Path]:
    """Each selected version's `generation.step_model` file, which must exist when the config names one."""
    step = config.generation.step_model if config.generation is not None else None
    if step is None:
        return {}
    files = {version: model.parent / step for version, model in versions.items()}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing or Path(step).name != step:
        raise ModelLoadError(
            f"model '{name}': `generation.step_model` is '{step}' but there is no such file in the version folder "
            f"({', '.join(missing) or 'a plain file name is needed'}); export it (deepserve-train writes "
            "decoder_step.onnx) or remove the key to decode without a KV cache"
        )
    return files
