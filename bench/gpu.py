"""The CUDA execution provider on a real GPU, in one run: what docs/gpu.md reports.

    python bench/gpu.py --out DIR [--perf-analyzer .gpu/perf/perf_analyzer] [--device cuda]

Sections, each timed and written to DIR/gpu.json as soon as it ends (a failing one records its error and
the rest still run), with the text of each in DIR/gpu.log:

1. env: the card (nvidia-smi), ONNX Runtime's version and providers.
2. providers: every committed model and step graph loads under `--device cuda` on CUDAExecutionProvider
   (`session.get_providers()`), `--device auto` picks CUDA, and a session that cannot start CUDA with its
   options (device id 99) is a load error, not a silent fallback. Node placement per provider, from ONNX
   Runtime's profile of one run.
3. parity: outputs of each model and of the KV-cache step graph (prefill and a decoding step) on CUDA
   against the CPU, same inputs; the goal is a max abs difference of 1e-4 (TF32 off), and TF32 on is shown.
4. raw: digits_cnn through ONNX Runtime alone at batch 1..512: `run` with numpy, I/O binding, I/O binding
   with outputs left on the GPU and copied after, and CUDA graphs (fixed shapes, inputs updated in place);
   cuDNN's exhaustive against heuristic algorithm search.
5. server: `deepserve serve --device cuda` on the committed models, perf_analyzer at concurrency 1, 8, 32
   on digits_cnn, with the ratio to raw ONNX Runtime's best; again with `execution.io_binding: true`, on a
   server started with `--device auto`.
6. generation: bench/generation.py and bench/generation_grpc.py with `--device cuda`.
7. memory: GPU memory of a process per model (NVML), the arena settings, and that `gpu_mem_limit` holds.

`--device cpu` runs the same code on the CPU (CUDA's sections compare the CPU with itself): a dry run for
machines without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer  # noqa: E402
from bench.serving import free_port  # noqa: E402
from service.config import CudaExecution, Device, ModelConfig  # noqa: E402
from service.errors import ModelLoadError  # noqa: E402
from service.repository import ModelRepository  # noqa: E402
from service.runtime import (  # noqa: E402
    CPU,
    CUDA,
    ModelSession,
    available_providers,
    choose_providers,
    load_step_model,
    with_options,
)

MODELS = ("digits_cnn", "sentiment_rnn", "textgen_transformer")
PARITY_TOLERANCE = 1e-4


class Run:
    """Results so far, written after every section, and a log of what each printed."""

    def __init__(self, out: Path, device: Device, repository: Path) -> None:
        self.out, self.device, self.repository = out, device, repository
        self.results: dict[str, Any] = {}
        self.log = (out / "gpu.log").open("a")

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def section(self, name: str, body: Callable[[], Any]) -> None:
        self.say(f"\n## {name}")
        start = time.perf_counter()
        try:
            self.results[name] = {"result": body()}
        except Exception as err:  # noqa: BLE001 - a failing section must not stop the others
            self.say(traceback.format_exc())
            self.results[name] = {"error": f"{type(err).__name__}: {err}"}
        self.results[name]["seconds"] = round(time.perf_counter() - start, 1)
        self.say(f"({name}: {self.results[name]['seconds']} s)")
        (self.out / "gpu.json").write_text(json.dumps(self.results, indent=1, default=str))

    @property
    def accel(self) -> list[str]:
        """The providers of the device under test, most preferred first."""
        return choose_providers(self.device, None, available_providers())

    def entry(self, name: str) -> tuple[ModelConfig, Path, Path | None]:
        entry = ModelRepository(self.repository).load(name)
        version = max(entry.versions, key=int)
        return entry.config, entry.versions[version], entry.step_models.get(version)


def command(cmd: list[str], timeout: float = 30) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"({cmd[0]}: {err})"


def env(run: Run) -> dict[str, Any]:
    smi = command(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap", "--format=csv,noheader"])
    found = {
        "gpu": smi,
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "available_providers": ort.get_available_providers(),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "device_under_test": run.device.value,
        "providers_chosen": run.accel,
    }
    run.say(json.dumps(found, indent=1))
    return found


def feeds(config: ModelConfig, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inputs for a model of ours: images in [0, 1], token ids of ordinary words (ids 5..999), full masks."""
    feed = {}
    for spec in config.inputs:
        dims = [d if d > 0 else 48 for d in spec.dims]
        if spec.datatype == "FP32":
            feed[spec.name] = rng.random((batch, *dims), dtype=np.float32)
        elif spec.name == "attention_mask":
            feed[spec.name] = np.ones((batch, *dims), np.int64)
        else:
            feed[spec.name] = rng.integers(5, 1000, (batch, *dims)).astype(np.int64)
    return feed


