"""Tiny models and generated inputs shared by the tests. Nothing touches the network."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _run_folder(variable: str, prefix: str, name: str = "") -> None:
    """Point ``variable`` at a folder of this test run (or a file ``name`` in it), removed at
    exit, unless the caller set it."""
    if os.environ.get(variable):
        return
    import atexit
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix=prefix)
    os.environ[variable] = os.path.join(folder, name) if name else folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)


# The ONNX graphs of the fast path (models/fast_forward.py) go to a folder of this test run,
# never to the user's ~/.cache; the same tiny model loaded by many tests is exported once.
_run_folder("XAI_ONNX_CACHE", "xai-onnx-tests-")
# Likewise the app's times of its pages (service.MethodTimes), which the served app keeps.
_run_folder("XAI_TIMES_FILE", "xai-times-tests-", "times.json")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
if HAS_TORCH:  # torch and torchvision before tensorflow in every process (SETUP.md)
    import torch  # noqa: F401
    import torchvision  # noqa: F401

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
needs_tf = pytest.mark.skipif(not HAS_TF, reason="TensorFlow is not installed")


def needs_corpus_package(module: str) -> pytest.MarkDecorator:
    """Skip unless ``module``, one of requirements-corpus.txt's packages (the corpus builders
    need them; the app, the trainer and the README's test command do without), imports."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None,
                              reason=f"{module} is not installed: "
                                     "pip install -r requirements-corpus.txt")


needs_openvino = pytest.mark.skipif(importlib.util.find_spec("openvino") is None,
                                    reason="openvino is not installed")


@pytest.fixture
def bf16():
    """Skips where this machine cannot run bf16 (OpenVINO reports no BF16 capability). A
    fixture, not a collection-time mark: importing openvino imports absl.logging, which must
    not happen while pytest collects (a later test that captures output around a Gradio server
    then loses stderr)."""
    if importlib.util.find_spec("openvino") is None:
        pytest.skip("openvino is not installed")
    from xai_platform.models.reduced_precision import unavailable

    why = unavailable()
    if why:
        pytest.skip(why)


needs_bf16 = pytest.mark.usefixtures("bf16")

TINY_AUDIO = {"sample_rate": 8000, "duration": 0.5, "n_fft": 256, "hop_length": 128,
              "n_mels": 16, "fmin": 20.0, "fmax": 4000.0, "top_db": 80.0, "normalize": "db"}
TINY_IMAGE = {"size": 32, "channels": 1, "normalize": "unit"}


def model_entry(**overrides) -> dict:
    """A valid tiny model entry; override any key."""
    entry = {
        "id": "tiny-torch-audio", "name": "Tiny torch audio", "framework": "torch",
        "modality": "audio", "architecture": "custom_cnn", "weights": None,
        "labels": ["real", "fake"], "output": "sigmoid", "target_layer": "features.1",
        "arch_args": {"width": 4, "depth": 2}, "input": dict(TINY_AUDIO),
    }
    entry.update(overrides)
    return entry


TINY_MODELS = [
    model_entry(),
    model_entry(id="tiny-torch-xray", name="Tiny torch X-ray", modality="xray",
                labels=["normal", "lesion"], output="logits", input=dict(TINY_IMAGE)),
    model_entry(id="tiny-keras-audio", name="Tiny Keras audio", framework="keras",
                architecture="keras_cnn", output="logits", target_layer="conv2b"),
    model_entry(id="tiny-keras-xray", name="Tiny Keras X-ray", framework="keras",
                architecture="keras_cnn", modality="xray", labels=["normal", "lesion"],
                output="logits", target_layer="conv2b",
                input={"size": 32, "channels": 3, "normalize": "minus1_1"}),
]


#: the tests' synthetic chest-like images are not radiographs: the input check is off for them
#: (tests/test_chest_gate.py tests it on real files)
TINY_APP = {"check_inputs": False}


def write_config(path: Path, models: list[dict], app: dict | None = None) -> Path:
    """A config file; its app settings default to :data:`TINY_APP` (the tests' synthetic
    images are not radiographs)."""
    data: dict = {"models": models, "app": {**TINY_APP, **(app or {})}}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def tiny_config_path(tmp_path: Path) -> Path:
    return write_config(tmp_path / "tiny.yaml", TINY_MODELS)


@pytest.fixture
def tiny_config(tiny_config_path: Path):
    from xai_platform.config import load_config

    return load_config([tiny_config_path], base=None)


@pytest.fixture
def manager(tiny_config):
    from xai_platform.models import ModelManager

    return ModelManager(tiny_config, device="cpu", batch_size=16)


@pytest.fixture
def seed() -> int:
    return 1234


def tone(seconds: float, sr: int = 16000, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A voiced-like test signal: a tone with harmonics, amplitude modulation and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    wave = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 5))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t)) * 0.2
    return (wave + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture
def wav_file(tmp_path: Path) -> Path:
    import soundfile as sf

    path = tmp_path / "voice.wav"
    sf.write(path, tone(1.2, sr=22050), 22050)
    return path


def chest_like(size: int = 96, seed: int = 0) -> np.ndarray:
    """A grayscale image in [0, 1] with two dark 'lungs' and a bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = 0.7 - 0.4 * (np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
                       + np.exp(-(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2)))
    img += 0.25 * np.exp(-(((xx - 0.65) / 0.05) ** 2 + ((yy - 0.4) / 0.05) ** 2))
    img += 0.02 * rng.standard_normal(img.shape)
    return np.clip(img, 0, 1).astype(np.float32)


def metadata_rows(root: Path) -> list[dict[str, str]]:
    """The rows of a data set's ``metadata.csv`` (the X-ray benchmarks, the audio corpora)."""
    import csv

    with open(root / "metadata.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def mask_png(path: Path) -> np.ndarray:
    """A mask stored as a PNG, as bool."""
    from PIL import Image

    return np.asarray(Image.open(path)) > 127


@pytest.fixture
def png_file(tmp_path: Path) -> Path:
    from PIL import Image

    path = tmp_path / "chest.png"
    Image.fromarray((chest_like() * 255).astype(np.uint8), mode="L").save(path)
    return path
