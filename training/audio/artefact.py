"""An audio localisation benchmark: real speech with a synthetic artefact in a known
time-frequency box, and the box as a mask.

    python -m training.audio_artefact --out data/audio_artefact [--model audio-artefact-cnn]
                                      [--seed 0] [--per-language N]

Each KLettres recording (people reading letters and syllables) gives two 2 s clips at 16 kHz,
through the same chain (trim, loudness, a random place in the window, low noise): one as it is
(``real``) and one with a synthetic insertion (``fake``: a partial spoof) of one of three kinds,

* ``buzz``: a harmonic series (a vocoder-like buzz) limited to a frequency band,
* ``noise``: a band-limited noise burst,
* ``chirp``: a tone gliding across the band,

inside a box of 0.2-0.6 s and 600-2500 Hz of bandwidth, placed anywhere between 300 Hz and
7 kHz and anywhere in time, at a level between -9 and +3 dB relative to the speech. The box is
stored as a mask on the detector's log-mel plane (``masks/<key>.npy``, (n_mels, n_frames) bool:
the mel bands whose centre lies in the band, the frames whose centre lies in the interval).
A detector trained to find the insertion (``python -m training.train_audio --model
audio-artefact-cnn --data data/audio_artefact``) must attend to the box; ``python -m
xai_platform evaluate --model audio-artefact-cnn --data data/audio_artefact`` scores how well
each explanation method points at it (pointing game, top-k IoU, share inside). Splits are by
language, as in the deepfake corpus (``training.audio_corpus``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from xai_platform.config import load_config
from xai_platform.modalities.audio import AudioInput
from xai_platform.preprocessing import audio

from .corpus import KLETTRES_ROOT, read_klettres, split_of

SAMPLE_RATE = 16000
KINDS = ("buzz", "noise", "chirp")
FIELDS = ("path", "label", "split", "language", "speaker", "generator", "lesion_mask",
          "f_lo", "f_hi", "t0", "t1", "level_db", "source")


def _rng(seed: int, key: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def place(speech: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Speech at a random offset in an n-sample window with low coloured noise."""
    speech = speech[:n]
    out = np.zeros(n, np.float32)
    start = int(rng.integers(0, n - len(speech) + 1))
    out[start:start + len(speech)] = speech
    noise = np.cumsum(rng.standard_normal(n)).astype(np.float32)
    noise -= np.convolve(noise, np.ones(400) / 400, mode="same")  # high-pass the random walk
    noise *= 10 ** (rng.uniform(-62, -50) / 20) / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
    return out + noise


def _bandpass(x: np.ndarray, lo: float, hi: float, sr: int) -> np.ndarray:
    spectrum = np.fft.rfft(x)
    freqs = np.fft.rfftfreq(len(x), 1 / sr)
    spectrum[(freqs < lo) | (freqs > hi)] = 0
    return np.fft.irfft(spectrum, n=len(x)).astype(np.float32)


