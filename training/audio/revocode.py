"""Re-vocoding consistency: how much a clip changes when an analysis / resynthesis vocoder
re-makes it (issue 15, item 3).

Synthetic and vocoded speech sits close to a fixed point of a vocoder (a smooth spectral
envelope, a regular excitation), real speech changes more; and since a clip ``x`` and its copy
``V(x)`` share the recording chain (band limits, codec, room), their difference may cancel
much of what the set-up adds. The same idea as DIRE for generated images (Wang et al., ICCV
2023: the error of a diffusion model's reconstruction) and as resynthesis features for audio
deepfakes.

Per clip (16 kHz, as the corpus stores it; nothing trimmed), with the vocoders of
:mod:`training.audio.vocoders` at fixed settings:

* ``w1`` / ``w2``: x against WORLD(x), and WORLD(x) against WORLD(WORLD(x)) (5 ms frames);
  ``gl``: x against its 80-band mel spectrogram inverted by 32 Griffin-Lim iterations (the
  mel magnitudes mapped back by the filters' pseudo-inverse, not by non-negative least squares as
  the corpus's Griffin-Lim copies were: five times faster, within 2e-4 of it on a clip).
  For each, per band of 250 Hz (32 bands up to 8 kHz), the absolute log-power difference
  |10 log10 |X|^2 - 10 log10 |V(X)|^2| (dB; 512-point Hann frames, hop 10 ms) averaged over the
  band's bins, then over the speech frames (those within 40 dB of the clip's loudest frame):
  mean, standard deviation, median and 90th percentile.
* ``w1/w2``: log of the ratio of the first pass's mean change to the second's, per band (the
  second pass changes a vocoded signal; the ratio normalises a clip's own roughness);
  ``w1signed``: the signed mean difference per band (what WORLD removes or adds).
* ``world``: WORLD's own analysis of x: voiced fraction, log-F0 standard deviation and mean
  frame-to-frame change, F0 re-analysis consistency (median |log F0(x) - log F0(WORLD(x))| on
  frames voiced in both, and how often the voicing decision flips), D4C aperiodicity (dB) per
  1 kHz band (mean and deviation over voiced frames, and the change after one pass), and the
  CheapTrick envelope's change after one pass per 1 kHz band. Zeros where fewer than two
  frames are voiced.

``features(wave)`` returns the vector (:data:`NAMES` names its columns); :class:`Revocode` is an
embedder for :mod:`training.audio.embeddings` that caches each clip's vector as it goes (a
stopped run resumes) and can keep some feature groups only.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from xai_platform.errors import InputError
from xai_platform.preprocessing import audio

from . import vocoders
from .data import Clip
from .embeddings import Embedded

RATE = vocoders.RATE
N_FFT, HOP = 512, 160
N_BANDS = 32  # 250 Hz each up to 8 kHz
SPEECH_DB = 40.0
FLOOR_DB = 80.0  # log powers are floored this far below the clip's peak bin
WORLD_PERIOD = 5.0
GL_MELS, GL_ITER = 80, 32
AP_BANDS = 8  # WORLD's 513 bins in 1 kHz bands
SEED = 0  # the dither and Griffin-Lim's initial phase
VERSION = (f"revocode-1 fft={N_FFT} hop={HOP} bands={N_BANDS} speech={SPEECH_DB} "
           f"floor={FLOOR_DB} world={WORLD_PERIOD} gl={GL_MELS}x{GL_ITER}pinv ap={AP_BANDS} "
           f"seed={SEED}")
STATS = ("mean", "std", "q50", "q90")


def _names() -> tuple[str, ...]:
    names = [f"{p}:{s}:b{b}" for p in ("w1", "w2", "gl") for s in STATS for b in range(N_BANDS)]
    names += [f"w1/w2:b{b}" for b in range(N_BANDS)] + [f"w1signed:b{b}" for b in range(N_BANDS)]
    names += ["world:voiced", "world:lf0_std", "world:lf0_step", "world:f0_reanalysis",
              "world:voicing_flips"]
    names += [f"world:{k}:b{b}" for k in ("ap_mean", "ap_std", "ap_change", "sp_change")
              for b in range(AP_BANDS)]
    return tuple(names)


NAMES = _names()
GROUPS = ("w1", "w2", "gl", "w1/w2", "w1signed", "world")


def _bands(n_bins: int, n_bands: int) -> np.ndarray:
    """(n_bands, n_bins) averaging matrix over equal runs of bins (the last takes the rest)."""
    edges = np.linspace(0, n_bins - 1, n_bands + 1).round().astype(int)
    edges[-1] = n_bins
    m = np.zeros((n_bands, n_bins))
    for b in range(n_bands):
        m[b, edges[b]:edges[b + 1]] = 1.0 / (edges[b + 1] - edges[b])
    return m


_STFT_BANDS = _bands(N_FFT // 2 + 1, N_BANDS)
_AP_BANDS = _bands(513, AP_BANDS)


def _power(wave: np.ndarray) -> np.ndarray:
    """(N_FFT // 2 + 1, T) power spectrogram, 512-point Hann frames every 10 ms."""
    import librosa

    s = librosa.stft(np.asarray(wave, np.float32), n_fft=N_FFT, hop_length=HOP, window="hann")
    return np.abs(s).astype(np.float64) ** 2


def _change(a: np.ndarray, b: np.ndarray, speech: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per band over the speech frames: (mean, std, q50, q90) of |a - b| as (4 * N_BANDS,), and
    the per-band mean of (a - b) (signed), for two (F, T) dB spectrograms."""
    diff = (a - b)[:, speech]
    per_band = _STFT_BANDS @ np.abs(diff)  # (N_BANDS, frames)
    stats = np.concatenate([per_band.mean(1), per_band.std(1),
                            np.quantile(per_band, 0.5, axis=1),
                            np.quantile(per_band, 0.9, axis=1)])
    return stats, (_STFT_BANDS @ diff).mean(1)


def _fit(y: np.ndarray, n: int) -> np.ndarray:
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


def _world_pass(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(WORLD(x) of x's length, F0, envelope, aperiodicity of x)."""
    import pyworld

    f0, sp, ap = vocoders.world_analysis(x, WORLD_PERIOD)
    y = pyworld.synthesize(f0, sp, ap, RATE, frame_period=WORLD_PERIOD)
    return _fit(y, len(x)), f0, sp, ap


def _world_analysis_stats(f0: np.ndarray, sp: np.ndarray, ap: np.ndarray, f0b: np.ndarray,
                          spb: np.ndarray, apb: np.ndarray) -> np.ndarray:
    n = min(len(f0), len(f0b))
    f0, sp, ap, f0b, spb, apb = f0[:n], sp[:n], ap[:n], f0b[:n], spb[:n], apb[:n]
    voiced, voiced_b = f0 > 0, f0b > 0
    out = np.zeros(5 + 4 * AP_BANDS)
    out[0] = voiced.mean()
    out[4] = np.mean(voiced != voiced_b)
    if voiced.sum() < 2:
        return out
    lf0 = np.log(f0[voiced])
    out[1] = lf0.std()
    steps = voiced[1:] & voiced[:-1]
    out[2] = np.abs(np.diff(np.log(np.where(voiced, f0, 1.0))))[steps].mean() if steps.any() else 0
    both = voiced & voiced_b
    out[3] = np.median(np.abs(np.log(f0[both]) - np.log(f0b[both]))) if both.any() else 0
    ap_db = 20 * np.log10(np.clip(ap[voiced], 1e-4, 1.0))
    apb_db = 20 * np.log10(np.clip(apb[voiced], 1e-4, 1.0))
    sp_db = 10 * np.log10(np.maximum(sp[voiced], 1e-16))
    spb_db = 10 * np.log10(np.maximum(spb[voiced], 1e-16))
    a = _AP_BANDS @ ap_db.T  # (AP_BANDS, voiced frames)
    k = 5
    out[k:k + AP_BANDS] = a.mean(1)
    out[k + AP_BANDS:k + 2 * AP_BANDS] = a.std(1)
    out[k + 2 * AP_BANDS:k + 3 * AP_BANDS] = (_AP_BANDS @ (apb_db - ap_db).T).mean(1)
    out[k + 3 * AP_BANDS:] = (_AP_BANDS @ np.abs(spb_db - sp_db).T).mean(1)
    return out


def features(wave: np.ndarray, *, sr: int = RATE, griffin_lim: bool = True
             ) -> np.ndarray | None:
    """The re-vocoding features of a (n,) wave: (len(NAMES),) float32, or None when it has
    fewer than 5 frames of speech (10 ms each). ``griffin_lim=False`` leaves the ``gl`` columns
    at zero (the Griffin-Lim round trip is three quarters of the time)."""
    x = vocoders.prepared(wave, sr, np.random.default_rng(SEED))
    y1, f0, sp, ap = _world_pass(x)
    y2, f0b, spb, apb = _world_pass(y1)
    px = _power(x)
    floor = px.max() * 10 ** (-FLOOR_DB / 10) + 1e-30
    energy = 10 * np.log10(px.sum(0) + 1e-30)
    speech = energy >= energy.max() - SPEECH_DB
    if speech.sum() < 5:
        return None

    def db(p: np.ndarray) -> np.ndarray:
        return 10 * np.log10(p + floor)

    lx, l1, l2 = db(px), db(_power(y1)), db(_power(y2))
    w1, signed = _change(lx, l1, speech)
    w2, _ = _change(l1, l2, speech)
    if griffin_lim:
        g = vocoders.mel_round_trip(x.astype(np.float32), n_mels=GL_MELS, n_iter=GL_ITER,
                                    random_state=SEED, pinv=True)
        gl, _ = _change(lx, db(_power(_fit(g, len(x)))), speech)
    else:
        gl = np.zeros_like(w1)
    ratio = np.log((w1[:N_BANDS] + 1e-6) / (w2[:N_BANDS] + 1e-6))
    out = np.concatenate([w1, w2, gl, ratio, signed,
                          _world_analysis_stats(f0, sp, ap, f0b, spb, apb)]).astype(np.float32)
    assert len(out) == len(NAMES)
    return out


def columns(groups: Sequence[str]) -> np.ndarray:
    """Indices of the columns of these feature groups (names before the first ':')."""
    unknown = set(groups) - set(GROUPS)
    if unknown:
        raise SystemExit(f"unknown re-vocoding feature group(s) {sorted(unknown)}; choose from "
                         f"{', '.join(GROUPS)}.")
    return np.array([i for i, n in enumerate(NAMES) if n.split(":")[0] in groups])


def clip_key(path: str | Path) -> str:
    """A file's identity for the cache: its normalised path, size and modification time
    (a leave-one-source-out fold names the same file as ``loso-x/../clips/...``)."""
    st = Path(path).stat()
    return f"{os.path.normpath(str(path))}|{st.st_size}|{st.st_mtime_ns}"


class Revocode:
    """Re-vocoding features as an embedder (``revocode``, or ``revocode:w1,w2,world`` for some
    groups), each clip's vector cached in ``cache_dir/revocode-<settings>/`` as it is computed,
    in parts of ``part_size`` clips, so a stopped extraction resumes where it stopped."""

    def __init__(self, groups: Sequence[str] = GROUPS, *, cache_dir: Path | None = None,
                 part_size: int = 100) -> None:
        self.groups = tuple(groups)
        self._cols = columns(self.groups)
        self.name = "revocode" if set(self.groups) == set(GROUPS) else (
            "revocode:" + ",".join(self.groups))
        self.description = (f"re-vocoding consistency (WORLD twice, Griffin-Lim once), "
                            f"{len(self._cols)} features: {', '.join(self.groups)}")
        self.cache_dir = cache_dir
        self.part_size = part_size

    def identity(self) -> str:
        return f"{VERSION} groups={','.join(self.groups)}"

    def _folder(self) -> Path | None:
        if self.cache_dir is None:
            return None
        digest = hashlib.sha256(VERSION.encode()).hexdigest()[:12]
        return Path(self.cache_dir) / f"revocode-{digest}"

    def _load(self) -> dict[str, np.ndarray | None]:
        done: dict[str, np.ndarray | None] = {}
        folder = self._folder()
        for part in sorted(folder.glob("part-*.npz")) if folder and folder.is_dir() else []:
            with np.load(part, allow_pickle=False) as f:
                done.update(zip(f["keys"].tolist(), f["x"]))
                done.update((k, None) for k in f["skipped"].tolist())
        return done

    def _save(self, rows: dict[str, np.ndarray | None]) -> None:
        folder = self._folder()
        if folder is None or not rows:
            return
        folder.mkdir(parents=True, exist_ok=True)
        kept = {k: v for k, v in rows.items() if v is not None}
        x = np.stack(list(kept.values())) if kept else np.zeros((0, len(NAMES)), np.float32)
        tmp = folder / f"part-{time.time_ns()}.tmp.npz"
        np.savez(tmp, keys=np.asarray(list(kept), dtype=str), x=x,
                 skipped=np.asarray([k for k, v in rows.items() if v is None], dtype=str))
        tmp.rename(folder / tmp.name.replace(".tmp", ""))  # a part is whole or absent

    @staticmethod
    def _say(text: str) -> None:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def vector(self, path: Path) -> np.ndarray | None:
        try:
            wave, sr = audio.decode_audio(path)
        except InputError:
            return None
        if audio.is_silent(wave):
            return None
        v = features(wave, sr=sr)  # every group, so that the cache serves any choice
        return v if v is not None and np.all(np.isfinite(v)) else None

    def embed(self, clips: Sequence[Clip]) -> Embedded:
        start = time.time()
        done = self._load()
        keys = [clip_key(c.path) for c in clips]
        todo = [(k, c) for k, c in zip(keys, clips) if k not in done]
        self._say(f"revocode: {len(clips) - len(todo)} of {len(clips)} clips cached, "
                  f"{len(todo)} to compute")
        fresh: dict[str, np.ndarray | None] = {}
        t0, cpu0 = time.time(), time.process_time()
        for i, (k, c) in enumerate(todo, 1):
            fresh[k] = self.vector(c.path)
            if len(fresh) >= self.part_size or i == len(todo):
                self._save(fresh)
                done.update(fresh)
                fresh = {}
                rate = (time.time() - t0) / i
                self._say(f"revocode: {i}/{len(todo)} computed, {rate:.2f} s/clip wall, "
                          f"{(time.process_time() - cpu0) / i:.2f} s/clip CPU, "
                          f"eta {rate * (len(todo) - i) / 60:.0f} min")
        paths, rows = [], []
        for k, c in zip(keys, clips):
            if done[k] is not None:
                paths.append(str(c.path))
                rows.append(done[k][self._cols])
        x = np.stack(rows) if rows else np.zeros((0, len(self._cols)), np.float32)
        return Embedded(tuple(paths), x, len(clips) - len(paths), time.time() - start)


def change_db(wave: np.ndarray, *, sr: int = RATE, strong_db: float | None = None) -> float:
    """One WORLD pass's mean change (dB) over a clip's speech frames: |10 log10 |X|^2 -
    10 log10 |WORLD(X)|^2| over every bin (the mean of ``w1:mean``'s bands), or, with
    ``strong_db``, only over the bins within ``strong_db`` dB of their frame's loudest bin,
    where speech stands above a noise bed."""
    x = vocoders.prepared(wave, sr, np.random.default_rng(SEED))
    px, p1 = _power(x), _power(_world_pass(x)[0])
    floor = px.max() * 10 ** (-FLOOR_DB / 10) + 1e-30
    lx, l1 = 10 * np.log10(px + floor), 10 * np.log10(p1 + floor)
    energy = 10 * np.log10(px.sum(0) + 1e-30)
    keep = np.broadcast_to(energy >= energy.max() - SPEECH_DB, lx.shape)
    if strong_db is None:
        return float((_STFT_BANDS @ np.abs(lx - l1))[:, keep[0]].mean())
    keep = keep & (lx >= lx.max(0, keepdims=True) - strong_db)
    return float(np.abs(lx - l1)[keep].mean())


def chain_diagnostic(clips: Sequence[Clip], *, n: int = 30, seed: int = 0
                     ) -> dict[str, dict[str, float]]:
    """Does a WORLD copy stay a near fixed point through the corpus's storage chain
    (:mod:`training.audio.chain`)? For ``n`` real test clips x: the mean one-pass change of x,
    of its clean WORLD copy, of the copy after each chain step alone and after the whole chain,
    and how often the copy changes less than x (1.0: always closer to a fixed point)."""
    from . import chain

    real = [c for c in clips if c.label == "real" and c.split == "test"]
    rng = np.random.default_rng(seed)
    pick = [real[i] for i in rng.choice(len(real), min(n, len(real)), replace=False)]
    steps = {
        "x (corpus clip)": lambda x, v, r: x,
        "WORLD(x), clean": lambda x, v, r: v,
        "+ noise bed at -50 dB": lambda x, v, r: v + chain.coloured_noise(
            len(v), r, slope=0.75).astype(np.float32) * np.float32(10 ** (-50 / 20)),
        "+ room reverb": lambda x, v, r: chain.room(v, RATE, r),
        "+ Vorbis (level 0.45)": lambda x, v, r: chain.vorbis_round_trip(v, RATE, level=0.45),
        "+ the whole chain": lambda x, v, r: chain.shared_chain(v, RATE, r)[0]}
    table = {k: {"all": [], "strong": []} for k in steps}
    for i, c in enumerate(pick):
        x, sr = audio.decode_audio(c.path)
        x = audio.resample(x, sr, RATE)
        v, *_ = vocoders.world(x, RATE, np.random.default_rng(seed + i))
        for k, step in steps.items():
            w = np.asarray(step(x, v, np.random.default_rng(seed + 1000 + i)), np.float32)
            table[k]["all"].append(change_db(w))
            table[k]["strong"].append(change_db(w, strong_db=30.0))
    base = table["x (corpus clip)"]
    return {k: {"change_db": float(np.mean(t["all"])),
                "copy_changes_less": float(np.mean(np.array(t["all"]) < base["all"])),
                "strong_change_db": float(np.mean(t["strong"])),
                "strong_copy_changes_less": float(np.mean(np.array(t["strong"])
                                                          < base["strong"]))}
            for k, t in table.items()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from .data import load_clips

    parser = argparse.ArgumentParser(prog="python -m training.audio.revocode",
                                     description=chain_diagnostic.__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/audio_corpus_v2"))
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    clips, _ = load_clips(args.data)
    print(f"one WORLD pass's mean change on {args.n} real test clips x and their WORLD copies "
          "(all bins | bins within 30 dB of the frame's peak):")
    for k, r in chain_diagnostic(clips, n=args.n, seed=args.seed).items():
        print(f"  {k:<24} {r['change_db']:5.2f} dB, copy changes less than x in "
              f"{r['copy_changes_less']:4.0%} | {r['strong_change_db']:5.2f} dB, "
              f"{r['strong_copy_changes_less']:4.0%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
