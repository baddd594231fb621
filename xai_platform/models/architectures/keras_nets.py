"""Keras (TensorFlow backend) network builders; keras is imported when a builder is called.

A builder returns a ``keras.Model`` mapping (N, H, W, C) to (N, spec.num_outputs). The head
ends in softmax only when the config says ``output: probabilities``; otherwise it returns logits
(``logits`` / ``sigmoid``), which give gradient methods scores that do not saturate.
"""

from __future__ import annotations

from . import register_architecture


def _head_activation(spec) -> str | None:
    return "softmax" if spec.output == "probabilities" else None


@register_architecture("keras_cnn", framework="keras")
def keras_cnn(spec):
    """A small CNN: ``arch_args.depth`` blocks of two 3x3 convs (named ``conv<i>a``/``conv<i>b``).

    Grad-CAM layer: ``conv<depth>b`` (the last convolution's ReLU output).
    """
    import keras
    from keras import layers

    args = dict(spec.arch_args)
    width, depth = int(args.get("width", 32)), int(args.get("depth", 4))
    h, w = spec.input.shape
    inputs = keras.Input((h, w, spec.input.channels), name="features")
    x = inputs
    for i in range(1, depth + 1):
        c = width * 2 ** min(i - 1, 3)
        x = layers.Conv2D(c, 3, padding="same", use_bias=False, name=f"conv{i}a")(x)
        # momentum 0.9 (Keras default 0.99): running statistics usable after a few hundred steps
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i}a")(x)
        x = layers.ReLU(name=f"relu{i}a")(x)
        x = layers.Conv2D(c, 3, padding="same", activation="relu", name=f"conv{i}b")(x)
        if i < depth:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(float(args.get("dropout", 0.2)), name="dropout")(x)
    outputs = layers.Dense(spec.num_outputs, activation=_head_activation(spec), name="head")(x)
    return keras.Model(inputs, outputs, name=spec.id.replace("-", "_"))


@register_architecture("keras_mobilenet_v2", framework="keras")
def keras_mobilenet_v2(spec):
    """keras.applications MobileNetV2 (no download: ``weights=None``) nested in a functional model.

    The backbone is one layer named ``backbone`` of the outer model, so its last convolution is
    addressed as ``backbone/Conv_1`` (the nested-model case of ``target_layer``).
    """
    import keras
    from keras import layers

    args = dict(spec.arch_args)
    h, w = spec.input.shape
    backbone = keras.applications.MobileNetV2(
        input_shape=(h, w, spec.input.channels), alpha=float(args.get("alpha", 1.0)),
        include_top=False, weights=None, name="backbone")
    inputs = keras.Input((h, w, spec.input.channels), name="features")
    x = backbone(inputs)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(float(args.get("dropout", 0.2)), name="dropout")(x)
    outputs = layers.Dense(spec.num_outputs, activation=_head_activation(spec), name="head")(x)
    return keras.Model(inputs, outputs, name=spec.id.replace("-", "_"))
