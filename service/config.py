"""Typed settings: the server's flags/env (`ServerSettings`) and each model's `config.yaml` (`ModelConfig`).

Both are validated when they are loaded; a bad value is an error that names the key and says how to fix
it. This module knows nothing of gRPC, ONNX Runtime or TensorFlow, so `training/` can import it to write
configs the server accepts.
"""

from __future__ import annotations

import enum
import logging
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.errors import ModelLoadError, quoted

log = logging.getLogger(__name__)
CONFIG_FILE = "config.yaml"


class Task(str, enum.Enum):
    IMAGE_CLASSIFICATION = "image_classification"
    SENTIMENT = "sentiment"
    TEXT_GENERATION = "text_generation"
    RAW = "raw"


class Device(str, enum.Enum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


# Open Inference Protocol datatype strings and the numpy dtype each one maps to.
DATATYPES: dict[str, str] = {
    "BOOL": "bool",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object",
}
INTEGER_DATATYPES = frozenset(("UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"))
Datatype = Literal[
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    """One model input or output, without the batch dimension when `max_batch_size > 0`."""

    name: str = Field(min_length=1)
    datatype: Datatype
    dims: tuple[int, ...]
    """Shape without the batch dimension; -1 marks a variable dimension."""
    pad_value: float | int | None = None
    """Value used to pad a variable dimension when requests of different lengths share a batch.
    Without it, requests are only batched with others of the same shape."""
    value_range: tuple[int, int] | None = None
    """Inclusive bounds of an integer input's values; a request outside them is refused before batching,
    so it cannot fail a batch it shares with others. Default for the token input of a sentiment or
    text_generation model: [0, vocabulary size - 1] of its tokenizer."""
    same_shape_as: str | None = None
    """Another input this one must match in shape (a mask and its tokens). Default for an input named
    `attention_mask`: the one other input with the same dims."""

    @field_validator("value_range")
    @classmethod
    def _range_ordered(cls, bounds: tuple[int, int] | None) -> tuple[int, int] | None:
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"value_range must be [low, high] with low <= high, got {list(bounds)}")
        return bounds

    @field_validator("dims")
    @classmethod
    def _dims_valid(cls, dims: tuple[int, ...]) -> tuple[int, ...]:
        for d in dims:
            if d == 0 or d < -1:
                raise ValueError(f"dims must be positive or -1 (variable), got {list(dims)}")
        return dims

    @property
    def variable(self) -> bool:
        return any(d == -1 for d in self.dims)


class DynamicBatching(_Strict):
    """How requests are grouped into batches (see DESIGN.md, batching semantics)."""

    enabled: bool = True
    max_queue_delay_ms: float = Field(default=0.0, ge=0, le=10_000)
    """Longest time the oldest queued request waits for others to join its batch when an instance is
    free. 0 (as in Triton) dispatches at once: requests that arrive while a batch runs still batch
    together, and an idle server adds no wait. A positive delay pays off when a run's fixed cost is
    large next to its per-item cost (GPUs); measure with bench/serving.py --override."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Batch sizes the model runs best at; a batch closes early when it reaches one."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Requests waiting beyond this are refused at once with UNAVAILABLE "queue full"."""
    default_timeout_ms: float | None = Field(default=None, gt=0)
    """Queue timeout for requests that carry no deadline of their own."""

    @field_validator("preferred_batch_sizes")
    @classmethod
    def _sizes_positive(cls, sizes: tuple[int, ...]) -> tuple[int, ...]:
        if any(s < 1 for s in sizes):
            raise ValueError("preferred_batch_sizes must be positive integers")
        return tuple(sorted(set(sizes)))


class Limits(_Strict):
    """Per-request bounds (docs/limits.md), checked where a request enters, before anything is allocated
    by a size the client declares. Past one, the request gets INVALID_ARGUMENT naming the limit."""

    max_input_elements: int | None = Field(default=None, ge=1)
    """Elements of one input tensor in one V2 request. Default: `max_batch_size` times the input's dims, each
    variable dim counted at `max_variable_dim` (or at 65,536 when that is unbounded)."""
    max_variable_dim: int | None = Field(default=None, ge=1)
    """Largest size of a variable (-1) dim other than the batch, in V2 requests. Default:
    `generation.context_length`, else `text.max_length`, else unbounded."""
    max_text_chars: int = Field(default=20_000, ge=1)
    """Characters of one text (sentiment) or prompt (generation). Only the part the model reads (the first
    or last `max_length` tokens) is tokenized, however long the text."""
    max_items: int = Field(default=256, ge=1)
    """Texts or images in one task request."""
    max_image_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    """Bytes of one encoded image."""
    max_image_pixels: int = Field(default=4096 * 4096, ge=1)
    """Pixels (width x height) of one image, read from its header before it is decoded."""


_ARENA_STRATEGIES = {"same_as_requested": "kSameAsRequested", "next_power_of_two": "kNextPowerOfTwo"}
_CONV_SEARCH = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}


