"""``python -m training.audio_probe``: a linear probe on clip embeddings and within-source ROC
AUC. The code is in :mod:`training.audio.probe`."""

from __future__ import annotations

from training.audio.probe import main

if __name__ == "__main__":
    raise SystemExit(main())
