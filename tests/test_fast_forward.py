"""The exact fast path for forward passes (xai_platform/models/fast_forward.py): export to ONNX,
parity, cache, fallbacks, the switch, and LIME / SHAP through both engines."""

from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from conftest import TINY_IMAGE, model_entry, needs_torch, write_config

pytestmark = needs_torch

TORCH_MODELS = ["tiny-torch-audio", "tiny-torch-xray"]


def _manager(tmp_path: Path, *, fast_forward: bool | None = None, cache: Path | None = None,
             app: dict | None = None):
    from conftest import TINY_MODELS

    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    path = write_config(tmp_path / "tiny.yaml", TINY_MODELS[:2], app)
    return ModelManager(load_config([path], base=None), device="cpu", batch_size=16,
                        fast_forward=fast_forward, onnx_cache=cache or tmp_path / "onnx")


def _planes(handle, n: int = 7, seed: int = 0) -> np.ndarray:
    """Random planes in the modality's range (dB for audio, [0, 1] for images)."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *handle.input_shape), dtype=np.float32)
    return (x * -80.0).astype(np.float32) if handle.spec.modality == "audio" else x


def _torch_handle(net, tmp_path: Path):
    """A TorchHandle around ``net`` on a 32 x 32 one-channel image spec."""
    from xai_platform.config import parse_model
    from xai_platform.models.formats.torch import TorchHandle

    spec = parse_model(model_entry(id="odd-net", modality="xray", labels=["a", "b"],
                                   output="logits", target_layer=None, input=dict(TINY_IMAGE)),
                       source=str(tmp_path / "odd.yaml"))
    return TorchHandle(spec, net, device="cpu", untrained=True)


@pytest.mark.parametrize("model_id", TORCH_MODELS)
def test_parity_is_recorded_and_predictions_match(tmp_path, model_id):
    import torch

    manager = _manager(tmp_path)
    handle = manager.get(model_id)
    path = handle.forward_path
    assert path.fast and path.engine == "onnxruntime" and path.exported
    assert path.max_abs_diff is not None and path.max_abs_diff <= 1e-5
    assert path.parity_inputs == 5 and Path(path.onnx_file).is_file()
    assert path.threads == torch.get_num_threads()
    assert Path(path.onnx_file).parent == tmp_path / "onnx"  # never beside the weights
    x = _planes(handle)
    fast = handle.predict(x)
    eager = handle._predict_batch(x)  # the framework's own forward pass
    np.testing.assert_allclose(fast, eager, atol=1e-5, rtol=0)
    np.testing.assert_allclose(handle.scores(x), handle._scores_batch(x), atol=1e-4, rtol=1e-5)
    assert set(handle.forward_engines()) == {"torch", "onnxruntime"}


def test_forward_only_batches_run_on_onnxruntime_and_gradients_on_torch(tmp_path):
    from xai_platform import explainers

    handle = _manager(tmp_path).get("tiny-torch-xray")
    x = _planes(handle, 1)[0]
    runs = {"onnx": 0, "torch": 0}
    real_onnx, real_torch = handle._fast._raw, handle._raw

    def count(name, fn):
        def wrapped(*args, **kwargs):
            runs[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    with mock.patch.object(handle._fast, "_raw", count("onnx", real_onnx)), \
            mock.patch.object(handle, "_raw", count("torch", real_torch)):
        explainers.run("lime", handle, x, target=1, params={"num_samples": 50}, seed=0)
        assert runs == {"onnx": 4, "torch": 0}  # 50 samples in batches of 16
        explainers.run("gradcam", handle, x, target=1)
        assert runs["torch"] == 1 and runs["onnx"] == 4


def test_second_load_reuses_the_cached_graph(tmp_path):
    from xai_platform.models.formats.torch import TorchHandle

    first = _manager(tmp_path).get("tiny-torch-audio").forward_path
    with mock.patch.object(TorchHandle, "export_onnx",
                           side_effect=AssertionError("exported again")) as export:
        second = _manager(tmp_path).get("tiny-torch-audio").forward_path
    export.assert_not_called()
    assert first.exported and not second.exported and second.fast
    assert second.onnx_file == first.onnx_file


def test_corrupted_cached_graph_is_detected_and_exported_again(tmp_path):
    first = _manager(tmp_path).get("tiny-torch-xray").forward_path
    graph = Path(first.onnx_file)
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights
    graph.write_bytes(bytes(data))
    second = _manager(tmp_path).get("tiny-torch-xray").forward_path
    assert second.fast and second.exported
    assert "sha256" in second.reason
    from xai_platform.files import sha256

    meta = json.loads(graph.with_suffix(".json").read_text())
    assert meta["onnx_sha256"] == sha256(graph)


def test_a_network_the_exporter_cannot_export_falls_back_with_the_reason(tmp_path):
    import torch

    class Spectral(torch.nn.Module):
        """A network with an FFT, which the TorchScript-based exporter does not convert."""

        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(1, 2)

        def forward(self, x):
            power = torch.fft.rfft2(x).abs().mean(dim=(1, 2, 3))
            return self.head(power[:, None])

    handle = _torch_handle(Spectral(), tmp_path)
    path = handle.use_fast_forward(cache_dir=tmp_path / "onnx")
    assert path.engine == "torch" and not path.fast
    assert path.reason.startswith("ONNX export failed:") and "fft" in path.reason.lower()
    x = _planes(handle, 3)
    np.testing.assert_array_equal(handle.predict(x), handle._predict_batch(x))


def test_a_graph_that_differs_from_the_network_fails_parity_and_falls_back(tmp_path):
    import torch

    class Branchy(torch.nn.Module):
        """Data-dependent control flow: tracing bakes in the branch of the all-zero example,
        so the exported graph is wrong for brighter inputs."""

        def __init__(self) -> None:
            super().__init__()
            self.head = torch.nn.Linear(1, 2)

        def forward(self, x):
            m = x.mean(dim=(1, 2, 3))[:, None]
            return self.head(m * 3.0 if bool(x.mean() > 0.1) else m)

    handle = _torch_handle(Branchy(), tmp_path)
    path = handle.use_fast_forward(cache_dir=tmp_path / "onnx")
    assert path.engine == "torch" and path.reason.startswith("parity failed")
    assert path.max_abs_diff > 1e-5 and path.parity_inputs == 5
    x = _planes(handle, 3)
    np.testing.assert_array_equal(handle.predict(x), handle._predict_batch(x))


def test_the_switch_turns_the_fast_path_off(tmp_path):
    from xai_platform.config import load_config
    from xai_platform.models.formats.torch import TorchHandle
    from xai_platform.models.manager import FAST_FORWARD_OFF

    with mock.patch.object(TorchHandle, "export_onnx") as export:
        handle = _manager(tmp_path, fast_forward=False).get("tiny-torch-audio")
        from_config = _manager(tmp_path, app={"fast_forward": False}).get("tiny-torch-xray")
    export.assert_not_called()
    for h in (handle, from_config):
        assert h.forward_path.engine == "torch" and h.forward_path.reason == FAST_FORWARD_OFF
        assert set(h.forward_engines()) == {"torch"}
    assert load_config([tmp_path / "tiny.yaml"], base=None).app.fast_forward is False


def test_cli_switch_and_check_model_show_the_forward_path(tmp_path, capsys, monkeypatch):
    from conftest import TINY_MODELS

    from xai_platform.cli import main

    monkeypatch.setenv("XAI_ONNX_CACHE", str(tmp_path / "onnx"))
    cfg = write_config(tmp_path / "one.yaml", TINY_MODELS[1:2])
    assert main(["check-model", str(cfg)]) == 0
    assert "forward passes: ONNX Runtime (exported, parity" in capsys.readouterr().out
    assert main(["check-model", str(cfg), "--no-fast-forward"]) == 0
    assert "forward passes: torch (fast path off" in capsys.readouterr().out


@pytest.mark.parametrize("method, params", [("lime", {"num_samples": 150}),
                                            ("shap", {"n_evaluations": 150})])
@pytest.mark.parametrize("modality", ["audio", "xray"])
def test_lime_and_shap_give_the_same_map_through_both_engines(tmp_path, modality, method, params):
    """The region model (tests/region_models.py), whose score moves strongly with the region's
    features, so the maps are far from zero and a difference would show."""
    from region_models import assert_same_map, region_input, torch_region_handle

    fast, eager = torch_region_handle(modality), torch_region_handle(modality)
    assert fast.use_fast_forward(cache_dir=tmp_path / "onnx").fast
    assert_same_map(fast, eager, region_input(modality), method, params)


def test_randomised_copy_gets_the_fast_path_on_its_first_forward_batch(tmp_path):
    from xai_platform.evaluation.metrics import randomization_test

    handle = _manager(tmp_path).get("tiny-torch-xray")
    copy = handle.randomized(2, seed=0)
    assert not copy.forward_path.fast and "first forward batch" in copy.forward_path.reason
    x = _planes(handle, 1)[0]
    randomization_test(handle, x, "gradcam", target=1, randomized=copy)
    assert not copy.forward_path.fast  # gradients only: nothing exported
    copy.predict(x[None])
    assert copy.forward_path.fast and copy.forward_path.max_abs_diff <= 1e-5
    assert copy.forward_path.onnx_file != handle.forward_path.onnx_file  # its own weights
    np.testing.assert_allclose(copy.predict(_planes(handle)), copy._predict_batch(_planes(handle)),
                               atol=1e-5, rtol=0)


def test_with_the_switch_off_the_randomised_copy_says_so(tmp_path):
    from xai_platform.models.manager import FAST_FORWARD_OFF

    handle = _manager(tmp_path, fast_forward=False).get("tiny-torch-xray")
    copy = handle.randomized(2, seed=0)
    assert not copy.forward_path.fast and copy.forward_path.reason == FAST_FORWARD_OFF


def test_the_record_says_which_engine_ran_the_forward_passes(tmp_path, png_file):
    from xai_platform.service import Service, Session

    manager = _manager(tmp_path)
    service = Service(manager)
    session = Session(tmp_path / "out")
    expl = service.explain(session, png_file, "tiny-torch-xray", "lime",
                           params={"num_samples": 50})
    record = service.record(expl)
    assert record["forward"]["engine"] == "onnxruntime"
    assert record["forward"]["max_abs_diff"] <= 1e-5
    assert "onnxruntime" in record["libraries"]
