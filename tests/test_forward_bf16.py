"""The opt-in reduced-precision forward path (xai_platform/models/reduced_precision.py): bf16 on
OpenVINO behind ``app.forward_precision`` / ``--bf16``, its parity and decision check, and
every way back to the exact ONNX Runtime path."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import TINY_MODELS, needs_bf16, needs_openvino, needs_torch, write_config

pytestmark = needs_torch




def _manager(tmp_path: Path, *, app: dict | None = None, **kwargs):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    path = write_config(tmp_path / "tiny.yaml", TINY_MODELS[:2], app)
    return ModelManager(load_config([path], base=None), device="cpu", batch_size=16,
                        onnx_cache=tmp_path / "onnx", **kwargs)


def _planes(handle, n: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.random((n, *handle.input_shape), dtype=np.float32)
    return (x * -80.0).astype(np.float32) if handle.spec.modality == "audio" else x


def _count(runs: dict, name: str, fn):
    def wrapped(*args, **kwargs):
        runs[name] += 1
        return fn(*args, **kwargs)
    return wrapped


def test_default_stays_exact_float32(tmp_path):
    from xai_platform.config import AppSettings

    assert AppSettings().forward_precision == "float32"
    with mock.patch("xai_platform.models.reduced_precision.attach_bf16") as bf16:
        handle = _manager(tmp_path).get("tiny-torch-xray")
    bf16.assert_not_called()
    path = handle.forward_path
    assert path.engine == "onnxruntime" and path.precision == "float32" and not path.reduced
    assert path.max_abs_diff <= 1e-5 and path.tolerance == 1e-5 and path.note() == ""
    assert set(handle.forward_engines()) == {"torch", "onnxruntime"}


@needs_bf16
@pytest.mark.parametrize("model_id", ["tiny-torch-audio", "tiny-torch-xray"])
def test_the_setting_routes_forward_batches_to_openvino_in_bf16(tmp_path, model_id):
    from xai_platform import explainers
    from xai_platform.models.reduced_precision import OpenVinoHandle

    handle = _manager(tmp_path, app={"forward_precision": "bf16"}).get(model_id)
    path = handle.forward_path
    assert path.engine == "openvino" and path.precision == "bf16" and path.fast and path.reduced
    assert path.max_abs_diff is not None and path.max_abs_diff <= path.tolerance == 1e-2
    assert path.decision_changes == 0 and path.parity_inputs == 5 and path.reason == ""
    assert "OpenVINO bf16, reduced precision" in path.describe()
    assert isinstance(handle._fast, OpenVinoHandle)
    assert set(handle.forward_engines()) == {"torch", "onnxruntime", "openvino"}
    # the compiled graph really computes in bf16
    ops = handle._fast.compiled.get_runtime_model().get_ordered_ops()
    precisions = {op.get_rt_info()["runtimePrecision"].astype(str) for op in ops
                  if op.get_rt_info()["layerType"].astype(str) == "Convolution"}
    assert precisions == {"bf16"}
    x = _planes(handle)
    np.testing.assert_allclose(handle.predict(x), handle._predict_batch(x), atol=1e-2, rtol=0)

    runs = {"openvino": 0, "onnxruntime": 0, "torch": 0}
    with mock.patch.object(handle._fast, "_run", _count(runs, "openvino", handle._fast._run)), \
            mock.patch.object(handle._exact, "_run", _count(runs, "onnxruntime",
                                                            handle._exact._run)), \
            mock.patch.object(handle, "_raw", _count(runs, "torch", handle._raw)):
        explainers.run("lime", handle, x[0], target=1, params={"num_samples": 50}, seed=0)
        assert runs == {"openvino": 4, "onnxruntime": 0, "torch": 0}  # 50 in batches of 16
        explainers.run("gradcam", handle, x[0], target=1)
        assert runs == {"openvino": 4, "onnxruntime": 0, "torch": 1}  # gradients: framework


@needs_bf16
def test_a_graph_beyond_the_bound_falls_back_to_the_exact_path_with_the_reason(tmp_path):
    from xai_platform.models.reduced_precision import OpenVinoHandle

    real = OpenVinoHandle._run

    def off(self, net_input):  # the logits moved by 0.5: probabilities by about 0.1
        return real(self, net_input) + np.float32(0.5) * np.arange(2, dtype=np.float32)

    with mock.patch.object(OpenVinoHandle, "_run", off):
        handle = _manager(tmp_path, forward_precision="bf16").get("tiny-torch-xray")
    path = handle.forward_path
    assert path.engine == "onnxruntime" and path.precision == "float32"
    assert path.reason.startswith("bf16 not used: its parity failed: probabilities differ by")
    assert "bound 1e-02" in path.reason and path.reason.endswith("the exact path runs")
    assert path.max_abs_diff <= 1e-5  # the exact path's own parity is what the record keeps
    assert set(handle.forward_engines()) == {"torch", "onnxruntime"}
    x = _planes(handle)
    np.testing.assert_allclose(handle.predict(x), handle._predict_batch(x), atol=1e-5, rtol=0)


@needs_bf16
def test_a_changed_decision_falls_back_even_within_the_bound(tmp_path):
    """The threshold sits just under the first example's probability, and OpenVINO's output
    is nudged just below it: a difference of about 2e-4, far within 1e-2, but one decision
    flips."""
    from xai_platform.models.fast_forward import parity_planes
    from xai_platform.models.handle import Calibration
    from xai_platform.models.reduced_precision import OpenVinoHandle

    handle = _manager(tmp_path, fast_forward=False).get("tiny-torch-xray")
    p = handle._predict_batch(parity_planes(handle))
    handle.calibration = Calibration(threshold=float(p[0, 1]) - 1e-6)
    real = OpenVinoHandle._run

    def nudged(self, net_input):
        return real(self, net_input) - np.asarray([0.0, 1e-3], dtype=np.float32)

    with mock.patch.object(OpenVinoHandle, "_run", nudged):
        path = handle.use_fast_forward(cache_dir=tmp_path / "onnx", precision="bf16")
    assert path.engine == "onnxruntime"
    assert re.search(r"\b[1-5] of 5 example decisions change", path.reason)
    assert float(path.reason.split("differ by up to ")[1].split(" ")[0]) < 1e-2


def test_without_openvino_the_exact_path_stays_and_says_why(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino raises ImportError
    handle = _manager(tmp_path, forward_precision="bf16").get("tiny-torch-audio")
    path = handle.forward_path
    assert path.engine == "onnxruntime" and not path.reduced
    assert "bf16 not used: openvino is not installed (pip install openvino)" in path.reason
    assert "bf16 not used" in path.describe()


@needs_openvino
def test_a_cpu_without_bf16_keeps_the_exact_path(tmp_path):
    core = mock.Mock()
    core.get_property.return_value = ["FP32", "INT8", "BIN", "EXPORT_IMPORT"]
    with mock.patch("xai_platform.models.reduced_precision._core", return_value=core):
        handle = _manager(tmp_path, forward_precision="bf16").get("tiny-torch-xray")
    assert handle.forward_path.engine == "onnxruntime"
    assert "this CPU has no bf16 instructions (OpenVINO's CPU capabilities: FP32, INT8" in \
        handle.forward_path.reason


@needs_bf16
def test_a_graph_openvino_compiles_in_float32_is_not_called_bf16(tmp_path):
    """The plugin may choose another precision than the hint asks; the compiled model's own
    precision is what counts."""
    from xai_platform.models.reduced_precision import _core

    real = _core()
    core = mock.Mock(wraps=real)
    core.get_property = real.get_property
    core.compile_model = lambda model, device, config: real.compile_model(
        model, device, config | {"INFERENCE_PRECISION_HINT": "f32"})
    with mock.patch("xai_platform.models.reduced_precision._core", return_value=core):
        path = _manager(tmp_path, forward_precision="bf16").get("tiny-torch-xray").forward_path
    assert path.engine == "onnxruntime"
    assert ("bf16 not used: OpenVINO could not compile or run the graph in bf16: its CPU plugin "
            "compiled it for f32, not bf16") in path.reason


def test_bf16_with_the_fast_path_off_runs_the_framework_and_says_so(tmp_path):
    handle = _manager(tmp_path, fast_forward=False, forward_precision="bf16").get("tiny-torch-xray")
    assert handle.forward_path.engine == "torch"
    assert handle.forward_path.reason.endswith("bf16 runs on its graph, so it is off too")


def test_the_setting_is_checked(tmp_path):
    from xai_platform.config import load_config
    from xai_platform.errors import ConfigError

    path = write_config(tmp_path / "bad.yaml", TINY_MODELS[:1], {"forward_precision": "fp16"})
    with pytest.raises(ConfigError, match=r"app.forward_precision.*'fp16'.*float32 or bf16"):
        load_config([path], base=None)


@needs_bf16
def test_cli_flag_check_model_and_the_record_show_reduced_precision(tmp_path, capsys,
                                                                    monkeypatch, png_file):
    from xai_platform.cli import main
    from xai_platform.service import Service, Session

    monkeypatch.setenv("XAI_ONNX_CACHE", str(tmp_path / "onnx"))
    cfg = write_config(tmp_path / "one.yaml", TINY_MODELS[1:2])
    assert main(["check-model", str(cfg), "--bf16"]) == 0
    assert "forward passes: OpenVINO bf16, reduced precision" in capsys.readouterr().out
    assert main(["check-model", str(cfg), "--bf16", "--no-fast-forward"]) == 2
    assert "drop one of them" in capsys.readouterr().err

    service = Service(_manager(tmp_path, forward_precision="bf16"))
    session = Session(tmp_path / "out")
    expl = service.explain(session, png_file, "tiny-torch-xray", "lime",
                           params={"num_samples": 50})
    forward = service.record(expl)["forward"]
    assert forward["engine"] == "openvino" and forward["precision"] == "bf16"
    assert forward["max_abs_diff"] <= forward["tolerance"] == 1e-2
    assert forward["decision_changes"] == 0
    assert any(note.startswith("Reduced precision: the prediction and the perturbation")
               for note in expl.notes)


@needs_bf16
def test_randomised_copy_gets_bf16_on_its_first_forward_batch(tmp_path):
    handle = _manager(tmp_path, forward_precision="bf16").get("tiny-torch-xray")
    copy = handle.randomized(2, seed=0)
    assert not copy.forward_path.fast
    copy.predict(_planes(handle, 1))
    assert copy.forward_path.engine == "openvino"
    assert copy.forward_path.onnx_file != handle.forward_path.onnx_file
