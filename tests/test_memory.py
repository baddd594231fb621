"""The allocator setting that keeps a long-running server's memory flat (xai_platform.memory).

Without it glibc raises its mmap and trim thresholds when a large block is freed, and the heaps
keep what later buffers free (bench/soak.py measured the server's RSS growing ~7 MB per request
that way); fixed too low, every buffer above it is faulted in afresh. Checked in fresh
processes, so the setting of one check does not leak into the other. ``release_free_memory``
(called when an API call returns) hands back what the heaps keep."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT
from xai_platform import memory

LIBC = memory.glibc()
pytestmark = pytest.mark.skipif(LIBC is None or not hasattr(LIBC, "mallinfo2"),
                                reason="needs glibc 2.33 or later (mallinfo2)")

PROBE = r"""
import ctypes, sys
from xai_platform import memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

libc = memory.glibc()
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
if sys.argv[1] == "pin":
    assert memory.pin_mmap_threshold()
# A large block freed: by default glibc raises its mmap threshold to its size (16 MiB) and its
# trim threshold to twice that.
libc.free(libc.malloc(16 << 20))
before = libc.mallinfo2().hblks
block = libc.malloc(8 << 20)  # the next buffer (an activation, a perturbation batch)
mapped = libc.mallinfo2().hblks - before  # 1: a fresh mmap, its pages faulted in afresh
ctypes.memset(block, 1, 8 << 20)
held = rss_mb()
libc.free(block)
print(mapped, held - rss_mb())  # MB the free gave back to the system
"""


TRIM_PROBE = r"""
import ctypes
from xai_platform import memory

libc = memory.glibc()
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

libc.free(libc.malloc(8 << 20))  # a large block freed: glibc raises its threshold to 8 MiB
blocks, guards = [], []
for _ in range(64):  # 64 MiB of 1 MiB buffers, now served from the heap, each page touched
    blocks.append(libc.malloc(1 << 20))
    ctypes.memset(blocks[-1], 1, 1 << 20)
    guards.append(libc.malloc(256 << 10))  # in use: the freed buffers are holes, not the top
for block in blocks:
    libc.free(block)
kept = rss_mb()
memory.release_free_memory()
print(kept - rss_mb())
"""


def _probe(mode: str) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", PROBE, mode], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    mapped, returned = out.stdout.split()
    return int(mapped), float(returned)


def test_freed_heap_memory_goes_back_once_the_threshold_is_fixed():
    assert _probe("default")[1] < 1  # glibc's own behaviour: kept by the heap after the free
    assert _probe("pin")[1] > 6  # of the 8 MiB


def test_buffers_up_to_32_mib_are_reused_from_the_heap():
    # A fresh mapping's pages are faulted in and zeroed again on every use: at glibc's starting
    # 128 KiB the comparison page spent 1-2 s (audio CNN) and ~30 s (DenseNet-121) of kernel
    # CPU a request on it (xai_platform.memory).
    assert _probe("pin")[0] == 0


def test_an_explicit_environment_setting_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert memory.pin_mmap_threshold() is False


def test_freed_buffers_kept_by_the_heap_go_back_to_the_system():
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", TRIM_PROBE], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True)
    assert float(out.stdout.strip()) > 48  # of the 64 MiB the heap kept after free()
