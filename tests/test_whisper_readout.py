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


def _manager(folder: Path, entries: list[dict]):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    config = load_config([write_config(folder / "w.yaml", entries)], base=None)
    return ModelManager(config, device="cpu", batch_size=8)


@needs_torch
def test_only_the_readout_is_saved_and_it_loads_back(tmp_path, encoder_file):
    import torch

    from training.weights import save_weights

    manager = _manager(tmp_path, [_entry(encoder_file)])
    manager.verify()  # encoder.conv2 is a 1-D convolutional map (C, L)
    handle = manager.get("tiny-whisper")
    net = handle.net
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
    history, seconds, info = train.fit_readout(spec, toy, sets)
    mean, scale, weight, bias = toy.fitted
    assert np.argmax(np.abs(weight)) == 0 and weight[0] > 0  # the informative feature
    assert history["epochs"] == [] and history["best_metric"] > 0.9
    assert info["c"] == max(train.READOUT_C, key=lambda c: info["validation_auc_by_c"][str(c)])
    assert info["windows"] == {"train": 400, "validation": 200} and info["features"] == 6