def placement(path: Path, providers: list[str], config: ModelConfig, feed: dict[str, np.ndarray]) -> dict[str, int]:
    """Nodes per execution provider in ONNX Runtime's profile of one run."""
    opts = ort.SessionOptions()
    opts.enable_profiling = True
    opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    listed = with_options(providers, config.execution.cuda.provider_options())
    session = ort.InferenceSession(str(path), opts, providers=listed)
    session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    nodes: dict[str, set[str]] = {}
    for event in events:
        provider = event.get("args", {}).get("provider")
        if event.get("cat") == "Node" and provider:
            nodes.setdefault(provider, set()).add(event["name"].removesuffix("_kernel_time"))
    return {provider: len(names) for provider, names in nodes.items()}


def step_feed(step_layers: int, heads: int, head_dim: int, rows: int, past: int, new: int, rng: np.random.Generator):
    feed: dict[str, np.ndarray] = {
        "token_ids": rng.integers(5, 1000, (rows, new)).astype(np.int64),
        "positions": np.tile(np.arange(past, past + new, dtype=np.int64), (rows, 1)),
        "past_mask": np.ones((rows, past), np.int64),
    }
    cache = rng.standard_normal((rows, heads, past, head_dim)).astype(np.float32) * 0.5
    feed |= {f"past_{kind}_{i}": cache for kind in ("key", "value") for i in range(step_layers)}
    return feed


def providers(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {"auto_chooses": choose_providers(Device.AUTO, None, available_providers())}
    strict = run.device is Device.CUDA
    rng = np.random.default_rng(0)
    for name in MODELS:
        config, path, step_path = run.entry(name)
        session = ModelSession(path, config, run.accel, strict)
        model: dict[str, Any] = {"providers": session.providers}
        model["nodes"] = placement(path, run.accel, config, feeds(config, 2, rng))
        if step_path:
            step = load_step_model(step_path, config, run.accel, name, strict)
            model["step_providers"] = step.session.providers
            feed = step_feed(step.layers, step.heads, step.head_dim, 2, 8, 1, rng)
            model["step_nodes"] = placement(step_path, run.accel, config, feed)
        found[name] = model
        run.say(f"{name}: {model}")
    config, path, _ = run.entry("digits_cnn")
    bad = config.model_copy(
        update={"execution": config.execution.model_copy(update={"cuda": CudaExecution(device_id=99)})}
    )
    try:
        ModelSession(path, bad, run.accel, strict=True)
        found["device_99_strict"] = "loaded (no error)"
    except ModelLoadError as err:
        found["device_99_strict"] = f"ModelLoadError: {err}"
    try:
        found["device_99_auto"] = ModelSession(path, bad, run.accel, strict=False).providers
    except ModelLoadError as err:
        found["device_99_auto"] = f"ModelLoadError: {err}"
    run.say(f"device_id 99 under --device cuda: {found['device_99_strict']}")
    run.say(f"device_id 99 under --device auto: {found['device_99_auto']}")
    return found


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.max(np.abs(a[name].astype(np.float64) - b[name]))) for name in a}


def with_tf32(config: ModelConfig) -> ModelConfig:
    cuda = config.execution.cuda.model_copy(update={"use_tf32": True})
    return config.model_copy(update={"execution": config.execution.model_copy(update={"cuda": cuda})})


