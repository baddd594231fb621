"""Choose the segment rule's window count on validation recordings, report it on test ones.

    python -m training.segment_rule --data data/audio_corpus --model audio-cnn [--n 60]

Partly synthetic recordings are built the way the attack is made (PartialSpoof, Zhang et al.,
Interspeech 2021): real speech, a stretch of synthetic speech in the same language, real
speech; and real-only recordings of the same lengths for false alarms. Each is made from one
split's clips of the offline corpus (validation languages to choose, test languages to report,
never training ones), joined with short pauses, and scored by the app's own path (decode,
windows, the model's calibrated probabilities). For each window count K the segment rule of
:mod:`xai_platform.pipeline` is applied to the same window scores, so every K sees the same
recordings.

K is chosen on validation as the one with the most detections among those whose false-alarm
rate stays at or under ``--max-false-alarms`` (default 5%); ties go to the larger K. A few dozen
real recordings cannot show a false-alarm rate of a few percent (0 of 40 is compatible with
9%), so the rate each K is held to is the larger of the observed one and a bound from the
windows: with p the 95% upper (Wilson) bound of the share of real windows at or above the
threshold and m windows in a typical recording, 1 - (1 - p^K)^m (a run of K stray windows,
taken as independent). The test
figures are then reported for that K: recording-level detection and false-alarm rates and the
boundary error (seconds between the flagged stretch and the synthetic stretch, start and end).
Writes ``segment_rule.json`` and a figure into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from xai_platform import pipeline
from xai_platform.config import AppSettings, ModelSpec, load_config
from xai_platform.errors import InputError
from xai_platform.preprocessing import audio

from xai_platform.modalities import get_modality
from xai_platform.models import ModelManager

from .data import Clip, load_corpus

KS = (1, 2, 3, 4, 5, 6, 8)
PAUSE_S = (0.15, 0.5)


@dataclass(frozen=True)
class Recording:
    """One built recording: its samples at ``rate`` and, when partly synthetic, the synthetic
    stretch in seconds."""

    language: str
    wave: np.ndarray
    rate: int
    fake: tuple[float, float] | None

    @property
    def seconds(self) -> float:
        return len(self.wave) / self.rate


def _join(clips: list[Clip], rate: int, rng: np.random.Generator, seconds: float
          ) -> tuple[np.ndarray, int]:
    """Clips (cycled) joined with short pauses until ``seconds``; (wave, clips used)."""
    parts, total, used = [], 0, 0
    while total < seconds * rate:
        wave, sr = audio.decode_audio(clips[used % len(clips)].path)
        wave = audio.resample(wave, sr, rate)
        pause = np.zeros(int(rng.uniform(*PAUSE_S) * rate), np.float32)
        parts += [wave, pause]
        total += len(wave) + len(pause)
        used += 1
    return np.concatenate(parts)[: int(seconds * rate)], used


def build(clips: list[Clip], split: str, n: int, rate: int, *, seed: int) -> list[Recording]:
    """``n`` partly synthetic and ``n`` real-only recordings from one split's clips, language by
    language in turn: real 4-10 s, synthetic 4-8 s, real 4-10 s (the real-only ones as long)."""
    rng = np.random.default_rng(seed)
    by_lang: dict[str, dict[str, list[Clip]]] = defaultdict(lambda: defaultdict(list))
    for c in clips:
        if c.split == split:
            by_lang[c.language][c.label].append(c)
    langs = sorted(k for k, v in by_lang.items() if v["real"] and v["fake"])
    if not langs:
        raise SystemExit(f"the {split} split has no language with both real and fake clips.")
    out = []
    for i in range(n):
        lang = langs[i % len(langs)]
        real = [by_lang[lang]["real"][j] for j in rng.permutation(len(by_lang[lang]["real"]))]
        fake = [by_lang[lang]["fake"][j] for j in rng.permutation(len(by_lang[lang]["fake"]))]
        a, f, b = rng.uniform(4, 10), rng.uniform(4, 8), rng.uniform(4, 10)
        head, used = _join(real, rate, rng, a)
        middle, _ = _join(fake, rate, rng, f)
        tail, _ = _join(real[used:] + real[:used], rate, rng, b)
        out.append(Recording(lang, np.concatenate([head, middle, tail]), rate, (a, a + f)))
        whole, _ = _join(real[::-1], rate, rng, a + f + b)
        out.append(Recording(lang, whole, rate, None))
    return out


def window_scores(model, spec: ModelSpec, recordings: list[Recording], settings: AppSettings
                  ) -> list[tuple[np.ndarray, np.ndarray] | None]:
    """(positive-class probability per window, window starts in s) of each recording, by the
    app's own path from a WAV file; windows the app leaves out (no speech) score -inf, as in
    the app's segment rule. None: the app refuses the recording (too little speech)."""
    out: list[tuple[np.ndarray, np.ndarray] | None] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, rec in enumerate(recordings):
            path = Path(tmp) / f"r{i}.wav"
            sf.write(path, rec.wave, rec.rate, subtype="PCM_16")
            try:
                prepared = pipeline.prepare(path, spec, settings=settings)
            except InputError:
                out.append(None)
                continue
            probs = get_modality(spec.modality).predict(model, prepared)[:, spec.positive_index]
            probs = np.where(prepared.scored_mask, probs, -np.inf)
            out.append((probs, np.asarray(prepared.starts_s, np.float64)))
            if (i + 1) % 20 == 0:
                print(f"\r  scored {i + 1}/{len(recordings)} recordings", end="", file=sys.stderr)
    print(file=sys.stderr)
    return out


