"""The exact fast path for Keras models (xai_platform/models/fast_forward.py, kind OPENVINO):
convert with OpenVINO, cache the IR, check parity, run forward-only batches on OpenVINO in f32,
every way back to Keras, and ``--bf16`` on the same graph.

openvino is imported inside the tests (by the code under test), never while pytest collects.
"""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import (TINY_MODELS, needs_bf16, needs_openvino, needs_tf, needs_torch,
                      write_config)

pytestmark = [needs_torch, needs_tf, needs_openvino]

KERAS_MODELS = ["tiny-keras-audio", "tiny-keras-xray"]


def _manager(tmp_path: Path, **kwargs):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    path = write_config(tmp_path / "tiny.yaml", TINY_MODELS[2:4])
    return ModelManager(load_config([path], base=None), device="cpu", batch_size=16,
                        onnx_cache=tmp_path / "graphs", **kwargs)


def _planes(handle, n: int = 7, seed: int = 0) -> np.ndarray:
    """Random planes in the modality's range (dB for audio, [0, 1] for images)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *handle.input_shape), dtype=np.float32)
    return (x * -80.0).astype(np.float32) if handle.spec.modality == "audio" else x


def _counting(runs: dict, name: str, fn):
    def wrapped(*args, **kwargs):
        runs[name] += 1
        return fn(*args, **kwargs)
    return wrapped


def _runtime_precisions(compiled) -> set[str]:
    """What OpenVINO's CPU plugin runs the convolutions in (its runtime model)."""
    ops = compiled.get_runtime_model().get_ordered_ops()
    return {op.get_rt_info()["runtimePrecision"].astype(str) for op in ops
            if op.get_rt_info()["layerType"].astype(str) == "Convolution"}


@pytest.mark.parametrize("model_id", KERAS_MODELS)
def test_keras_forward_batches_run_on_openvino_f32_and_match(tmp_path, model_id):
    from xai_platform.models.fast_forward import default_threads
    from xai_platform.models.reduced_precision import OpenVinoHandle

    handle = _manager(tmp_path).get(model_id)
    path = handle.forward_path
    assert path.engine == "openvino" and path.precision == "float32" and path.fast
    assert not path.reduced and path.exported and path.reason == ""
    assert path.max_abs_diff is not None and path.max_abs_diff <= 1e-5 == path.tolerance
    assert path.parity_inputs == 5 and path.threads == default_threads()
    assert path.onnx_file is None and Path(path.ir_file).parent == tmp_path / "graphs"
    assert path.describe().startswith("OpenVINO f32 (converted, parity ")
    assert path.to_dict()["ir_file"] == path.ir_file
    assert isinstance(handle._fast, OpenVinoHandle) and handle._fast is handle._exact
    assert handle._fast.channels_last  # Keras' NHWC input, built by the shared GraphHandle
    # compiled for f32 and run in f32: on a CPU with bf16, OpenVINO's default would be bf16
    hint = handle._fast.compiled.get_property("INFERENCE_PRECISION_HINT")
    assert hint.to_string() == "f32"
    assert _runtime_precisions(handle._fast.compiled) == {"f32"}
    x = _planes(handle)
    np.testing.assert_allclose(handle.predict(x), handle._predict_batch(x), atol=1e-5, rtol=0)
    np.testing.assert_allclose(handle.scores(x), handle._scores_batch(x), atol=1e-4, rtol=1e-5)
    assert set(handle.forward_engines()) == {"keras", "openvino"}
    assert handle.exact_engine == handle.forward_engine == "openvino"


