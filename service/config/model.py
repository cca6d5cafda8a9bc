"""`models/<name>/config.yaml` as a whole (`ModelConfig`): its cross-checks, reading and validating it, and the
files it names, which must lie inside the model's folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from service.config.base import CONFIG_FILE, INTEGER_DATATYPES, Strict, Task
from service.config.execution import Execution
from service.config.sections import DynamicBatching, Limits, TensorSpec, VersionPolicy, WarmupSample
from service.config.tasks import Generation, ImagePreprocessing, TextPreprocessing
from service.errors import ModelLoadError, quoted

log = logging.getLogger(__name__)


class ModelConfig(Strict):
    """`models/<name>/config.yaml`. Unknown keys are errors."""

    name: str | None = None
    """Defaults to the folder name; when given it must equal it."""
    task: Task = Task.RAW
    platform: Literal["onnxruntime"] = "onnxruntime"
    max_batch_size: int = Field(default=0, ge=0)
    """Largest batch the model runs; 0 means the model has no batch dimension."""
    inputs: tuple[TensorSpec, ...] = Field(min_length=1)
    outputs: tuple[TensorSpec, ...] = Field(min_length=1)
    dynamic_batching: DynamicBatching = DynamicBatching()
    instances: int = Field(default=1, ge=1, le=64)
    """Batches run concurrently (worker threads sharing one session)."""
    execution: Execution = Execution()
    limits: Limits = Limits()
    version_policy: VersionPolicy = VersionPolicy()
    labels: str | None = None
    """Text file, one class label per line, relative to the model folder; it must resolve (symbolic links followed)
    inside that folder."""
    image: ImagePreprocessing | None = None
    text: TextPreprocessing | None = None
    generation: Generation | None = None
    warmup: tuple[WarmupSample, ...] | None = None
    """Requests each version runs when it loads, before it serves, so that the first clients don't pay for
    ONNX Runtime's lazy set-up. Default (no key): one batch of one on zeros (empty strings for BYTES, 1 for
    each variable dim); a model that cannot take zeros logs a warning and loads anyway. A sample listed here
    that fails is a load error naming the sample. `[]`: no warm-up."""
    description: str = ""

    @model_validator(mode="after")
    def _cross_checks(self) -> ModelConfig:
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"input names must be unique, got {names}")
        names = [t.name for t in self.outputs]
        if len(set(names)) != len(names):
            raise ValueError(f"output names must be unique, got {names}")
        too_big = [s for s in self.dynamic_batching.preferred_batch_sizes if s > self.max_batch_size]
        if too_big:
            raise ValueError(
                f"dynamic_batching.preferred_batch_sizes {too_big} exceed max_batch_size "
                f"{self.max_batch_size}; raise max_batch_size or drop those sizes"
            )
        required = {
            Task.IMAGE_CLASSIFICATION: ("image", self.image),
            Task.SENTIMENT: ("text", self.text),
            Task.TEXT_GENERATION: ("generation", self.generation),
        }.get(self.task)
        if required is not None and required[1] is None:
            raise ValueError(f"task {self.task.value} needs a `{required[0]}` section")
        if self.task in (Task.IMAGE_CLASSIFICATION, Task.SENTIMENT) and self.labels is None:
            raise ValueError(f"task {self.task.value} needs `labels` (a file with one class per line)")
        if self.task is Task.TEXT_GENERATION and self.text is None:
            raise ValueError("task text_generation needs a `text` section naming its tokenizer")
        for spec in self.inputs:
            if spec.value_range is not None and spec.datatype not in INTEGER_DATATYPES:
                raise ValueError(f"input `{spec.name}`: value_range applies to integer inputs, not {spec.datatype}")
            other = self.input(spec.same_shape_as) if spec.same_shape_as else None
            if spec.same_shape_as and (other is None or len(other.dims) != len(spec.dims)):
                raise ValueError(
                    f"input `{spec.name}`: same_shape_as names `{spec.same_shape_as}`, which is not an "
                    "input of the same rank"
                )
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> ModelConfig:
        names = [sample.name for sample in self.warmup or ()]
        if len(set(names)) != len(names):
            raise ValueError(f"warmup sample names must be unique, got {names}")
        for sample in self.warmup or ():
            where = f"warmup sample '{sample.name}'"
            if sample.batch_size > max(self.max_batch_size, 1):
                raise ValueError(
                    f"{where}: batch_size {sample.batch_size} exceeds max_batch_size {self.max_batch_size}"
                    + ("; lower it" if self.batched else " (no batch dimension); make it 1")
                )
            for name, data in sample.inputs.items():
                spec = self.input(name)
                if spec is None:
                    raise ValueError(f"{where}: `{name}` is not an input; inputs: {[t.name for t in self.inputs]}")
                if data.dims is not None and not _dims_fit(data.dims, spec.dims):
                    raise ValueError(
                        f"{where}: input `{name}` has dims {list(spec.dims)}; give as many positive "
                        f"`dims`, equal to the fixed ones, not {list(data.dims)}"
                    )
        return self

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorSpec | None:
        return next((t for t in self.inputs if t.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((t for t in self.outputs if t.name == name), None)


def _dims_fit(sizes: tuple[int, ...], dims: tuple[int, ...]) -> bool:
    """Whether concrete `sizes` are a shape of `dims` (-1: any size)."""
    return len(sizes) == len(dims) and all(n >= 1 and d in (-1, n) for n, d in zip(sizes, dims, strict=True))


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<top level>"
        if e["type"] == "extra_forbidden":
            parts.append(f"unknown key `{key}` (remove it or check its spelling)")
        else:
            parts.append(f"`{key}`: {e['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_model_config(data: object, model: str) -> ModelConfig:
    """Validate an already-parsed config mapping; errors name the model and the key."""
    if not isinstance(data, dict):
        raise ModelLoadError(f"model '{model}': {CONFIG_FILE} must be a mapping of keys to values")
    try:
        config = ModelConfig.model_validate(data)
    except ValidationError as err:
        raise ModelLoadError(f"model '{model}': invalid {CONFIG_FILE}: {_describe(err)}") from None
    if config.name is not None and config.name != model:
        raise ModelLoadError(
            f"model '{model}': `name` is '{config.name}' but the folder is '{model}'; make them equal or drop `name`"
        )
    return config


def load_model_config(model_dir: Path) -> ModelConfig:
    """The model's config.yaml, parsed and validated. Messages name files relative to the model's folder and
    carry no YAML library text (clients read them); the details go to the log."""
    model = model_dir.name
    path = inside(model, model_dir, CONFIG_FILE, CONFIG_FILE)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelLoadError(f"model '{model}': no {CONFIG_FILE} in its folder") from None
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as err:
        log.error("cannot read a model's config", extra={"model": model, "path": str(path), "error": str(err)})
        raise ModelLoadError(f"model '{model}': {CONFIG_FILE} {_yaml_problem(err)}") from None
    return parse_model_config(data, model)


def _yaml_problem(err: Exception) -> str:
    if isinstance(err, UnicodeDecodeError):
        return f"is not UTF-8 text (byte {err.start})"
    if isinstance(err, OSError):
        return "cannot be read (the server log has the details)"
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"is not valid YAML{where}"


def model_files(config: ModelConfig) -> dict[str, str]:
    """The files `config` names in the model's folder, by key (`generation.step_model` is in each version folder)."""
    files = {"labels": config.labels, "text.tokenizer": config.text.tokenizer if config.text else None}
    for i, sample in enumerate(config.warmup or ()):
        files |= {f"warmup.{i}.inputs.{name}.file": data.file for name, data in sample.inputs.items()}
    return {key: name for key, name in files.items() if name is not None}


