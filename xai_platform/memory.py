"""Keep a long-running server's memory flat: make the C allocator give freed memory back.

The server allocates and frees many large buffers (feature planes, perturbation batches,
activations, figures) from Gradio's worker threads. glibc's malloc serves a block above its
mmap threshold (128 KiB) with its own ``mmap`` and unmaps it when freed, but after the first
such free it *raises* the threshold to that block's size (up to 32 MiB): from then on those
buffers come from the per-thread heaps ("arenas"), and memory freed there is seldom returned to
the system. Measured with ``bench/soak.py`` (docs/BENCHMARKS.md, "Soak"): live Python objects
and malloc's bytes in use stayed flat while its free-but-kept bytes grew from 0.15 to 2.5 GB
in 312 requests, RSS with them. Pinning the threshold (which also turns its adjustment off)
keeps every large buffer an ``mmap`` that goes back to the system on ``free``;
:func:`release_free_memory` hands back what the heaps keep of the small ones.

The price is CPU: each large buffer is a fresh mapping whose pages the kernel zeroes, so the
soak's server spent about 40% of its CPU time in the kernel and ~1.5x the CPU per request of a
run with only the trim (which alone did not keep RSS flat: +8.6% after 208 requests and
rising). To trade memory back for CPU, set ``MALLOC_MMAP_THRESHOLD_`` (e.g. 33554432): an
explicit setting in the environment is left as it is.

Only glibc is touched; elsewhere (macOS, Windows, musl) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, kept fixed

_libc: ctypes.CDLL | None | bool = False  # False: not looked up yet


def glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc, else None."""
    global _libc
    if _libc is False:
        _libc = None
        if sys.platform.startswith("linux"):
            try:
                lib = ctypes.CDLL(None)
                if hasattr(lib, "gnu_get_libc_version") and hasattr(lib, "mallopt"):
                    _libc = lib
            except OSError:
                pass
    return _libc or None


def pin_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 128 KiB (idempotent). True if it was set."""
    lib = glibc()
    if lib is None or "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    return bool(lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_free_memory() -> bool:
    """Give the free pages the heaps keep back to the system (``malloc_trim(0)``); True if
    some were."""
    lib = glibc()
    return bool(lib.malloc_trim(0)) if lib is not None and hasattr(lib, "malloc_trim") else False


__all__ = ["pin_mmap_threshold", "release_free_memory"]
