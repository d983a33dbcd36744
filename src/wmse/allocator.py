"""Keep freed memory in the process instead of handing it back to the OS (glibc).

A training step allocates and frees the same large buffers every time. By default
glibc returns freed memory at the top of the heap to the OS once more than a few
megabytes are free, and serves big requests with fresh ``mmap`` pages; either way the
next step page-faults the memory in again. On this project's 2-core CPU that cost
about 30% of the W-MSE loss's time (14.9 -> 10.5 ms at N=1024, d=4, w_iter=4, D=64).
PyTorch's CPU tuning guides suggest jemalloc or tcmalloc for the same reason; this
does the part that matters with glibc's own ``mallopt``, with no extra dependency.

The price: the process keeps its peak heap size until it exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["keep_freed_memory"]

logger = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Largest mmap threshold glibc accepts on 64-bit systems (32 MiB); bigger requests
# are still mapped directly, and returned when freed.
MMAP_THRESHOLD_MAX = 32 * 2**20
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed memory for reuse; True if it took effect.

    A no-op (returning False) on systems without glibc, such as macOS or musl.
    Call it once, early, in a process that trains (the CLI and the benchmarks do);
    the library never calls it on import.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt here; the allocator keeps its defaults")
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    logger.debug("glibc malloc keeps freed memory: %s", applied)
    return applied