@dataclass(frozen=True)
class RuleFigures:
    k: int | None  # None: the mean rule alone
    detection: float
    false_alarms: float
    start_error_s: float | None
    end_error_s: float | None
    n_partial: int
    n_real: int
    n_refused: int = 0
    false_alarm_bound: float | None = None  # the rate the choice holds K to (module docstring)


def evaluate(recordings: list[Recording], scores: list[tuple[np.ndarray, np.ndarray]], *,
             threshold: float, window_s: float, k: int | None) -> RuleFigures:
    """Recording-level figures of the rule (K consecutive windows, or with K None the mean of
    the windows alone) at ``threshold``."""
    hits, alarms, starts, ends = [], [], [], []
    real_windows, real_above, lengths = 0, 0, []
    for rec, scored in zip(recordings, scores):
        if scored is None:  # refused by the app (no speech): neither a hit nor an alarm
            continue
        p, t0 = scored
        segs = () if k is None else pipeline.flagged_segments(
            p, t0, window_s, threshold=threshold, min_windows=k)
        judged = p[np.isfinite(p)]
        flagged = bool(segs) or (len(judged) > 0 and float(judged.mean()) >= threshold)
        if rec.fake is None:
            alarms.append(flagged)
            real_windows += len(judged)
            real_above += int((judged >= threshold).sum())
            lengths.append(len(judged))
            continue
        hits.append(flagged)
        if segs:
            starts.append(abs(segs[0][0] - rec.fake[0]))
            ends.append(abs(segs[-1][1] - rec.fake[1]))
    bound = None
    if k is not None and real_windows:
        p = wilson_upper(real_above, real_windows)
        bound = max(float(np.mean(alarms)), 1.0 - (1.0 - p ** k) ** float(np.median(lengths)))
    return RuleFigures(k, float(np.mean(hits)), float(np.mean(alarms)),
                       float(np.median(starts)) if starts else None,
                       float(np.median(ends)) if ends else None, len(hits), len(alarms),
                       sum(s is None for s in scores), bound)


def wilson_upper(k: int, n: int, z: float = 1.96) -> float:
    """The upper end of the Wilson score interval of k successes in n trials."""
    if n == 0:
        return 1.0
    p = k / n
    centre = p + z * z / (2 * n)
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return float(min(1.0, (centre + margin) / (1 + z * z / n)))


