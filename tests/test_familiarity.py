"""Verdicts withheld outside the training data: the distance math, the file and card it lives
in, and what a user sees through the service, the CLI JSON and the page."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_MODELS, chest_like, needs_torch, write_config
from xai_platform import familiarity


def _gaussian(n: int, dims: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scales = np.linspace(3.0, 0.1, dims)  # an elongated cloud: Euclidean distance would fail
    return rng.standard_normal((n, dims)) * scales + shift


def test_the_limit_withholds_about_the_chosen_share_of_familiar_inputs():
    fam = familiarity.fit(_gaussian(2000, 40, 0), _gaussian(1000, 40, 1), quantile=0.95,
                          max_components=16)
    unseen = familiarity.check(fam, _gaussian(4000, 40, 2))
    assert 0.02 < unseen.unfamiliar.mean() < 0.09
    assert fam.features.components.shape == (16, 40) and fam.components == 16


def test_inputs_off_the_training_cloud_are_withheld_even_along_a_narrow_direction():
    """A small step along a direction the training data barely moves in is unfamiliar, though
    it is short in plain distance: the check is Mahalanobis, not Euclidean."""
    fam = familiarity.fit(_gaussian(2000, 40, 0), _gaussian(1000, 40, 1))
    narrow = _gaussian(200, 40, 3)
    narrow[:, -1] += 2.0  # 20 standard deviations of the narrowest dimension
    wide = _gaussian(200, 40, 4)
    wide[:, 0] += 2.0  # under one standard deviation of the widest
    assert familiarity.check(fam, narrow).unfamiliar.mean() > 0.9
    assert familiarity.check(fam, wide).unfamiliar.mean() < 0.2


def test_directions_left_out_of_the_kept_components_still_count():
    """With fewer components than channels, a step outside the kept subspace is caught by the
    residual term."""
    fam = familiarity.fit(_gaussian(2000, 40, 0), _gaussian(1000, 40, 1), max_components=16)
    off = _gaussian(200, 40, 3)
    off[:, 20:] += 3.0  # every left-out dimension moves by about 3 of their 0.7 spread
    assert familiarity.check(fam, off).unfamiliar.mean() > 0.9


def test_check_reason_and_windows():
    one = familiarity.Check(np.array([3.0], np.float32))
    assert one.withheld and "far outside what the model was trained on" in one.reason
    assert "3.0x the limit" in one.reason
    mixed = familiarity.Check(np.array([0.5, 1.5, 0.7], np.float32))
    assert not mixed.withheld and mixed.reason == ""
    most = familiarity.Check(np.array([1.5, 1.2, 0.7], np.float32))
    assert most.withheld and most.reason.startswith("2 of 3 windows are outside")
    assert most.to_dict() == {"distance_ratio": 1.2, "unfamiliar_windows": 2, "windows": 3}


def test_the_layout_view_catches_what_pooled_features_cannot_see():
    """Inverted or upside-down images whose pooled features look ordinary are still unfamiliar:
    the layout view (block means and value histogram of the input) sees them."""
    planes = np.stack([chest_like(32, seed=s) for s in range(120)])
    planes[:, :8] *= 0.6  # a darker top: the layout has an up and a down
    feats = _gaussian(120, 8, 0)  # features that carry nothing about the layout
    fam = familiarity.fit(feats[:80], feats[80:], train_planes=planes[:80],
                          validation_planes=planes[80:], quantile=1.0)
    assert set(fam.views) == {"features", "layout"}
    fresh = np.stack([chest_like(32, seed=s) for s in range(500, 520)])
    fresh[:, :8] *= 0.6
    same = _gaussian(20, 8, 7)
    assert familiarity.check(fam, same, fresh).unfamiliar.mean() <= 0.1
    assert familiarity.check(fam, same, 1.0 - fresh).unfamiliar.all()
    assert familiarity.check(fam, same, fresh[:, ::-1]).unfamiliar.all()
    assert familiarity.check(fam, same).unfamiliar.mean() <= 0.1  # without planes: features only


def test_the_file_round_trips_and_holds_no_code(tmp_path):
    fam = familiarity.fit(_gaussian(300, 8, 0), _gaussian(100, 8, 1), layer="features.1")
    path = tmp_path / "m.familiarity.npz"
    digest = fam.save(path)
    back = familiarity.Familiarity.load(path)
    x = _gaussian(5, 8, 9)
    np.testing.assert_allclose(back.ratios(x), fam.ratios(x), rtol=1e-5)
    assert back.layer == "features.1" and len(digest) == 64
    evil = tmp_path / "evil.npz"
    np.savez(evil, **{"features.mean": np.array([object()], dtype=object)})
    with pytest.raises(ValueError):
        familiarity.Familiarity.load(evil)


# --- through the app ----------------------------------------------------------------------


def _trained_tiny_xray(tmp_path: Path, *, fit_on: np.ndarray | None = None,
                       tamper: bool = False) -> Path:
    """A config with the tiny X-ray model given weights (so it is "trained") and, with
    ``fit_on`` (N, 32, 32), a familiarity file fitted on those planes next to them."""
    import torch

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    entry = TINY_MODELS[1]
    base = ModelManager(load_config([write_config(tmp_path / "base.yaml", [entry])], base=None),
                        device="cpu")
    weights = tmp_path / "tiny.pt"
    torch.manual_seed(0)
    torch.save(base.get(entry["id"]).net.state_dict(), weights)
    if fit_on is not None:
        handle = base.get(entry["id"])
        feats = handle.embeddings(fit_on)
        half = len(feats) // 2
        fam = familiarity.fit(feats[:half], feats[half:], quantile=1.0,
                              layer=entry["target_layer"], train_planes=fit_on[:half],
                              validation_planes=fit_on[half:])
        npz = tmp_path / "tiny.familiarity.npz"
        digest = fam.save(npz)
        if tamper:
            digest = "0" * 64
        (tmp_path / "tiny.card.json").write_text(json.dumps(
            {"familiarity": {"file": npz.name, "sha256": digest, "layer": entry["target_layer"]}}))
    return write_config(tmp_path / "trained.yaml", [entry | {"weights": str(weights)}])


def _chests(n: int) -> np.ndarray:
    """Chest-like planes as the app reads them back from 8-bit PNGs."""
    return np.round(np.stack([chest_like(32, seed=s) for s in range(n)]) * 255) / 255


def _png(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray((np.clip(img, 0, 1) * 255).astype(np.uint8), mode="L").save(path)
    return path


@needs_torch
def test_an_unfamiliar_image_gets_no_verdict_but_still_an_explanation(tmp_path):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    config = _trained_tiny_xray(tmp_path, fit_on=_chests(160))
    service = Service(ModelManager(load_config([config], base=None), device="cpu"))
    session = Session()
    try:
        familiar = service.analyse(session, _png(tmp_path / "chest.png", chest_like(32, 99)),
                                   "tiny-torch-xray")
        assert not familiar.prediction.withheld
        assert familiar.prediction.familiarity["distance_ratio"] < 1.5
        assert any(n.startswith("Familiar input") for n in familiar.notes)

        stripes = np.tile((np.arange(32) % 4 < 2).astype(np.float32), (32, 1))
        odd = _png(tmp_path / "stripes.png", stripes)
        analysis = service.analyse(session, odd, "tiny-torch-xray")
        p = analysis.prediction
        assert p.withheld and "outside what the model was trained on" in p.reason
        assert p.verdict.startswith("verdict withheld: ")
        expl = service.explain(session, odd, "tiny-torch-xray", "gradcam")
        record = service.record(expl)
        assert record["prediction"]["withheld"] is True
        assert "trained on" in record["prediction"]["reason"]
        assert expl.heatmap.shape == (32, 32) and np.isfinite(expl.heatmap).all()
    finally:
        session.close()


@needs_torch
def test_a_model_without_the_check_says_so_and_a_tampered_file_turns_it_off(tmp_path, caplog):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    (tmp_path / "a").mkdir()
    plain = _trained_tiny_xray(tmp_path / "a")
    service = Service(ModelManager(load_config([plain], base=None), device="cpu"))
    session = Session()
    try:
        analysis = service.analyse(session, _png(tmp_path / "c.png", chest_like(32)),
                                   "tiny-torch-xray")
        assert analysis.prediction.familiarity is None and not analysis.prediction.withheld
        assert any("no familiarity check" in n for n in analysis.notes)
    finally:
        session.close()
    (tmp_path / "b").mkdir()
    tampered = _trained_tiny_xray(tmp_path / "b", fit_on=_chests(40), tamper=True)
    with caplog.at_level(logging.WARNING):
        handle = ModelManager(load_config([tampered], base=None), device="cpu").get(
            "tiny-torch-xray")
    assert handle.familiarity is None
    assert "does not match the sha256" in caplog.text


@needs_torch
def test_the_cli_json_and_the_page_show_the_withholding(tmp_path, capsys):
    from xai_platform.cli import main
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session
    from xai_platform.ui.common import prediction_outputs

    config = _trained_tiny_xray(tmp_path, fit_on=_chests(160))
    odd = _png(tmp_path / "noise.png", np.random.default_rng(0).random((32, 32)))
    assert main(["explain", str(odd), "--model", "tiny-torch-xray", "--method", "saliency",
                 "--config", str(config), "--out", str(tmp_path / "out"), "--json",
                 "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["prediction"]["withheld"] is True and result["prediction"]["reason"]
    assert result["explanations"][0]["prediction"]["withheld"] is True
    service = Service(ModelManager(load_config([config], base=None), device="cpu"))
    session = Session()
    try:
        label, markdown, _ = prediction_outputs(service, session, str(odd), "tiny-torch-xray")
    finally:
        session.close()
    assert label == "verdict withheld"
    assert markdown.startswith("### verdict withheld: ")


def test_rates_count_inputs_not_windows():
    """An audio clip is withheld when most of its windows are, as in the app."""
    from training.familiarity import Inputs, withheld_rate

    fam = familiarity.fit(_gaussian(500, 6, 0), _gaussian(300, 6, 1), quantile=0.99)
    near, far = _gaussian(4, 6, 2), _gaussian(4, 6, 3, shift=50.0)
    x = np.concatenate([far[:2], near[:1], near[1:4], far[2:3]])  # clip 0: 2 far of 3
    owner = np.array([0, 0, 0, 1, 1, 1, 1])                      # clip 1: 1 far of 4
    assert withheld_rate(fam, x, owner) == 0.5
    assert withheld_rate(fam, x) == pytest.approx(3 / 7)
    sub = Inputs(x, owner).sample(1, np.random.default_rng(0))
    assert len(np.unique(sub.owner)) == 1 and len(sub.x) in (3, 4)


def test_withheld_report_tells_a_check_that_targets_errors_from_one_that_only_answers_less():
    """``training.audio_withheld``: the error rate of the verdicts given must fall only when
    the check withholds wrong verdicts more often than right ones."""
    from training.audio_withheld import table

    rows = ([{"label": "fake", "group": "fake: tts"}] * 4
            + [{"label": "real", "group": "real: a"}] * 4)
    verdicts = ["real", "real", "fake", "fake", "real", "real", "real", "fake"]  # 3 of 8 wrong

    def answers(withheld):
        return [{"verdict": v, "withheld": w} for v, w in zip(verdicts, withheld)]

    targets = table(rows, answers([True, True, False, False, False, False, False, True]))
    assert targets["all"]["wrong_all"] == pytest.approx(3 / 8)
    assert targets["all"]["wrong_given"] == 0.0
    assert targets["all"]["wrong_withheld"] == 1.0 and targets["all"]["right_withheld"] == 0.0
    blind = table(rows, answers([True, False, True, False, True, False, False, False]))
    assert blind["all"]["wrong_withheld"] == pytest.approx(1 / 3)
    assert blind["all"]["right_withheld"] == pytest.approx(2 / 5)
    assert blind["all"]["wrong_given"] == pytest.approx(2 / 5)  # no better than 3 / 8
    refused = table(rows, [{"verdict": "refused", "withheld": False}]
                    + answers([False] * 8)[1:])
    assert refused["fake: tts"]["refused"] == 1
    assert refused["fake: tts"]["wrong_all"] == pytest.approx(1 / 3)


@needs_torch
def test_joined_recordings_give_windows_of_each_kind_by_the_apps_path(manager):
    """``--joined``: recordings joined from one split's clips (the shipped examples: real
    KLettres and eSpeak NG German) reach the check as the app's scored windows, by kind."""
    from training.audio.data import Clip
    from training.familiarity import joined_inputs

    examples = Path(__file__).resolve().parents[1] / "examples" / "audio"
    clips = [Clip(p, "fake" if p.name.startswith("fake_") else "real", "test", "de")
             for p in sorted(examples.glob("*_de_*.wav"))]
    spec = manager.get("tiny-torch-audio").spec
    kinds = joined_inputs(spec, clips, "test", 2, seed=0)
    assert set(kinds) == {"partly synthetic", "real only", "synthetic only"}
    for inputs in kinds.values():
        assert inputs.x.shape[1:] == (spec.input.n_mels, spec.input_shape[1])
        recordings = len(np.unique(inputs.owner))
        assert recordings <= 2 and len(inputs.x) >= 2 * recordings


