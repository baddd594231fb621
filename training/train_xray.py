"""``python -m training.train_xray``: train a binary chest X-ray model and write its card.

A thin entry point: the code is in :mod:`training.xray.train`."""

from __future__ import annotations

from training.xray.train import main

if __name__ == "__main__":
    raise SystemExit(main())
