"""Config validation: every mistake gives one error naming the file, the key and the fix."""

from __future__ import annotations

import pytest

from conftest import TINY_MODELS, model_entry, needs_tf, needs_torch, write_config
from xai_platform.config import load_config
from xai_platform.errors import ConfigError


def _load(tmp_path, models, **kw):
    """The config as the app and the CLI take it: parsed, then catalogued by the model manager
    (which checks the model side: format and architecture)."""
    from xai_platform.models import ModelManager

    config = load_config([write_config(tmp_path / "user.yaml", models, **kw)], base=None)
    ModelManager(config)
    return config


def test_project_config_is_valid():
    config = load_config()
    frameworks = {(s.modality, s.framework) for s in config.models}
    # At least one PyTorch and one Keras model per modality.
    assert {("audio", "torch"), ("audio", "keras"), ("xray", "torch"), ("xray", "keras")} <= frameworks


def test_tiny_config_parses(tiny_config):
    spec = tiny_config.model("tiny-torch-audio")
    assert spec.input.shape == (16, 1 + 4000 // 128)
    assert spec.num_outputs == 1 and spec.positive_index == 1
    assert tiny_config.model("tiny-torch-xray").input.shape == (32, 32)


@pytest.mark.parametrize("entry, key, fix", [
    (model_entry(colour="red"), "key 'colour'", "remove it"),
    (model_entry(framework="jax"), "key 'framework'", "use one of: torch, keras"),
    (model_entry(modality="video"), "key 'modality'", "audio, xray"),
    (model_entry(labels="real,fake"), "key 'labels'", "a list"),
    (model_entry(labels=["only"]), "key 'labels'", "two labels"),
    (model_entry(output="softmaxx"), "key 'output'", "probabilities, logits, sigmoid"),
    (model_entry(architecture="resnet9000"), "key 'architecture'", "registered builder"),
    (model_entry(architecture="keras_cnn"), "key 'framework'", "set framework: keras"),
    (model_entry(input={**model_entry()["input"], "n_mels": "many"}), "key 'input.n_mels'",
     "an integer"),
    (model_entry(input={**model_entry()["input"], "hop": 3}), "key 'input.hop'", "hop_length"),
    (model_entry(input={**model_entry()["input"], "kind": "cqt"}), "key 'input.kind'",
     "log_mel, linear"),
    (model_entry(input={"size": 32, "normalize": "zscore"}, modality="xray"),
     "key 'input.normalize'", "imagenet, xrv, unit, minus1_1"),
    (model_entry(positive_label="spoof"), "key 'positive_label'", "real, fake"),
    (model_entry(batch_size=0), "key 'batch_size'", "a value > 0"),
    (model_entry(one_sided=True), "key 'one_sided'", "set positive_label"),
    (model_entry(one_sided="yes", positive_label="fake"), "key 'one_sided'", "true/false"),
    (model_entry(verdict=False), "key 'verdict'", "add a notice"),
    (model_entry(verdict="no", notice="measured"), "key 'verdict'", "true/false"),
    ({k: v for k, v in model_entry().items() if k != "labels"}, "key 'labels'", "add `labels:`"),
])
def test_invalid_entries_name_file_key_and_fix(tmp_path, entry, key, fix):
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, [entry])
    message = str(info.value)
    assert "user.yaml" in message and key in message and "Fix:" in message
    assert fix in message


def test_duplicate_id_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="already declared"):
        _load(tmp_path, [model_entry(), model_entry()])


def test_bad_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("models:\n  - id: a\n    name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*not valid YAML at line"):
        load_config([path], base=None)


def test_yaml_is_read_as_safe_load_reads_it_with_its_messages():
    # config files go through libyaml's parser for speed (start-up waits on them): the same
    # data, and on an error the pure-Python parser's message, naming the offending character.
    import yaml

    from xai_platform.config import DEFAULT_CONFIG_DIR, read_yaml

    for path in sorted(DEFAULT_CONFIG_DIR.glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        assert read_yaml(text) == yaml.safe_load(text)
    for bad in ("a: [1, 2\nb: 3\n", "a:\n\t- 1\n", "x: 1\n  y: 2\n"):
        with pytest.raises(yaml.YAMLError) as ours:
            read_yaml(bad)
        with pytest.raises(yaml.YAMLError) as reference:
            yaml.safe_load(bad)
        assert str(ours.value) == str(reference.value)


def test_config_folder_and_app_settings(tmp_path):
    folder = tmp_path / "extra"
    folder.mkdir()
    write_config(folder / "a.yaml", TINY_MODELS[:1], app={"max_audio_seconds": 30})
    write_config(folder / "b.yaml", TINY_MODELS[1:2])
    config = load_config([folder], base=None)
    assert [s.id for s in config.models] == ["tiny-torch-audio", "tiny-torch-xray"]
    assert config.app.max_audio_seconds == 30.0


def test_bad_app_setting(tmp_path):
    with pytest.raises(ConfigError, match=r"app.device.*cuda"):
        _load(tmp_path, [], app={"device": "tpu"})
    with pytest.raises(ConfigError, match=r"app.batch_size"):
        _load(tmp_path, [], app={"batch_size": 0})


def test_weights_relative_to_weights_dir(tmp_path):
    config = _load(tmp_path, [model_entry(weights="audio/x.pt")])
    assert config.models[0].weights.parts[-3:] == ("weights", "audio", "x.pt")


@needs_torch
@pytest.mark.parametrize("layer, message", [
    ("features.9", "does not exist"),
    ("featurs.1", "features.1"),  # suggests the close name
    ("classifier", "not a convolutional feature map"),
])
def test_torch_target_layer_checked(tmp_path, layer, message):
    from xai_platform.models import ModelManager

    config = _load(tmp_path, [model_entry(target_layer=layer)])
    with pytest.raises(ConfigError, match=message) as info:
        ModelManager(config).verify()
    assert "target_layer" in str(info.value) and "user.yaml" in str(info.value)


@needs_tf
@pytest.mark.parametrize("layer, message", [
    ("conv9b", "does not exist"),
    ("gap", "not a convolutional feature map"),
])
def test_keras_target_layer_checked(tmp_path, layer, message):
    from xai_platform.models import ModelManager

    config = _load(tmp_path, [TINY_MODELS[2] | {"target_layer": layer}])
    with pytest.raises(ConfigError, match=message):
        ModelManager(config).verify()


@needs_torch
def test_a_model_entry_batch_size_sets_its_forward_batches(tmp_path):
    import numpy as np

    from xai_platform.models import ModelManager

    entries = [{**TINY_MODELS[0], "batch_size": 3}, TINY_MODELS[1]]
    config = _load(tmp_path, entries)
    assert config.model(TINY_MODELS[0]["id"]).batch_size == 3
    assert config.model(TINY_MODELS[1]["id"]).batch_size is None
    manager = ModelManager(config, device="cpu", batch_size=16, fast_forward=False)
    small, default = (manager.get(e["id"]) for e in TINY_MODELS[:2])
    assert (small.default_batch_size, default.default_batch_size) == (3, 16)
    seen: list[int] = []
    small.net.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    small.predict(np.zeros((7, *small.input_shape), np.float32))
    assert seen == [3, 3, 1]