class CudaExecution(_Strict):
    """Options of ONNX Runtime's CUDA execution provider, for sessions that run on it (docs/gpu.md has the
    measurements behind the defaults). Each session has its own memory arena: the model's, and its step model's."""

    device_id: int = Field(default=0, ge=0)
    """The GPU, as CUDA numbers them (CUDA_VISIBLE_DEVICES applies first)."""
    gpu_mem_limit: ByteSize = Field(default=ByteSize(2 * 1024**3), ge=16 * 1024**2)
    """The most GPU memory the session's arena may hold, in bytes or with a unit ("512MiB", "2GiB"). Without a
    limit ONNX Runtime's arena grows until the card is full, and the next model to load fails. The CUDA context
    and cuDNN's and cuBLAS's handles and workspaces come on top (a few hundred MiB per process)."""
    arena_extend_strategy: Literal["same_as_requested", "next_power_of_two"] = "same_as_requested"
    """How the arena grows when it needs more: by what the allocation asks (`same_as_requested`: no slack,
    so the limit holds more) or by doubling (`next_power_of_two`, ONNX Runtime's default)."""
    cudnn_conv_algo_search: Literal["exhaustive", "heuristic", "default"] = "heuristic"
    """How cuDNN picks a convolution algorithm for each new input shape. `exhaustive` (ONNX Runtime's default)
    benchmarks them all the first time a shape runs: with dynamic batching every new batch size pays that
    (milliseconds) inside a request. `heuristic` asks cuDNN's heuristics; `default` takes a fixed algorithm."""
    use_tf32: StrictBool = False
    """TF32 tensor-core math for FP32 matrix products and convolutions: faster on Ampere and newer, but with a
    10-bit mantissa, so results leave the 1e-4 agreement with the CPU that the committed models are tested to."""

    def provider_options(self) -> dict[str, str]:
        """The options as `CUDAExecutionProvider` takes them."""
        return {
            "device_id": str(self.device_id),
            "gpu_mem_limit": str(int(self.gpu_mem_limit)),
            "arena_extend_strategy": _ARENA_STRATEGIES[self.arena_extend_strategy],
            "cudnn_conv_algo_search": _CONV_SEARCH[self.cudnn_conv_algo_search],
            "use_tf32": "1" if self.use_tf32 else "0",
            "do_copy_in_default_stream": "1",
        }