def test_converting_leaves_the_apps_logging_as_it_was(tmp_path, caplog):
    """openvino.convert_model sets the root logger to ERROR and leaves it so when the
    conversion fails (measured with openvino 2026.4: 30 before, 40 after); after a Keras
    model tried the fast path, the app's warnings (e.g. a broken model card) still show."""
    import logging

    root = logging.getLogger()
    before = root.level, list(root.filters), list(root.handlers)
    handle = _manager(tmp_path).get("tiny-keras-audio")
    assert handle.forward_path.fast and handle.forward_path.ir_file  # converted
    handle.model, model = object(), handle.model  # what openvino cannot convert
    try:
        with pytest.raises(Exception, match="model type"):
            handle.convert_openvino()
    finally:
        handle.model = model
    assert (root.level, list(root.filters), list(root.handlers)) == before
    logging.getLogger("xai_platform.models.cards").warning("still heard")
    assert "still heard" in caplog.text


def test_the_cached_ir_keeps_float32_weights(tmp_path):
    """``openvino.save_model`` compresses weights to f16 unless told not to (measured: every
    real constant of the region model's IR is f16 then)."""
    import openvino as ov

    handle = _manager(tmp_path).get("tiny-keras-xray")
    model = ov.Core().read_model(handle.forward_path.ir_file)
    types = {op.get_output_element_type(0).get_type_name() for op in model.get_ops()
             if op.get_type_name() == "Constant" and op.get_output_element_type(0).is_real()}
    assert types == {"f32"}


def test_forward_only_batches_run_on_openvino_and_gradients_on_keras(tmp_path):
    from xai_platform import explainers

    handle = _manager(tmp_path).get("tiny-keras-xray")
    x = _planes(handle, 1)[0]
    runs = {"openvino": 0, "keras": 0}
    fast = handle._fast
    with mock.patch.object(fast, "_run", _counting(runs, "openvino", fast._run)), \
            mock.patch.object(handle, "_predict_fn", _counting(runs, "keras",
                                                               handle._predict_fn)), \
            mock.patch.object(handle, "_layer_fn", _counting(runs, "keras", handle._layer_fn)):
        explainers.run("lime", handle, x, target=1, params={"num_samples": 50}, seed=0)
        assert runs == {"openvino": 4, "keras": 0}  # 50 samples in batches of 16
        explainers.run("gradcam", handle, x, target=1)
        assert runs == {"openvino": 4, "keras": 1}


def test_a_graph_that_differs_from_keras_fails_parity_and_falls_back(tmp_path):
    from xai_platform.models.reduced_precision import OpenVinoHandle

    real = OpenVinoHandle._run

    def off(self, net_input):  # the logits moved by 1e-3: probabilities by about 2.5e-4
        return real(self, net_input) + np.asarray([0.0, 1e-3], dtype=np.float32)

    with mock.patch.object(OpenVinoHandle, "_run", off):
        handle = _manager(tmp_path).get("tiny-keras-audio")
    path = handle.forward_path
    assert path.engine == "keras" and not path.fast
    assert path.reason.startswith("parity failed: probabilities differ by up to ")
    assert "(more than 1e-05) on 5 example inputs" in path.reason
    assert 1e-5 < path.max_abs_diff < 1e-3 and path.ir_file is not None
    assert handle._fast is None and set(handle.forward_engines()) == {"keras"}
    x = _planes(handle, 3)
    np.testing.assert_array_equal(handle.predict(x), handle._predict_batch(x))


def test_a_network_openvino_cannot_convert_falls_back_with_the_reason(tmp_path):
    from xai_platform.models.formats.keras import KerasHandle

    with mock.patch.object(KerasHandle, "convert_openvino",
                           side_effect=RuntimeError("Cannot create Einsum layer from unsupported "
                                                    "opset\nsecond line")):
        handle = _manager(tmp_path).get("tiny-keras-xray")
    assert handle.forward_path.engine == "keras"
    assert handle.forward_path.reason == ("OpenVINO conversion failed: Cannot create Einsum "
                                          "layer from unsupported opset")
    assert not list((tmp_path / "graphs").glob("*"))  # no partial file left behind


