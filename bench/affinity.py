"""Servers on some CPUs, their clients on others: for machines with more cores than the two of issue 12's setup.

On this project's 2-core machine every server shares its cores with perf_analyzer. On a bigger machine,
`--server-cpus 0,1 --client-cpus 2-7` keeps the servers on two cores, as in issue 12, while the load
generator runs beside them instead of taking their CPU. Affinity is inherited: a process started after
`pin(server_cpus)` stays on those CPUs, whatever its own threads do. A sandbox could accept the call without
enforcing it, so `placement` measures whether the machine does (the gVisor sandbox of docs/performance.md did).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

BUSY = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
PROCESSES = 3


def cpu_set(text: str) -> set[int]:
    """`0,1,4-7` → {0, 1, 4, 5, 6, 7}."""
    cpus: set[int] = set()
    for part in text.split(","):
        low, dash, high = part.strip().partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"CPU list {text!r}: expected numbers and ranges such as 0,1 or 2-7")
        cpus.update(range(int(low), int(high or low) + 1))
    missing = cpus - os.sched_getaffinity(0)
    if missing:
        raise ValueError(f"CPU list {text!r}: CPUs {sorted(missing)} are not available to this process")
    return cpus


def pin(cpus: set[int] | None) -> None:
    """This thread, and every process and thread it starts from now on, runs on `cpus` (None: no change)."""
    if cpus:
        os.sched_setaffinity(0, cpus)


def enforced(cpu: int, seconds: float = 0.3) -> float:
    """Starts `PROCESSES` busy loops pinned to one CPU for `seconds` of wall time each, all at once, and
    returns the CPU seconds they used per second of wall time: about 1.0 where affinity holds, about
    `PROCESSES` where it is ignored."""

    def pinned() -> None:
        os.sched_setaffinity(0, {cpu})

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    code = BUSY.format(seconds=seconds)
    procs = [subprocess.Popen([sys.executable, "-c", code], preexec_fn=pinned) for _ in range(PROCESSES)]
    for proc in procs:
        proc.wait()
    wall = time.monotonic() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return used / wall


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`--server-cpus` and `--client-cpus`, parsed into sets of CPUs (None when not given)."""
    parser.add_argument("--server-cpus", type=cpu_set, help="raw ONNX Runtime and every server on these CPUs (0,1)")
    parser.add_argument("--client-cpus", type=cpu_set, help="the load generator (and this process) on these (2-7)")


def placement(server: set[int] | None, client: set[int] | None) -> str | None:
    """Where servers and clients run, and whether this machine holds them there (`enforced`); None when
    neither is set."""
    cpus = server or client
    if not cpus:
        return None
    held = enforced(min(cpus))
    verdict = "affinity holds" if held < 1.5 else "affinity is NOT enforced here: the pinning means nothing"
    return (
        f"servers on CPUs {sorted(server or [])}, clients on {sorted(client or [])}; {PROCESSES} busy processes pinned "
        f"to one CPU used {held:.2f} CPU-seconds per second ({verdict})"
    )
