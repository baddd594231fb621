"""Hugging Face audio classifiers (``framework: transformers``): tiny random wav2vec2 and AST
models built here from small configs and saved with ``save_pretrained`` (nothing downloaded)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, model_entry, tone, write_config
from xai_platform import explainers
from xai_platform.errors import ConfigError, ModelUnavailableError

pytestmark = pytest.mark.skipif(importlib.util.find_spec("transformers") is None
                                or importlib.util.find_spec("torch") is None,
                                reason="transformers / torch are not installed")

SR = 8000
WAVE_INPUT = {"kind": "waveform", "sample_rate": SR, "duration": 0.5, "n_fft": 256,
              "hop_length": 64, "n_mels": 16, "fmax": 4000.0}
CHEAP = {"lime": {"num_samples": 50}, "shap": {"n_evaluations": 40},
         "integrated_gradients": {"n_steps": 8}}
METHOD_IDS = [m.id for m in explainers.all_methods()]


def hf_entry(**overrides) -> dict:
    return model_entry(**{"framework": "transformers", "architecture": "audio_classification",
                          "labels": ["bonafide", "spoof"], "positive_label": "spoof",
                          "output": "logits", "target_layer": None, "arch_args": {},
                          "input": dict(WAVE_INPUT), **overrides})


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """A tiny random Wav2Vec2ForSequenceClassification and ASTForAudioClassification, each
    saved with save_pretrained beside its feature extractor."""
    import torch
    from transformers import (ASTConfig, ASTFeatureExtractor, ASTForAudioClassification,
                              Wav2Vec2Config, Wav2Vec2FeatureExtractor,
                              Wav2Vec2ForSequenceClassification)

    root = tmp_path_factory.mktemp("hf")
    labels = {"id2label": {0: "bonafide", 1: "spoof"}, "label2id": {"bonafide": 0, "spoof": 1}}
    torch.manual_seed(0)
    w2v = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
        num_conv_pos_embeddings=4, num_conv_pos_embedding_groups=2, classifier_proj_size=8,
        num_labels=2, mask_time_prob=0.0, **labels)).eval()
    w2v.save_pretrained(root / "w2v")
    Wav2Vec2FeatureExtractor(sampling_rate=SR, do_normalize=True).save_pretrained(root / "w2v")
    ast = ASTForAudioClassification(ASTConfig(
        hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        num_mel_bins=16, max_length=64, patch_size=8, frequency_stride=8, time_stride=8,
        num_labels=2, **labels)).eval()
    ast.save_pretrained(root / "ast")
    ASTFeatureExtractor(sampling_rate=SR, num_mel_bins=16, max_length=64
                        ).save_pretrained(root / "ast")
    return {"w2v": root / "w2v", "ast": root / "ast"}


@pytest.fixture(scope="module")
def hf_manager(folders, tmp_path_factory):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    entries = [hf_entry(id="tiny-w2v", weights=str(folders["w2v"]),
                        target_layer="wav2vec2.feature_extractor.conv_layers.1"),
               hf_entry(id="tiny-ast", weights=str(folders["ast"]))]
    path = write_config(tmp_path_factory.mktemp("cfg") / "hf.yaml", entries)
    manager = ModelManager(load_config([path], base=None), device="cpu", cache_size=2)
    manager.verify()  # the conv layer is found in the folder's model
    return manager


def _waves(n: int = 3) -> np.ndarray:
    return np.stack([tone(0.5, sr=SR, freq=200.0 + 90 * i, seed=i) for i in range(n)])


@pytest.mark.parametrize("kind", ["w2v", "ast"])
def test_predictions_equal_the_model_behind_its_own_feature_extractor(folders, hf_manager,
                                                                      kind):
    import torch
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    handle = hf_manager.get(f"tiny-{kind}")
    waves = _waves()
    fe = AutoFeatureExtractor.from_pretrained(folders[kind])
    model = AutoModelForAudioClassification.from_pretrained(folders[kind]).eval()
    features = fe(list(waves), sampling_rate=SR, return_tensors="pt")["input_values"]
    ours = handle.net.features(torch.from_numpy(waves))
    np.testing.assert_allclose(ours.numpy(), features.numpy(), atol=2e-3, rtol=1e-4)
    with torch.no_grad():
        want = torch.softmax(model(input_values=features).logits, dim=-1).numpy()
    np.testing.assert_allclose(handle.predict(waves[:, None]), want, atol=1e-4)
    assert handle.framework == "transformers" and not handle.untrained


def test_labels_come_from_the_models_config(folders, tmp_path):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    def load(**overrides):  # the manager checks each entry's model side, importing nothing
        return ModelManager(load_config([write_config(tmp_path / "h.yaml", [hf_entry(
            id="h", weights=str(folders["w2v"]), **overrides)])], base=None))

    with pytest.raises(ConfigError, match=r"names its classes bonafide, spoof.*"
                                          r"write labels: \[bonafide, spoof\]"):
        load(labels=["real", "fake"], positive_label="fake")
    with pytest.raises(ConfigError, match="has 2 classes"):
        load(labels=["a", "b", "c"], positive_label=None)
    with pytest.raises(ConfigError, match=r"key 'input.kind'.*kind: waveform"):
        load(input={k: v for k, v in WAVE_INPUT.items() if k != "kind"})
    with pytest.raises(ConfigError, match=r"key 'arch_args.hub'"):
        load(arch_args={"hub": "not a repo"})

    # Left out, the labels are read from the folder's config.json (id2label, in output order);
    # with no folder to read them from, the entry says to add them or fetch the model.
    entry = {k: v for k, v in hf_entry(id="h", weights=str(folders["w2v"])).items()
             if k != "labels"}
    spec = load_config([write_config(tmp_path / "n.yaml", [entry])], base=None).model("h")
    assert spec.labels == ("bonafide", "spoof") and spec.positive_index == 1
    entry["weights"] = str(tmp_path / "not-fetched-yet")
    with pytest.raises(ConfigError, match=r"key 'labels'.*fetch the model first"):
        load_config([write_config(tmp_path / "m.yaml", [entry])], base=None)


def test_only_safetensors_load(folders, tmp_path):
    """A folder whose weights are a pickle (pytorch_model.bin) is refused."""
    import shutil

    import torch

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    folder = tmp_path / "pickled"
    shutil.copytree(folders["w2v"], folder)
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    manager = ModelManager(load_config([write_config(tmp_path / "p.yaml", [hf_entry(
        id="p", weights=str(folder))])], base=None), device="cpu")
    with pytest.raises(ModelUnavailableError, match="cannot be loaded safely"):
        manager.get("p")


def test_hub_models_are_fetched_only_when_asked_and_offline_says_what_to_do(tmp_path):
    folder = tmp_path / "hf" / "w2v-deepfake"
    config = write_config(tmp_path / "hub.yaml", [hf_entry(
        id="hub-w2v", weights=str(folder), arch_args={"hub": "some-org/w2v-deepfake"},
        train_command="python -m xai_platform fetch hub-w2v")])
    code = ("import sys; from xai_platform.config import load_config; "
            "from xai_platform.models import ModelManager; "
            f"m = ModelManager(load_config([{str(config)!r}], base=None)); "
            "print(m.status('hub-w2v')); print(m.fetchable('hub-w2v')); "
            "print('transformers' in sys.modules)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert "fetch weights (needs internet)" in lines[0] and lines[1] == "True"
    assert lines[2] == "False"  # nothing of transformers imported before a model loads
    fetch = subprocess.run([sys.executable, "-m", "xai_platform", "fetch", "hub-w2v",
                            "--config", str(config), "--quiet"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=120)
    assert fetch.returncode != 0
    assert "could not download 'some-org/w2v-deepfake' from the Hugging Face hub" in fetch.stderr
    assert "copy that folder to" in fetch.stderr


@pytest.mark.parametrize("method", METHOD_IDS)
@pytest.mark.parametrize("kind", ["w2v", "ast"])
def test_every_method_on_hugging_face_models(hf_manager, kind, method, tmp_path):
    """The contract: every method that applies gives a finite, non-constant map on the
    window's spectrogram; Grad-CAM without a target layer (AST) says why not."""
    import soundfile as sf

    from xai_platform.service import Service, Session

    model_id = f"tiny-{kind}"
    reason = explainers.get_method(method).reason_incompatible(hf_manager.spec(model_id))
    if reason is not None:
        assert kind == "ast" and "target layer" in reason
        return
    path = tmp_path / "voice.wav"
    sf.write(path, tone(0.9, sr=SR, freq=250.0), SR)
    service = Service(hf_manager)
    session = Session()
    try:
        expl = service.explain(session, path, model_id, method, params=CHEAP.get(method))
        assert expl.heatmap.shape == (16, 63) and np.isfinite(expl.heatmap).all()
        if not expl.extras.get("no_positive_evidence"):
            assert expl.heatmap.std() > 0
        if method == "gradcam":
            assert expl.extras["layer_shape"][1] == 1  # a 1-D convolution: time only
    finally:
        session.close()


def test_check_model_lists_the_models_labels_and_layers(folders, tmp_path, capsys):
    from xai_platform.cli import main

    config = write_config(tmp_path / "mine.yaml", [hf_entry(
        id="mine-w2v", weights=str(folders["w2v"]),
        target_layer="wav2vec2.feature_extractor.conv_layers.1")])
    assert main(["check-model", str(config)]) == 0
    text = capsys.readouterr().out
    assert "model 'mine-w2v' (transformers, audio): OK" in text
    assert "over labels bonafide, spoof" in text
    assert "wav2vec2.feature_extractor.conv_layers.1" in text.split("candidate target")[1]
    saved = json.loads((folders["w2v"] / "config.json").read_text())
    assert saved["id2label"] == {"0": "bonafide", "1": "spoof"}
