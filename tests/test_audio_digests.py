"""Per-clip digests of a corpus (training.audio.digests): a rebuild that changes some clips
names them, by source, generator and chain step, against a corpus's or a card's digests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training.audio import corpus_v2, digests
from training.audio.data import load_clips, load_corpus, split_digests

# (source, generator, params): two real sources, one fake generator; chain steps as the shared
# chain writes them into the manifest
LAYOUT = [("home", "home", "loud=-20.0 reverb=1 lowpass=none channel=none vorbis=0.3"),
          ("home", "home", "loud=-20.0 reverb=0 lowpass=none channel=mp316k vorbis=0.3"),
          ("phone", "phone", "loud=-20.0 reverb=0 lowpass=4000 channel=telephone vorbis=0.3"),
          ("home", "espeak-ng", "loud=-20.0 reverb=1 lowpass=none channel=none vorbis=0.3"),
          ("phone", "espeak-ng",
           "loud=-20.0 reverb=0 lowpass=none channel=telephone+opus12k vorbis=0.3")]


def _corpus(root: Path) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "validation", "test"):
        for i, (source, generator, params) in enumerate(LAYOUT):
            label = "real" if generator == source else "fake"
            path = f"clips/{split}/{label}/{source}/{generator}-{i}.flac"
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            sf.write(root / path, 0.1 * rng.standard_normal(1600).astype(np.float32), 16000,
                     format="FLAC", subtype="PCM_16")
            rows.append({"path": path, "label": label, "source": source, "language": "en",
                         "generator": generator, "split": split, "key": f"{split}-{i}",
                         "params": params, "speech_duration": "0.1"})
    corpus_v2.write_metadata(root / "metadata.csv", rows)
    return root


def test_a_rebuild_that_changes_clips_names_them_by_source_generator_and_chain_step(tmp_path):
    root = _corpus(tmp_path / "c")
    assert digests.main(["write", str(root)]) == 0
    written = digests.read_digests(root / digests.CORPUS_FILE)
    assert len(written) == 15 and all(len(d) == 64 for d in written.values())
    # the same format as sha256sum: '<digest>  <path>', paths relative to the corpus
    line = (root / digests.CORPUS_FILE).read_text().splitlines()[0]
    rel = line.split("  ", 1)[1]
    assert (root / rel).is_file() and written[rel] == line.split("  ")[0]
    assert digests.main(["compare", str(root), str(root / digests.CORPUS_FILE)]) == 0

    # another machine's build: the telephone clips came out other bytes
    other = tmp_path / "other"
    other.mkdir()
    rebuilt = dict(written)
    for rel in written:
        if "phone" in rel:
            rebuilt[rel] = "0" * 64
    digests.write_digests(other / "card.clips.sha256.gz", rebuilt)
    result = digests.compare(load_corpus(root), root,
                             digests.read_digests(other / "card.clips.sha256.gz"))
    assert len(result.differ) == 6 and result.same == 9
    assert result.groups["source"] == {"home": [6, 0], "phone": [0, 3]}
    assert result.groups["generator"] == {"espeak-ng": [3, 3]}
    steps = result.groups["chain step"]
    assert steps["telephone"] == [0, 6] and steps["reverb"] == [6, 0]
    assert steps["mp3"] == [3, 0] and steps["opus"] == [0, 3] and steps["lowpass"] == [0, 3]
    report = result.report()
    assert report.startswith("6 of 15 clips differ") and "telephone" in report
    assert digests.main(["compare", str(root), str(other / "card.clips.sha256.gz")]) == 1

    # a clip the other build lacks, and one it has that this corpus lacks
    del rebuilt[rel]
    rebuilt["clips/test/real/x/new.flac"] = "1" * 64
    result = digests.compare(load_corpus(root), root, rebuilt)
    assert result.only_here == [rel] and result.only_there == ["clips/test/real/x/new.flac"]


def test_the_digests_file_is_the_same_bytes_for_the_same_clips_and_agrees_with_the_split_digests(
        tmp_path):
    root = _corpus(tmp_path / "c")
    a = digests.write_digests(tmp_path / "a.sha256.gz", load_clips(root, audio_digests=True)[1][
        "clip_sha256"])
    b = digests.write_digests(tmp_path / "b.sha256.gz", digests.clip_digests(load_corpus(root),
                                                                             root))
    assert a.read_bytes() == b.read_bytes()  # no time stamp in the gzip header
    assert gzip.decompress(a.read_bytes()).decode().count("\n") == 15
    info = load_clips(root, audio_digests=True)[1]
    assert info["split_sha256"] == split_digests(load_corpus(root), root)
    assert split_digests(load_corpus(root), root, digests.read_digests(a)) == info["split_sha256"]


def test_a_malformed_digests_file_says_what_format_it_expects(tmp_path):
    bad = tmp_path / "bad.sha256"
    bad.write_text("not-a-digest  clips/a.flac\n")
    with pytest.raises(SystemExit, match="line 1: expected '<sha256>  <path>'"):
        digests.read_digests(bad)
    with pytest.raises(SystemExit, match="not a built corpus"):
        digests.main(["write", str(tmp_path)])
