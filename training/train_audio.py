"""``python -m training.train_audio``: train an audio deepfake detector and write its card.

A thin entry point: the code is in :mod:`training.audio.train`."""

from __future__ import annotations

from training.audio.train import main

if __name__ == "__main__":
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
