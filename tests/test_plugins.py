"""Modalities, model formats, methods and architectures are plug-ins: a new one is one
definition, found through its registry, and the rest of the platform works with it unchanged.

The toy modality and the toy format below live in this test file only.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, model_entry, needs_torch, write_config
from xai_platform.errors import ConfigError, InputError
from xai_platform.modalities import (Modality, PreparedInput, get_modality, register_modality,
                                     unregister_modality)
from xai_platform.models.formats import (Capabilities, ModelFormat, get_format, register_format,
                                         unregister_format)
from xai_platform.validation import check_positive, parse_fields

PACKAGE = ROOT / "xai_platform"


# --- a toy modality: a plain grayscale sketch stored as a .npy array -------------------------

@dataclass(frozen=True)
class SketchInput:
    size: int = 16
    channels: int = 1
    normalize: str = "unit"

    @property
    def shape(self) -> tuple[int, int]:
        return (self.size, self.size)


class Sketch(Modality):
    name = "sketch"
    label = "Sketch: a grayscale drawing"
    extensions = (".npy",)
    input_kind = "file"

    def parse_input(self, raw, *, source):
        spec = SketchInput(**parse_fields(raw, {"size": int, "channels": int, "normalize": str},
                                          source=source, prefix="input."))
        check_positive(spec.size, source=source, key="input.size", minimum=8, strict=False)
        return spec

    def prepare(self, source, spec, *, settings, name):
        array = np.load(source, allow_pickle=False).astype(np.float32)
        if array.ndim != 2:
            raise InputError(f"{name}: a sketch is a 2-D array, got shape {array.shape}.")
        rows = np.linspace(0, array.shape[0] - 1, spec.input.size).round().astype(int)
        cols = np.linspace(0, array.shape[1] - 1, spec.input.size).round().astype(int)
        plane = np.clip(array[np.ix_(rows, cols)], 0.0, 1.0)
        return PreparedInput(name, self.name, plane[None])


@pytest.fixture
def sketch_modality():
    register_modality(Sketch)
    try:
        yield get_modality("sketch")
    finally:
        unregister_modality("sketch")


def _sketch_config(tmp_path: Path, **overrides) -> Path:
    entry = model_entry(**{"id": "toy-sketch", "name": "Toy sketch model", "modality": "sketch",
                           "labels": ["circle", "square"], "output": "logits",
                           "input": {"size": 16}, **overrides})
    return write_config(tmp_path / "sketch.yaml", [entry])


def _sketch_file(tmp_path: Path) -> Path:
    yy, xx = np.mgrid[0:40, 0:40] / 40.0
    path = tmp_path / "drawing.npy"
    np.save(path, (((xx - 0.5) ** 2 + (yy - 0.5) ** 2) < 0.1).astype(np.float32))
    return path


@needs_torch
def test_toy_modality_works_in_the_cli_unchanged(sketch_modality, tmp_path, capsys):
    from xai_platform.cli import main

    config, drawing, out = _sketch_config(tmp_path), _sketch_file(tmp_path), tmp_path / "out"
    code = main(["explain", str(drawing), "--model", "toy-sketch", "--config", str(config),
                 "--method", "gradcam", "--method", "lime", "--param", "num_samples=50",
                 "--param", "n_segments=8", "--out", str(out), "--json", "--quiet"])
    assert code == 0, capsys.readouterr().err
    result = json.loads(capsys.readouterr().out)["results"][0]
    assert result["model"] == "toy-sketch" and result["prediction"]["untrained"] is True
    for record in result["explanations"]:
        assert record["modality"] == "sketch" and record["heatmap_shape"] == [16, 16]
        assert Path(record["figure"]).stat().st_size > 10_000
        assert np.load(record["heatmap"]).shape == (16, 16)
        assert record["libraries"]["xai_platform"] and "weights_sha256" in record
    assert main(["models", "--config", str(config), "--json"]) == 0
    listed = {m["id"]: m for m in json.loads(capsys.readouterr().out)["models"]}
    assert listed["toy-sketch"]["modality"] == "sketch"
    assert {"gradcam", "lime", "shap"} <= set(listed["toy-sketch"]["methods"])


@needs_torch
def test_toy_modality_works_in_the_service_and_the_figure(sketch_modality, tmp_path):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session
    from xai_platform.visualization.figure import render

    config = load_config([_sketch_config(tmp_path)], base=None)
    service = Service(ModelManager(config, device="cpu"))
    session = Session()
    try:
        drawing = _sketch_file(tmp_path)
        analysis = service.analyse(session, drawing, "toy-sketch")
        assert analysis.prepared.planes.shape == (1, 16, 16)
        expl = service.explain(session, drawing, "toy-sketch", "shap",
                               params={"n_evaluations": 32, "n_segments": 6})
        assert expl.heatmap.shape == (16, 16) and expl.axes is None
        png, record, heatmap = service.export(session, expl)
        assert json.loads(record.read_text())["method"] == "shap" and png.exists()
        assert service.readout(session, drawing, expl) is None  # no readouts declared
        assert len(render(expl).axes) >= 3
    finally:
        session.close()


def test_a_modality_parses_its_own_input_spec(sketch_modality, tmp_path):
    from xai_platform.config import load_config

    with pytest.raises(ConfigError, match=r"key 'input.size'.*Fix:"):
        load_config([_sketch_config(tmp_path, input={"size": 4})], base=None)
    with pytest.raises(ValueError, match="already registered"):
        register_modality(Sketch)


# --- a toy format: a NumPy linear model that gives predictions and nothing else -------------

class Linear(ModelFormat):
    name = "numpy-linear"
    label = "NumPy linear"
    modules = ("numpy",)
    install_hint = "pip install numpy"
    capabilities = Capabilities()  # predictions only

    def check_spec(self, spec):
        if spec.architecture != "linear":
            raise ConfigError("the NumPy format has one architecture.", key="architecture",
                              fix="write architecture: linear.")

    def load(self, spec, *, device, default_batch_size=32, calibration=None):
        from xai_platform.models.handle import ModelHandle

        class LinearHandle(ModelHandle):
            framework = "numpy-linear"

            def _scores_batch(self, x):
                logit = (x.mean(axis=(1, 2)) - 0.5) * 8.0
                return np.stack([-logit, logit], axis=1).astype(np.float32)

            def _predict_batch(self, x):
                z = self._scores_batch(x)
                e = np.exp(z - z.max(axis=1, keepdims=True))
                return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)

        return LinearHandle(spec, device="cpu", untrained=False,
                            default_batch_size=default_batch_size, calibration=calibration)


@pytest.fixture
def linear_format():
    register_format(Linear)
    try:
        yield get_format("numpy-linear")
    finally:
        unregister_format("numpy-linear")


def test_toy_format_gets_the_methods_its_capabilities_allow(linear_format, tmp_path, png_file):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    entry = model_entry(id="toy-linear", framework="numpy-linear", architecture="linear",
                        modality="xray", labels=["dark", "bright"], output="logits",
                        target_layer=None, arch_args={}, input={"size": 32},
                        weights=str(png_file))  # any existing file: the toy loads nothing
    config = load_config([write_config(tmp_path / "linear.yaml", [entry])], base=None)
    service = Service(ModelManager(config, device="cpu"))
    ok, why_not = service.methods("toy-linear")
    assert set(ok) == {"lime", "shap"}
    assert why_not["Grad-CAM"] == ("Grad-CAM needs gradients of an inner layer, which this "
                                   "model's format (NumPy linear) does not give.")
    assert "gradients with respect to its input" in why_not["Integrated Gradients"]
    session = Session()
    try:
        expl = service.explain(session, png_file, "toy-linear", "lime",
                               params={"num_samples": 60, "n_segments": 8})
        assert expl.heatmap.shape == (32, 32) and not expl.flat
    finally:
        session.close()


def test_an_unknown_format_is_a_config_error_naming_the_registered_ones(tmp_path):
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager

    config = load_config([write_config(tmp_path / "c.yaml", [model_entry(framework="jax")])],
                         base=None)
    with pytest.raises(ConfigError, match=r"c.yaml.*key 'framework'.*use one of: torch, keras"):
        ModelManager(config)


# --- registries: no second list, no import circle ---------------------------------------------

def _sources(folder: str) -> dict[Path, str]:
    return {p: p.read_text() for p in (PACKAGE / folder).rglob("*.py")}


def test_every_registered_definition_is_reachable_through_its_package():
    from xai_platform.explainers import all_methods
    from xai_platform.modalities import modality_names
    from xai_platform.models.architectures import get_builder, known_architectures
    from xai_platform.models.formats import all_formats

    methods = {m.id for m in all_methods()}
    for text in _sources("explainers").values():
        for name in re.findall(r"@register_method\(\s*id=\"(\w+)\"", text):
            assert name in methods
    archs = known_architectures()
    for text in _sources("models/architectures").values():
        for name in re.findall(r"@register_architecture\(\"(\w+)\"", text):
            assert name in archs
    for name in archs:  # lazily registered builders resolve to a function
        target = getattr(get_builder(name), "target", None)
        if target:
            module, _, function = target.partition(":")
            tree = ast.parse((PACKAGE / "models/architectures" / f"{module[1:]}.py").read_text())
            assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    names = {"modalities": set(modality_names()), "models/formats": {f.name for f in all_formats()}}
    for folder, registered in names.items():
        for text in _sources(folder).values():
            for cls in re.findall(r"@register_(?:modality|format)\nclass \w+\(\w+\):\n(?:\s+\"\"\"[^\"]*\"\"\"\n\n)?\s+name = \"([\w-]+)\"", text):
                assert cls in registered
    assert {"audio", "xray"} <= names["modalities"]
    assert {"torch", "keras", "onnx", "torchscript"} <= names["models/formats"]


@pytest.mark.parametrize("module", [
    "xai_platform.explainers.registry", "xai_platform.explainers.cam",
    "xai_platform.explainers.perturbation", "xai_platform.models.architectures.torch_nets",
    "xai_platform.models.formats.torch", "xai_platform.models.formats.keras",
    "xai_platform.models.formats.onnx", "xai_platform.models.formats.torchscript",
    "xai_platform.model_check",
    "xai_platform.models.manager", "xai_platform.modalities.audio", "xai_platform.config",
    "xai_platform.service", "xai_platform.evaluation.report", "xai_platform.cli"])
def test_any_module_imports_first_without_a_circle(module):
    """An import circle shows as an ImportError when one of its modules is imported first."""
    code = (f"import sys, {module}; bad = [m for m in ('torch', 'tensorflow', 'keras') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_config_imports_nothing_from_models():
    code = ("import sys, xai_platform.config; "
            "sys.exit(1 if any(m.startswith('xai_platform.models') for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_no_modality_or_format_name_is_compared_outside_its_plugin():
    pattern = re.compile(r"(modality|framework)\s*[!=]=\s*[\"']|[\"'](audio|xray|torch|keras)[\"']"
                         r"\s*[!=]=|\.(modality|framework)\s+(not\s+)?in\s*\(")
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("modalities/", "models/formats/")):
            continue
        offenders += [f"{rel}:{i}" for i, line in enumerate(path.read_text().splitlines(), 1)
                      if pattern.search(line)]
    assert offenders == []