class Execution(_Strict):
    """ONNX Runtime session options for this model."""

    providers: tuple[Literal["cuda", "cpu"], ...] | None = None
    """Execution providers in order of preference; default follows the server's --device."""
    intra_op_threads: int = Field(default=0, ge=0)
    """Threads inside one operator. 0: as many as the container's CPU limit (cgroup v1 or v2 quota / period,
    rounded up, at most the CPUs the process may run on, at least 1), so a pod limited to 2 CPUs on a 32-core
    node does not start 32 threads and get throttled; without a limit, ONNX Runtime decides (one per core).
    The count each session gets is logged when the model loads."""
    inter_op_threads: int = Field(default=0, ge=0)
    graph_optimization_level: Literal["disable", "basic", "extended", "all"] = "all"
    spinning: Literal["never", "lone_runs", "during_runs", "always"] = "lone_runs"
    """How ONNX Runtime's intra-op threads wait for work between the operators of a run and after it.
    - `lone_runs`: a second session of the model, whose threads spin between operators and stop the moment
      the run returns, runs the requests that have the server to themselves (`BatchPolicy.inline`); batches
      under load run on a session whose threads sleep. Lone requests save waking the threads for each
      operator (0.1 ms of a 0.5 ms batch-1 run of digits_cnn) and load loses nothing, for the memory of a
      second session.
    - `during_runs`: one session, spinning during every run: the same gain for lone requests, but under load
      the spinning threads take CPU from the event loop (about 10% fewer requests per second on 2 CPUs).
    - `always`: they also spin for a while after each run (ONNX Runtime's own default): worse again.
    - `never`: they sleep whenever they have nothing to do.
    docs/performance.md has the measurements."""
    allow_spinning: StrictBool | None = None
    """Deprecated: `true` is `spinning: always`, `false` is `spinning: never`."""
    cuda: CudaExecution = Field(default_factory=CudaExecution)
    """CUDA execution provider options; ignored when the model runs on the CPU."""
    batch_buckets: tuple[int, ...] | None = None
    """Batch sizes that get a session each: a batch runs on the smallest that holds it, padded with copies of
    its first item, and the padding's outputs are dropped. cuDNN's convolutions plan again whenever the input
    shape differs from the last run's, which ONNX Runtime 1.31 does not cache: 7 to 75 ms per change on an
    H200 (docs/gpu.md), so dynamic batching's varying sizes cost more than the model. A session that only
    ever sees one size never plans again. None: on CUDA 1, 8, 64, … below max_batch_size, and max_batch_size;
    on the CPU, where a new shape costs nothing, one session for every size. `[]`: one session on CUDA too.
    max_batch_size is added when missing. Each session holds its own memory arena."""
    io_binding: StrictBool = False
    """Run through an ONNX Runtime `IOBinding`: inputs bound from host memory and outputs written to host memory
    by ONNX Runtime itself, instead of `InferenceSession.run`'s copies. Meant for CUDA (docs/gpu.md measures
    it); on the CPU it works and gains nothing."""

    @field_validator("batch_buckets")
    @classmethod
    def _increasing(cls, sizes: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if sizes and (sizes[0] < 1 or list(sizes) != sorted(set(sizes))):
            raise ValueError(f"batch sizes must be at least 1 and increasing, got {list(sizes)}")
        return sizes

    @model_validator(mode="before")
    @classmethod
    def _legacy_spinning(cls, data: object) -> object:
        if isinstance(data, dict) and data.get("allow_spinning") is not None:
            if "spinning" in data:
                raise ValueError("set `spinning` only; `allow_spinning` is its deprecated older form")
            return {**data, "spinning": "always" if data["allow_spinning"] is True else "never"}
        return data


class WarmupInput(_Strict):
    """The data of one input in a warm-up sample: `data` or `file`; neither means zeros."""

    data: Literal["zeros", "random"] = "zeros"
    """`zeros` (empty strings for BYTES), or `random`: integers uniform in the input's `value_range` (else
    0..9), floats uniform in [0, 1), booleans, and for BYTES the text of integers 0..9 ("7"). Random data
    comes from a fixed seed, so a sample that fails once fails every time."""
    file: str | None = Field(default=None, min_length=1)
    """A `.npy` file (numpy.save, no pickled objects; text as a numpy str or bytes array) relative to the model
    folder, in which it must resolve. It holds one item, repeated `batch_size` times, or (one more dim) the
    whole batch; its dtype must convert safely to the input's datatype."""
    dims: tuple[int, ...] | None = None
    """The item's shape without the batch dim, to give variable (-1) dims a size; default 1 for each. A file
    brings its own shape."""

    @model_validator(mode="after")
    def _one_source(self) -> WarmupInput:
        if self.file is not None and (self.data != "zeros" or self.dims is not None):
            raise ValueError("a `file` brings its own data and shape: drop `data` and `dims`, or the file")
        if self.file is not None and not self.file.endswith(".npy"):
            raise ValueError(f"`file` must be a .npy file (numpy.save), got '{self.file}'")
        return self


class WarmupSample(_Strict):
    """One request run at load, before the version serves (as Triton's `model_warmup`)."""

    name: str = Field(min_length=1)
    """Named in the load error when the sample fails."""
    batch_size: int = Field(default=1, ge=1)
    """Items in the batch; at most `max_batch_size` (1 for a model without a batch dimension)."""
    count: int = Field(default=1, ge=1, le=1000)
    """Times the sample runs."""
    inputs: dict[str, WarmupInput] = Field(default_factory=dict)
    """Data per input name; inputs left out get zeros."""


class VersionPolicy(_Strict):
    """Which numbered versions to serve: the newest `latest` of them, or exactly `specific`."""

    latest: int | None = Field(default=None, ge=1)
    specific: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VersionPolicy:
        if self.latest is not None and self.specific is not None:
            raise ValueError("set either version_policy.latest or version_policy.specific, not both")
        return self

    def select(self, available: list[int]) -> list[int]:
        ordered = sorted(available)
        if self.specific is not None:
            return [v for v in ordered if v in self.specific]
        return ordered[-(self.latest or 1) :]


class Normalization(_Strict):
    """pixel' = (pixel * scale - mean) / std, per channel or one value for all."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


class ImagePreprocessing(_Strict):
    height: int = Field(ge=1)
    width: int = Field(ge=1)
    channels: Literal[1, 3] = 3
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    normalization: Normalization = Normalization()
    ink: Literal["dark_on_light", "light_on_dark", "any"] = "any"
    """Polarity the model was trained on. A `light_on_dark` model inverts images whose background
    is light, so a digit drawn in dark ink on paper looks like its training data."""
    resize: Literal["stretch", "fit"] = "fit"
    """`fit` keeps the aspect ratio and pads with the background colour."""
    locate: Literal["image", "ink"] = "image"
    """What is resized to height x width. `image`: the whole picture. `ink`: the mark on it, found the way
    MNIST digits were normalised: threshold against the background (whose side, light or dark, gives the
    polarity), take the largest patch of ink and the patches near it, crop to their bounding box, scale its
    longer side to 3/4 of the input, centre it by its mass, background 0 and ink 255 before
    `normalization` (inverted for a `dark_on_light` model). A picture with no ink that stands out from its
    background falls back to `image`. Needs `channels: 1`."""

    @model_validator(mode="after")
    def _ink_needs_gray(self) -> ImagePreprocessing:
        if self.locate == "ink" and self.channels != 1:
            raise ValueError("`locate: ink` finds marks on a grayscale page: set `channels: 1`, or `locate: image`")
        return self


class TextPreprocessing(_Strict):
    tokenizer: str = "tokenizer.json"
    """Hugging Face `tokenizers` file, relative to the model folder; it must resolve inside that folder."""
    max_length: int = Field(ge=1)
    """Longest token sequence the model accepts; longer texts are truncated (and the response says so)."""
    pad_id: int = Field(default=0, ge=0)
    lowercase: bool = False


class Generation(_Strict):
    context_length: int = Field(ge=2)
    """Positions the model attends over; longer prompts keep their last tokens."""
    max_active_sequences: int = Field(default=16, ge=1)
    max_waiting: int = Field(default=256, ge=1)
    eos_id: int | None = None
    bos_id: int | None = None
    default_max_new_tokens: int = Field(default=64, ge=1)
    max_new_tokens_limit: int = Field(default=512, ge=1)
    default_temperature: float = Field(default=1.0, ge=0.0, le=10.0)
    """Temperature of a request that leaves it unset (0 is greedy)."""
    default_top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """top_p of a request that leaves it unset (1 is no limit). A small model reads best with some of the
    unlikely tail cut off and a temperature below 1; greedy decoding tends to repeat itself."""
    step_model: str | None = Field(default=None, min_length=1)
    """File in each version folder (next to model.onnx) with the same weights exported for KV-cache
    decoding; generation then computes only each sequence's new tokens per step. Without it every step
    recomputes whole sequences with model.onnx. It must exist when the model loads, and resolve (symbolic
    links followed) inside the version folder. Its graph:

    - inputs `token_ids`, `positions` INT64 [batch, new]; `past_mask` INT64 [batch, past] (1 where a
      cache slot holds an earlier token); and per layer l = 0, 1, ... `past_key_<l>`, `past_value_<l>`
      FP32 [batch, heads, past, head_dim].
    - outputs `logits` FP32 [batch, new, vocab] (vocab as model.onnx's logits) and per layer
      `new_key_<l>`, `new_value_<l>` FP32 [batch, heads, new, head_dim]: the new tokens' keys and values.

    New tokens attend to the valid past slots and causally to each other, so one graph serves prefill
    (new = prompt length, past = 0) and decoding (new = 1). `deepserve-train transformer` writes it as
    `decoder_step.onnx` and checks it against model.onnx."""
    lanes: int = Field(default=1, ge=1)
    """Step loops, each in its own thread with its own share of `max_active_sequences` (and its own KV
    cache); their model steps run at the same time, so two lanes keep two CPU cores (or a CPU and an
    accelerator) busy while one lane waits on sampling and streaming. At most `max_active_sequences`."""
    step_intra_op_threads: int | None = Field(default=None, ge=0)
    """`execution.intra_op_threads` for the step model's session (None: the same as model.onnx's). A
    decoding step's operators are tiny, so splitting them across threads can cost more than it saves."""


class ModelConfig(_Strict):
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


PositiveInt = Annotated[int, Field(ge=1)]


class ServerSettings(BaseSettings):
    """`deepserve serve` flags; each has a `DEEPSERVE_<NAME>` environment variable."""

    model_config = SettingsConfigDict(env_prefix="DEEPSERVE_", extra="forbid", frozen=True)

    model_repository: Path = Path("models")
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    """gRPC port; 0 picks a free one."""
    metrics_port: int | None = Field(default=8002, ge=0, le=65535)
    """HTTP port for /metrics; None disables the endpoint."""
    http_port: int = Field(default=8000, ge=0, le=65535)
    """HTTP/REST port: KServe V2 REST (`/v2/...`), next to gRPC on the same models, limits and tokens; 0 disables
    it. 8000 as in Triton (HTTP 8000, gRPC 8001, metrics 8002)."""
    device: Device = Device.AUTO
    grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM/SIGINT, how long in-flight requests get to finish."""
    drain_notice_s: float = Field(default=1.0, ge=0)
    """On SIGTERM/SIGINT, how long the server reports NOT_SERVING while still accepting, before it stops
    taking new calls (part of the grace period)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    max_message_bytes: PositiveInt = 32 * 1024 * 1024
    """Largest gRPC message accepted or sent; larger requests get RESOURCE_EXHAUSTED."""
    max_pending_response_bytes: PositiveInt = 512 * 1024 * 1024
    """Bytes of responses the server holds for clients that have not read them yet, all connections together;
    past it, new requests get RESOURCE_EXHAUSTED until clients read or go away (docs/limits.md)."""
    max_pending_response_bytes_per_connection: PositiveInt = 64 * 1024 * 1024
    """The same, per client connection: a client that stops reading stalls only itself."""
    workers: PositiveInt = 4
    """Threads that run model inference (ONNX Runtime releases the GIL)."""
    keepalive_time_s: float = Field(default=30.0, gt=0)
    max_connection_age_s: float | None = Field(default=300.0, gt=0)
    """Connections are closed (gracefully) after this age so clients spread over new replicas."""
    max_connection_age_grace_s: float = Field(default=30.0, ge=0)
    tls_cert_file: Path | None = None
    """PEM certificate chain; with `tls_key_file` the gRPC port speaks TLS only. The files are read again when
    they change, so a certificate manager can rotate them in place: new connections get the new certificate."""
    tls_key_file: Path | None = None
    """PEM private key of `tls_cert_file`."""
    tls_client_ca_file: Path | None = None
    """PEM CA bundle: clients must present a certificate signed by it (mutual TLS). Needs `tls_cert_file`."""
    auth_tokens_file: Path | None = None
    """YAML `tokens: [{name, sha256, scopes: [infer|admin], max_concurrent_requests}]`: clients send
    `authorization: Bearer <token>`; reloaded when it changes (docs/security.md)."""
    model_control_mode: Literal["none", "explicit"] = "none"
    """`none`: RepositoryModelLoad/Unload are refused. `explicit`: allowed (with the `admin` scope when tokens
    are configured). Loading a model runs code from the repository, so it is off unless asked for."""
    health_port: int | None = Field(default=None, ge=0, le=65535)
    """A plaintext port serving only grpc.health.v1.Health (Kubernetes' gRPC probes cannot speak TLS)."""
    strict_readiness: bool = True
    """Ready (health `""` SERVING, `ServerReady` true) only while every model the server is meant to serve is
    loaded: one that failed to load (at start-up or on a `RepositoryModelLoad`) makes it not ready until it
    loads or is unloaded. `false`: ready once start-up has finished, until it drains (Triton's
    `--strict-readiness`)."""

    @model_validator(mode="after")
    def _tls_complete(self) -> ServerSettings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both --tls-cert-file and --tls-key-file, or neither")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("--tls-client-ca-file (mutual TLS) needs --tls-cert-file and --tls-key-file")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None
