"""``python -m training.audio_sources_v3``: more real speech from recording set-ups the
detectors never heard (extract), and how often the shipped detectors call it fake (score).

A thin entry point: the code is in :mod:`training.audio.sources_v3` and
:mod:`training.audio.false_alarms`."""

from __future__ import annotations

from training.audio.false_alarms import main

if __name__ == "__main__":
    raise SystemExit(main())
