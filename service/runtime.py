"""ONNX Runtime sessions: execution-provider choice, session options, warmup.

Knows nothing of gRPC or batching: a `ModelSession` runs a feed dict and returns named outputs.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import Device, Execution, ModelConfig
from service.cpus import cpu_budget
from service.errors import ConfigError, ModelLoadError, quoted
from service.warmup import sample_feed

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_PROVIDER_NAMES = {"cuda": CUDA, "cpu": CPU}
_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# ONNX Runtime's load errors (exception class names) → what a client is told instead of their text.
_LOAD_PROBLEMS = {
    "InvalidProtobuf": "the file is not a valid ONNX model",
    "NoSuchFile": "the file does not exist",
    "InvalidGraph": "the ONNX graph is invalid",
    "NotImplemented": "the graph uses an operator or type that ONNX Runtime does not support",
}
_QUIET = ort.RunOptions()
_QUIET.log_severity_level = 4  # fatal only: load-time failures are logged by us, with the model's name
# ONNX tensor element type names (as onnxruntime reports them) → our datatype strings.
_ORT_TYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


def check_device(device: Device, available: Sequence[str]) -> None:
    """Fail start-up when `--device cuda` is asked for and CUDA is missing."""
    if device is Device.CUDA and CUDA not in available:
        raise ConfigError(
            "--device cuda was requested but onnxruntime offers no CUDAExecutionProvider "
            f"(available: {', '.join(available) or 'none'}); install the `gpu` extra (onnxruntime-gpu) "
            "on a machine with CUDA, or use --device auto|cpu"
        )


def choose_providers(device: Device, preferred: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """Execution providers for one model, most preferred first; CPU is always the last resort.

    `device` is the server-wide choice, `preferred` the model's own `execution.providers` (names
    `cuda`/`cpu`), `available` what `onnxruntime.get_available_providers()` offers.
    """
    if device is Device.CPU:
        wanted = ["cpu"]
    elif preferred:
        wanted = list(preferred)
    else:
        wanted = ["cuda", "cpu"]
    chosen = [_PROVIDER_NAMES[w] for w in wanted if _PROVIDER_NAMES[w] in available]
    if device is Device.CUDA and CUDA not in chosen and "cuda" in wanted:
        check_device(device, available)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def intra_op_threads(execution: Execution) -> tuple[int, str]:
    """A session's intra-op pool size, and where it comes from (for the load log): `execution.intra_op_threads`,
    else the container's CPU limit (service/cpus.py), else 0: ONNX Runtime's default, a thread per core."""
    if execution.intra_op_threads:
        return execution.intra_op_threads, "execution.intra_op_threads"
    budget = cpu_budget()
    if not budget.threads:
        return 0, "ONNX Runtime's default (no container CPU limit)"
    return budget.threads, f"container CPU limit of {budget.limit:g} CPUs, {budget.affinity} CPUs in affinity"


def session_options(execution: Execution, intra_op_threads: int, lone: bool = False) -> ort.SessionOptions:
    """`lone`: the options of the session for lone requests (`spinning: lone_runs`), which spins during runs."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = execution.inter_op_threads
    opts.graph_optimization_level = _OPT_LEVELS[execution.graph_optimization_level]
    spinning = "during_runs" if lone else execution.spinning
    spin = "0" if spinning in ("never", "lone_runs") else "1"
    opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
    opts.add_session_config_entry("session.inter_op.allow_spinning", spin)
    if spinning == "during_runs":
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


