"""config.yaml's `execution` section: ONNX Runtime session options and the CUDA provider's."""

from __future__ import annotations

from typing import Literal

from pydantic import ByteSize, Field, StrictBool, field_validator, model_validator

from service.config.base import Strict

_ARENA_STRATEGIES = {"same_as_requested": "kSameAsRequested", "next_power_of_two": "kNextPowerOfTwo"}
_CONV_SEARCH = {"exhaustive": "EXHAUSTIVE", "heuristic": "HEURISTIC", "default": "DEFAULT"}


class CudaExecution(Strict):
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


class Execution(Strict):
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
    - `lone_runs`: a second session of the model runs the requests that have the server to themselves
      (`BatchPolicy.inline`); its threads spin between operators, and after a run for `lone_spin_us` at most,
      so that a client sending its next request at once finds them awake. Batches under load run on a session
      whose threads sleep. Lone requests save waking the threads for each operator and for each request
      (0.15 ms of a 0.5 ms batch-1 run of digits_cnn) and load loses nothing, for the memory of a second session.
    - `during_runs`: one session, spinning during every run and stopping the moment it returns: under load
      the spinning threads take CPU from the event loop (about 10% fewer requests per second on 2 CPUs).
    - `always`: they also spin after each run for as long as ONNX Runtime's default (about 40 ms of a core
      after every run): worse again under load, and costly when idle.
    - `never`: they sleep whenever they have nothing to do.
    docs/performance.md has the measurements."""
    lone_spin_us: int = Field(default=1000, ge=0, le=100_000)
    """With `spinning: lone_runs`: how long the lone session's threads keep spinning after a lone run returns,
    in microseconds (ONNX Runtime's `session.intra_op.spin_duration_us`). A request that follows its answer
    within that time (a client sending one request after another) starts on awake threads; each lone run costs
    at most that much more CPU, however long the server then stays idle. 0: they stop the moment the run
    returns."""
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

    @model_validator(mode="after")
    def _lone_spin_needs_lone_runs(self) -> Execution:
        if "lone_spin_us" in self.model_fields_set and self.spinning != "lone_runs":
            raise ValueError(
                f"lone_spin_us applies to `spinning: lone_runs` only, and spinning is {self.spinning}: "
                "drop lone_spin_us, or set spinning to lone_runs"
            )
        return self
