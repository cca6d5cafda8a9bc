"""The process's heap (glibc malloc): memory that the server frees goes back to the operating system.

Large buffers (a model's outputs, a V2 response, ONNX Runtime's allocations) come and go in bursts: a
slow client holds responses, a model version is replaced. glibc serves blocks of 128 KiB and more
straight from `mmap` and unmaps them when they are freed, but by default it raises that threshold each
time such a block is freed, after which large blocks come from its heaps and stay there: the resident
size keeps what the worst burst needed, long after it ended. Both functions are no-ops without glibc.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import sys

M_MMAP_THRESHOLD = -3
"""`mallopt` parameter number (malloc.h)."""
MMAP_THRESHOLD = 128 * 1024
"""glibc's default; setting it explicitly turns its dynamic raising off."""


def return_large_blocks() -> None:
    """Keep blocks of `MMAP_THRESHOLD` bytes and more in `mmap` for good, so they are unmapped when freed."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_memory() -> None:
    """Hand the free pages of glibc's heaps back to the operating system (`malloc_trim`).

    Freeing a model version (its sessions, weights, ONNX Runtime arenas, KV caches) returns the memory to
    malloc, which keeps much of it in its heaps: over many reloads the resident memory creeps up although
    nothing is referenced. It walks the heaps, so call it in a worker thread, after the last reference to a
    version is gone.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None
