"""``python -m training.audio_paired``: give every training recording of a corpus a vocoded
copy. The code is in :mod:`training.audio.corpus_paired`."""

from __future__ import annotations

from training.audio.corpus_paired import main

if __name__ == "__main__":
    main()
