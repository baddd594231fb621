"""Is this a chest radiograph? The gate before any X-ray verdict, on real files: the real chest
radiograph RG1 in all its transfer syntaxes and the benchmark's images pass; photographs,
one-pixel images, the tibia radiograph RG3, a cat thorax and a lateral view are refused with a
message that says what was expected."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, needs_torch, write_config
from xai_platform.anatomy import check_chest_radiograph, check_tags, lung_segmenter
from xai_platform.errors import InputError
from xai_platform.preprocessing.image import load_image, real_radiograph_path

needs_lungs = pytest.mark.skipif(
    lung_segmenter() is None,
    reason="lung segmenter weights not installed (python -m xai_platform.anatomy fetch)")
EXPECTED = "expects a frontal (PA or AP) chest radiograph of a person"


def _check(path: Path):
    loaded = load_image(path, name=path.name)
    return check_chest_radiograph(path.name, loaded.pixels, loaded.tags, chroma=loaded.chroma)


def _rg(name: str) -> Path:
    rg1 = real_radiograph_path()
    if rg1 is None:
        pytest.skip("pydicom-data is not installed")
    return rg1.with_name(name)


def test_tags_refuse_other_body_parts_species_modalities_and_lateral_views():
    check_tags("a.dcm", {"Modality": "CR", "BodyPartExamined": "CHEST", "ViewPosition": "PA"})
    for tags, why in [({"Modality": "CT"}, "modality is CT"),
                      ({"BodyPartExamined": "EXTREMITY"}, "body part is EXTREMITY"),
                      ({"PatientSpeciesDescription": "Feline"}, "animal (feline)"),
                      ({"ViewPosition": "LL"}, "lateral view"),
                      ({"SeriesDescription": "Thorax LAT"}, "lateral view")]:
        with pytest.raises(InputError, match=re.escape(why)) as info:
            check_tags("a.dcm", tags)
        assert EXPECTED in str(info.value)


def test_tiny_blank_and_colour_images_are_refused(tmp_path):
    one = tmp_path / "one.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(one)
    with pytest.raises(InputError, match=r"1 x 1 pixels.*at least 128") as info:
        _check(one)
    assert EXPECTED in str(info.value)
    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300), 128, np.uint8)).save(blank)
    with pytest.raises(InputError, match="blank"):
        _check(blank)
    photo = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(photo)
    with pytest.raises(InputError, match="colour picture"):
        _check(photo)


def test_the_tibia_radiograph_is_refused():
    with pytest.raises(InputError, match="body part is EXTREMITY"):
        _check(_rg("RG3_UNCR.dcm"))


@needs_torch
@needs_lungs
def test_the_segmenter_on_onnx_runtime_finds_pytorchs_lungs(tmp_path, monkeypatch):
    """The gate's U-Net runs on ONNX Runtime only where it gives PyTorch's mask; the check's
    verdict is kept beside the graph and redone when the engines change."""
    import hashlib
    import json

    from xai_platform import anatomy

    monkeypatch.setenv("XAI_ONNX_CACHE", str(tmp_path))
    parity = anatomy.LungSegmenter.PARITY
    pixels = load_image(_rg("RG1_UNCR.dcm"), name="RG1").pixels
    fast = anatomy.LungSegmenter(anatomy.weights_path())
    assert fast.engine == "onnxruntime", fast.engine_note
    plain = anatomy.LungSegmenter(anatomy.weights_path(), fast=False)
    assert plain.engine == "torch"
    lungs = fast(pixels)
    assert np.array_equal(lungs, plain(pixels)) and 0.3 < lungs.mean() < 0.5
    [verdict_file] = tmp_path.glob("*.segmenter.json")
    # a later load trusts the kept verdict (no PyTorch pass) ...
    from xai_platform.models.formats.torch import TorchHandle

    calls = []
    real_raw = TorchHandle.raw_outputs
    monkeypatch.setattr(TorchHandle, "raw_outputs",
                        lambda self, x: calls.append(len(x)) or real_raw(self, x))
    assert anatomy.LungSegmenter(anatomy.weights_path()).engine == "onnxruntime" and not calls
    # ... unless the engines changed, and a graph that fails the check is not used
    verdict = json.loads(verdict_file.read_text())
    verdict_file.write_text(json.dumps({**verdict, "onnxruntime": "0.0"}))
    monkeypatch.setattr(anatomy.LungSegmenter, "PARITY", 0.0)
    refused = anatomy.LungSegmenter(anatomy.weights_path())
    assert calls == [1] and refused.engine == "torch"
    assert "differ from PyTorch's by up to" in refused.engine_note
    assert np.array_equal(refused(pixels), lungs)
    # a cached graph that is whole (its sha256 as recorded) but does not load is exported again
    monkeypatch.setattr(anatomy.LungSegmenter, "PARITY", parity)
    [graph] = tmp_path.glob("*.onnx")
    graph.write_bytes(b"not an ONNX graph")
    record = graph.with_suffix(".json")
    record.write_text(json.dumps({**json.loads(record.read_text()),
                                  "onnx_sha256": hashlib.sha256(graph.read_bytes()).hexdigest()}))
    again = anatomy.LungSegmenter(anatomy.weights_path())
    assert again.engine == "onnxruntime", again.engine_note
    assert graph.stat().st_size > 1_000_000 and np.array_equal(again(pixels), lungs)


@needs_torch
@needs_lungs
@pytest.mark.parametrize("name", ["RG1_UNCR.dcm", "RG1_UNCI.dcm", "RG1_J2KR.dcm",
                                  "RG1_J2KI.dcm"])
def test_the_real_chest_radiograph_passes_in_every_transfer_syntax(name):
    found = _check(_rg(name))
    assert 0.3 < found.lung_share < 0.5 and found.lungs is not None


@needs_torch
@needs_lungs
def test_benchmark_images_pass_and_grayscale_photographs_are_refused(tmp_path):
    import skimage.data

    for path in sorted((ROOT / "examples" / "xray").glob("*.png")):
        if not path.name.endswith(".mask.png"):
            assert _check(path).lung_share > 0.3, path.name
    for name in ("camera", "coins", "moon", "grass", "gravel", "chelsea", "coffee"):
        gray = Image.fromarray(getattr(skimage.data, name)()).convert("L")
        path = tmp_path / f"{name}.png"
        gray.save(path)
        with pytest.raises(InputError, match="lung") as info:
            _check(path)
        assert EXPECTED in str(info.value), name


@needs_torch
@needs_lungs
def test_a_rotated_radiograph_is_refused(tmp_path):
    pixels = load_image(_rg("RG1_UNCR.dcm")).pixels
    path = tmp_path / "rotated.png"
    Image.fromarray((np.rot90(pixels) * 255).astype(np.uint8)).save(path)
    with pytest.raises(InputError, match="two lung fields|midline|mirror|taller"):
        _check(path)


@needs_torch
def test_the_gate_runs_before_a_verdict_in_the_service(tmp_path):
    from conftest import TINY_MODELS
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    config = load_config([write_config(tmp_path / "c.yaml", TINY_MODELS,
                                       app={"check_inputs": True})], base=None)
    service = Service(ModelManager(config, device="cpu"))
    one = tmp_path / "one.png"
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(one)
    session = Session()
    try:
        with pytest.raises(InputError, match="does not look like a chest radiograph"):
            service.analyse(session, one, "tiny-torch-xray")
        if lung_segmenter() is not None:
            analysis = service.analyse(session, _rg("RG1_UNCR.dcm"), "tiny-torch-xray")
            lungs = analysis.prepared.data["lungs"]
            assert lungs.shape == (32, 32) and 0.2 < lungs.mean() < 0.6
    finally:
        session.close()


@needs_torch
@needs_lungs
def test_a_plain_png_radiograph_gets_its_lung_share_without_a_mask(tmp_path):
    """Anatomy-aware scores on any upload: the gate's lung fields give every X-ray explanation
    its share inside the lungs and on the border, in the record and the scorecard."""
    from conftest import TINY_MODELS
    from xai_platform.config import load_config
    from xai_platform.models import ModelManager
    from xai_platform.service import Service, Session

    config = load_config([write_config(tmp_path / "c.yaml", TINY_MODELS,
                                       app={"check_inputs": True})], base=None)
    service = Service(ModelManager(config, device="cpu"))
    png = ROOT / "examples" / "xray" / "synthetic-nodule-lesion.png"
    session = Session()
    try:
        expl = service.explain(session, png, "tiny-torch-xray", "saliency")
        focus = service.record(expl)["focus"]
        assert 0.0 <= focus["lung_share"] <= 1.0 and 0.0 <= focus["border_share"] <= 1.0
        card = service.score(session, expl, ("faithfulness",))
        assert card.values["lung_share"] == pytest.approx(focus["lung_share"])
        # The comparison page's card: the shares once, in the scorecard, not also in the heading
        from xai_platform.evaluation.scorecard import scorecard_markdown
        from xai_platform.ui.comparison import caption

        line = f"{focus['lung_share']:.0%} of the attribution lies inside the lung fields"
        assert line in caption(expl) and line not in caption(expl, card)
        assert "Share inside lungs" in scorecard_markdown(card)
    finally:
        session.close()
