"""The process's heap (glibc malloc): large buffers are reused while requests keep coming, and what a burst
took goes back to the operating system soon after it ends.

Large buffers (a request's payload as gRPC assembles it, its parsed copy, a model's outputs, a V2
response) come and go with every large request. Memory that the kernel hands out fresh costs a page fault
per 4 KiB page on first touch, 0.2-0.5 ms per MiB on these virtual machines, and gRPC assembles a
request's bytes on the event loop with the GIL held: when every large block came from its own `mmap`
(unmapped when freed), each 19 MB request held the loop for about 50 ms, against 20 ms with the pages
kept (docs/performance.md). So blocks below `HEAP_BLOCK_LIMIT` come from malloc's heaps and are reused
while warm, and `HeapTrimmer` hands free heap pages back to the operating system (`malloc_trim`) once more
than half of `KEEP_FREE` could go back since its last trim (what the resident size grew, and what was in use
then and has been freed since) and the heap is quiet, checking every `TRIM_PERIOD_S`: after a burst (slow
readers, a reload) the resident size comes back within a second or two. All threads share one heap, whose
free pages `malloc_trim` can all give back. Everything here is a no-op without glibc.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
"""`mallopt` parameter numbers (malloc.h)."""
HEAP_BLOCK_LIMIT = 32 * 2**20
"""Blocks this large and larger come straight from `mmap` and are unmapped when freed (glibc's largest
allowed threshold on 64-bit); smaller ones from the heaps. Setting it turns glibc's dynamic threshold off."""
KEEP_FREE = 64 * 2**20
"""Free bytes a heap may keep at its top for reuse: above it, the top is trimmed when a block is freed."""
TRIM_PERIOD_S = 1.0
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def keep_heap_warm() -> None:
    """Large blocks from the heaps up to `HEAP_BLOCK_LIMIT`, with up to `KEEP_FREE` bytes kept free there, and
    one heap for all threads (call it before other threads allocate).

    One heap (`M_ARENA_MAX` 1): glibc gives threads that contend for malloc heaps of their own (gRPC's and ONNX
    Runtime's threads, the worker threads), and `malloc_trim` does not give back the free top of those heaps,
    which no longer shrink when blocks are freed either once up to `KEEP_FREE` may stay free: after a burst of
    30 MB requests 14-115 MiB stayed resident for good, against about none with one heap (docs/performance.md)."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, HEAP_BLOCK_LIMIT)
        libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREE)


def release_memory() -> None:
    """Hand the free pages of glibc's heaps back to the operating system (`malloc_trim`).

    Freeing a model version (its sessions, weights, ONNX Runtime arenas, KV caches) returns the memory to
    malloc, which keeps much of it in its heaps: over many reloads the resident memory would creep up although
    nothing is referenced. It walks the heaps, so call it in a worker thread (ctypes lets the GIL go
    meanwhile), after the last reference to a version is gone; `HeapTrimmer` calls it after bursts.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")
"""`struct mallinfo2`'s fields (malloc.h), all `size_t`."""


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def heap_in_use() -> int | None:
    """Bytes in use in malloc's heaps, all arenas (`mallinfo2().uordblks`); None without glibc 2.33 or later."""
    function = _mallinfo2()
    return None if function is None else int(function().uordblks)


@functools.cache
def _mallinfo2() -> Any:
    libc = _glibc()
    function = getattr(libc, "mallinfo2", None) if libc is not None else None
    if function is not None:
        function.restype = _MallInfo2
    return function


def resident_bytes() -> int:
    """The process's resident size (`/proc/self/statm`)."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * PAGE


def should_trim(
    resident: int,
    floor: int,
    in_use: int,
    in_use_before: int,
    keep_free: int = KEEP_FREE,
    in_use_at_floor: int = 0,
) -> bool:
    """Whether to trim now: the resident size is `resident`, `floor` after the last trim, and the heaps hold
    `in_use` bytes in use now, `in_use_before` one period ago and `in_use_at_floor` just after the last trim.

    What a trim could give back is what the resident size grew since the floor, plus what was in use at the
    floor and has been freed since (a trim in the middle of a burst sets the floor with the burst still in use).
    Only more than `keep_free / 2` of it is worth trimming (malloc counts the pages it gave back as free all the
    same, so its free bytes cannot tell), and only once the heap is quiet (its use moved by less than
    `keep_free / 16` over the period): while large requests keep coming they reuse those pages, and trimming
    would make the next one fault them in again. Past `4 * keep_free` it trims anyway.
    """
    grown = resident - floor + max(0, in_use_at_floor - in_use)
    if grown <= keep_free // 2:
        return False
    return grown > 4 * keep_free or abs(in_use - in_use_before) < keep_free // 16


class HeapTrimmer:
    """A daemon thread that checks the heaps every `period_s` and trims them when `should_trim` says so."""

    def __init__(self, keep_free: int = KEEP_FREE, period_s: float = TRIM_PERIOD_S) -> None:
        self.keep_free, self.period_s = keep_free, period_s
        self.trims = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heap-trimmer", daemon=True)

    def start(self) -> HeapTrimmer:
        if heap_in_use() is not None:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        in_use_before, floor = heap_in_use() or 0, resident_bytes()
        at_floor = in_use_before
        while not self._stop.wait(self.period_s):
            in_use, resident = heap_in_use() or 0, resident_bytes()
            if should_trim(resident, floor, in_use, in_use_before, self.keep_free, at_floor):
                release_memory()
                self.trims += 1
                floor, at_floor = resident_bytes(), heap_in_use() or 0
                mib = {"resident_mib_before": resident // 2**20, "resident_mib_after": floor // 2**20}
                log.info("heap trimmed", extra=mib)
            elif resident < floor:  # memory that went back on its own (unmapped blocks) lowers it
                floor, at_floor = resident, min(at_floor, in_use)
            in_use_before = in_use


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