def artefact(kind: str, n: int, lo: float, hi: float, sr: int,
             rng: np.random.Generator) -> np.ndarray:
    """(n,) float32, unit RMS, energy inside [lo, hi] Hz."""
    t = np.arange(n) / sr
    if kind == "buzz":
        f0 = rng.uniform(90, 220)
        harmonics = [k * f0 for k in range(1, int(hi // f0) + 1) if lo <= k * f0 <= hi]
        wave = sum(np.sin(2 * np.pi * h * t + rng.uniform(0, 2 * np.pi))
                   for h in harmonics or [(lo + hi) / 2])
    elif kind == "noise":
        wave = _bandpass(rng.standard_normal(n), lo, hi, sr)
    else:  # chirp across the band
        f = np.linspace(lo, hi, n) if rng.random() < 0.5 else np.linspace(hi, lo, n)
        wave = np.sin(2 * np.pi * np.cumsum(f) / sr)
    wave = np.asarray(wave, np.float32)
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / (0.01 * sr))
    wave *= fade.astype(np.float32)
    return wave / (np.sqrt(np.mean(wave ** 2)) + 1e-12)


def box_mask(spec: AudioInput, lo: float, hi: float, t0: float, t1: float) -> np.ndarray:
    """The box on the log-mel plane: (n_mels, n_frames) bool."""
    centres = audio.band_centers_hz(spec)
    times = audio.frame_times(spec)
    return ((centres >= lo) & (centres <= hi))[:, None] & ((times >= t0) & (times <= t1))[None, :]


def make_pair(speech: np.ndarray, key: str, spec: AudioInput, seed: int):
    """(clean window, window with the artefact, mask, description)."""
    rng = _rng(seed, key)
    n = spec.n_samples
    clean = place(speech, n, rng)
    kind = KINDS[int(rng.integers(len(KINDS)))]
    width = rng.uniform(600, 2500)
    lo = rng.uniform(300, 7000 - width)
    hi = lo + width
    dur = rng.uniform(0.2, 0.6)
    t0 = rng.uniform(0.05, spec.duration - dur - 0.05)
    level = rng.uniform(-9, 3)
    speech_rms = np.sqrt(np.mean(speech ** 2)) + 1e-12
    burst = artefact(kind, int(dur * SAMPLE_RATE), lo, hi, SAMPLE_RATE, rng)
    burst *= speech_rms * 10 ** (level / 20)
    start = int(t0 * SAMPLE_RATE)
    spoofed = place(speech, n, _rng(seed, key + "/b"))
    spoofed[start:start + len(burst)] += burst
    peak = max(1.0, float(np.abs(spoofed).max()) / 0.99)
    return (clean, spoofed / peak, box_mask(spec, lo, hi, t0, t0 + dur),
            {"generator": f"artefact:{kind}", "f_lo": round(lo, 1), "f_hi": round(hi, 1),
             "t0": round(t0, 3), "t1": round(t0 + dur, 3), "level_db": round(level, 2)})


def build(out: Path, *, spec: AudioInput, seed: int = 0, per_language: int | None = None,
          root: Path = KLETTRES_ROOT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    recordings = read_klettres(root)
    if per_language:
        by_lang: dict[str, list] = {}
        for r in recordings:
            by_lang.setdefault(r.language, []).append(r)
        recordings = [r for rs in by_lang.values()
                      for r in [rs[i] for i in np.sort(_rng(seed, rs[0].language).choice(
                          len(rs), size=min(per_language, len(rs)), replace=False))]]
    rows, start = [], time.time()
    for i, rec in enumerate(recordings):
        key = f"{rec.language}-{rec.kind}-{rec.path.stem}"
        split = split_of(rec.language)
        paths = {label: out / "clips" / split / label / f"{key}.flac" for label in ("real", "fake")}
        mask_path = out / "masks" / f"{key}.npy"
        wave, sr = audio.decode_audio(rec.path)
        speech = audio.normalize_loudness(audio.trim_silence(audio.resample(wave, sr, SAMPLE_RATE),
                                                             SAMPLE_RATE, top_db=25.0),
                                          target_dbfs=-20.0)
        clean, spoofed, mask, info = make_pair(speech, key, spec, seed)
        if not all(p.exists() for p in paths.values()) or not mask_path.exists():
            for label, wave_out in (("real", clean), ("fake", spoofed)):
                paths[label].parent.mkdir(parents=True, exist_ok=True)
                sf.write(paths[label], wave_out, SAMPLE_RATE, subtype="PCM_16")
            np.save(mask_path, mask)
        common = {"split": split, "language": rec.language, "speaker": f"klettres-{rec.language}",
                  "source": str(rec.path)}
        rows.append({**common, "path": str(paths["real"].relative_to(out)), "label": "real",
                     "generator": "klettres", "lesion_mask": ""})
        rows.append({**common, **info, "path": str(paths["fake"].relative_to(out)),
                     "label": "fake", "lesion_mask": str(mask_path.relative_to(out))})
        if i % 50 == 0 or i == len(recordings) - 1:
            sys.stderr.write(f"\r  {i + 1}/{len(recordings)} recordings "
                             f"[{time.time() - start:.0f} s]   ")
    sys.stderr.write("\n")
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in FIELDS})
    counts = Counter((r["split"], r["label"]) for r in rows)
    summary = {"command": " ".join(["python -m training.audio_artefact", *sys.argv[1:]]),
               "seed": seed, "kinds": KINDS, "n_clips": len(rows),
               "counts": {f"{s}/{lab}": c for (s, lab), c in sorted(counts.items())},
               "mask_shape": list(spec.shape)}
    (out / "corpus.json").write_text(json.dumps(summary, indent=2))
    return out / "metadata.csv"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("data/audio_artefact"))
    p.add_argument("--model", default="audio-artefact-cnn",
                   help="the detector whose log-mel settings the masks are drawn on")
    p.add_argument("--config", action="append", default=[])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--per-language", type=int, default=None,
                   help="at most N recordings per language (default: all)")
    args = p.parse_args(argv)
    spec = load_config(args.config).model(args.model).input
    assert isinstance(spec, AudioInput)
    print(build(args.out, spec=spec, seed=args.seed, per_language=args.per_language))


if __name__ == "__main__":
    main()