class ModelSession:
    """One `onnxruntime.InferenceSession`, safe to run from several threads at once.

    `path` is `<model folder>/<version>/<file>`. Load errors name it relative to the model's folder and say
    what is wrong in our words: ONNX Runtime's own messages carry server paths; they go to the log."""

    def __init__(
        self, path: Path, config: ModelConfig, providers: list[str], strict: bool = False, buckets: bool = True
    ) -> None:
        """`strict` (`--device cuda`): a session that asked for CUDA first but runs on the CPU is a load error.
        ONNX Runtime falls back to the CPU by itself when the CUDA provider cannot start (a missing cuDNN, say).
        `buckets`: a session per size of `execution.batch_buckets` (not for step models, whose batch is rows)."""
        self.path = path
        self.config = config
        self.model = path.parent.parent.name
        self.shown = f"{path.parent.name}/{path.name}"
        """The file as config.yaml and messages name it, relative to the model's folder."""
        threads, source = intra_op_threads(config.execution)
        cuda = config.execution.cuda
        with_options = [(name, cuda.provider_options()) if name == CUDA else name for name in providers]
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=session_options(config.execution, threads), providers=with_options
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            log.error("cannot load a model file", extra={"model": self.model, "path": str(path), "error": str(err)})
            problem = _LOAD_PROBLEMS.get(type(err).__name__, "ONNX Runtime cannot load it")
            raise ModelLoadError(
                f"model '{self.model}': cannot load {self.shown}: {problem} (the server log has the details)"
            ) from None
        self.providers = self._session.get_providers()
        fell_back = _fell_back(self._session, providers, cuda.provider_options())
        if fell_back:
            problem = (
                f"model '{self.model}': {self.shown} asked for the CUDA execution provider with "
                f"execution.cuda's options, but {fell_back}; the log has ONNX Runtime's reason"
            )
            if strict:
                raise ModelLoadError(problem + ". --device cuda never falls back: fix CUDA, or use --device auto")
            log.warning(problem + "; it serves anyway (--device auto)", extra={"model": self.model})
        self._io_binding = config.execution.io_binding
        self.output_names = [o.name for o in self._session.get_outputs()]
        self._buckets: list[tuple[int, ort.InferenceSession]] = []
        sizes = bucket_sizes(config, self.providers[0]) if buckets else []
        for size in sizes[:-1]:
            session = ort.InferenceSession(
                str(path), sess_options=session_options(config.execution, threads), providers=with_options
            )
            self._buckets.append((size, session))
        if sizes:
            self._buckets.append((sizes[-1], self._session))
        self._lone: ort.InferenceSession | None = None
        if config.execution.spinning == "lone_runs" and self.providers[0] == CPU:
            self._lone = ort.InferenceSession(
                str(path), sess_options=session_options(config.execution, threads, lone=True), providers=providers
            )
        log.info(
            "session threads",
            extra={
                "model": self.model,
                "file": self.shown,
                "intra_op_threads": threads,
                "threads_from": source,
                "batch_buckets": sizes,
            },
        )

    def run(
        self, feed: dict[str, np.ndarray], outputs: Sequence[str] | None = None, quiet: bool = False
    ) -> dict[str, np.ndarray]:
        """`quiet`: ONNX Runtime prints no error of its own to stderr (the caller logs it)."""
        if not self._buckets:
            return self._run(self._session, feed, outputs, quiet)
        count = len(next(iter(feed.values())))
        size, session = next(((b, s) for b, s in self._buckets if b >= count), self._buckets[-1])
        if size <= count:
            return self._run(session, feed, outputs, quiet)
        padded = {name: pad_batch(arr, size) for name, arr in feed.items()}
        return {name: out[:count] for name, out in self._run(session, padded, outputs, quiet).items()}

    @property
    def bucket_sizes(self) -> list[int]:
        """The batch sizes with a session of their own (`execution.batch_buckets`), none when one serves all."""
        return [size for size, _ in self._buckets]

    @property
    def run_lone(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None:
        """Runs a lone request on the session whose threads spin during runs (`spinning: lone_runs`), if any."""
        lone = self._lone
        if lone is None:
            return None
        return lambda feed: self._run(lone, feed)

    def _run(
        self,
        session: ort.InferenceSession,
        feed: dict[str, np.ndarray],
        outputs: Sequence[str] | None = None,
        quiet: bool = False,
    ) -> dict[str, np.ndarray]:
        names = list(outputs) if outputs else self.output_names
        options = _QUIET if quiet else None
        if self._io_binding:
            binding = session.io_binding()
            for name, arr in feed.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(arr))
            for name in names:
                binding.bind_output(name, "cpu")
            session.run_with_iobinding(binding, options)
            return dict(zip(names, binding.copy_outputs_to_cpu(), strict=True))
        results = session.run(names, {name: _text_for_ort(arr) for name, arr in feed.items()}, options)
        return dict(zip(names, results, strict=True))

    def graph_signature(self) -> tuple[dict[str, tuple[str, list]], dict[str, tuple[str, list]]]:
        """Inputs and outputs of the graph: name → (datatype, shape with None/str for symbolic dims)."""

        def describe(args: list) -> dict[str, tuple[str, list]]:
            return {a.name: (_ORT_TYPES.get(a.type, a.type), list(a.shape)) for a in args}

        return describe(self._session.get_inputs()), describe(self._session.get_outputs())

    def warmup(self) -> None:
        """Run the config's `warmup` samples, so that the first requests don't pay for ONNX Runtime's lazy set-up.

        Without a `warmup` key: one run on zeros, which some models cannot take (text cast to a number, say);
        those log a warning and load anyway. A sample the config asks for must run."""
        folder = self.path.parent.parent
        if self._lone is not None:
            try:
                self._run(self._lone, sample_feed(self.config, 0, folder, self.model), quiet=True)
            except Exception:  # noqa: BLE001 - the main session's warm-up below reports what is wrong
                pass
        for size, _ in self._buckets:
            try:
                one = {name: arr[:1] for name, arr in sample_feed(self.config, 0, folder, self.model).items()}
                self.run({name: pad_batch(arr, size) for name, arr in one.items()}, quiet=True)
            except Exception:  # noqa: BLE001 - the warm-up below reports what is wrong
                break
        if self.config.warmup is None:
            try:
                self.run(sample_feed(self.config, 0, folder, self.model), quiet=True)
            except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
                log.warning(
                    "warm-up on zeros failed; the model loads anyway. Give it a `warmup` section in config.yaml "
                    "with data it accepts, or `warmup: []`",
                    extra={"model": self.model, "path": str(self.path), "error": str(err)},
                )
            return
        for index, sample in enumerate(self.config.warmup):
            feed = sample_feed(self.config, index, folder, self.model)
            for _ in range(sample.count):
                self.checked_run(
                    feed, f"of `warmup` sample {quoted(sample.name)}", "check that it accepts the sample's data"
                )

    def checked_run(
        self, feed: dict[str, np.ndarray], what: str, fix: str = "check `inputs` and `outputs` against the graph"
    ) -> dict[str, np.ndarray]:
        """`run` at load time: a failure is a ModelLoadError in our words, ONNX Runtime's message goes to the log."""
        try:
            return self.run(feed, quiet=True)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types
            log.error("model warm-up failed", extra={"model": self.model, "path": str(self.path), "error": str(err)})
            raise ModelLoadError(
                f"model '{self.model}': {self.shown} failed its warm-up run {what}; {fix} "
                "(the server log has the details)"
            ) from None


