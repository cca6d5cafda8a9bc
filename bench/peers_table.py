"""deepserve against the peers of issue 12, side by side in one run, with perf_analyzer as the load generator;
gRPC and HTTP (issue 16) rows.

    python bench/peers_table.py [--model digits_cnn --window-ms 2000 --no-mlserver --no-http]

1. Raw ONNX Runtime in this process (bench/serving.py's raw_onnxruntime): batch-1 p50, best items/s over
   batch sizes.
2. Starts every server up front on free ports: `deepserve serve --model-repository models`, the minimal inline
   and batcher peers (bench/peers/), MLServer 1.7.1 in its own virtualenv (skipped, saying why, when it cannot
   be installed), the minimal HTTP peer (Starlette on uvicorn, ONNX Runtime inline on its event loop), and the
   bare grpc.aio echo server. Checks each model server's answer against ONNX Runtime.
3. Echo at concurrency 32 with the closed-loop grpc.aio client: what gRPC alone allows here.
4. One server at a time: perf_analyzer (KServe V2 gRPC, batch 1) at each concurrency, then the closed-loop
   grpc.aio client of bench/serving.py at the same concurrencies as a cross-check. The HTTP rows (deepserve's
   HTTP port and the HTTP peer, `-i http`, with Triton's binary data extension and with JSON tensors; MLServer's
   REST port with JSON tensors, as it has no binary data extension) follow the gRPC row of the same process;
   perf_analyzer only.
5. Prints a markdown table with deepserve's ratios to the best peer and to the bound
   1 / (1/raw_best + 1/echo_c32), issue 12's c=1 goal: deepserve p50 - best peer p50 <= +0.05 ms (gRPC rows),
   and issue 16's HTTP overhead against gRPC at the lowest and highest concurrency: p50 difference and
   throughput ratio, for deepserve and MLServer (same process) and for the minimal peers (HTTP peer vs the inline
   gRPC peer).
The peers and perf_analyzer's tritonclient live in .bench-venvs/ (created on first use). Machines are shared
and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer, venvs  # noqa: E402
from bench.peers.common import DEFAULT_INTRA_OP_THREADS, config_response, ort_options  # noqa: E402
from bench.serving import (  # noqa: E402
    ECHO_SERVER,
    check_answer,
    closed_loop,
    free_port,
    raw_onnxruntime,
    request_bytes,
)
from service.config import DATATYPES, ModelConfig, load_model_config  # noqa: E402
from service.grpc._generated.inference import grpc_service_pb2 as pb  # noqa: E402
from service.http.codec import model_config  # noqa: E402

PEERS = ROOT / "bench" / "peers"
PEER_HTTP = "httptools"
"""uvicorn's HTTP implementation that deepserve's HTTP port uses (service/http/listener.py): the HTTP peer's too."""
GOAL_P50_MS = 0.05
HTTP_KINDS = (("binary", "binary data"), ("json", "JSON tensors"))


