"""Plain values passed between layers. No protobuf and no gRPC in here."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class ModelState(str, enum.Enum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


class FinishReason(str, enum.Enum):
    """Why a generation ended."""

    LENGTH = "length"
    STOP = "stop"
    EOS = "eos"
    CONTEXT = "context"
    CANCELLED = "cancelled"
    DEADLINE = "deadline"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A piece of generated text, as it is streamed."""

    text: str


@dataclass(slots=True)
class InferRequest:
    """One inference call, already decoded into arrays (one per input name). Not frozen, as most types here
    are: one is built for every request, and a frozen dataclass's `__init__` sets each field through
    `object.__setattr__` (1.4 µs against 0.3 µs). Nothing changes one after it is built."""

    model: str
    version: str
    inputs: dict[str, np.ndarray]
    outputs: tuple[str, ...] = ()
    """Output names asked for; empty means all."""
    id: str = ""
    deadline: float | None = None
    """`time.monotonic()` after which the request is dropped if it has not run."""
    validated: bool = False
    """The decoder matched every input to the model's fixed signature (`RequestLimits.decode_fixed`), which
    is all that validating it would check."""


@dataclass(slots=True)
class InferResponse:
    """One inference call's outputs (not frozen, for the reason `InferRequest` gives)."""

    model: str
    version: str
    outputs: dict[str, np.ndarray]
    id: str = ""


@dataclass(frozen=True, slots=True)
class ModelIndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str = ""


@dataclass(slots=True)
class DurationStat:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass(slots=True)
class BatchStat:
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)


@dataclass(slots=True)
class ModelStats:
    """Counters behind the ModelStatistics RPC (the same events feed Prometheus)."""

    inference_count: int = 0
    """Requests' batch items that ran (a request of batch 4 counts 4)."""
    execution_count: int = 0
    """Model runs (one per batch)."""
    last_inference_ms: int = 0
    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)
    batches: dict[int, BatchStat] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How the next token of a generated text is chosen (validated by `tasks.text_generation`)."""

    temperature: float = 1.0
    """0 is greedy: always the most probable token."""
    top_k: int = 0
    """Sample among the k most probable tokens; 0 means no limit."""
    top_p: float = 1.0
    """Sample among the most probable tokens whose probabilities sum to top_p; 1 means no limit."""
    seed: int | None = None
    """Seed of the request's own random generator; None picks one at random."""
    repetition_penalty: float = 1.0
    """Above 1, tokens the sequence has already generated are less likely (as in CTRL and Hugging Face
    `transformers`: a positive logit is divided by it, a negative one multiplied); 1 is none."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One generation as a client asks for it, built by the edges (gRPC, HTTP) and checked by
    `tasks.text_generation` against the model: None or 0 means the model's default (`generation` in its config)."""

    prompt: str | bytes
    max_new_tokens: int = 0
    temperature: float | None = None
    top_k: int = 0
    """0: no limit."""
    top_p: float | None = None
    seed: int | None = None
    repetition_penalty: float | None = None
    stop: tuple[str, ...] = ()
    model: str = ""
    """The model's name; "": the only model that generates, when there is one."""
    version: str = ""
    """"": the model's newest version."""
