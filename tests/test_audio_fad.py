"""Fréchet Audio Distance per generator: the Fréchet math against closed forms and scipy's
sqrtm formula, the small-sample estimators on Gaussians of known distance, the rank
correlation's exact p-value, the frechet-audio-distance path offline, and a tiny generated
corpus end to end with a tiny trained detector's features and card."""

from __future__ import annotations

import csv
import json
import sys
import types
from math import factorial
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import soundfile as sf
import yaml
from scipy import linalg, stats

from conftest import needs_torch
from training.audio import embeddings, fad as fad_cli
from training.audio.corpus_v2 import METADATA_FIELDS
from training.audio.frechet import (Reference, equal_n, fad, fad_infinity, frechet_distance,
                                    gaussian, real_floor, sizes_for)


def _random_cov(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.standard_normal((d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _scipy_reference(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid / frechet-audio-distance formula: sqrtm of the product."""
    covmean = linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------------------------
# The math


def test_frechet_distance_matches_the_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # a scaled copy: tr(S) (1 - c)^2
    s = _random_cov(rng, 6)
    assert frechet_distance(np.zeros(6), s, np.zeros(6), 4 * s) == pytest.approx(np.trace(s))


@pytest.mark.parametrize("d", [1, 3, 16, 64])
def test_frechet_distance_agrees_with_scipy_sqrtm_formula(d):
    rng = np.random.default_rng(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert ours == pytest.approx(_scipy_reference(mu1, s1, mu2, s2), rel=1e-8, abs=1e-9)
    assert ours == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-9)  # symmetric


def test_identical_sets_give_zero_and_a_shifted_set_gives_the_squared_shift():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12))
    shift = rng.normal(size=12)
    assert fad(x, x) == pytest.approx(0.0, abs=1e-9)
    assert fad(x, x + shift) == pytest.approx(shift @ shift, rel=1e-9)


def test_fewer_clips_than_dimensions_stays_real_and_agrees_with_scipy():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 48)), rng.normal(0.3, 1.2, size=(25, 48))
    (m1, s1), (m2, s2) = gaussian(x), gaussian(y)
    ours = fad(x, y)
    assert np.isfinite(ours) and ours > 0
    assert ours == pytest.approx(_scipy_reference(m1, s1, m2, s2), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        gaussian(x[:1])
    with pytest.raises(ValueError, match="do not match"):
        frechet_distance(m1, s1, m2[:3], s2[:3, :3])


# --------------------------------------------------------------------------------------------
# Small-sample bias


def test_fad_infinity_removes_most_of_the_small_sample_bias():
    """Real: N(0, I) in 16 dims (20,000 draws, the reference); generator: N(mu, 0.8^2 I)
    with |mu|^2 = 0.5, so the true FAD is 0.5 + 16 * 0.2^2 = 1.14."""
    rng = np.random.default_rng(3)
    d, truth = 16, 0.5 + 16 * 0.2 ** 2
    mu = np.zeros(d)
    mu[0] = np.sqrt(0.5)
    reference = Reference.of(rng.normal(size=(20_000, d)))
    x = mu + 0.8 * rng.normal(size=(200, d))
    plain = reference.distance(x)
    inf = fad_infinity(reference, x, sizes=sizes_for(200), draws=20, rng=rng)
    eq = equal_n(reference, x, n=50, draws=20, rng=rng)
    assert plain - truth > 0.05                           # the plug-in is biased upwards ...
    assert eq.mean > plain                                 # ... the more the fewer the clips
    assert abs(inf.value - truth) < (plain - truth) / 2   # the intercept removes most of it
    assert inf.slope > 0 and inf.r2 > 0.5 and inf.sizes == (50, 80, 110, 140, 170, 200)
    assert equal_n(reference, x, n=200, draws=5, rng=rng) == type(eq)(plain, 0.0, 200, 1)


def test_the_real_floor_extrapolates_to_about_zero():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(600, 8))
    eq, inf = real_floor(real, n=40, draws=10, steps=5, rng=rng)
    assert eq.mean > 0.1 and eq.n == 40 and eq.draws == 10   # the bias at n = 40 alone
    assert abs(inf.value) < eq.mean / 4
    with pytest.raises(ValueError, match="at least 80 real clips"):
        real_floor(real[:50], n=40, draws=2, steps=3, rng=rng)


# --------------------------------------------------------------------------------------------
# Correlation


def test_spearman_exact_p_values_and_rho_as_scipy():
    assert fad_cli.spearman([1, 2, 3], [10, 20, 30]) == {
        "rho": pytest.approx(1.0), "p": pytest.approx(2 / 6), "k": 3, "exact": True}
    res = fad_cli.spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1])
    assert res["rho"] == pytest.approx(-1.0) and res["p"] == pytest.approx(2 / factorial(5))
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=8), rng.normal(size=8)
    assert fad_cli.spearman(x, y)["rho"] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert fad_cli.spearman([1, 2], [1, 2])["rho"] is None
    assert fad_cli.spearman([1, 2, 3], [0.5, 0.5, 0.5])["why"] == "no variation"



def test_correlations_also_over_the_generators_the_detector_never_heard():
    fads = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}
    rates = {"a": 0.9, "b": 0.2, "c": 0.3, "d": 0.4, "e": 0.5}  # a: trained on, caught anyway
    result = {
        "embeddings": {"emb": {"generators": {g: {"equal_n": {"mean": v}, "fad_inf": {"value": v}}
                                              for g, v in fads.items()}}},
        "detectors": {"det": {"trained_on": ["a"], "detected": {
            g: {"n": 10, "detection_rate": r} for g, r in rates.items()}}}}
    rows = {(c["which"], c["estimator"]): c for c in fad_cli.correlations(result, seed=0)}
    assert set(rows) == {(w, e) for w in ("all", "unseen by the detector")
                         for e in ("equal n", "FAD-inf")}
    assert rows["all", "equal n"]["rho"] == pytest.approx(stats.spearmanr(
        list(fads.values()), list(rates.values())).statistic)
    unseen = rows["unseen by the detector", "FAD-inf"]
    assert unseen["generators"] == ["b", "c", "d", "e"] and unseen["rho"] == pytest.approx(1.0)
    assert unseen["p"] == pytest.approx(2 / 24)

# --------------------------------------------------------------------------------------------
# frechet-audio-distance's embeddings, offline


def test_vggish_without_the_package_says_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "frechet_audio_distance", None)  # import fails
    with pytest.raises(SystemExit, match=r"needs the frechet-audio-distance package.*"
                                         r"--embedding resemblyzer.*--fad-ckpt-dir"):
        embeddings.make("vggish")


def test_pann_offline_says_it_could_not_download(monkeypatch):
    def no_network(**kwargs):
        assert kwargs["model_name"] == "pann" and kwargs["sample_rate"] == 16000
        raise URLError("[Errno -2] Name or service not known")

    module = types.ModuleType("frechet_audio_distance")
    module.FrechetAudioDistance = no_network
    monkeypatch.setitem(sys.modules, "frechet_audio_distance", module)
    with pytest.raises(SystemExit, match=r"could not load the pann weights.*cannot reach the "
                                         r"internet.*URLError.*detector:MODEL_ID"):
        embeddings.make("pann")


def test_the_package_adapter_averages_frames_per_clip():
    class Stand:  # a stand-in with the package's get_embeddings signature
        def __init__(self, **kwargs):
            pass

        def get_embeddings(self, x, sr):
            assert sr == 16000 and len(x) == 1
            return np.vstack([np.full((1, 4), i, np.float32) for i in range(3)])

    emb = embeddings.FadPackage("vggish", factory=Stand)
    np.testing.assert_allclose(emb.vector(np.zeros(16000, np.float32)), np.ones(4))
    with pytest.raises(SystemExit, match="unknown embedding 'mfcc'"):
        embeddings.make("mfcc")


# --------------------------------------------------------------------------------------------
# End to end on a tiny corpus

TINY_INPUT = {"sample_rate": 8000, "duration": 0.5, "n_fft": 256, "hop_length": 128,
              "n_mels": 16, "fmin": 20.0, "fmax": 4000.0, "top_db": 80.0, "normalize": "db"}
GENERATORS = {"buzz": "classic", "hum": "vocoder", "breath": "neural"}


def _clip(rng: np.random.Generator, kind: str, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(sr * rng.uniform(0.6, 1.0))) / sr
    f0 = rng.uniform(100, 220)
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 5 * t))) / sr
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8)) * 0.2
    wave = {"real": voiced + rng.normal(0, 0.02, len(t)),
            "breath": voiced + rng.normal(0, 0.05, len(t)),
            "hum": 0.3 * np.sin(2 * np.pi * f0 * t),
            "buzz": 0.3 * np.sign(np.sin(2 * np.pi * f0 * t))}[kind]
    return (wave * np.hanning(len(t))).astype(np.float32)


def tiny_v2_corpus(root: Path, per_cell: int = 6) -> Path:
    """Two real sources and three generators in every split, v2's manifest columns."""
    rng = np.random.default_rng(0)
    rows = []
    for split in ("train", "validation", "test"):
        for kind in ("real", *GENERATORS):
            for i in range(per_cell * (2 if kind == "real" else 1)):
                label = "real" if kind == "real" else "fake"
                source = f"src{i % 2}" if kind == "real" else "src0"
                rel = f"clips/{split}/{label}/{kind}-{i}.wav"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / rel, _clip(rng, kind), 16000)
                rows.append({"path": rel, "label": label, "source": source,
                             "speaker": f"{source}-a", "language": "xx", "text": "a",
                             "generator": source if label == "real" else kind,
                             "generator_kind": "human" if label == "real" else GENERATORS[kind],
                             "split": split, "duration": "", "speech_duration": ""})
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=METADATA_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return root


@needs_torch
def test_a_tiny_corpus_runs_end_to_end_with_a_detectors_features_and_card(tmp_path):
    from training.audio import train as audio_train

    data = tiny_v2_corpus(tmp_path / "corpus")
    weights = tmp_path / "weights" / "tiny-fad.pt"
    entry = {"id": "tiny-fad", "name": "Tiny", "framework": "torch", "modality": "audio",
             "architecture": "custom_cnn", "weights": str(weights), "labels": ["real", "fake"],
             "positive_label": "fake", "output": "sigmoid", "target_layer": "features.1",
             "arch_args": {"width": 4, "depth": 2}, "input": TINY_INPUT}
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({"models": [entry]}), encoding="utf-8")
    cache = tmp_path / "cache"
    card = audio_train.main(["--model", "tiny-fad", "--config", str(config), "--data", str(data),
                             "--epochs", "1", "--batch-size", "8", "--cache-dir", str(cache),
                             "--run-dir", str(tmp_path / "run"), "--no-robustness",
                             "--explain", ""])
    common = ["--data", str(data), "--config", str(config), "--cache-dir", str(cache),
              "--draws", "4", "--steps", "3", "--min-clips", "10"]

    result = fad_cli.main([*common, "--embedding", "detector:tiny-fad", "--detector", "tiny-fad"])
    assert (data / "fad.md").is_file()
    assert json.loads((data / "fad.json").read_text()) == json.loads(json.dumps(result))
    e = result["embeddings"]["detector:tiny-fad"]
    assert set(e["generators"]) == set(GENERATORS) and e["n"] == 18 and e["n_real"] == 36
    for g, r in e["generators"].items():
        assert r["kind"] == GENERATORS[g] and r["clips"] == 18
        # n is every clip of each generator: one draw, no spread
        assert r["equal_n"]["n"] == 18 and r["equal_n"]["draws"] == 1 and r["equal_n"]["sd"] == 0
        assert tuple(r["fad_inf"]["sizes"]) == (10, 14, 18) and r["fad_inf"]["draws"] == 4
        assert r["equal_n"]["mean"] >= 0 and np.isfinite(r["fad_inf"]["value"])
    det = result["detectors"]["tiny-fad"]
    assert det["source"] == "card"  # the card was made on this very corpus
    by_gen = card.metrics["test"].by_generator
    assert det["detected"] == {g: {"n": by_gen[g]["n"],
                                   "detection_rate": pytest.approx(1 - by_gen[g]["miss_rate"])}
                               for g in GENERATORS}
    assert set(det["false_alarms"]) == {"src0", "src1"}
    rows = [c for c in result["correlations"] if c["detector"] == "tiny-fad"]
    assert {c["estimator"] for c in rows} == {"equal n", "FAD-inf"}
    assert all(c["k"] == 3 and c["generators"] == sorted(GENERATORS) for c in rows)
    md = (data / "fad.md").read_text()
    for g in GENERATORS:
        assert f"| {g} | {GENERATORS[g]} | 18 |" in md
    assert "*real floor*" in md and "tiny-fad detected (n)" in md and "2 / k!" in md

    # Measured here by the same code: the card's figures, and the embedding of the first run
    # is kept (same corpus, same settings).
    again = fad_cli.main([*common, "--embedding", "detector:tiny-fad", "--detector", "tiny-fad",
                          "--measure"])
    assert again["detectors"]["tiny-fad"]["source"] == "measured"
    assert again["detectors"]["tiny-fad"]["detected"] == det["detected"]
    assert again["embeddings"] == result["embeddings"]  # seeded, and read from the cache
    assert list(cache.glob("fad-detector-tiny-fad-*.npz"))

    with pytest.raises(SystemExit, match="the smallest has 18"):
        fad_cli.main([*common, "--embedding", "detector:tiny-fad", "--n", "40"])


def test_resemblyzer_embeds_voices_and_skips_silence(tmp_path):
    pytest.importorskip("resemblyzer")  # requirements-corpus.txt; weights inside its wheel
    from training.audio.data import Clip

    rng = np.random.default_rng(6)
    clips = []
    for i, kind in enumerate(("real", "buzz", "silence")):
        path = tmp_path / f"{kind}.wav"
        wave = np.zeros(16000, np.float32) if kind == "silence" else _clip(rng, kind)
        sf.write(path, wave, 16000)
        clips.append(Clip(path, "real", "test"))
    out = embeddings.make("resemblyzer").embed(clips)
    assert out.paths == (str(clips[0].path), str(clips[1].path)) and out.skipped == 1
    assert out.x.shape == (2, 256)
    np.testing.assert_allclose(np.linalg.norm(out.x, axis=1), 1.0, rtol=1e-5)