def test_generator_auc_is_per_generator_against_all_real_clips_and_skips_refused():
    """``training.audio_generator_auc``: a generator the detector scores under real speech
    reads below 0.5; a refused clip (no score) is left out."""
    from training.audio_generator_auc import generator_auc

    rows = [{"label": "real", "generator": "src"}] * 3 + [
        {"label": "fake", "generator": "tts"}] * 2 + [{"label": "fake", "generator": "voc"}] * 3
    p = [0.2, 0.3, 0.4, 0.9, 0.8, 0.1, 0.05, None]
    out = generator_auc(rows, p)
    assert out["tts"] == {"n": 2, "auc": 1.0}
    assert out["voc"] == {"n": 2, "auc": 0.0}  # scored as more real than real speech
    assert out["all fakes"]["n"] == 4 and out["all fakes"]["auc"] == pytest.approx(0.5)


def test_vocoded_copies_are_paired_with_their_own_originals():
    from training.audio_generator_auc import paired_rates, vocoded_pairs

    corpus = [{"label": "real", "original": "/a.ogg", "split": "train", "generator": "src"},
              {"label": "real", "original": "/b.ogg", "split": "test", "generator": "src"}]
    rows = [{"label": "fake", "original": "/a.ogg", "generator": "gl"},
            {"label": "fake", "original": "/b.ogg", "generator": "gl"},
            {"label": "fake", "original": "", "generator": "tts"}]  # a TTS fake: no original
    pairs = vocoded_pairs(rows, corpus)
    assert [(c["original"], o["split"]) for c, o in pairs] == [("/a.ogg", "train"),
                                                                ("/b.ogg", "test")]
    rates = paired_rates(pairs, [0.9, 0.2], [0.1, 0.3])
    assert rates == {"gl, original held out": {"n": 1, "copy_above": 0.0},
                     "gl, original in training": {"n": 1, "copy_above": 1.0}}
