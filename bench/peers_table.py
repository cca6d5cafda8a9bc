"""deepserve against the peers of issue 12, side by side in one run, with perf_analyzer as the load generator;
gRPC and HTTP (issue 16) rows.

    python bench/peers_table.py [--model digits_cnn --window-ms 2000 --no-mlserver --no-http]

1. Raw ONNX Runtime in this process (bench/serving.py's raw_onnxruntime): batch-1 p50, best items/s over
   batch sizes, and items/s of batch-1 runs from 8 threads at once (raw_concurrent): their ratio is the most
   that batching can gain over an inline server on this model and these cores.
2. Starts every server up front on free ports: `deepserve serve --model-repository models`, the minimal inline
   and batcher peers (bench/peers/), MLServer 1.7.1 in its own virtualenv (skipped, saying why, when it cannot
   be installed), the minimal HTTP peer (Starlette on uvicorn, ONNX Runtime inline on its event loop), and the
   bare grpc.aio echo server. Checks each model server's answer against ONNX Runtime.
3. Echo at concurrency 32 with the closed-loop grpc.aio client: what gRPC alone allows here.
4. One server at a time: perf_analyzer (KServe V2 gRPC, batch 1) at each concurrency, then the closed-loop
   grpc.aio client of bench/load.py at the same concurrencies as a cross-check. The HTTP rows (deepserve's
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
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import affinity, perf_analyzer, venvs  # noqa: E402
from bench.load import ECHO_SERVER, check_answer, closed_loop, free_port, request_bytes, serve_command  # noqa: E402
from bench.peers.common import DEFAULT_INTRA_OP_THREADS, ort_options  # noqa: E402
from bench.peers_report import report  # noqa: E402
from bench.peers_servers import (  # noqa: E402
    Served,
    check_http_answer,
    mlserver_folder,
    mlserver_rest_stack,
    start,
    wait_ready,
    warm_http,
)
from bench.serving import raw_concurrent, raw_onnxruntime  # noqa: E402
from service.config import DATATYPES, load_model_config  # noqa: E402

PEERS = ROOT / "bench" / "peers"
PEER_HTTP = "httptools"
"""uvicorn's HTTP implementation that deepserve's HTTP port uses (service/http/listener.py): the HTTP peer's too."""
HTTP_KINDS = (("binary", "binary data"), ("json", "JSON tensors"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--window-ms", type=int, default=2000, help="perf_analyzer's measurement window")
    parser.add_argument(
        "--rounds", type=int, default=3, help="passes over all servers (order reversed every other one); medians"
    )
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
    affinity.add_arguments(parser)
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
    where = affinity.placement(args.server_cpus, args.client_cpus)
    notes += [where] if where else []
    affinity.pin(args.server_cpus)

    print(f"# raw ONNX Runtime on {model_file.relative_to(ROOT)} ({args.raw_seconds:g} s per batch size)", flush=True)
    raw, raw_p50 = raw_onnxruntime(model_file, sample, spec.name, seconds=args.raw_seconds)
    raw_batch = max(raw, key=lambda b: raw[b])
    raw_inline = raw_concurrent(model_file, sample, spec.name, seconds=args.raw_seconds)

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
            deepserve = start(
                "deepserve (committed config)",
                serve_command(
                    args.model_repository, port, free_port(), "--http-port", str(http_port), "--log-level", "warning"
                ),
                port,
                tmp,
            )
            deepserve.peer = False
            servers.append(deepserve)
            if not args.no_http:
                servers += [deepserve.http_row(f"deepserve HTTP, {kind}", http_port, fmt) for fmt, kind in HTTP_KINDS]
            minimal = (
                ("minimal inline sync grpcio server", "inline_server.py", 8, []),
                ("the same, ONNX Runtime's default options (spinning)", "inline_server.py", 8, ["--ort-defaults"]),
                ("inline + one-thread batcher (max 64, 2 ms)", "batcher_server.py", 64, []),
            )

            threads = str(args.intra_op_threads)

            def peer_flags(port: int) -> list[str]:
                return ["--port", str(port), "--model-dir", str(model_dir), "--intra-op-threads", threads]

            for name, script, workers, extra in minimal:
                port = free_port()
                cmd = [sys.executable, str(PEERS / script), *peer_flags(port), "--workers", str(workers), *extra]
                servers.append(start(name, cmd, port, tmp))
                if not args.no_http and script == "inline_server.py" and not extra:
                    port = free_port()
                    http_script = str(PEERS / "http_inline_server.py")
                    cmd = [sys.executable, http_script, *peer_flags(port), "--http", args.peer_http]
                    http_peer = start("minimal HTTP server", cmd, port, tmp)
                    servers += [
                        http_peer.http_row(
                            f"minimal HTTP server (Starlette on uvicorn {args.peer_http}, ONNX Runtime inline), {kind}",
                            port,
                            fmt,
                            versus=servers[-1],
                        )
                        for fmt, kind in HTTP_KINDS
                    ]
            if mlserver_python is not None:
                folder, port, mlserver_http = mlserver_folder(tmp, model_dir, config, options)
                cmd = [
                    str(mlserver_python),
                    str(PEERS / "mlserver_launch.py"),
                    str(folder),
                    str(folder / "model_config.bin"),
                    str(folder / "model_config.json"),
                ]
                env = {**os.environ, "PYTHONPATH": str(ROOT)}
                mlserver = start("MLServer 1.7.1 (parallel_workers 0, batching off)", cmd, port, tmp, env)
                servers.append(mlserver)
                if not args.no_http:  # its REST side has no binary data extension: JSON tensors only
                    servers.append(
                        mlserver.http_row(
                            f"MLServer 1.7.1 HTTP ({mlserver_rest_stack(mlserver_python)}), JSON tensors",
                            mlserver_http,
                            "json",
                        )
                    )
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
            affinity.pin(args.client_cpus)  # every server has started: from here on, this process is the client
            asyncio.run(closed_loop(echo.address, payload, 1, 0.5))  # connects once it listens
            echo_c32 = asyncio.run(closed_loop(echo.address, payload, 32, args.loop_seconds))
            echo.stop()

            points: dict[tuple[int, int], list[perf_analyzer.PerfPoint]] = {}
            cpus: dict[tuple[int, int], list[float]] = {}
            for round_ in range(args.rounds):  # one process at a time under load; all stay up until the end
                for server in servers if round_ % 2 == 0 else servers[::-1]:
                    print(f"# round {round_ + 1} of {args.rounds}: {server.name}", flush=True)
                    if server.protocol == "http":
                        warm_http(server, args.model, spec.name, spec.datatype, sample, 0.5)
                    else:
                        asyncio.run(closed_loop(server.address, payload, 8, 0.5))  # warm up
                    for c in args.concurrency if perf is not None else []:
                        got, cpu_us = perf_analyzer.run_with_cpu(
                            server.proc.pid,
                            perf[0],
                            perf[1],
                            server.target,
                            args.model,
                            c,
                            data,
                            args.window_ms,
                            args.stability,
                            args.max_trials,
                        )
                        if isinstance(got, str):
                            notes.append(f"{server.name} c={c}, round {round_ + 1}: perf_analyzer: {got}")
                            continue
                        points.setdefault((id(server), c), []).append(got)
                        cpus.setdefault((id(server), c), []).append(cpu_us)
                    if server.protocol == "grpc" and round_ == 0:
                        for c in args.concurrency:
                            server.loop[c] = asyncio.run(closed_loop(server.address, payload, c, args.loop_seconds))
            for server in servers:
                for c in args.concurrency:
                    if (id(server), c) in points:
                        server.perf[c] = perf_analyzer.median(points[id(server), c])
                        server.cpu_us[c] = statistics.median(cpus[id(server), c])
                    elif perf is not None:
                        server.perf[c] = "no measurement in any round (see the notes)"
        finally:
            for server in started or servers:
                server.stop()

    report(args, servers, raw, raw_batch, raw_p50, raw_inline, echo_c32, options, notes)


if __name__ == "__main__":
    main()