def test_second_load_reuses_the_cached_ir(tmp_path):
    from xai_platform.models.formats.keras import KerasHandle

    first = _manager(tmp_path).get("tiny-keras-audio").forward_path
    with mock.patch.object(KerasHandle, "convert_openvino",
                           side_effect=AssertionError("converted again")) as convert:
        second = _manager(tmp_path).get("tiny-keras-audio").forward_path
    convert.assert_not_called()
    assert first.exported and not second.exported and second.fast
    assert second.ir_file == first.ir_file and second.max_abs_diff <= 1e-5
    assert second.describe().startswith("OpenVINO f32 (cached graph, parity ")
    meta = json.loads(Path(first.ir_file).with_suffix(".json").read_text())
    assert set(meta) >= {"xml_sha256", "bin_sha256", "openvino", "export_seconds"}


@pytest.mark.parametrize("suffix", [".bin", ".xml"])
def test_a_tampered_cached_ir_is_rejected_and_converted_again(tmp_path, suffix):
    from xai_platform.files import sha256
    from xai_platform.models.formats.keras import KerasHandle

    first = _manager(tmp_path).get("tiny-keras-xray").forward_path
    tampered = Path(first.ir_file).with_suffix(suffix)
    data = bytearray(tampered.read_bytes())
    # a weight's byte in the .bin; in the .xml a space in a comment-free line becomes a tab
    index = len(data) // 2 if suffix == ".bin" else data.index(b" ", len(data) // 2)
    data[index] = data[index] ^ 0xFF if suffix == ".bin" else ord("\t")
    tampered.write_bytes(bytes(data))
    real = KerasHandle.convert_openvino
    with mock.patch.object(KerasHandle, "convert_openvino", autospec=True,
                           side_effect=real) as convert:
        second = _manager(tmp_path).get("tiny-keras-xray").forward_path
    assert convert.call_count == 1
    assert second.fast and second.exported and second.max_abs_diff <= 1e-5
    assert second.reason == "the cached graph failed its sha256 check and was converted again"
    meta = json.loads(tampered.with_suffix(".json").read_text())
    assert meta[f"{suffix[1:]}_sha256"] == sha256(tampered)


def test_no_fast_forward_keeps_keras(tmp_path):
    from xai_platform.models.formats.keras import KerasHandle
    from xai_platform.models.manager import FAST_FORWARD_OFF

    with mock.patch.object(KerasHandle, "convert_openvino") as convert:
        handle = _manager(tmp_path, fast_forward=False).get("tiny-keras-xray")
    convert.assert_not_called()
    assert handle.forward_path.engine == "keras" and handle.forward_path.reason == FAST_FORWARD_OFF
    assert handle._fast is None and set(handle.forward_engines()) == {"keras"}
    assert not (tmp_path / "graphs").exists()


def test_check_model_shows_the_keras_forward_path_and_the_switch(tmp_path, capsys, monkeypatch):
    from xai_platform.cli import main

    monkeypatch.setenv("XAI_ONNX_CACHE", str(tmp_path / "graphs"))
    cfg = write_config(tmp_path / "one.yaml", TINY_MODELS[3:4])
    assert main(["check-model", str(cfg)]) == 0
    assert "forward passes: OpenVINO f32 (converted, parity" in capsys.readouterr().out
    assert main(["check-model", str(cfg), "--no-fast-forward"]) == 0
    assert "forward passes: keras (fast path off" in capsys.readouterr().out


@pytest.mark.parametrize("method, params", [("lime", {"num_samples": 150}),
                                            ("shap", {"n_evaluations": 150})])
def test_lime_and_shap_give_the_same_map_through_openvino_and_keras(tmp_path, method, params):
    """The Keras region model (tests/region_models.py: a custom layer that has no config, so
    the cache key falls back to the layers' classes and names)."""
    from region_models import assert_same_map, keras_region_handle, region_input

    fast, plain = keras_region_handle("xray"), keras_region_handle("xray")
    path = fast.use_fast_forward(cache_dir=tmp_path / "graphs")
    assert path.engine == "openvino", path.reason
    assert_same_map(fast, plain, region_input("xray"), method, params)


