"""Entry point: ``python -m training.segment_rule`` (see :mod:`training.audio.segments`)."""

from training.audio.segments import main

if __name__ == "__main__":
    raise SystemExit(main())
