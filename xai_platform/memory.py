"""Keep a long-running server's memory flat: make the C allocator give freed memory back.

The server allocates and frees many large buffers (feature planes, perturbation batches,
activations, figures) from Gradio's worker threads. glibc's malloc serves a block above its
mmap threshold (128 KiB) with its own ``mmap`` and unmaps it when freed, but after the first
such free it *raises* the threshold to that block's size (up to 32 MiB): from then on those
buffers come from the per-thread heaps ("arenas"), and memory freed there is seldom returned to
the system. Measured with ``bench/soak.py`` (docs/BENCHMARKS.md, "Soak"): live Python objects
and malloc's bytes in use stayed flat while its free-but-kept bytes grew from 0.15 to 2.5 GB
in 312 requests, RSS with them. Fixing the threshold turns that adjustment off, and with it
glibc's matching rise of the trim threshold (to twice the mmap threshold): the heaps give back
the free memory at their top beyond 128 KiB, every buffer above the threshold is an ``mmap``
that goes back to the system on ``free``, and :func:`release_free_memory` hands back the free
pages inside the heaps.

It is fixed at 32 MiB (the most glibc's own adjustment reaches), not at its starting
128 KiB. Every buffer above the threshold is a fresh mapping whose pages the kernel faults in
and zeroes, and an explanation churns through many buffers of 128 KiB to tens of MiB (the rows
of a perturbation batch, activations: DenseNet-121's are 4-30 MB at 8 rows). Measured on the
comparison page (two cores; docs/BENCHMARKS.md, thirty-sixth session): the audio CNN's took
0.53-0.76 million page faults, 1.2-1.7 s of kernel CPU and a median 6.1 s a request at 128
KiB, 0.06-0.19 million, 0.2-0.4 s and 5.0 s at 32 MiB (4.75 s with glibc's adjustment);
DenseNet-121's 92-107 s at 128 KiB, 76-88 s at 4 MiB and 72-75 s at 32 MiB (kernel CPU 29-32,
15-18 and 3 s). The memory stays flat: over ``bench/soak.py``'s four passes the server's RSS
moved by 1.0% (3459 to 3424 MB; 128 KiB: 3617 to 3585 MB), and over three rounds of one
DenseNet and three audio requests in one process by 0.2% (3747 to 3755 MB). An explicit
``MALLOC_MMAP_THRESHOLD_`` in the environment is left as it is.

Only glibc is touched; elsewhere (macOS, Windows, musl) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 32 * 1024 * 1024  # kept fixed (see above)

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
    """Fix glibc's mmap threshold at :data:`MMAP_THRESHOLD` (idempotent). True if it was
    set."""
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
