"""``python -m training.audio_corpus_v2``: build audio corpus v2.

A thin entry point: the code is in :mod:`training.audio.corpus_v2`."""

from __future__ import annotations

from training.audio.corpus_v2 import main

if __name__ == "__main__":
    main()
