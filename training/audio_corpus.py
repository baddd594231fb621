"""``python -m training.audio_corpus``: build the offline audio deepfake corpus.

A thin entry point: the code is in :mod:`training.audio.corpus`."""

from __future__ import annotations

from training.audio.corpus import main

if __name__ == "__main__":
    main()