def bucket_sizes(config: ModelConfig, provider: str) -> list[int]:
    """`execution.batch_buckets` resolved for a model whose session runs on `provider`: [] for one session."""
    top = config.max_batch_size
    chosen = config.execution.batch_buckets
    if not config.batched or top <= 1:
        return []
    if chosen is None:
        if provider != CUDA:
            return []
        chosen = tuple(8**k for k in range(top.bit_length()) if 8**k < top)
    if not chosen:
        return []
    if chosen[-1] > top:
        raise ModelLoadError(
            f"execution.batch_buckets {list(chosen)} go beyond max_batch_size {top}; drop the larger sizes"
        )
    return list(chosen) if chosen[-1] == top else [*chosen, top]


def pad_batch(arr: np.ndarray, size: int) -> np.ndarray:
    """`arr` with copies of its first item appended up to `size` items: real data, so no padded row meets a
    division by zero or an all-masked softmax that a row of zeros could."""
    return np.concatenate([arr, np.repeat(arr[:1], size - len(arr), axis=0)])


def _fell_back(session: ort.InferenceSession, asked: list[str], options: dict[str, str]) -> str | None:
    """What ONNX Runtime did instead of running on CUDA with `options`, when it did. When creating the CUDA
    provider fails (no cuDNN, a bad device id), its Python binding retries by itself: with CUDA's default
    options (device 0, an arena without a limit), then on the CPU, and only prints a notice."""
    if asked[:1] != [CUDA]:
        return None
    running = session.get_providers()
    if running[:1] != [CUDA]:
        return f"ONNX Runtime runs it on {running}: CUDA or cuDNN failed to start"
    actual = session.get_provider_options().get(CUDA, {})
    differ = [key for key in ("device_id", "gpu_mem_limit") if key in actual and actual[key] != options[key]]
    if differ:
        return (
            "ONNX Runtime runs it with CUDA's default options instead ("
            + ", ".join(f"{key} {actual[key]}, not {options[key]}" for key in differ)
            + ")"
        )
    return None


def _text_for_ort(arr: np.ndarray) -> np.ndarray:
    """String tensors as `str`: onnxruntime's binding turns `bytes` elements into their repr, b"hi" → "b'hi'"."""
    if arr.dtype != object:
        return arr
    out = np.empty(arr.shape, dtype=object)
    out.flat[:] = [item.decode("utf-8") if isinstance(item, bytes) else item for item in arr.flat]
    return out


