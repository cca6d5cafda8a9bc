"""config.yaml's sections about tensors and serving: inputs and outputs, dynamic batching, request limits,
version policy, warm-up samples."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from service.config.base import Datatype, Strict


class TensorSpec(Strict):
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


class DynamicBatching(Strict):
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


class Limits(Strict):
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


class WarmupInput(Strict):
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


class WarmupSample(Strict):
    """One request run at load, before the version serves (as Triton's `model_warmup`)."""

    name: str = Field(min_length=1)
    """Named in the load error when the sample fails."""
    batch_size: int = Field(default=1, ge=1)
    """Items in the batch; at most `max_batch_size` (1 for a model without a batch dimension)."""
    count: int = Field(default=1, ge=1, le=1000)
    """Times the sample runs."""
    inputs: dict[str, WarmupInput] = Field(default_factory=dict)
    """Data per input name; inputs left out get zeros."""


class VersionPolicy(Strict):
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
