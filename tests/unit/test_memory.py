"""The heap policy (`service/memory.py`): a large block freed and taken again reuses warm pages (no page faults),
and what a burst freed goes back to the operating system once the heap is quiet. Each check that changes the
heap's settings runs in a fresh interpreter, so this test process keeps glibc's defaults."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from service.memory import KEEP_FREE, PAGE, should_trim

MIB = 2**20

glibc = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="the policy is glibc's"
)


def run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


PAGES = """
    import ctypes, resource
    from service import memory

    def faults_to_fill(size):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = bytearray(size)  # calloc'd: a fresh mmap is zero already, a reused block is cleared
        block[::4096] = b"x" * len(range(0, size, 4096))
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, block

    def second_fill(size):
        _, block = faults_to_fill(size)
        del block
        faults, block = faults_to_fill(size)
        return faults
"""


@glibc
def test_a_large_block_freed_and_taken_again_reuses_warm_pages() -> None:
    """19 MB (a request of two 4096x4096 JPEGs) is about 4,600 pages: every one faulted in again when each
    large block had its own mmap (the previous policy, kept here as the comparison)."""
    out = run(
        PAGES
        + """
    ctypes.CDLL("libc.so.6").mallopt(memory.M_MMAP_THRESHOLD, 128 * 1024)
    print(second_fill(19_000_000))
    """
    )
    assert int(out) > 4000, out  # the comparison: fresh pages every time
    out = run(
        PAGES
        + """
    memory.keep_heap_warm()
    print(second_fill(19_000_000))
    """
    )
    assert int(out) < 100, out


@glibc
def test_blocks_past_the_heap_limit_still_come_and_go_with_mmap() -> None:
    out = run(
        PAGES
        + """
    memory.keep_heap_warm()
    print(second_fill(memory.HEAP_BLOCK_LIMIT + 4096))
    """
    )
    assert int(out) > 7000, out  # 8,193 pages


@glibc
def test_the_trimmer_gives_a_burst_back_once_the_heap_is_quiet() -> None:
    """200 blocks of 1 MiB (below the heap limit, so from the heap) freed at once under 100 MiB still in use, so
    that freeing them does not trim the heap's top: the trimmer hands their pages back within a few of its
    periods, the resident size falls by most of it, and it trims once (what stays in use is its new floor)."""
    out = run(
        """
    import time
    from service import memory

    def rss_mib():
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmRSS:"))
        return int(line.split()[1]) / 1024

    memory.keep_heap_warm()
    # keep_free 128 MiB: it trims a quiet heap past 64 MiB given back, and a busy one only past 512 MiB, so not
    # while the 300 MiB below are being allocated (the default's 256 MiB would: a trim that finds the burst in use)
    trimmer = memory.HeapTrimmer(keep_free=128 * 2**20, period_s=0.1).start()
    burst = [bytearray(b"x" * 2**20) for _ in range(200)]
    pins = [bytearray(b"x" * 2**20) for _ in range(100)]  # above the burst in the heap, alive to the end
    peak = rss_mib()
    during = trimmer.trims
    del burst
    deadline = time.monotonic() + 10
    while trimmer.trims == during and time.monotonic() < deadline:
        time.sleep(0.05)
    after = rss_mib()
    first = trimmer.trims - during
    time.sleep(1.0)  # ten more periods, with nothing new to give back
    trimmer.stop()
    print(first, trimmer.trims - during, peak, after, len(pins), during)
    """
    )
    first, trims, peak, after, _, during = out.split()
    assert int(during) == 0, out
    assert int(first) == 1, out
    assert float(peak) - float(after) > 150, out
    assert int(trims) == 1, out  # a trimmed, quiet heap is not trimmed again and again


def test_only_a_quiet_heap_that_grew_much_is_trimmed() -> None:
    floor, busy = 300 * MIB, 200 * MIB
    assert not should_trim(floor + KEEP_FREE // 2, floor, busy, busy)  # grew little: kept for reuse
    assert should_trim(floor + KEEP_FREE // 2 + PAGE, floor, busy, busy)  # more, and the heap did not move: quiet
    assert should_trim(floor + KEEP_FREE, floor, busy, busy - KEEP_FREE // 16 + 1)
    assert not should_trim(floor + KEEP_FREE, floor, busy, busy - 19 * MIB)  # large requests come and go: reused
    assert not should_trim(floor + KEEP_FREE, floor, busy, busy + 19 * MIB)
    assert should_trim(floor + 4 * KEEP_FREE + PAGE, floor, busy, busy - 19 * MIB)  # too much held, busy or not
    assert not should_trim(floor - 100 * MIB, floor, busy, busy)  # below the floor: nothing to give back


def test_memory_freed_since_a_trim_counts_though_the_resident_size_did_not_grow() -> None:
    """A trim in the middle of a burst sets the floor with the burst in use; what the burst frees afterwards stays
    resident without raising the resident size above that floor, and is given back once the heap is quiet."""
    floor, burst = 500 * MIB, 200 * MIB
    assert should_trim(floor, floor, floor - burst, floor - burst, in_use_at_floor=floor)
    assert not should_trim(floor, floor, floor - burst, floor - burst + 19 * MIB, in_use_at_floor=floor)  # busy
    assert not should_trim(floor, floor, floor - 10 * MIB, floor - 10 * MIB, in_use_at_floor=floor)  # little
    assert not should_trim(floor, floor, floor + 50 * MIB, floor + 50 * MIB, in_use_at_floor=floor)  # in use


ARENAS = """
    import threading
    from service import memory

    def rss_mib():
        with open("/proc/self/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024

    memory.keep_heap_warm()
    start = rss_mib()

    def burst():  # a worker thread's large blocks, all freed when it ends
        blocks = [bytearray(b"x" * 30 * 2**20) for _ in range(4)]
        del blocks

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
    memory.release_memory()
    print(rss_mib() - start)
"""


@glibc
def test_what_a_worker_thread_freed_goes_back_with_a_trim() -> None:
    """keep_heap_warm gives every thread the one heap: glibc would give a worker thread a heap of its own, whose
    free top `malloc_trim` does not give back (and which no longer shrinks on free with KEEP_FREE at 64 MiB)."""
    out = run(ARENAS)
    assert float(out) < 16, out  # 120 MB were taken and freed by the thread
