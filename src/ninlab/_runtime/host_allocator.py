"""Keep glibc's allocator from handing tensor memory back to the kernel between training steps.

A CPU training step allocates and frees the same few-megabyte activation and gradient buffers every step. With
glibc's defaults those are either mmap'd fresh each time (buffers above the 128 KiB mmap threshold, until its dynamic
adjustment catches up) or trimmed off the top of the heap when freed, so every step page-faults its working set back
in and the kernel zeroes it. Measured on the project's 2-core CPU (docs/benchmarks.md): 100 nin_fast training steps
made about a million page faults and spent ~15% of their CPU time in the kernel; raising the mmap threshold to
glibc's maximum and the trim threshold above any training step's working set cut the faults 15-70-fold and made the
steps ~1.2x faster. Memory that was freed stays with the process for reuse (its peak RSS does not shrink afterwards).

No allocator library does this for us without an LD_PRELOAD set up before Python starts (jemalloc, tcmalloc), so
ninlab sets glibc's two knobs through ``mallopt`` when its command line starts. Nothing happens on other C
libraries (musl, macOS, Windows) or when the user set glibc's malloc variables in the environment themselves.
"""

from __future__ import annotations

import ctypes
import os

__all__ = ["USER_SETTINGS", "freed_memory_kept", "keep_freed_memory", "runs_on_glibc"]

_M_TRIM_THRESHOLD = -1  # <malloc.h>
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20
"""The largest mmap threshold glibc accepts on 64-bit systems: smaller blocks are served from the heap."""
TRIM_THRESHOLD = 1 * 2**30
"""Free memory at the top of the heap kept for reuse instead of being returned to the kernel."""
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES")
"""Environment variables through which a user configures glibc's malloc; any of them set leaves malloc alone."""
_applied = False


def runs_on_glibc() -> bool:
    """Whether this process's C library is glibc, the one whose malloc settings ninlab knows."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows) or no such name (musl, macOS)
        return False


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has applied its settings in this process."""
    return _applied


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to keep freed tensor memory for reuse; True if the settings were applied.

    Returns False, changing nothing, where the C library is not glibc or the user configured malloc through the
    environment (``MALLOC_*_`` variables or ``GLIBC_TUNABLES``), whose choice wins. Safe to call more than once.
    """
    if not runs_on_glibc() or any(name in os.environ for name in USER_SETTINGS):
        return False
    mallopt = ctypes.CDLL("libc.so.6").mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    global _applied
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