def test_randomised_copy_gets_its_own_graph_on_its_first_forward_batch(tmp_path):
    handle = _manager(tmp_path).get("tiny-keras-xray")
    copy = handle.randomized(2, seed=0)
    assert not copy.forward_path.fast and "first forward batch" in copy.forward_path.reason
    x = _planes(handle, 5)
    copy.predict(x)
    assert copy.forward_path.engine == "openvino" and copy.forward_path.max_abs_diff <= 1e-5
    assert copy.forward_path.ir_file != handle.forward_path.ir_file  # its own weights
    np.testing.assert_allclose(copy.predict(x), copy._predict_batch(x), atol=1e-5, rtol=0)
    assert np.abs(copy.predict(x) - handle.predict(x)).max() > 1e-3  # really re-initialised


@needs_bf16
def test_bf16_compiles_the_same_converted_graph(tmp_path):
    from xai_platform import explainers
    from xai_platform.models.reduced_precision import OpenVinoHandle

    handle = _manager(tmp_path, forward_precision="bf16").get("tiny-keras-xray")
    path = handle.forward_path
    assert path.engine == "openvino" and path.precision == "bf16" and path.reduced
    assert path.max_abs_diff <= path.tolerance == 1e-2 and path.decision_changes == 0
    assert path.describe().startswith("OpenVINO bf16, reduced precision (converted, parity ")
    assert isinstance(handle._fast, OpenVinoHandle) and handle._fast is not handle._exact
    assert handle._fast.channels_last
    assert _runtime_precisions(handle._fast.compiled) == {"bf16"}
    assert _runtime_precisions(handle._exact.compiled) == {"f32"}
    assert set(handle.forward_engines()) == {"keras", "openvino", "openvino-bf16"}
    assert handle.forward_engine == "openvino-bf16" and handle.exact_engine == "openvino"
    x = _planes(handle)
    np.testing.assert_allclose(handle.predict(x), handle._predict_batch(x), atol=1e-2, rtol=0)
    runs = {"bf16": 0, "f32": 0}
    with mock.patch.object(handle._fast, "_run", _counting(runs, "bf16", handle._fast._run)), \
            mock.patch.object(handle._exact, "_run", _counting(runs, "f32", handle._exact._run)):
        explainers.run("lime", handle, x[0], target=1, params={"num_samples": 50}, seed=0)
    assert runs == {"bf16": 4, "f32": 0}  # 50 samples in batches of 16


@needs_bf16
def test_bf16_beyond_its_bound_keeps_the_exact_openvino_path(tmp_path):
    from xai_platform.models.reduced_precision import OpenVinoHandle

    real = OpenVinoHandle._run

    def off(self, net_input):  # only the bf16 graph is moved (by 0.5 in one logit)
        out = real(self, net_input)
        bf16 = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"
        return out + np.asarray([0.0, 0.5], dtype=np.float32) if bf16 else out

    with mock.patch.object(OpenVinoHandle, "_run", off):
        handle = _manager(tmp_path, forward_precision="bf16").get("tiny-keras-audio")
    path = handle.forward_path
    assert path.engine == "openvino" and path.precision == "float32" and path.max_abs_diff <= 1e-5
    assert path.reason.startswith("bf16 not used: its parity failed")
    assert handle._fast is handle._exact
    assert path.describe().startswith("OpenVINO f32 (converted, parity ")


def test_the_shared_trunk_is_not_tried_on_openvino_and_the_copy_stays_lazy(tmp_path):
    """The shared trunk (models/shared_trunk.py) splits ONNX graphs only: a Keras model's copy
    is not converted for it (it may only ever be asked for gradients)."""
    from xai_platform.models.shared_trunk import share_trunk

    handle = _manager(tmp_path).get("tiny-keras-xray")
    copy = handle.randomized(2, seed=0)
    assert share_trunk(handle, copy) == ("trunk not shared: both models must have exact ONNX "
                                         "Runtime graphs")
    assert "first forward batch" in copy.forward_path.reason and copy._fast is None
    assert copy.forward_path.reason.endswith("trunk not shared: both models must have exact "
                                             "ONNX Runtime graphs")
