"""Keras models of any nesting, saved as one ``.keras`` file and plugged in by config alone:
Xception-, ResNet50- and MobileNetV2-shaped bases (``weights=None``: nothing is downloaded)
nested in a functional model or a Sequential, with logits, softmax or sigmoid heads. Each
Grad-CAM is checked against one written by hand with ``tf.GradientTape`` the usual Keras way (a
sub-model from the nested model's input to [target layer output, its output], then the head)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import chest_like, model_entry, needs_tf, write_config

pytestmark = needs_tf

#: id -> (base, input size, output kind, target layer inside the base, wrapper, input spec)
CASES = {
    "xception-logits": ("Xception", 71, "logits", "block14_sepconv2_act", "functional",
                        {"normalize": "minus1_1"}),
    "resnet50-softmax": ("ResNet50", 64, "probabilities", "conv5_block3_out", "functional",
                         {"range": [0, 255], "mean": [123.68, 116.779, 103.939],
                          "channel_order": "bgr"}),
    "mobilenetv2-sigmoid": ("MobileNetV2", 64, "sigmoid_probability", "out_relu", "sequential",
                            {"mean": [0.5], "std": [0.5], "interpolation": "bilinear"}),
}


def _keras():
    from xai_platform.models.formats.keras import _frameworks

    return _frameworks()


def build(case: str):
    """The model of ``case`` and the path of its target layer (``base/layer``)."""
    keras, _ = _keras()
    app, size, output, layer, wrapper, _ = CASES[case]
    keras.utils.set_random_seed(0)
    base = getattr(keras.applications, app)(weights=None, include_top=False,
                                            input_shape=(size, size, 3))
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(8, activation="relu"),
            keras.layers.Dropout(0.3)]
    head.append(keras.layers.Dense(2) if output == "logits" else
                keras.layers.Dense(2, activation="softmax") if output == "probabilities" else
                keras.layers.Dense(1, activation="sigmoid"))
    if wrapper == "sequential":
        model = keras.Sequential([keras.Input((size, size, 3)), base, *head])
    else:
        inputs = keras.Input((size, size, 3))
        x = base(inputs)
        for la in head:
            x = la(x)
        model = keras.Model(inputs, x)
    return model, f"{base.name}/{layer}"


def deep_model():
    """Three levels: a Sequential holding a functional model holding a functional model."""
    keras, _ = _keras()
    keras.utils.set_random_seed(1)
    i1 = keras.Input((32, 32, 3))
    inner = keras.Model(i1, keras.layers.Conv2D(6, 3, padding="same", activation="relu",
                                                name="conv_a")(i1), name="inner")
    i2 = keras.Input((32, 32, 3))
    y = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv_b")(inner(i2))
    mid = keras.Model(i2, keras.layers.ReLU(name="relu_b")(y), name="mid")
    model = keras.Sequential([keras.Input((32, 32, 3)), mid,
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    return model, "mid/inner/conv_a"


def reference(model, path: str, net_in, target: int, output: str):
    """(activations, gradients), NHWC, by hand: the innermost model's sub-model
    [target layer output, its output] inside one GradientTape, then every later layer of each
    enclosing model called in order (the models here are chains of layers)."""
    keras, tf = _keras()

    def forward(m, parts, x):
        layers = [la for la in m.layers if not isinstance(la, keras.layers.InputLayer)]
        if len(parts) == 1:
            grad_model = keras.Model(m.inputs, [m.get_layer(parts[0]).output, m.outputs[0]])
            return grad_model(x, training=False)
        nested = m.get_layer(parts[0])
        index = layers.index(nested)
        for la in layers[:index]:
            x = la(x, training=False)
        act, x = forward(nested, parts[1:], x)
        for la in layers[index + 1:]:
            x = la(x, training=False)
        return act, x

    with tf.GradientTape() as tape:
        act, out = forward(model, path.split("/"), tf.constant(net_in))
        if output == "logits":
            score = out[:, target]
        elif output == "probabilities":
            score = tf.math.log(out[:, target])
        elif output == "sigmoid":
            score = out[:, 0] if target == 1 else -out[:, 0]
        else:  # sigmoid_probability: the logit of the model's probability
            logit = tf.math.log(out[:, 0]) - tf.math.log(1.0 - out[:, 0])
            score = logit if target == 1 else -logit
    return act.numpy(), tape.gradient(score, act).numpy()


def _plugged(tmp_path: Path, model, case_id: str, path: str, output: str, size: int,
             input_extra: dict):
    """The model saved as one .keras file and loaded through a config entry alone."""
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    file = tmp_path / f"{case_id}.keras"
    model.save(file)
    entry = model_entry(id=case_id, framework="keras", modality="xray", architecture="keras_file",
                        weights=str(file), labels=["normal", "pneumonia"], output=output,
                        target_layer=path, arch_args={},
                        input={"size": size, "channels": 3, **input_extra})
    config = load_config([write_config(tmp_path / "c.yaml", [entry])], base=None)
    manager = ModelManager(config, device="cpu")
    manager.verify()
    return manager.get(case_id)


@pytest.mark.parametrize("case", list(CASES))
def test_nested_keras_application_gradcam_matches_a_hand_written_tape(case, tmp_path):
    from xai_platform import explainers
    from xai_platform.explainers.cam import cam_from_weights
    from xai_platform.models.handle import normalization

    _, size, output, _, _, extra = CASES[case]
    model, path = build(case)
    handle = _plugged(tmp_path, model, case, path, output, size, extra)
    x = chest_like(size, seed=2)
    probs = handle.predict(x[None])[0]
    assert probs.shape == (2,) and abs(float(probs.sum()) - 1.0) < 1e-5
    scale, shift = normalization(handle.spec)
    net_in = (np.repeat(x[None, :, :, None], 3, axis=-1) * np.asarray(scale, np.float32)
              + np.asarray(shift, np.float32)).astype(np.float32)
    want = model(net_in, training=False).numpy()[0]
    if output == "sigmoid_probability":
        want = np.array([1 - want[0], want[0]])
    elif output == "logits":
        want = np.exp(want - want.max()) / np.exp(want - want.max()).sum()
    np.testing.assert_allclose(probs, want, atol=1e-5)
    for target in (0, 1):
        act, grads = reference(model, path, net_in, target, output)
        got = handle.layer_gradients(x[None], np.array([target]))
        np.testing.assert_allclose(got.activations, act.transpose(0, 3, 1, 2), rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(got.gradients, grads.transpose(0, 3, 1, 2), rtol=1e-3,
                                   atol=1e-6 * max(1.0, float(np.abs(grads).max())))
        heatmap = explainers.run("gradcam", handle, x, target=target).attribution.heatmap
        ref = cam_from_weights(act.transpose(0, 3, 1, 2),
                               grads.transpose(0, 3, 1, 2).mean(axis=(2, 3)), x.shape)[0]
        np.testing.assert_allclose(heatmap, ref, atol=1e-3)


def test_three_levels_of_nesting_in_a_sequential(tmp_path):
    model, path = deep_model()
    handle = _plugged(tmp_path, model, "deep", path, "sigmoid", 32, {"normalize": "unit"})
    assert ("mid/inner/conv_a", "Conv2D") in handle.layers()
    x = chest_like(32, seed=3)
    net_in = np.repeat(x[None, :, :, None], 3, axis=-1).astype(np.float32)
    for target in (0, 1):
        act, grads = reference(model, path, net_in, target, "sigmoid")
        got = handle.layer_gradients(x[None], np.array([target]))
        np.testing.assert_allclose(got.activations, act.transpose(0, 3, 1, 2), atol=1e-5)
        np.testing.assert_allclose(got.gradients, grads.transpose(0, 3, 1, 2), atol=1e-6)
        assert np.abs(got.gradients).sum() > 0


def test_declared_image_preprocessing(tmp_path):
    """range / mean / std / channel_order reach the network as one scale and shift per channel;
    interpolation picks the resize."""
    import cv2

    from xai_platform.config import parse_model
    from xai_platform.errors import ConfigError
    from xai_platform.models.handle import normalization
    from xai_platform.preprocessing.image import to_model_plane

    def spec(**input_):
        return parse_model(model_entry(modality="xray", input={"size": 32, "channels": 3,
                                                               **input_}), source="t.yaml")

    imagenet = normalization(spec(normalize="imagenet"))
    same = normalization(spec(range=[0, 255], mean=[123.675, 116.28, 103.53],
                              std=[58.395, 57.12, 57.375]))
    np.testing.assert_allclose(same, imagenet, rtol=1e-6)
    bgr = normalization(spec(mean=[0.1, 0.2, 0.3], channel_order="bgr"))
    np.testing.assert_allclose(bgr[1], [-0.3, -0.2, -0.1])
    np.testing.assert_allclose(normalization(spec(range=[-1, 1])), normalization(
        spec(normalize="minus1_1")))
    assert normalization(spec(normalize="unit")) == ([1.0] * 3, [0.0] * 3)  # unchanged
    for bad, match in [({"mean": [0.5, 0.5]}, "input.mean"), ({"std": [0.0]}, "input.std"),
                       ({"range": [1, 0]}, "input.range"),
                       ({"normalize": "imagenet", "std": [0.2]}, "input.normalize"),
                       ({"channel_order": "rgba"}, "input.channel_order"),
                       ({"interpolation": "cubic"}, "input.interpolation")]:
        with pytest.raises(ConfigError, match=match):
            spec(**bad)
    image = chest_like(96)
    np.testing.assert_array_equal(to_model_plane(image, (32, 32), interpolation="nearest"),
                                  cv2.resize(image, (32, 32), interpolation=cv2.INTER_NEAREST))
    assert not np.allclose(to_model_plane(image, (32, 32), interpolation="bilinear"),
                           to_model_plane(image, (32, 32)))


def test_a_head_narrower_than_the_labels_is_refused_with_the_fix(tmp_path):
    """A Dense(1, sigmoid) head configured as two softmax classes: refused at load, naming the
    output kinds that fit (explaining class 1 used to fail inside the gradient)."""
    keras, _ = _keras()
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Dense(1, activation="sigmoid")(keras.layers.GlobalAveragePooling2D()(x))
    from xai_platform.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match=r"1 unit\(s\).*sigmoid_probability"):
        _plugged(tmp_path, keras.Model(inputs, x), "narrow", "conv", "probabilities", 32,
                 {"normalize": "unit"})


def test_issue_17_xception_declared_with_a_list_of_outputs(tmp_path):
    """The reported model: an Xception base nested as one layer, pooling, Dense(128), Dropout,
    Dense(2) logits, declared as ``keras.Model(inputs, [logits])`` (a one-element list, kept by
    the .keras file). ``model(x)`` unpacks it; replaying the graph did not, so the scores were a
    (1, N, 2) stack and Grad-CAM of class 1 failed with ``segment_ids[0] = 1 is out of range
    [0, 1)`` in the gradient of the target gather."""
    from xai_platform import explainers
    from xai_platform.explainers.cam import cam_from_weights

    keras, _ = _keras()
    keras.utils.set_random_seed(0)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    inputs = keras.Input((71, 71, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inputs))
    x = keras.layers.Dropout(0.2)(keras.layers.Dense(128, activation="relu")(x))
    model = keras.Model(inputs, [keras.layers.Dense(2)(x)])
    path = "xception/block14_sepconv2_act"
    handle = _plugged(tmp_path, model, "issue-17", path, "logits", 71, {"normalize": "minus1_1"})
    x = chest_like(71, seed=4)
    assert handle.predict(x[None]).shape == (1, 2)
    net_in = (np.repeat(x[None, :, :, None], 3, axis=-1) * 2.0 - 1.0).astype(np.float32)
    act, grads = reference(model, path, net_in, 1, "logits")
    heatmap = explainers.run("gradcam", handle, x, target=1).attribution.heatmap
    ref = cam_from_weights(act.transpose(0, 3, 1, 2),
                           grads.transpose(0, 3, 1, 2).mean(axis=(2, 3)), x.shape)[0]
    np.testing.assert_allclose(heatmap, ref, atol=1e-3)
