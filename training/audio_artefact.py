"""``python -m training.audio_artefact``: build the audio artefact benchmark.

A thin entry point: the code is in :mod:`training.audio.artefact`."""

from __future__ import annotations

from training.audio.artefact import main

if __name__ == "__main__":
    main()
