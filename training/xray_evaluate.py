"""``python -m training.xray_evaluate``: score a shipped X-ray detector on a benchmark split,
overall and per condition.

A thin entry point: the code is in :mod:`training.xray.evaluate`."""

from __future__ import annotations

from training.xray.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
