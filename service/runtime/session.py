"""A model version's ONNX Runtime session (`ModelSession`): load, run from several threads, warm up; and the
check of a config's inputs and outputs against the graph."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.config import ModelConfig
from service.errors import ModelLoadError, quoted
from service.runtime.options import bucket_sizes, intra_op_threads, pad_batch, session_options
from service.runtime.providers import CPU, fell_back, with_options
from service.warmup import sample_feed

log = logging.getLogger(__name__)

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
        cuda_options = config.execution.cuda.provider_options()
        listed = with_options(providers, cuda_options)
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=session_options(config.execution, threads), providers=listed
            )
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own types for bad files
            log.error("cannot load a model file", extra={"model": self.model, "path": str(path), "error": str(err)})
            problem = _LOAD_PROBLEMS.get(type(err).__name__, "ONNX Runtime cannot load it")
            raise ModelLoadError(
                f"model '{self.model}': cannot load {self.shown}: {problem} (the server log has the details)"
            ) from None
        self.providers = self._session.get_providers()
        fell_back_to = fell_back(self._session, providers, cuda_options)
        if fell_back_to:
            problem = (
                f"model '{self.model}': {self.shown} asked for the CUDA execution provider with "
                f"execution.cuda's options, but {fell_back_to}; the log has ONNX Runtime's reason"
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
                str(path), sess_options=session_options(config.execution, threads), providers=listed
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
    def run_lone(self) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None:
        """Runs a lone request (`spinning: lone_runs`), if the model has a lone session.

        The lone session's threads spin during runs and for `execution.lone_spin_us` after each. A request that
        comes within that time of the previous lone run (a client sending one request after another) runs
        there and finds them awake. One that comes later runs on the batch session, whose threads sleep when
        the run returns: after an isolated request, threads still spinning would take the CPU that sending
        its answer needs (on 2 CPUs its latency rose by 0.6 ms). With `lone_spin_us: 0` every lone request
        runs on the lone session, whose threads then stop when a run returns."""
        lone = self._lone
        if lone is None:
            return None
        window = self.config.execution.lone_spin_us / 1e6
        if not window:
            return lambda feed: self._run(lone, feed)
        ended = -window

        def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            nonlocal ended
            try:
                if time.monotonic() - ended < window:
                    return self._run(lone, feed)
                return self.run(feed)
            finally:
                ended = time.monotonic()

        return run

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
        if self._buckets:
            try:
                one = {name: arr[:1] for name, arr in sample_feed(self.config, 0, folder, self.model).items()}
                for size, _ in self._buckets:
                    self.run({name: pad_batch(arr, size) for name, arr in one.items()}, quiet=True)
            except Exception:  # noqa: BLE001 - the warm-up below reports what is wrong
                pass
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
