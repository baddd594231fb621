"""Keep a long-running server's memory flat: make the C allocator give freed memory back.

The server allocates and frees many large buffers (feature planes, perturbation batches,
activations, figures) from Gradio's worker threads. glibc's malloc serves a block above its
mmap threshold (128 KiB) with its own ``mmap`` and unmaps it when freed, but after the first
such free it *raises* the threshold to that block's size (up to 32 MiB): from then on those
buffers come from the per-thread heaps ("arenas"), and memory freed there is seldom returned to
the system. Measured with ``bench/soak.py`` (docs/BENCHMARKS.md, "Soak"): live Python objects
and malloc's bytes in use stayed flat while its free-but-kept bytes grew from 0.15 to 2.5 GB
in 312 requests, RSS with them. Fixing the threshold (which also turns its adjustment off)
keeps every buffer above it an ``mmap`` that goes back to the system on ``free``;
:func:`release_free_memory` hands back what the heaps keep of the smaller ones.

It is fixed at 4 MiB, not at glibc's starting 128 KiB. Every buffer above the threshold is a
fresh mapping whose pages the kernel faults in and zeroes, and an explanation churns through
many buffers of 128 KiB to 4 MiB (the rows of a perturbation batch, activations). Measured on
the audio CNN's comparison page (two cores): at 128 KiB 0.53-0.77 million page faults, 1.0-2.0
s of kernel CPU and a median 6.1 s a request; at 4 MiB 0.10-0.18 million, 0.3-0.4 s and 5.0 s;
with glibc's own adjustment 4.8 s. The server's RSS over ``bench/soak.py``'s four passes stayed
within 1.1% at 4 MiB and within 0.9% at 128 KiB, at the same 3.6 GB. An explicit
``MALLOC_MMAP_THRESHOLD_`` in the environment is left as it is.

Only glibc is touched; elsewhere (macOS, Windows, musl) both functions do nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
MMAP_THRESHOLD = 4 * 1024 * 1024  # kept fixed (see above)

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
