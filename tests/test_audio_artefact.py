"""The audio localisation benchmark: every insertion lies inside its mask."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from training.audio.corpus import KLETTRES_ROOT

pytestmark = pytest.mark.skipif(not KLETTRES_ROOT.is_dir(),
                                reason="klettres-data is not installed")


def test_insertions_are_inside_their_masks(tmp_path):
    from training.audio.artefact import build
    from xai_platform.config import load_config
    from xai_platform.preprocessing import audio

    spec = load_config().model("audio-artefact-cnn").input
    metadata = build(tmp_path / "bench", spec=spec, seed=0, per_language=1)
    rows = list(csv.DictReader(open(metadata, encoding="utf-8")))
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    fakes = [r for r in rows if r["label"] == "fake"]
    assert len(fakes) == len(rows) // 2 and all(r["lesion_mask"] for r in fakes)
    contrast = []
    for r in fakes:
        mask = np.load(tmp_path / "bench" / r["lesion_mask"])
        assert mask.shape == spec.shape and 0 < mask.mean() < 0.5
        wave, sr = audio.decode_audio(tmp_path / "bench" / r["path"])
        assert sr == spec.sample_rate and len(wave) == spec.n_samples
        mel = audio.log_mel(wave, spec)
        bands = mask.any(axis=1)
        outside = mel[bands][:, ~mask.any(axis=0)]
        contrast.append(mel[mask].mean() - outside.mean())
    # The inserted sound is louder inside its box than the same bands elsewhere in the window.
    assert np.median(contrast) > 6.0
