"""The report of bench/peers_table.py: the markdown table, ratios to the best peer and to the bound, and the HTTP
overhead against gRPC."""

from __future__ import annotations

import argparse
import json
import os

from bench import perf_analyzer
from bench.peers_servers import Served

GOAL_P50_MS = 0.05
GOAL_THROUGHPUT = 1.15


def fmt_point(p: perf_analyzer.PerfPoint | str | None, with_p50: bool) -> str:
    if p is None:
        return "-"
    if isinstance(p, str):
        return "failed"
    text = f"{p.throughput:,.0f}" + ("" if p.stable else "~")
    return f"{text} ({p.p50_us / 1e3:.2f} ms)" if with_p50 else text


def loop_rate(latencies: list[float], seconds: float) -> str:
    return f"{len(latencies) / seconds:,.0f}" if latencies else "-"


def report(
    args: argparse.Namespace,
    servers: list[Served],
    raw: dict[int, float],
    raw_batch: int,
    raw_p50: float,
    raw_inline: float,
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

    print(
        f"\nmodel {args.model}, {os.cpu_count()} CPUs; perf_analyzer -i grpc|http -b 1, {args.window_ms} ms windows "
        f"(sync, -s {args.stability}), medians of {args.rounds} interleaved rounds; "
        f"peers' ONNX Runtime options {json.dumps(options)}"
    )
    print()
    heads = [f"c={c} infer/s (p50)" if i == 0 else f"c={c}" for i, c in enumerate(conc)]
    print(
        "| server | "
        + " | ".join(heads)
        + f" | c={top} p99 | c={top} ÷ bound | closed loop "
        + " / ".join(f"c={c}" for c in conc)
        + " |"
    )
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
    print(
        "| grpc.aio echo, closed-loop client | "
        + " | ".join([""] * (len(conc) - 1))
        + f" | c=32 {echo_rate:,.0f}/s | | | |"
    )
    print(f"\nbound 1/(1/raw_best + 1/echo_c32) = 1/(1/{raw[raw_batch]:,.0f} + 1/{echo_rate:,.0f}) = {bound:,.0f}/s")
    inline_bound = 1 / (1 / raw_inline + 1 / echo_rate)
    print(
        f"inline bound 1/(1/raw_batch1_x8_threads + 1/echo_c32) = 1/(1/{raw_inline:,.0f} + 1/{echo_rate:,.0f}) = "
        f"{inline_bound:,.0f}/s: the same for a server that runs each request inline in its handler thread (batch-1 "
        f"runs from 8 threads at once); on the same transport a batching server leads such a server by at most "
        f"bound / inline bound = {bound / inline_bound:.2f} (goal 2 asks {GOAL_THROUGHPUT} of the best peer)"
    )
    print(
        "\nserver CPU per request, µs (all of the server process's threads, during that row's perf_analyzer run): "
        + "; ".join(
            f"{s.name}: " + " / ".join(f"{s.cpu_us[c]:,.0f}" if c in s.cpu_us else "-" for c in conc)
            for s in servers
            if s.cpu_us
        )
        + f" (c={' / '.join(str(c) for c in conc)})"
    )

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
            line += (
                f"; p50 deepserve - best peer ({fname}) = {delta:+.3f} ms ({verdict} the goal of <= +{GOAL_P50_MS} ms)"
            )
        else:
            line += f"; goal >= {GOAL_THROUGHPUT}"
            if c == top:  # what the goal asks of the bound: above 1.0, no server could meet it on these cores
                asked = GOAL_THROUGHPUT * best.throughput / bound
                line += f" ({GOAL_THROUGHPUT} x best peer = {asked:.2f} of the bound)"
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
                cells.append(
                    f"c={c}: p50 {(h.p50_us - g.p50_us) / 1e3:+.3f} ms ({h.p50_us / 1e3:.2f} vs "
                    f"{g.p50_us / 1e3:.2f}), infer/s x{h.throughput / g.throughput:.2f}"
                )
        if cells:
            lines.append(f"{s.name} against {s.versus.name} (gRPC): " + "; ".join(cells))
    if lines:
        print("\nHTTP overhead against gRPC (perf_analyzer; p50 HTTP - gRPC, throughput HTTP / gRPC):")
        print("\n".join(lines))