def inside(model: str, folder: Path, name: str, key: str, where: str = "the model's folder") -> Path:
    """`folder / name` with symbolic links resolved; a ModelLoadError naming `key` unless it lies inside `folder`.

    Every file of a model is opened through this (config.yaml, model.onnx, and the files config.yaml names), so
    whoever writes a model's folder cannot make the server read, and a client see, a file outside it. Links
    that stay inside the folder are fine (Kubernetes mounts ConfigMaps and Secrets as such links)."""
    base = folder.resolve()
    try:
        path = (base / name).resolve()
    except (OSError, RuntimeError):  # a loop of symbolic links
        raise ModelLoadError(
            f"model '{model}': `{key}` {quoted(name)} cannot be resolved (a symbolic link loop?)"
        ) from None
    if path != base and path.is_relative_to(base):
        return path
    plain = Path(os.path.normpath(base / name))
    if path == base:
        how = "which is the folder itself"
    elif plain != base and plain.is_relative_to(base):
        how = "a symbolic link to outside it"
    else:
        how = "which is outside it"
    raise ModelLoadError(f"model '{model}': `{key}` must name a file inside {where}, got {quoted(name)}, {how}")


def dump_model_config(config: ModelConfig) -> str:
    """YAML text for a config, leaving out defaults (used by training/ to write repository entries)."""
    data = config.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False)