def check_signature(session: ModelSession, config: ModelConfig, model: str) -> None:
    """The config's inputs/outputs must match the ONNX graph: names, datatypes and fixed dims."""
    graph_inputs, graph_outputs = session.graph_signature()
    for kind, specs, graph in (("inputs", config.inputs, graph_inputs), ("outputs", config.outputs, graph_outputs)):
        for spec in specs:
            if spec.name not in graph:
                raise ModelLoadError(
                    f"model '{model}': {kind} `{spec.name}` is not in the ONNX graph, whose {kind} are "
                    f"{sorted(graph)}; rename it in config.yaml"
                )
            datatype, shape = graph[spec.name]
            if datatype != spec.datatype:
                raise ModelLoadError(
                    f"model '{model}': {kind} `{spec.name}` has datatype {spec.datatype} in config.yaml but "
                    f"{datatype} in the ONNX graph; set `datatype: {datatype}`"
                )
            expected = ([-1] if config.batched else []) + list(spec.dims)
            graph_dims = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
            mismatch = len(graph_dims) != len(expected) or any(
                g != -1 and e != -1 and g != e for g, e in zip(graph_dims, expected, strict=False)
            )
            if mismatch or (config.batched and graph_dims and graph_dims[0] not in (-1,)):
                shown = graph_dims[1:] if config.batched else graph_dims
                raise ModelLoadError(
                    f"model '{model}': {kind} `{spec.name}` has dims {list(spec.dims)} in config.yaml but the "
                    f"ONNX graph's shape is {graph_dims}"
                    + (" (first dim is the batch)" if config.batched else "")
                    + f"; set `dims: {shown}`"
                    + ("" if not config.batched or graph_dims[:1] == [-1] else " and export a dynamic batch axis")
                )
    missing = [name for name in graph_inputs if config.input(name) is None]
    if missing:
        raise ModelLoadError(
            f"model '{model}': the ONNX graph needs inputs {missing} that config.yaml does not declare; "
            "add them under `inputs`"
        )


@dataclass(frozen=True)
class StepModel:
    """A loaded `generation.step_model` (the KV-cache decoding graph) and the shape of its cache."""

    session: ModelSession
    layers: int
    heads: int
    head_dim: int


_CACHE_NAME = re.compile(r"^(past_key|past_value|new_key|new_value)_(\d+)$")


def load_step_model(
    path: Path, config: ModelConfig, providers: list[str], model: str, strict: bool = False
) -> StepModel:
    """Session for the step graph, checked against the contract documented on `Generation.step_model`,
    and warmed up with a prefill and a decoding step."""
    threads = config.generation.step_intra_op_threads if config.generation else None
    if threads is not None:
        config = config.model_copy(
            update={"execution": config.execution.model_copy(update={"intra_op_threads": threads})}
        )
    session = ModelSession(path, config, providers, strict, buckets=False)
    inputs, outputs = session.graph_signature()

    def fail(problem: str) -> ModelLoadError:
        return ModelLoadError(
            f"model '{model}': `generation.step_model` {path.name}: {problem}; re-export it with "
            "deepserve-train or remove the key"
        )

    for name in ("token_ids", "positions", "past_mask"):
        if inputs.get(name, ("", []))[0] != "INT64" or len(inputs[name][1]) != 2:
            raise fail(f"needs an INT64 input `{name}` of rank 2")
    cache = {n: spec for n, spec in {**inputs, **outputs}.items() if _CACHE_NAME.match(n)}
    layers = sum(1 for n in cache if n.startswith("past_key_"))
    expected = {f"{kind}_{i}" for kind in ("past_key", "past_value", "new_key", "new_value") for i in range(layers)}
    if not layers or set(cache) != expected:
        raise fail(
            f"needs past_key_<l>, past_value_<l> inputs and new_key_<l>, new_value_<l> outputs for "
            f"l = 0..layers-1, found {sorted(cache)}"
        )
    shape = inputs["past_key_0"][1]
    heads, head_dim = (shape[1], shape[3]) if len(shape) == 4 else (None, None)
    if not (isinstance(heads, int) and isinstance(head_dim, int)):
        raise fail(f"past_key_0 must be FP32 [batch, heads, past, head_dim] with fixed heads and head_dim, got {shape}")
    bad = [n for n, (dtype, dims) in cache.items() if dtype != "FP32" or dims[1::2] != [heads, head_dim]]
    extra = sorted(set(inputs) - expected - {"token_ids", "positions", "past_mask"})
    if bad or extra:
        raise fail(
            f"cache tensors {bad} differ from past_key_0 (FP32, same heads and head_dim) or there are "
            f"inputs outside the contract {extra}"
        )
    vocab = (config.output("logits") or config.outputs[0]).dims[-1]
    logits = outputs.get("logits", ("", []))[1]
    if len(logits) != 3 or (isinstance(logits[2], int) and vocab > 0 and logits[2] != vocab):
        raise fail(f"needs an output `logits` [batch, new, {vocab}] like model.onnx's, got {logits or 'none'}")
    step = StepModel(session, layers, heads, head_dim)
    _warmup_step(step, config.generation.context_length if config.generation else 1)
    return step


def _warmup_step(step: StepModel, context: int) -> None:
    one = np.zeros((1, 1), np.int64)
    for past in (0, context):
        cache = np.zeros((1, step.heads, past, step.head_dim), np.float32)
        feed: dict[str, np.ndarray] = {"token_ids": one, "positions": one, "past_mask": np.zeros((1, past), np.int64)}
        feed |= {f"past_{kind}_{i}": cache for kind in ("key", "value") for i in range(step.layers)}
        step.session.checked_run(feed, f"with a cache of {past} positions")


def available_providers() -> list[str]:
    return list(ort.get_available_providers())
