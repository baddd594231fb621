"""``python -m training.audio_loso``: leave-one-real-source-out folds of an audio corpus,
trained and reported. The code is in :mod:`training.audio.loso`."""

from __future__ import annotations

from training.audio.loso import main

if __name__ == "__main__":
    raise SystemExit(main())
