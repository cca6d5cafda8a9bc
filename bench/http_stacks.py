"""Which HTTP stack for the HTTP port: uvicorn's h11 and httptools protocols under deepserve's own app, and the
minimal HTTP peer on each stack (Starlette on uvicorn h11 / httptools, aiohttp's server), in interleaved rounds.

    python bench/http_stacks.py [--rounds 3 --window-ms 1000 --concurrency 1 32 --httptools-path DIR]

Every server runs from the start; each round measures every variant once (in a rotated order) with perf_analyzer
-i http, batch 1, at each concurrency, with Triton's binary data extension and with JSON tensors; the table gives
the median over rounds and the range. deepserve's h11 variant is the same code with its protocol forced to h11
(service.http.listener.HTTP_PROTOCOL); its httptools variant needs httptools importable (a dependency; or
--httptools-path, a folder from `pip install --target`). Machines are shared and noisy: compare within one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer, venvs  # noqa: E402
from bench.load import free_port  # noqa: E402
from bench.peers_servers import Served, check_http_answer, start, wait_ready  # noqa: E402
from service.config import DATATYPES, load_model_config  # noqa: E402

FORCE_H11 = (
    "import sys, service.http.listener as listener; listener.HTTP_PROTOCOL = listener._IdleClosingH11; "
    "from service.cli import main; raise SystemExit(main(sys.argv[1:]))"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window-ms", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--formats", nargs="+", default=["binary", "json"], choices=perf_analyzer.TENSOR_FORMATS)
    parser.add_argument("--httptools-path", type=Path, help="a folder with httptools, put on PYTHONPATH")
    args = parser.parse_args()

    env = dict(os.environ)
    if args.httptools_path:
        env["PYTHONPATH"] = os.pathsep.join([str(args.httptools_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    has_httptools = subprocess.run([sys.executable, "-c", "import httptools"], env=env).returncode == 0
    model_dir = (args.model_repository / args.model).resolve()
    spec = load_model_config(model_dir).inputs[0]
    sample = np.random.default_rng(0).random((1, *spec.dims)).astype(np.dtype(DATATYPES[spec.datatype]))
    binary, perf_env = venvs.perf_analyzer()

    def serve(h11: bool) -> list[str]:
        head = [sys.executable, "-c", FORCE_H11] if h11 else [sys.executable, "-m", "service"]
        return [
            *head,
            "serve",
            "--model-repository",
            str(args.model_repository),
            "--port",
            str(free_port()),
            "--metrics-port",
            str(free_port()),
            "--http-port",
            str(port),
            "--log-level",
            "warning",
        ]

    def peer(http: str) -> list[str]:
        return [
            sys.executable,
            str(ROOT / "bench" / "peers" / "http_inline_server.py"),
            "--port",
            str(port),
            "--model-dir",
            str(model_dir),
            "--http",
            http,
        ]

    variants: list[tuple[str, bool]] = [  # (name, h11 forced) / peers
        ("deepserve, uvicorn h11", True),
        ("deepserve, uvicorn httptools", False),
    ]
    servers: list[Served] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name, h11 in variants:
                if not h11 and not has_httptools:
                    print(f"# {name}: left out, httptools is not installed", flush=True)
                    continue
                port = free_port()
                servers.append(start(name, serve(h11), port, Path(tmp), env))
            for http in ("h11", "httptools", "aiohttp"):
                if http == "httptools" and not has_httptools:
                    continue
                port = free_port()
                name = f"minimal peer, {'aiohttp' if http == 'aiohttp' else 'Starlette on uvicorn ' + http}"
                servers.append(start(name, peer(http), port, Path(tmp), env))
            rows = [s.http_row(s.name, s.port, "binary") for s in servers]
            for row in rows:
                wait_ready(row, args.model, timeout=120)
                check_http_answer(row, args.model, spec.name, spec.datatype, sample, sample_answer(model_dir, sample))
            data = perf_analyzer.input_data(Path(tmp) / "input.json", {spec.name: sample})
            results: dict[tuple[str, str, int], list[perf_analyzer.PerfPoint]] = {}
            for r in range(args.rounds):
                order = rows[r % len(rows) :] + rows[: r % len(rows)]
                print(f"# round {r + 1}: " + ", ".join(s.name for s in order), flush=True)
                for row in order:
                    for fmt in args.formats:
                        target = perf_analyzer.Target(row.address, "http", fmt)
                        for c in args.concurrency:
                            p = perf_analyzer.run(
                                binary, perf_env, target, args.model, c, data, args.window_ms, 100_000, 3
                            )
                            if isinstance(p, str):
                                print(f"# {row.name} {fmt} c={c}: {p}", flush=True)
                                continue
                            results.setdefault((row.name, fmt, c), []).append(p)
        finally:
            for s in servers:
                s.stop()
    report(args, [s.name for s in servers], results)


def sample_answer(model_dir: Path, sample: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {session.get_inputs()[0].name: sample})[0])


def report(args: argparse.Namespace, names: list[str], results: dict) -> None:
    print(
        f"\nmodel {args.model}, {os.cpu_count()} CPUs, perf_analyzer -i http -b 1, {args.rounds} interleaved rounds "
        f"of 3 x {args.window_ms} ms windows; median over rounds (range)\n"
    )
    cols = [(fmt, c) for fmt in args.formats for c in args.concurrency]
    print(
        "| server | " + " | ".join(f"{fmt} c={c} infer/s" + (" (p50 ms)" if c == 1 else "") for fmt, c in cols) + " |"
    )
    print("| --- " * (len(cols) + 1) + "|")
    for name in names:
        cells = []
        for fmt, c in cols:
            points = results.get((name, fmt, c), [])
            if not points:
                cells.append("-")
                continue
            rates = [p.throughput for p in points]
            cell = f"{statistics.median(rates):,.0f} ({min(rates):,.0f} to {max(rates):,.0f})"
            if c == 1:
                cell += f", p50 {statistics.median(p.p50_us for p in points) / 1e3:.2f}"
            cells.append(cell)
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
