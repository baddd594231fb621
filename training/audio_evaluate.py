"""``python -m training.audio_evaluate``: score shipped audio detectors on a corpus (per split,
per real source and per generator) at their own calibration, and pick the default on
validation.

A thin entry point: the code is in :mod:`training.audio.crosscheck`."""

from __future__ import annotations

from training.audio.crosscheck import main

if __name__ == "__main__":
    raise SystemExit(main())
