"""config.yaml's task sections: image and text preprocessing, text generation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from service.config.base import Strict


class Normalization(Strict):
    """pixel' = (pixel * scale - mean) / std, per channel or one value for all."""

    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)


class ImagePreprocessing(Strict):
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


class TextPreprocessing(Strict):
    tokenizer: str = "tokenizer.json"
    """Hugging Face `tokenizers` file, relative to the model folder; it must resolve inside that folder."""
    max_length: int = Field(ge=1)
    """Longest token sequence the model accepts; longer texts are truncated (and the response says so)."""
    pad_id: int = Field(default=0, ge=0)
    lowercase: bool = False


class Generation(Strict):
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
    default_repetition_penalty: float = Field(default=1.0, ge=1.0, le=10.0)
    """repetition_penalty of a request that leaves it unset (1 is none): tokens the sequence has already
    generated get their logit divided by it (multiplied when negative), greedy requests included."""
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
    engine: Literal["thread", "process", "auto"] = "thread"
    """Where each lane's steps run (the step model and the sampling). `thread`: in the lane's thread, in the
    server's process. `process`: in a child process per lane, which loads the step model itself, so that the
    steps' Python does not take turns for the server's GIL with the event loop streaming the tokens; 1.39x
    the tokens/s of 16 gRPC streams on two cores (docs/performance.md). Needs `step_model`. `auto`: process
    lanes where the step model runs on the CPU, thread lanes where it runs on CUDA (or where there is no
    step_model): on a GPU a step spends its time in ONNX Runtime with the GIL released, and a child gained
    nothing there while it cost a CUDA context of its own, about 690 MiB of GPU memory per lane (docs/gpu.md)."""

    @model_validator(mode="after")
    def _process_needs_step_model(self) -> Generation:
        if self.engine == "process" and self.step_model is None:
            raise ValueError(
                "engine: process runs the KV-cache step model in child processes, and this model has no "
                "step_model; set step_model, or engine: thread"
            )
        return self
