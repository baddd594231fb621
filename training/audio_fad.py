"""``python -m training.audio_fad``: Fréchet Audio Distance per generator of an audio corpus,
beside each detector's detection rate per generator.

A thin entry point: the code is in :mod:`training.audio.fad`."""

from __future__ import annotations

from training.audio.fad import main

if __name__ == "__main__":
    main()