def parity(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {}
    rng = np.random.default_rng(1)
    for name in MODELS:
        config, path, step_path = run.entry(name)
        feed = feeds(config, 16 if name != "textgen_transformer" else 4, rng)
        cpu = ModelSession(path, config, [CPU]).run(feed)
        on = ModelSession(path, config, run.accel).run(feed)
        tf32 = ModelSession(path, with_tf32(config), run.accel).run(feed)
        found[name] = {"max_abs": compare(cpu, on), "max_abs_tf32": compare(cpu, tf32)}
        if step_path:
            cpu_step = load_step_model(step_path, config, [CPU], name)
            on_step = load_step_model(step_path, config, run.accel, name)
            for label, past, new in (("prefill", 0, 24), ("decode", 40, 1)):
                sfeed = step_feed(cpu_step.layers, cpu_step.heads, cpu_step.head_dim, 4, past, new, rng)
                found[name][f"step_{label}_max_abs"] = compare(cpu_step.session.run(sfeed), on_step.session.run(sfeed))
        worst = max(v for key, d in found[name].items() if "tf32" not in key for v in d.values())
        found[name]["worst"] = worst
        found[name]["within_1e-4"] = worst <= PARITY_TOLERANCE
        run.say(f"{name}: worst max abs diff {worst:.2e} (TF32 on: "
                f"{max(found[name]['max_abs_tf32'].values()):.2e}) {found[name]}")  # fmt: skip
    return found


def timed(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call, after warm-up calls."""
    for _ in range(5):
        fn()
    calls, start = 0, time.perf_counter()
    while (spent := time.perf_counter() - start) < seconds:
        fn()
        calls += 1
    return spent / calls


def raw(run: Run, seconds: float) -> dict[str, Any]:
    config, path, _ = run.entry("digits_cnn")
    spec, out = config.inputs[0], config.outputs[0].name
    rng = np.random.default_rng(2)
    cuda = run.accel[0] == CUDA
    device = "cuda" if cuda else "cpu"

    def session(
        search: str = "heuristic", graphs: bool = False, threads: int = 0, spin: str = "0"
    ) -> ort.InferenceSession:
        options = CudaExecution(cudnn_conv_algo_search=search).provider_options()  # type: ignore[arg-type]
        if graphs:
            options["enable_cuda_graph"] = "1"
        listed = with_options(run.accel, options)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        return ort.InferenceSession(str(path), opts, providers=listed)

    # the server's sessions don't spin (execution.spinning: lone_runs runs lone requests on a spinning
    # session on the CPU only); intra-op threads: ONNX Runtime's default, one per core
    plain, exhaustive = session(), session("exhaustive")
    one_thread, spinning = session(threads=1), session(threads=1, spin="1")
    found: dict[str, Any] = {}
    for batch in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512):
        x = rng.random((batch, *spec.dims), dtype=np.float32)
        row: dict[str, float] = {"run": timed(lambda s=plain, x=x: s.run([out], {spec.name: x}), seconds)}
        binding = plain.io_binding()

        def bound(binding: ort.IOBinding = binding, x: np.ndarray = x) -> object:
            binding.bind_cpu_input(spec.name, x)
            binding.bind_output(out, "cpu")
            plain.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()

        row["io_binding"] = timed(bound, seconds)
        if cuda:
            on_device = plain.io_binding()

            def device_out(binding: ort.IOBinding = on_device, x: np.ndarray = x) -> object:
                binding.bind_cpu_input(spec.name, x)
                binding.bind_output(out, device)
                plain.run_with_iobinding(binding)
                return binding.copy_outputs_to_cpu()

            row["io_binding_device_out"] = timed(device_out, seconds)
        if batch in (1, 64):
            row["run_exhaustive"] = timed(lambda s=exhaustive, x=x: s.run([out], {spec.name: x}), seconds)
        if cuda and batch in (1, 8, 64, 256):
            try:
                probe = plain.run([out], {spec.name: x})[0]
                row["cuda_graph"] = cuda_graph(session(graphs=True), spec.name, out, x, probe, seconds)
            except Exception as err:  # noqa: BLE001 - reported, the other modes go on
                run.say(f"batch {batch}: CUDA graph failed: {err}")
        if batch in (1, 8, 64):
            row["run_1_thread"] = timed(lambda s=one_thread, x=x: s.run([out], {spec.name: x}), seconds)
            row["run_1_thread_spinning"] = timed(lambda s=spinning, x=x: s.run([out], {spec.name: x}), seconds)
        found[str(batch)] = {mode: round(batch / t, 1) for mode, t in row.items()}
        found[str(batch)]["run_ms"] = round(row["run"] * 1000, 4)
        run.say(f"batch {batch}: items/s {found[str(batch)]}")
    found["threads"] = concurrent(plain, one_thread, spec.name, out, np.asarray(spec.dims), seconds, run)
    best = {
        mode: max((found[b].get(mode, 0.0), int(b)) for b in found if b.isdigit()) for mode in ("run", "io_binding")
    }
    found["best"] = {mode: {"items_per_s": v, "batch": b} for mode, (v, b) in best.items()}
    run.say(f"best: {found['best']}")
    return found


def concurrent(
    default: ort.InferenceSession, one: ort.InferenceSession, name: str, out: str, dims: np.ndarray, seconds: float,
    run: Run,
) -> dict[str, Any]:  # fmt: skip
    """Runs per second of 1..8 threads calling one session at once (as the server's workers do), at batch 1
    and with batch sizes changing every run (1..8, as dynamic batching makes them)."""
    import threading

    rng = np.random.default_rng(4)
    inputs = {b: rng.random((b, *dims), dtype=np.float32) for b in range(1, 9)}
    found: dict[str, Any] = {}
    for label, session in (("default_threads", default), ("1_intra_op_thread", one)):
        for varying in (False, True):
            for threads in (1, 2, 4, 8):
                counts = [0] * threads
                stop_at = time.perf_counter() + seconds

                def work(
                    i: int, session: ort.InferenceSession = session, varying: bool = varying,
                    stop_at: float = stop_at, counts: list[int] = counts,
                ) -> None:  # fmt: skip
                    b = 1
                    while time.perf_counter() < stop_at:
                        b = b % 8 + 1 if varying else 1
                        session.run([out], {name: inputs[b]})
                        counts[i] += 1

                pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
                for t in pool:
                    t.start()
                for t in pool:
                    t.join()
                key = f"{label}/{'batch_1_to_8' if varying else 'batch_1'}/{threads}_threads"
                found[key] = round(sum(counts) / seconds, 1)
        run.say(f"runs/s on one session, {label}: " + ", ".join(f"{k.split('/', 1)[1]} {v}" for k, v in found.items()
                                                                if k.startswith(label)))  # fmt: skip
    return found


def shapes(run: Run, seconds: float) -> dict[str, Any]:
    """What a change of input shape between runs costs, as dynamic batching makes them: runs/s with the batch
    size cycling 1..8 after every size has run (so first-run costs are excluded), against batch 4 every run,
    per provider option; the ops that take the time (ONNX Runtime's profile); and a session per batch size."""
    found: dict[str, Any] = {}
    rng = np.random.default_rng(5)
    for name in ("digits_cnn", "sentiment_rnn"):
        config, path, _ = run.entry(name)
        spec, out = config.inputs[0], config.outputs[0].name
        if name == "digits_cnn":
            inputs = [rng.random((b, *spec.dims), dtype=np.float32) for b in range(1, 9)]
        else:  # batch 4, sequence lengths 8..64 as padding to the longest text makes them
            inputs = [rng.integers(5, 1000, (4, n)).astype(np.int64) for n in range(8, 65, 8)]
        fixed = inputs[3]
        base = CudaExecution().provider_options()
        variants = {
            "heuristic": {},
            "exhaustive": {"cudnn_conv_algo_search": "EXHAUSTIVE"},
            "default_algo": {"cudnn_conv_algo_search": "DEFAULT"},
            "prefer_nhwc": {"prefer_nhwc": "1"},
            "next_power_of_two": {"arena_extend_strategy": "kNextPowerOfTwo"},
        }
        for label, change in variants.items():
            options = {**base, **change}
            try:
                session = ort.InferenceSession(str(path), providers=with_options(run.accel, options))
            except Exception as err:  # noqa: BLE001 - an option this build lacks
                found[f"{name}/{label}"] = f"{type(err).__name__}: {err}"
                continue
            for x in inputs * 2:
                session.run([out], {spec.name: x})
            changing = timed(cycling(session, out, spec.name, inputs), seconds)
            same = timed(cycling(session, out, spec.name, [fixed]), seconds)
            found[f"{name}/{label}"] = {
                "ms_changing_shape": round(changing * 1000, 3),
                "ms_same_shape": round(same * 1000, 3),
            }
            run.say(f"{name} {label}: {found[f'{name}/{label}']}")
        opts = ort.SessionOptions()
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "shapes")
        session = ort.InferenceSession(str(path), opts, providers=with_options(run.accel, base))
        for x in inputs * 3:
            session.run([out], {spec.name: x})
        events = json.loads(Path(session.end_profiling()).read_text())
        per_op: dict[str, float] = {}
        for event in events:
            if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
                op = event.get("args", {}).get("op_name", "?")
                per_op[op] = per_op.get(op, 0.0) + event.get("dur", 0) / 1000
        top = dict(sorted(per_op.items(), key=lambda kv: -kv[1])[:8])
        found[f"{name}/ms_per_op"] = {k: round(v, 2) for k, v in top.items()}
        run.say(f"{name} ms per op type over 24 runs, shape changing every run: {found[f'{name}/ms_per_op']}")
        if name == "digits_cnn":  # a session per batch size: each sees one shape only
            per_size = {b: ort.InferenceSession(str(path), providers=with_options(run.accel, base)) for b in (1, 8)}
            for b, sess in per_size.items():
                sess.run([out], {spec.name: inputs[b - 1]})
            pair = [per_size[1], per_size[8]]
            one_session = timed(cycling(per_size[1], out, spec.name, [inputs[0], inputs[7]]), seconds)
            per_size_session = timed(alternating(pair, out, spec.name, [inputs[0], inputs[7]]), seconds)
            found[f"{name}/1_and_8_alternating_ms"] = {
                "a_session_per_size": round(per_size_session * 1000, 3),
                "one_session": round(one_session * 1000, 3),
            }
            run.say(f"{name}: batch 1 and 8 alternating, ms per run: {found[f'{name}/1_and_8_alternating_ms']}")
    return found


def cycling(session: ort.InferenceSession, out: str, name: str, inputs: list[np.ndarray]) -> Callable[[], object]:
    """A call that runs `session` on the next of `inputs`, round and round."""
    turn = iter(range(10**12))
    return lambda: session.run([out], {name: inputs[next(turn) % len(inputs)]})


def alternating(
    sessions: list[ort.InferenceSession], out: str, name: str, inputs: list[np.ndarray]
) -> Callable[[], object]:
    """A call that runs the next session on its own input, round and round."""
    turn = iter(range(10**12))

    def call() -> object:
        i = next(turn) % len(sessions)
        return sessions[i].run([out], {name: inputs[i]})

    return call


def cuda_graph(
    session: ort.InferenceSession, name: str, out: str, x: np.ndarray, probe: np.ndarray, seconds: float
) -> float:
    """Seconds per batch with a captured CUDA graph: the input copied into a fixed device buffer, the graph
    replayed, the output copied back. ONNX Runtime captures during the first runs through the binding, so
    the session must never run any other way (`probe`: the output of a plain session)."""
    x_gpu = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    y_gpu = ort.OrtValue.ortvalue_from_shape_and_type(probe.shape, probe.dtype, "cuda", 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(name, x_gpu)
    binding.bind_ortvalue_output(out, y_gpu)

    def step() -> np.ndarray:
        x_gpu.update_inplace(x)
        session.run_with_iobinding(binding)
        return y_gpu.numpy()

    for _ in range(3):
        first = step()
    if not np.allclose(first, probe, atol=1e-4):
        raise AssertionError(f"the CUDA graph's output differs from run()'s by {np.abs(first - probe).max():.2e}")
    return timed(step, seconds)


def serve(
    repository: Path, device: str, logs: Path, name: str, extra: list[str]
) -> tuple[subprocess.Popen[bytes], str, Path]:
    port, log = free_port(), logs / f"server-{name}.log"
    cmd = [sys.executable, "-m", "service", "serve", "--model-repository", str(repository), "--port", str(port),
           "--metrics-port", str(free_port()), "--http-port", "0", "--device", device, *extra]  # fmt: skip
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
    return proc, f"127.0.0.1:{port}", log


def wait_ready(proc: subprocess.Popen[bytes], address: str, models: list[str], log: Path, timeout: float) -> float:
    import grpc

    from service.grpc._generated.inference import grpc_service_pb2 as pb
    from service.grpc._generated.inference import grpc_service_pb2_grpc as pb_grpc

    start = time.monotonic()
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() - start < timeout:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited {proc.returncode}: {log.read_text()[-3000:]}")
            try:
                if all(stub.ModelReady(pb.ModelReadyRequest(name=m), timeout=1).ready for m in models):
                    return time.monotonic() - start
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout} s: {log.read_text()[-3000:]}")


def loaded_providers(log: Path) -> dict[str, Any]:
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if "model version loaded" in line:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            found[record.get("model", "?")] = record.get("providers")
    return found


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def gpu_processes() -> str:
    return command(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader"])


def variant(repository: Path, folder: Path, model: str, execution: dict[str, Any]) -> Path:
    """A repository of `model` alone, its config's `execution` section updated with `execution`."""
    shutil.copytree(repository / model, folder / model)
    path = folder / model / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config.setdefault("execution", {}).update(execution)
    path.write_text(yaml.safe_dump(config))
    return folder


def server(
    run: Run, binary: Path | None, window_ms: int, raw_best: float | None, chosen: list[str] | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {}
    config, _, _ = run.entry("digits_cnn")
    spec = config.inputs[0]
    sample = np.random.default_rng(0).random((1, *spec.dims), dtype=np.float32)
    tmp = Path(tempfile.mkdtemp(prefix="deepserve-gpu-"))
    data = perf_analyzer.input_data(tmp / "input.json", {spec.name: sample})
    env = dict(os.environ)
    if binary:
        env["LD_LIBRARY_PATH"] = f"{binary.parent}:{env.get('LD_LIBRARY_PATH', '')}"
    everything = (run.repository, run.device.value, list(MODELS), [])
    digits = ["digits_cnn"]
    setups = {
        "committed": everything,
        "workers_1": (run.repository, run.device.value, list(MODELS), ["--workers", "1"]),
        "intra_op_1": (variant(run.repository, tmp / "intra", "digits_cnn", {"intra_op_threads": 1}),
                       run.device.value, digits, []),
        "io_binding": (variant(run.repository, tmp / "bound", "digits_cnn", {"io_binding": True}), "auto", digits, []),
        "no_buckets": (variant(run.repository, tmp / "one", "digits_cnn", {"batch_buckets": []}),
                       run.device.value, digits, []),
        "buckets_1_8": (variant(run.repository, tmp / "two", "digits_cnn", {"batch_buckets": [1, 8]}),
                        run.device.value, digits, []),
    }  # fmt: skip
    for label, (repository, device, models, extra) in setups.items():
        if chosen and label not in chosen:
            continue
        proc, address, log = serve(repository, device, run.out, label, extra)
        try:
            ready_s = wait_ready(proc, address, models, log, 180)
            row: dict[str, Any] = {"device": device, "ready_s": round(ready_s, 1), "providers": loaded_providers(log)}
            run.say(
                f"{label} (--device {device} {' '.join(extra)}): ready in {ready_s:.1f} s, providers {row['providers']}"
            )
            if binary:
                for concurrency in (1, 8, 32):
                    got = perf_analyzer.run(binary, env, address, "digits_cnn", concurrency, data, window_ms, 20, 6)
                    row[f"c{concurrency}"] = got.__dict__ if isinstance(got, perf_analyzer.PerfPoint) else got
                    if isinstance(got, perf_analyzer.PerfPoint):
                        ratio = f", {got.throughput / raw_best:.3f} of raw best" if raw_best else ""
                        run.say(f"  c={concurrency}: {got.throughput:.0f} infer/s, p50 {got.p50_us / 1000:.3f} ms, "
                                f"p99 {got.p99_us / 1000:.3f} ms{ratio}; server {got.server_us}")  # fmt: skip
                    else:
                        run.say(f"  c={concurrency}: {got}")
            row["gpu_processes"] = gpu_processes()
            run.say(f"  GPU memory by process: {row['gpu_processes']}")
            found[label] = row
        finally:
            stop(proc)
    return found


def script(run: Run, args: list[str], timeout: float) -> str:
    cmd = [sys.executable, *args]
    run.say("$ " + " ".join(cmd))
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        text = done.stdout + (f"\n(exit {done.returncode})\n{done.stderr[-3000:]}" if done.returncode else "")
    except subprocess.TimeoutExpired as err:
        text = f"timed out after {timeout} s\n{err.stdout or ''}"
    run.say(text)
    return text


def generation(run: Run, quick: bool) -> dict[str, str]:
    device = run.device.value
    repeats = "1" if quick else "2"
    found = {
        "generation_16": script(run, ["bench/generation.py", "--device", device, "--repeats", repeats], 240),
        "generation_16_one_lane": script(
            run, ["bench/generation.py", "--device", device, "--repeats", repeats, "--lanes", "1"], 240
        ),
    }
    if not quick:
        found["generation_32"] = script(run, ["bench/generation.py", "--device", device, "--requests", "32"], 240)
        found["generation_grpc_16"] = script(
            run, ["bench/generation_grpc.py", "--device", device, "--repeats", "2"], 240
        )
    return found


def memory(run: Run) -> dict[str, Any]:
    found: dict[str, Any] = {"defaults": CudaExecution().provider_options()}
    for name in ("context", *MODELS, "limit_64MiB"):
        text = script(run, [__file__, "--probe", name, "--device", run.device.value,
                            "--model-repository", str(run.repository)], 120)  # fmt: skip
        lines = [line for line in text.splitlines() if line.startswith("{")]
        found[name] = json.loads(lines[-1]) if lines else text[-1500:]
    return found


def probe(name: str, device: Device, repository: Path) -> None:
    """One process: load `name` (or only a CUDA context), run it at its largest batch, print its GPU memory."""
    run = Run(Path(tempfile.mkdtemp()), device, repository)
    rng = np.random.default_rng(3)
    result: dict[str, Any] = {"probe": name}
    if name == "context":
        config, path, _ = run.entry("digits_cnn")
        ModelSession(path, config, run.accel).run(feeds(config, 1, rng))
    elif name == "limit_64MiB":
        config, path, _ = run.entry("digits_cnn")
        cuda = config.execution.cuda.model_copy(update={"gpu_mem_limit": 64 * 1024**2})
        config = config.model_copy(update={"execution": config.execution.model_copy(update={"cuda": cuda})})
        session = ModelSession(path, config, run.accel)
        try:
            session.run(feeds(config, 4096, rng))
            result["batch_4096"] = "ran"
        except Exception as err:  # noqa: BLE001 - the arena's refusal is what this probe shows
            result["batch_4096"] = f"{type(err).__name__}: {str(err)[:400]}"
    else:
        config, path, step_path = run.entry(name)
        session = ModelSession(path, config, run.accel)
        session.warmup()
        session.run(feeds(config, config.max_batch_size or 1, rng))
        if step_path:
            step = load_step_model(step_path, config, run.accel, name)
            generation = config.generation
            rows = generation.max_active_sequences if generation else 16
            context = generation.context_length if generation else 64
            step.session.run(step_feed(step.layers, step.heads, step.head_dim, rows, context - 1, 1, rng))
    result["gpu_processes"] = gpu_processes()
    result["pid"] = os.getpid()
    mine = [line for line in result["gpu_processes"].splitlines() if line.split(",")[0].strip() == str(os.getpid())]
    result["used"] = mine[0].split(",")[1].strip() if mine else None
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="deepserve-gpu-")))
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--perf-analyzer", type=Path, default=None)
    parser.add_argument("--window-ms", type=int, default=1500)
    parser.add_argument("--raw-seconds", type=float, default=0.4)
    parser.add_argument("--quick", action="store_true", help="fewer generation runs (a dry run)")
    parser.add_argument("--only", nargs="*", default=None, help="sections to run (default: all)")
    parser.add_argument("--setups", nargs="*", default=None, help="server setups to run (default: all)")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = Device(args.device)
    if args.probe:
        probe(args.probe, device, args.model_repository)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    run = Run(args.out, device, args.model_repository)
    sections: dict[str, Callable[[], Any]] = {
        "env": lambda: env(run),
        "providers": lambda: providers(run),
        "parity": lambda: parity(run),
        "raw": lambda: raw(run, args.raw_seconds),
        "shapes": lambda: shapes(run, 1.0),
        "server": lambda: server(run, args.perf_analyzer, args.window_ms, raw_best(run), args.setups),
        "generation": lambda: generation(run, args.quick),
        "memory": lambda: memory(run),
    }
    for name, body in sections.items():
        if args.only is None or name in args.only:
            run.section(name, body)
    run.say(f"\nresults: {args.out / 'gpu.json'}")


def raw_best(run: Run) -> float | None:
    got = run.results.get("raw", {}).get("result", {}).get("best", {}).get("run", {})
    return got.get("items_per_s")


if __name__ == "__main__":
    main()
