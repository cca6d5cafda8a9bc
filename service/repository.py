"""The model repository on disk: `<root>/<name>/config.yaml` and `<root>/<name>/<version>/model.onnx`.

Scanning and validating only; loading sessions is `registry.py`'s job. Names that come from requests
are checked so they can never reach outside the repository.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from service.config import CONFIG_FILE, ModelConfig, inside, load_model_config, model_files
from service.errors import ConfigError, ModelLoadError, ModelNotFoundError, quoted

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

    def require_models(self) -> list[str]:
        """`names()`, which must not be empty: a missing or empty repository is a mistake in the settings, and a
        server with nothing to serve must not start (and report ready)."""
        where = f"--model-repository {self.root}"
        if not self.root.exists():
            raise ConfigError(f"{where} does not exist; point --model-repository (DEEPSERVE_MODEL_REPOSITORY) at it")
        if not self.exists():
            raise ConfigError(f"{where} is not a folder; it must hold one folder per model")
        names = self.names()
        if not names:
            raise ConfigError(f"{where} holds no models: expected <name>/{CONFIG_FILE} and <name>/1/{MODEL_FILE}")
        return names

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
        """The model's config and the files of its selected versions. Every file must resolve inside the model's
        folder (`config.inside`); messages name files relative to it, never by their server path."""
        path = self.model_dir(name)
        config = load_model_config(path)
        for key, file in model_files(config).items():
            inside(name, path, file, key)
        folders = {int(p.name): p.name for p in path.iterdir() if p.name.isdigit() and p.is_dir()}
        with_file = {v: folder for v, folder in folders.items() if (path / folder / MODEL_FILE).is_file()}
        if not with_file:
            raise ModelLoadError(
                f"model '{name}': no version folder with a {MODEL_FILE} (expected 1/{MODEL_FILE} in its folder)"
            )
        selected = config.version_policy.select(sorted(with_file))
        if not selected:
            raise ModelLoadError(
                f"model '{name}': version_policy selects none of the available versions {sorted(with_file)}; "
                "fix `version_policy.specific`"
            )
        versions = {str(v): _model_file(name, path, with_file[v]) for v in selected}
        step_models = _step_models(name, path, config, {str(v): with_file[v] for v in selected})
        return ModelEntry(name, path, config, versions, step_models)


def _model_file(name: str, model_dir: Path, folder: str) -> Path:
    """`folder/model.onnx`, once it and its folder are known to resolve inside the model's folder. The path is
    returned as laid out, not resolved: ONNX Runtime reads external data only from the graph file's folder."""
    relative = f"{folder}/{MODEL_FILE}"
    for part in (folder, relative):
        inside(name, model_dir, part, relative)
    return model_dir / relative


def _step_models(name: str, model_dir: Path, config: ModelConfig, folders: dict[str, str]) -> dict[str, Path]:
    """Each selected version's `generation.step_model` file (version → folder name in `folders`), which must be
    in the version folder, and exist, when the config names one."""
    step = config.generation.step_model if config.generation is not None else None
    if step is None:
        return {}
    key = "generation.step_model"
    files = {}
    for version, folder in folders.items():
        inside(name, model_dir / folder, step, key, where="the version folder")
        inside(name, model_dir, f"{folder}/{step}", key)
        files[version] = model_dir / folder / step
    missing = [f"{folders[v]}/{step}" for v, f in files.items() if not f.is_file()]
    if missing:
        raise ModelLoadError(
            f"model '{name}': `{key}` is {quoted(step)} but there is no such file in the version folder "
            f"({', '.join(missing)}); export it (deepserve-train writes decoder_step.onnx) or remove the key to "
            "decode without a KV cache"
        )
    return files
