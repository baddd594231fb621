"""``python -m training.xray_benchmark``: build the synthetic lesion benchmark.

A thin entry point: the code is in :mod:`training.xray.benchmark`."""

from __future__ import annotations

from training.xray.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