@dataclass
class Served:
    """One server process under test, and what was measured against it."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path | None = None
    perf: dict[int, perf_analyzer.PerfPoint | str] = field(default_factory=dict)
    loop: dict[int, list[float]] = field(default_factory=dict)
    peer: bool = True
    protocol: str = "grpc"
    tensor_format: str = "binary"
    versus: Served | None = None
    """HTTP rows: the gRPC row their overhead is reported against."""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def target(self) -> perf_analyzer.Target:
        return perf_analyzer.Target(self.address, self.protocol, self.tensor_format)

    def http_row(self, name: str, port: int, tensor_format: str, versus: Served | None = None) -> Served:
        """A row for the HTTP port of the same process."""
        return Served(name, self.proc, port, self.log, peer=self.peer, protocol="http", tensor_format=tensor_format,
                      versus=versus or self)  # fmt: skip

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-15:])


def start(name: str, cmd: list[str], port: int, logs: Path, env: dict[str, str] | None = None) -> Served:
    log = logs / f"{name.split()[0]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    return Served(name, proc, port, log)


def wait_ready(server: Served, model: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    if server.protocol == "http":
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited {server.proc.returncode}\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://{server.address}/v2/models/{model}/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s\n{server.log_tail()}")
    with grpc.insecure_channel(server.address) as channel:
        ready = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelReady",
            request_serializer=pb.ModelReadyRequest.SerializeToString,
            response_deserializer=pb.ModelReadyResponse.FromString,
        )
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                raise RuntimeError(f"{server.name} exited {server.proc.returncode}\n{server.log_tail()}")
            try:
                if ready(pb.ModelReadyRequest(name=model), timeout=1).ready:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {timeout:.0f} s\n{server.log_tail()}")


def http_infer(address: str, model: str, spec_name: str, datatype: str, sample: np.ndarray, binary: bool) -> bytes:
    """One V2 REST request body (binary data extension or JSON tensors), its headers, and the call; the answer."""
    tensor: dict[str, object] = {"name": spec_name, "datatype": datatype, "shape": list(sample.shape)}
    headers = {"Content-Type": "application/json"}
    if binary:
        tensor["parameters"] = {"binary_data_size": sample.nbytes}
        head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": False}}).encode()
        body = head + sample.tobytes()
        headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(len(head))}
    else:
        tensor["data"] = sample.ravel().tolist()
        body = json.dumps({"inputs": [tensor]}).encode()
    request = urllib.request.Request(f"http://{address}/v2/models/{model}/infer", body, headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bytes(answer.read())


def check_http_answer(server: Served, model: str, spec_name: str, datatype: str, sample: np.ndarray,
                      expected: np.ndarray) -> None:  # fmt: skip
    binary = server.tensor_format == "binary"
    answer = json.loads(http_infer(server.address, model, spec_name, datatype, sample, binary))
    out = np.asarray(answer["outputs"][0]["data"], dtype=expected.dtype).reshape(expected.shape)
    np.testing.assert_allclose(out, expected, atol=1e-4)


def warm_http(server: Served, model: str, spec_name: str, datatype: str, sample: np.ndarray, seconds: float) -> None:
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        http_infer(server.address, model, spec_name, datatype, sample, server.tensor_format == "binary")


def mlserver_folder(
    tmp: Path, model_dir: Path, config: ModelConfig, options: dict[str, object]
) -> tuple[Path, int, int]:
    """MLServer's settings.json and model-settings.json (parallel_workers 0, no adaptive batching, access log
    off), and the model configuration answers its launcher adds (gRPC, HTTP); its folder, gRPC and HTTP ports."""
    folder, port, http_port = tmp / "mlserver", free_port(), free_port()
    (folder / model_dir.name).mkdir(parents=True)
    settings = {
        "debug": False,
        "parallel_workers": 0,
        "host": "127.0.0.1",
        "grpc_port": port,
        "http_port": http_port,
        "metrics_port": free_port(),
        "model_repository_root": str(folder),
    }

    def tensors(specs: tuple) -> list[dict[str, object]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": [-1, *t.dims]} for t in specs]

    model_settings = {
        "name": model_dir.name,
        "implementation": "bench.peers.mlserver_runtime.OnnxModel",
        "parameters": {"uri": str(model_dir / "1" / "model.onnx"), "version": "1", "extra": {"ort": options}},
        "inputs": tensors(config.inputs),
        "outputs": tensors(config.outputs),
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    (folder / model_dir.name / "model-settings.json").write_text(json.dumps(model_settings))
    (folder / "model_config.bin").write_bytes(config_response(model_dir.name, config).SerializeToString())
    (folder / "model_config.json").write_text(json.dumps(model_config(model_dir.name, ["1"], config)))
    return folder, port, http_port


def mlserver_rest_stack(python: Path) -> str:
    """What MLServer's REST port runs on in its virtualenv: FastAPI on uvicorn, with uvicorn's `auto` choice of HTTP
    implementation (httptools where installed, else h11)."""
    probe = "import importlib.util as u; print('httptools' if u.find_spec('httptools') else 'h11')"
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
    return f"FastAPI on uvicorn {done.stdout.strip() or '?'}"


def fmt_point(p: perf_analyzer.PerfPoint | str | None, with_p50: bool) -> str:
    if p is None:
        return "-"
    if isinstance(p, str):
        return "failed"
    text = f"{p.throughput:,.0f}" + ("" if p.stable else "~")
    return f"{text} ({p.p50_us / 1e3:.2f} ms)" if with_p50 else text


def loop_rate(latencies: list[float], seconds: float) -> str:
    return f"{len(latencies) / seconds:,.0f}" if latencies else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer's measurement window")
    parser.add_argument(
        "--stability", type=int, default=30, help="perf_analyzer -s: the last 3 windows agree within this percent"
    )
    parser.add_argument("--max-trials", type=int, default=4, help="perf_analyzer's windows before it gives up")
    parser.add_argument("--loop-seconds", type=float, default=2.0, help="closed-loop cross-check per point")
    parser.add_argument("--raw-seconds", type=float, default=1.0, help="raw ONNX Runtime, per batch size")
    parser.add_argument(
        "--intra-op-threads",
        type=int,
        default=DEFAULT_INTRA_OP_THREADS,
        help="peers' ONNX Runtime intra-op threads where the model's config leaves it 0",
    )
    parser.add_argument("--no-mlserver", action="store_true")
    parser.add_argument("--no-http", action="store_true", help="gRPC rows only")
    parser.add_argument(
        "--peer-http", default=PEER_HTTP, help="the HTTP peer's uvicorn HTTP implementation (deepserve's, by default)"
    )
    args = parser.parse_args()

    model_dir = (args.model_repository / args.model).resolve()
    config = load_model_config(model_dir)
    spec = config.inputs[0]
    sample = np.random.default_rng(0).random((1, *spec.dims)).astype(np.dtype(DATATYPES[spec.datatype]))
    model_file = model_dir / "1" / "model.onnx"
    expected = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"]).run(
        [config.outputs[0].name], {spec.name: sample}
    )[0]
    payload = request_bytes(args.model, spec.name, spec.datatype, sample)
    options = ort_options(config, args.intra_op_threads)
    notes: list[str] = []

    print(f"# raw ONNX Runtime on {model_file.relative_to(ROOT)} ({args.raw_seconds:g} s per batch size)", flush=True)
    raw, raw_p50 = raw_onnxruntime(model_file, sample, spec.name, seconds=args.raw_seconds)
    raw_batch = max(raw, key=lambda b: raw[b])

    perf: tuple[Path, dict[str, str]] | None = None
    try:
        perf = venvs.perf_analyzer()
    except (venvs.Unavailable, OSError, subprocess.CalledProcessError) as error:
        notes.append(f"perf_analyzer unavailable, closed-loop client only: {error}")
    mlserver_python: Path | None = None
    if args.no_mlserver:
        notes.append("MLServer skipped (--no-mlserver)")
    else:
        try:
            mlserver_python = venvs.mlserver()
        except (venvs.Unavailable, OSError, subprocess.CalledProcessError) as error:
            notes.append(f"MLServer skipped: {error}")

    servers: list[Served] = []  # the model servers under test, in order
    started: list[Served] = []  # every process, to stop at the end whatever happens
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = perf_analyzer.input_data(tmp / "input.json", {spec.name: sample})
        try:
            port, http_port = free_port(), 0 if args.no_http else free_port()
            deepserve = start("deepserve (committed config)",
                              [sys.executable, "-m", "service", "serve", "--model-repository",
                               str(args.model_repository), "--port", str(port), "--metrics-port", str(free_port()),
                               "--http-port", str(http_port), "--log-level", "warning"], port, tmp)  # fmt: skip
            deepserve.peer = False
            servers.append(deepserve)
            if not args.no_http:
                servers += [deepserve.http_row(f"deepserve HTTP, {kind}", http_port, fmt) for fmt, kind in HTTP_KINDS]
            minimal = (
                ("minimal inline sync grpcio server", "inline_server.py", 8, []),
                ("the same, ONNX Runtime's default options (spinning)", "inline_server.py", 8, ["--ort-defaults"]),
                ("inline + one-thread batcher (max 64, 2 ms)", "batcher_server.py", 64, []),
            )
            for name, script, workers, extra in minimal:
                port = free_port()
                cmd = [sys.executable, str(PEERS / script), "--port", str(port), "--model-dir", str(model_dir),
                       "--intra-op-threads", str(args.intra_op_threads), "--workers", str(workers), *extra]  # fmt: skip
                servers.append(start(name, cmd, port, tmp))
                if not args.no_http and script == "inline_server.py" and not extra:
                    port = free_port()
                    cmd = [sys.executable, str(PEERS / "http_inline_server.py"), "--port", str(port),
                           "--model-dir", str(model_dir), "--intra-op-threads", str(args.intra_op_threads),
                           "--http", args.peer_http]  # fmt: skip
                    http_peer = start("minimal HTTP server", cmd, port, tmp)
                    servers += [http_peer.http_row(f"minimal HTTP server (Starlette on uvicorn {args.peer_http}, ONNX "
                                                   f"Runtime inline), {kind}", port, fmt, versus=servers[-1])
                                for fmt, kind in HTTP_KINDS]  # fmt: skip
            if mlserver_python is not None:
                folder, port, mlserver_http = mlserver_folder(tmp, model_dir, config, options)
                cmd = [str(mlserver_python), str(PEERS / "mlserver_launch.py"), str(folder),
                       str(folder / "model_config.bin"), str(folder / "model_config.json")]  # fmt: skip
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                mlserver = start("MLServer 1.7.1 (parallel_workers 0, batching off)", cmd, port, tmp, env)
                servers.append(mlserver)
                if not args.no_http:  # its REST side has no binary data extension: JSON tensors only
                    servers.append(mlserver.http_row(f"MLServer 1.7.1 HTTP ({mlserver_rest_stack(mlserver_python)}), "
                                                     "JSON tensors", mlserver_http, "json"))  # fmt: skip
            echo_port = free_port()
            echo = start("grpc.aio echo", [sys.executable, str(ECHO_SERVER), str(echo_port)], echo_port, tmp)
            started = [*servers, echo]

            for server in list(servers):
                try:
                    wait_ready(server, args.model, timeout=120)
                    if server.protocol == "http":
                        check_http_answer(server, args.model, spec.name, spec.datatype, sample, expected)
                    else:
                        check_answer(server.address, payload, expected)
                except (RuntimeError, OSError, grpc.RpcError, AssertionError) as error:
                    if not server.peer:
                        raise
                    notes.append(f"{server.name} left out: {str(error).splitlines()[0]}")
                    if not any(s.proc is server.proc for s in servers if s is not server):
                        server.stop()
                    servers.remove(server)
            asyncio.run(closed_loop(echo.address, payload, 1, 0.5))  # connects once it listens
            echo_c32 = asyncio.run(closed_loop(echo.address, payload, 32, args.loop_seconds))
            echo.stop()

            for i, server in enumerate(servers):  # one process at a time under load
                print(f"# {server.name}", flush=True)
                if server.protocol == "http":
                    warm_http(server, args.model, spec.name, spec.datatype, sample, 0.5)
                else:
                    asyncio.run(closed_loop(server.address, payload, 8, 0.5))  # warm up
                for c in args.concurrency:
                    if perf is not None:
                        server.perf[c] = perf_analyzer.run(perf[0], perf[1], server.target, args.model, c, data,
                                                           args.window_ms, args.stability, args.max_trials)  # fmt: skip
                        if isinstance(server.perf[c], str):
                            notes.append(f"{server.name} c={c}: perf_analyzer: {server.perf[c]}")
                if server.protocol == "grpc":
                    for c in args.concurrency:
                        server.loop[c] = asyncio.run(closed_loop(server.address, payload, c, args.loop_seconds))
                if not any(s.proc is server.proc for s in servers[i + 1 :]):
                    server.stop()
        finally:
            for server in started or servers:
                server.stop()

    report(args, servers, raw, raw_batch, raw_p50, echo_c32, options, notes)


def report(
    args: argparse.Namespace,
    servers: list[Served],
    raw: dict[int, float],
    raw_batch: int,
    raw_p50: float,
    echo_c32: list[float],
    options: dict[str, object],
    notes: list[str],
) -> None:
    conc = args.concurrency
    echo_rate = len(echo_c32) / args.loop_seconds
    bound = 1 / (1 / raw[raw_batch] + 1 / echo_rate)
    top = max(conc)

    def ok(p: perf_analyzer.PerfPoint | str | None) -> perf_analyzer.PerfPoint | None:
        return p if isinstance(p, perf_analyzer.PerfPoint) else None

    print(f"\nmodel {args.model}, {os.cpu_count()} CPUs; perf_analyzer -i grpc|http -b 1, {args.window_ms} ms windows "
          f"(sync, -s {args.stability}); peers' ONNX Runtime options {json.dumps(options)}")  # fmt: skip
    print()
    heads = [f"c={c} infer/s (p50)" if i == 0 else f"c={c}" for i, c in enumerate(conc)]
    print("| server | " + " | ".join(heads) + f" | c={top} p99 | c={top} ÷ bound | closed loop "
          + " / ".join(f"c={c}" for c in conc) + " |")  # fmt: skip
    print("| --- " * (len(conc) + 4) + "|")
    for s in servers:
        cells = [fmt_point(s.perf.get(c), i == 0) for i, c in enumerate(conc)]
        last = ok(s.perf.get(top))
        p99 = f"{last.p99_us / 1e3:.2f} ms" if last else "-"
        ratio = f"{last.throughput / bound:.2f}" if last else "-"
        loops = " / ".join(loop_rate(s.loop.get(c, []), args.loop_seconds) for c in conc)
        print(f"| {s.name} | " + " | ".join(cells) + f" | {p99} | {ratio} | {loops} |")
    raw_cells = [f"batch 1: {raw_p50 * 1e3:.2f} ms", f"best {raw[raw_batch]:,.0f}/s at batch {raw_batch}"]
    print("| raw ONNX Runtime in-process | " + " | ".join((raw_cells + [""] * len(conc))[: len(conc)]) + " | | | |")
    print("| grpc.aio echo, closed-loop client | " + " | ".join([""] * (len(conc) - 1)) +
          f" | c=32 {echo_rate:,.0f}/s | | | |")  # fmt: skip
    print(f"\nbound 1/(1/raw_best + 1/echo_c32) = 1/(1/{raw[raw_batch]:,.0f} + 1/{echo_rate:,.0f}) = {bound:,.0f}/s")

    http_overhead(servers, conc)
    deepserve = next((s for s in servers if not s.peer and s.protocol == "grpc"), None)
    peers = [s for s in servers if s.peer and s.protocol == "grpc"]
    if deepserve is None or not peers:
        print("\n".join(f"note: {n}" for n in notes))
        return
    print()
    for c in conc:
        points = [(p, s.name) for s in peers if (p := ok(s.perf.get(c)))]
        mine = ok(deepserve.perf.get(c))
        if not points or mine is None:
            continue
        best, name = max(points, key=lambda pn: pn[0].throughput)
        line = f"c={c}: deepserve ÷ best peer = {mine.throughput / best.throughput:.2f} ({name})"
        if c == 1:
            fastest, fname = min(points, key=lambda pn: pn[0].p50_us)
            delta = (mine.p50_us - fastest.p50_us) / 1e3
            verdict = "meets" if delta <= GOAL_P50_MS else "misses"
            line += (f"; p50 deepserve - best peer ({fname}) = {delta:+.3f} ms ({verdict} the goal of "
                     f"<= +{GOAL_P50_MS} ms)")  # fmt: skip
        else:
            line += "; goal >= 1.15"
        print(line)
    for c in conc:
        mine = ok(deepserve.perf.get(c))
        if mine is not None and mine.server_us:
            b = mine.server_us
            compute = f"{b['compute_input']:.0f}/{b['compute_infer']:.0f}/{b['compute_output']:.0f}"
            print(
                f"deepserve server side at c={c}: request {b['request']:.0f} µs = overhead {b['overhead']:.0f}"
                f" + queue {b['queue']:.0f} + compute {compute} (input/infer/output);"
                f" raw ORT batch 1 {raw_p50 * 1e6:.0f} µs"
            )
    if any(isinstance(p, perf_analyzer.PerfPoint) and not p.stable for s in servers for p in s.perf.values()):
        print(f"~: perf_analyzer's windows never agreed within {args.stability}%: the mean of 3 more, unchecked")
    for n in notes:
        print(f"note: {n}")


def http_overhead(servers: list[Served], conc: list[int]) -> None:
    """Issue 16: each HTTP row against its gRPC row at the lowest and highest concurrency."""
    lines = []
    for s in servers:
        if s.versus is None:
            continue
        cells = []
        for c in sorted({min(conc), max(conc)}):
            h, g = s.perf.get(c), s.versus.perf.get(c)
            if isinstance(h, perf_analyzer.PerfPoint) and isinstance(g, perf_analyzer.PerfPoint):
                cells.append(f"c={c}: p50 {(h.p50_us - g.p50_us) / 1e3:+.3f} ms ({h.p50_us / 1e3:.2f} vs "
                             f"{g.p50_us / 1e3:.2f}), infer/s x{h.throughput / g.throughput:.2f}")  # fmt: skip
        if cells:
            lines.append(f"{s.name} against {s.versus.name} (gRPC): " + "; ".join(cells))
    if lines:
        print("\nHTTP overhead against gRPC (perf_analyzer; p50 HTTP - gRPC, throughput HTTP / gRPC):")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