def choose(figures: list[RuleFigures], max_false_alarms: float) -> RuleFigures:
    """Most detections with false alarms at or under the cap; ties: the larger K."""
    def rate(f: RuleFigures) -> float:
        return f.false_alarms if f.false_alarm_bound is None else f.false_alarm_bound

    ok = [f for f in figures if f.k is not None and rate(f) <= max_false_alarms]
    if not ok:  # none keeps false alarms down: the strictest rule
        return max((f for f in figures if f.k is not None), key=lambda f: f.k)
    return max(ok, key=lambda f: (f.detection, f.k))


def plot(val: list[RuleFigures], test: list[RuleFigures], chosen: int, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 3.2), dpi=110, layout="constrained")
    for ax, figs, title in zip(fig.subplots(1, 2, sharey=True), (val, test),
                               ("validation recordings (choose K)", "test recordings (report)")):
        ks = [f.k for f in figs if f.k is not None]
        ax.plot(ks, [f.detection for f in figs if f.k is not None], "o-", label="detected")
        ax.plot(ks, [f.false_alarms for f in figs if f.k is not None], "s--",
                label="false alarms")
        ax.axvline(chosen, color="grey", lw=1)
        ax.set(title=title, xlabel="K (consecutive windows)", ylim=(-0.03, 1.03))
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("share of recordings")
    fig.axes[0].legend(loc="center right")
    fig.savefig(path)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.segment_rule",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=Path("data/audio_corpus"),
                   help="the offline corpus (its validation split builds the choosing set)")
    p.add_argument("--test-data", type=Path, default=None,
                   help="another build of the corpus for the test recordings (default: --data)")
    p.add_argument("--model", default="audio-cnn")
    p.add_argument("--config", action="append", type=Path)
    p.add_argument("--n", type=int, default=60,
                   help="partly synthetic recordings per split (as many real-only ones)")
    p.add_argument("--max-false-alarms", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("docs/segments"))
    args = p.parse_args(argv)
    config = load_config(args.config or ())
    spec = config.model(args.model)
    model = ModelManager(config, device="cpu").get(spec.id)  # calibrated, as the app serves it
    threshold = model.calibration.threshold or 0.5
    window_s = get_modality(spec.modality).window_seconds(spec)
    sources = {"validation": load_corpus(args.data),
               "test": load_corpus(args.test_data or args.data)}
    results = {}
    for split in ("validation", "test"):
        recs = build(sources[split], split, args.n, spec.input.sample_rate, seed=args.seed)
        scores = window_scores(model, spec, recs, config.app)
        results[split] = [evaluate(recs, scores, threshold=threshold, window_s=window_s, k=k)
                          for k in (None, *KS)]
    chosen = choose(results["validation"], args.max_false_alarms)
    args.out.mkdir(parents=True, exist_ok=True)
    figure = plot(results["validation"], results["test"], chosen.k,
                  args.out / f"segment_rule_{spec.id}.png")
    report = {"command": "python -m training.segment_rule " + " ".join(
                  shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
              "model": spec.id, "threshold": threshold, "window_s": window_s,
              "max_false_alarms": args.max_false_alarms, "chosen_k": chosen.k,
              "rule": "a recording is flagged when the mean window probability reaches the "
                      "threshold or K consecutive windows do",
              "validation": [asdict(f) for f in results["validation"]],
              "test": [asdict(f) for f in results["test"]], "figure": figure.name}
    (args.out / f"segment_rule_{spec.id}.json").write_text(json.dumps(report, indent=2) + "\n")
    for split in ("validation", "test"):
        print(f"{split}:")
        for f in results[split]:
            mark = " <- chosen" if f.k == chosen.k else ""
            bound = "" if f.false_alarm_bound is None else f" (bound {f.false_alarm_bound:5.1%})"
            print(f"  K={'mean' if f.k is None else f.k:>4}: detected {f.detection:6.1%}, "
                  f"false alarms {f.false_alarms:6.1%}{bound}, boundary error start "
                  f"{f.start_error_s if f.start_error_s is not None else float('nan'):.2f} s, "
                  f"end {f.end_error_s if f.end_error_s is not None else float('nan'):.2f} s "
                  f"({f.n_partial} partly synthetic, {f.n_real} real, {f.n_refused} refused: "
                  f"no speech){mark}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
