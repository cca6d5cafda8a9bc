"""Issue 12's goals 1 and 3 in paired rounds: deepserve's c=1 against the inline peers and raw ONNX Runtime,
measured next to each other, over and over.

    python bench/paired.py [--model digits_cnn --rounds 12 --window-ms 500 --override YAML]

Why: this machine runs at one of two speeds and switches between them every half minute or so (raw ONNX Runtime's
batch-1 p50 on digits_cnn: 367 or 452 µs, each steady for tens of seconds; docs/performance.md). The peer table
measures raw ONNX Runtime once at its start and each server minutes apart, so a ratio of two of its figures may
compare the two speeds: 23%, more than goal 3's margin (15%) and, at c=1, more than goal 1's (0.05 ms).

Each round measures, one after another: raw ONNX Runtime at batch 1 (`--raw-seconds`, the p50); at concurrency 1
(perf_analyzer, three windows of `--window-ms`; the order reversed every other round) deepserve on a copy of the
model (`--override` is merged into that copy's config only), the two inline peers, and the canned server (decoding,
a fixed answer, no model) on grpc.aio and on sync grpcio; then raw ONNX Runtime again. A round whose two raw figures
differ by more than `--flip` saw the machine change speed, and is left out. Over the rounds that are kept it prints,
each with its median, its spread and (for the goals) in how many rounds it was met:
- goal 1: deepserve's p50 minus the better inline peer's p50 of the same round (goal: at most +0.05 ms);
- goal 3: deepserve's model time per request (its statistics, as perf_analyzer reports them) over the round's raw
  batch-1 p50 (goal: at most 1.15), and the same ratio for each inline peer (they report their model runs too);
- what the stack alone adds at c=1 (canned grpc.aio p50 minus canned sync grpcio p50), and deepserve's model time
  minus the spinning peer's.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import perf_analyzer, venvs  # noqa: E402
from bench.load import free_port, model_copy, percentile, serve_command  # noqa: E402
from bench.peers.common import DEFAULT_INTRA_OP_THREADS  # noqa: E402
from bench.peers_servers import Served, start, wait_ready  # noqa: E402
from service.config import DATATYPES, load_model_config  # noqa: E402

DEEPSERVE = "deepserve"
PEER_FLAGS = {"inline": [], "inline-spinning": ["--ort-defaults"]}
"""The two inline peers of the peer table (ONNX Runtime in the gRPC handler thread), by name."""
REFERENCE_FLAGS = {"inline-spinning-aio": ["--ort-defaults", "--aio"]}
"""The spinning inline peer on grpc.aio on uvloop, running each request on the event loop with nothing else: what
deepserve's stack allows at c=1 (not a peer of goal 1: no server of the issue's table is built that way)."""
CANNED_FLAGS = {"canned-aio": ["--aio"], "canned-sync": []}
"""No model: the request decoded and a fixed answer, on grpc.aio on uvloop (deepserve's stack) and on a sync
grpcio server (the peers' stack). Their p50 difference is what the stack alone adds at c=1."""
GOAL_P50_MS = 0.05
GOAL_COMPUTE = 1.15
PEERS = ROOT / "bench" / "peers"


@dataclass(frozen=True)
class Round:
    raw_before_us: float
    raw_after_us: float
    p50_us: dict[str, float]
    """Per server (DEEPSERVE and the peers): perf_analyzer's client p50."""
    compute_us: dict[str, float]
    """Per server: the model's time per request, from the server's statistics."""

    def flipped(self, tolerance: float) -> bool:
        """Whether the machine changed speed during the round (its two raw figures disagree)."""
        low, high = sorted((self.raw_before_us, self.raw_after_us))
        return high > low * (1 + tolerance)

    @property
    def p50_gap_ms(self) -> float:
        """Goal 1: deepserve's p50 minus the better peer's."""
        return (self.p50_us[DEEPSERVE] - min(self.p50_us[name] for name in PEER_FLAGS)) / 1000

    def difference_ms(self, one: str, other: str) -> float:
        return (self.p50_us[one] - self.p50_us[other]) / 1000

    def compute_ratio(self, server: str = DEEPSERVE) -> float:
        """Goal 3: a server's model time per request over raw ONNX Runtime's batch-1 p50 (the round's mean)."""
        return self.compute_us[server] / ((self.raw_before_us + self.raw_after_us) / 2)


def spread(values: list[float], form: str) -> str:
    ordered = sorted(values)
    return f"median {statistics.median(ordered):{form}} (from {ordered[0]:{form}} to {ordered[-1]:{form}})"


def summary(rounds: list[Round], tolerance: float) -> list[str]:
    """The verdict lines over the rounds in which the machine kept its speed."""
    kept = [r for r in rounds if not r.flipped(tolerance)]
    lines = [
        f"rounds: {len(rounds)}, kept {len(kept)} (left out: raw figures before and after > {tolerance:.0%} apart)"
    ]
    if not kept:
        return lines
    gaps = [r.p50_gap_ms for r in kept]
    ratios = [r.compute_ratio() for r in kept]
    met1 = sum(g <= GOAL_P50_MS for g in gaps)
    met3 = sum(x <= GOAL_COMPUTE for x in ratios)
    lines.append(
        f"goal 1 (deepserve p50 - better peer p50 <= +{GOAL_P50_MS} ms): {spread(gaps, '+.3f')} ms;"
        f" met in {met1} of {len(kept)} rounds"
    )
    lines.append(
        f"goal 3 (model time in deepserve / raw batch-1 p50 <= {GOAL_COMPUTE}): {spread(ratios, '.2f')};"
        f" met in {met3} of {len(kept)} rounds"
    )
    for peer in PEER_FLAGS:
        lines.append(f"  the same for {peer}: {spread([r.compute_ratio(peer) for r in kept], '.2f')}")
    stack = [r.difference_ms("canned-aio", "canned-sync") for r in kept]
    model = [(r.compute_us[DEEPSERVE] - r.compute_us["inline-spinning"]) / 1000 for r in kept]
    lines.append(f"c=1 p50, grpc.aio on uvloop - sync grpcio, no model (the stack alone): {spread(stack, '+.3f')} ms")
    lines.append(f"model time per request, deepserve - inline-spinning: {spread(model, '+.3f')} ms")
    floor = [r.difference_ms("inline-spinning-aio", "inline-spinning") for r in kept]
    own = [r.difference_ms(DEEPSERVE, "inline-spinning-aio") for r in kept]
    lines.append(
        f"c=1 p50, inline-spinning on grpc.aio - inline-spinning (goal 1's floor there): {spread(floor, '+.3f')} ms"
    )
    lines.append(f"c=1 p50, deepserve - inline-spinning on grpc.aio (deepserve's own work): {spread(own, '+.3f')} ms")
    return lines


def raw_p50_us(session: ort.InferenceSession, feed: dict[str, np.ndarray], seconds: float) -> float:
    latencies = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        session.run(None, feed)
        latencies.append(time.perf_counter() - t)
    return percentile(latencies, 50) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    parser.add_argument("--model", default="digits_cnn")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--window-ms", type=int, default=500, help="perf_analyzer's window (three per server)")
    parser.add_argument("--raw-seconds", type=float, default=0.5, help="raw ONNX Runtime at each end of a round")
    parser.add_argument("--flip", type=float, default=0.10, help="raw figures further apart than this: left out")
    parser.add_argument("--intra-op-threads", type=int, default=DEFAULT_INTRA_OP_THREADS)
    parser.add_argument(
        "--override",
        type=yaml.safe_load,
        help='merged into deepserve\'s copy of the model config only, e.g. \'{"execution": {"lone_spin_us": 3000}}\'',
    )
    args = parser.parse_args()

    model_dir = (args.model_repository / args.model).resolve()
    config = load_model_config(model_dir)
    spec = config.inputs[0]
    sample = np.random.default_rng(0).random((1, *spec.dims)).astype(np.dtype(DATATYPES[spec.datatype]))
    raw = ort.InferenceSession(str(model_dir / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {spec.name: sample}
    binary, env = venvs.perf_analyzer()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        data = perf_analyzer.input_data(tmp / "input.json", feed)
        repository = tmp / "models"
        model_copy(model_dir, repository, args.override)
        port = free_port()
        servers: list[Served] = [
            start(DEEPSERVE, serve_command(repository, port, free_port(), "--http-port", "0"), port, tmp)
        ]
        scripts = (
            ("inline_server.py", PEER_FLAGS),
            ("inline_server.py", REFERENCE_FLAGS),
            ("canned_server.py", CANNED_FLAGS),
        )
        for script, flags in scripts:
            for name, extra in flags.items():
                port = free_port()
                cmd = [sys.executable, str(PEERS / script), "--port", str(port), "--model-dir", str(model_dir)]
                cmd += ["--intra-op-threads", str(args.intra_op_threads), "--workers", "8", *extra]
                servers.append(start(name, cmd, port, tmp))
        try:
            for server in servers:
                wait_ready(server, args.model, timeout=120)
            raw_p50_us(raw, feed, 1.0)  # warm up
            rounds: list[Round] = []
            for number in range(args.rounds):
                before = raw_p50_us(raw, feed, args.raw_seconds)
                p50: dict[str, float] = {}
                compute: dict[str, float] = {}
                for server in servers if number % 2 == 0 else servers[::-1]:
                    got = perf_analyzer.run(
                        binary, env, server.address, args.model, 1, data, args.window_ms, 100_000, 3
                    )
                    if isinstance(got, str):
                        raise RuntimeError(f"{server.name}: perf_analyzer: {got}")
                    if not got.server_us:
                        raise RuntimeError(f"{server.name}: perf_analyzer reported no server-side statistics")
                    p50[server.name], compute[server.name] = got.p50_us, got.server_us["compute_infer"]
                after = raw_p50_us(raw, feed, args.raw_seconds)
                one = Round(before, after, p50, compute)
                rounds.append(one)
                figures = ", ".join(
                    f"{s.name} {p50[s.name] / 1000:.3f}"
                    + (f" ({one.compute_ratio(s.name):.2f})" if compute[s.name] else "")
                    for s in servers
                )
                flip = " (speed changed)" if one.flipped(args.flip) else ""
                print(
                    f"round {number + 1}: raw {before:.0f} / {after:.0f} µs{flip};"
                    f" p50 ms (model time / raw): {figures}; gap {one.p50_gap_ms:+.3f} ms",
                    flush=True,
                )
        finally:
            for server in servers:
                server.stop()
    print("\n".join(summary(rounds, args.flip)))


if __name__ == "__main__":
    try:
        main()
    except (venvs.Unavailable, subprocess.CalledProcessError) as error:
        sys.exit(f"perf_analyzer is needed (make bench-tools): {error}")
