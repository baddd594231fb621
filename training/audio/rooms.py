"""Simulated rooms in training (``--rooms P``): each training clip, real or fake alike, is with
probability ``P`` heard through a shoebox room.

The detectors call real voices from recording set-ups they never heard fake (``docs/AUDIO.md``:
meetings, a broadcast, acted speech far from the microphone). The shared chain
(:mod:`training.audio.chain`) already gives half the clips a light room, but as exponentially
decaying noise mixed in at 5-30%: no early reflections, no wall or air absorption, never a
far microphone. Here the impulse responses come from the image-source method
(pyroomacoustics): rooms of 3-10 m, reverberation times of 0.15-0.9 s (the image order capped
at 30, so the longest come out nearer 0.7 s), the microphone 0.3-3 m from the talker. Both
classes get them at the same rate, so a room says nothing about the label; what is left to learn
is what survives a room.

The impulse responses are a bank of :data:`BANK_SIZE`, computed once per seed (the image
method has no randomness, so the same seed gives the same bank on any machine); each clip's draw
(whether it gets a room, and which) comes from its own generator, seeded by the run's seed and
its corpus key, so a clip gets the same room in every run and every fold. The direct path is
moved to the first sample (the room adds no delay) and the clip keeps its RMS level.
Validation and test clips are never touched: they stay what users meet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from xai_platform.preprocessing import audio

from .chain import SAMPLE_RATE
from .corpus import item_rng
from .data import Clip

BANK_SIZE = 256
RT60_S = (0.15, 0.9)
DISTANCE_M = (0.3, 3.0)
MAX_ORDER = 30  # image-source order cap: about 0.05 s per response here


def impulse_response(rng: np.random.Generator, *, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One shoebox room's impulse response (float32, direct path at sample 0, unit energy):
    size, reverberation time and the talker and microphone drawn from ``rng``."""
    import pyroomacoustics as pra

    dims = np.array([rng.uniform(3.0, 10.0), rng.uniform(3.0, 8.0), rng.uniform(2.5, 4.0)])
    rt60 = rng.uniform(*RT60_S)
    absorption, order = pra.inverse_sabine(rt60, dims)
    margin = 0.4
    while True:  # a talker and a microphone inside the room, at a distance in DISTANCE_M
        source = rng.uniform(margin, dims - margin)
        mic = rng.uniform(margin, dims - margin)
        if DISTANCE_M[0] <= np.linalg.norm(source - mic) <= DISTANCE_M[1]:
            break
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(absorption),
                       max_order=int(min(order, MAX_ORDER)), air_absorption=True)
    room.add_source(source)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], np.float64)
    h = h[int(np.argmax(np.abs(h))):]  # the direct path is the strongest arrival
    return (h / (np.sqrt(np.sum(h ** 2)) + 1e-12)).astype(np.float32)


def reverberate(wave: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``wave`` through ``ir``, cut to its length and brought back to its RMS level."""
    from scipy.signal import fftconvolve

    wave = np.asarray(wave, np.float32)
    wet = fftconvolve(wave, ir)[: len(wave)]
    rms_in = np.sqrt(np.mean(np.square(wave, dtype=np.float64)))
    rms_out = np.sqrt(np.mean(np.square(wet, dtype=np.float64)))
    if rms_out > 0:
        wet *= rms_in / rms_out
    return np.clip(wet, -1.0, 1.0).astype(np.float32)


@dataclass
class Rooms:
    """A bank of rooms and the share ``p`` of training clips that get one:
    :meth:`transform` is a per-clip feature transform."""

    p: float
    seed: int = 0
    bank: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 < self.p <= 1.0:
            raise ValueError(f"--rooms takes a share in (0, 1], not {self.p}")
        if not self.bank:
            rng = np.random.default_rng([self.seed, 0x2007])
            self.bank = [impulse_response(rng) for _ in range(BANK_SIZE)]

    @property
    def variant(self) -> str:
        """The feature cache's name for the training features this gives."""
        return f"rooms{self.p:g}-s{self.seed}"

    def choose(self, clip: Clip) -> int | None:
        """The bank index ``clip`` is heard through; None for a clip left as it is (outside the
        training split, or not drawn)."""
        if clip.split != "train":
            return None
        rng = item_rng(self.seed, clip.key or str(clip.path))
        if rng.random() >= self.p:
            return None
        return int(rng.integers(len(self.bank)))

    def summary(self, clips: list[Clip]) -> dict[str, object]:
        """For the card: the share asked, how many training clips of each label got a room,
        and the bank's reverberation times (measured on the responses)."""
        counts: dict[str, list[int]] = {}
        for c in clips:
            if c.split == "train":
                got = counts.setdefault(c.label, [0, 0])
                got[0] += 1
                got[1] += self.choose(c) is not None
        rt = [rt60(h) for h in self.bank]
        return {"p": self.p, "bank": len(self.bank),
                "rt60_s": [round(float(np.percentile(rt, q)), 2) for q in (5, 50, 95)],
                "train_clips_with_a_room": {k: f"{v[1]} of {v[0]}"
                                            for k, v in sorted(counts.items())}}

    def transform(self, clip: Clip) -> Callable[[np.ndarray, int], tuple[np.ndarray, int]] | None:
        """The feature transform that puts ``clip`` in its room (None: see :meth:`choose`)."""
        index = self.choose(clip)
        if index is None:
            return None
        ir = self.bank[index]

        def apply(wave: np.ndarray, sr: int) -> tuple[np.ndarray, int]:
            return reverberate(audio.resample(wave, sr, SAMPLE_RATE), ir), SAMPLE_RATE

        return apply


def rt60(h: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Reverberation time of ``h`` in seconds: pyroomacoustics' Schroeder-decay measure on the
    -5 to -25 dB slope (T20), extrapolated to 60 dB."""
    import pyroomacoustics as pra

    return float(pra.experimental.measure_rt60(h, fs=sr, decay_db=20))
