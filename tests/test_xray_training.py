"""The lesion benchmark, the CheXpert reader and one-epoch training for both frameworks."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import chest_like, mask_png, metadata_rows, needs_tf, needs_torch, write_config
from xai_platform.config import load_config
from xai_platform.models import ModelManager
from xai_platform.models.cards import ModelCard

pytest.importorskip("torchxrayvision")  # the lung masks ship inside it


@pytest.fixture(scope="module")
def masks():
    from training.xray.sources import load_lung_masks

    return load_lung_masks(limit=12)


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory, masks) -> Path:
    from training.xray.benchmark import generate

    out = tmp_path_factory.mktemp("bench")
    generate(out, n=40, size=64, seed=3, masks=masks, quiet=True)
    return out


def test_every_positive_has_its_lesion_inside_the_lungs(benchmark):
    rows = metadata_rows(benchmark)
    assert {r["label"] for r in rows} == {"normal", "lesion"}
    assert {r["background_source"] for r in rows} == {"synthetic", "rg1"}
    for r in rows:
        image = np.asarray(Image.open(benchmark / r["path"]))
        lung = mask_png(benchmark / r["lung_mask_path"])
        assert image.shape == lung.shape == (64, 64) and lung.any()
        if r["label"] == "lesion":
            lesion = mask_png(benchmark / r["lesion_mask_path"])
            assert lesion.any(), r["id"]
            assert not (lesion & ~lung).any(), f"{r['id']}: lesion outside the lungs"
            assert r["lesion_type"] in ("nodule", "mass") and float(r["lesion_contrast"]) > 0
            assert int(r["lesion_area_px"]) == lesion.sum()
        else:
            assert r["lesion_mask_path"] == "" and r["lesion_type"] == ""


def test_splits_share_no_background_or_mask(benchmark, masks):
    from training.xray.sources import mask_group

    rows = metadata_rows(benchmark)
    split_of: dict[str, set[str]] = {}
    for r in rows:
        for key in (r["background_id"], r["lung_mask_id"], mask_group(r["lung_mask_id"])):
            split_of.setdefault(key, set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values()), split_of
    assert {r["split"] for r in rows} == {"train", "val", "test", "real"}
    assert {r["split"] for r in rows if r["background_source"] == "rg1"} == {"real"}
    for split in ("train", "val", "test", "real"):  # both classes everywhere (pairs)
        assert {r["label"] for r in rows if r["split"] == split} == {"normal", "lesion"}


def test_benchmark_is_seeded(tmp_path, masks):
    from training.xray.benchmark import generate

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        generate(out, n=8, size=64, seed=11, masks=masks[:6], quiet=True)
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text()
    for r in metadata_rows(a):
        assert (a / r["path"]).read_bytes() == (b / r["path"]).read_bytes()


def test_mask_groups_keep_one_patient_together():
    from training.xray.sources import mask_group

    assert mask_group("16745_2_3.PNG") == mask_group("16745_5_1.png") == "16745"
    assert mask_group("covid-19-pneumonia-evolution-over-a-week-1-day0-PA.jpg") == \
        mask_group("covid-19-pneumonia-evolution-over-a-week-1-day3.jpg")
    assert mask_group("1-s2.0-S1684118220300682-main.pdf-002-a1.png") == \
        mask_group("1-s2.0-S1684118220300682-main.pdf-003-b2.png")
    assert mask_group("tpmd200203f2-a.png") == mask_group("tpmd200203f2-b.png")
    assert mask_group("covid-19-pneumonia-53.jpg") != mask_group("covid-19-pneumonia-58-day-3.jpg")


def _tiny_entry(weights: Path, **overrides) -> dict:
    entry = {"id": "tiny-lesion", "name": "tiny", "framework": "torch", "modality": "xray",
             "architecture": "custom_cnn", "arch_args": {"width": 4, "depth": 2},
             "weights": str(weights), "labels": ["normal", "lesion"], "positive_label": "lesion",
             "output": "logits", "target_layer": "features.1",
             "input": {"size": 32, "channels": 1, "normalize": "minus1_1"},
             "notice": "trained on a synthetic lesion benchmark — not for clinical use"}
    entry.update(overrides)
    return entry


def _train_one_epoch(tmp_path: Path, benchmark: Path, entry: dict, *extra: str
                     ) -> tuple[dict, ModelManager]:
    from training.train_xray import main

    tmp_path.mkdir(parents=True, exist_ok=True)
    config_path = write_config(tmp_path / "tiny.yaml", [entry])
    main(["--model", entry["id"], "--config", str(config_path), "--data", str(benchmark),
          "--epochs", "1", "--batch-size", "8", "--run-dir", str(tmp_path / "runs"), *extra])
    config = load_config([config_path], base=None)
    manager = ModelManager(config, device="cpu")
    card = json.loads(Path(str(entry["weights"]).replace(
        ".weights.h5", ".card.json").replace(".pt", ".card.json")).read_text())
    return card, manager


@needs_torch
def test_one_epoch_writes_weights_that_load(tmp_path, benchmark):
    import torch

    weights = tmp_path / "w" / "tiny-lesion.pt"
    card, manager = _train_one_epoch(tmp_path, benchmark, _tiny_entry(weights),
                                     "--warmup-data", str(benchmark), "--warmup-epochs", "1")
    assert manager.status("tiny-lesion").state == "ready"
    handle = manager.get("tiny-lesion")
    assert handle.calibration.threshold == pytest.approx(card["calibration"]["threshold"])
    probs = handle.predict(np.random.default_rng(0).random((3, 32, 32), dtype=np.float32))
    assert probs.shape == (3, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    state = torch.load(weights, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    for key in ("roc_auc", "accuracy", "sensitivity_at_90_specificity", "false_alarm_rate",
                "miss_rate"):
        assert 0.0 <= card["metrics"]["test"][key] <= 1.0
    assert set(card["metrics"]) == {"train", "validation", "test", "real"}
    assert set(card) == {f.name for f in dataclasses.fields(ModelCard)}  # as the audio card's
    assert ModelCard.from_dict(card, strict=True).to_dict() == card
    assert card["training"]["command"].startswith("python -m training.train_xray --model tiny-lesion")
    assert card["data"]["kind"] == "xray_benchmark" and card["training"]["epochs_run"] == 1
    assert card["training"]["warmup"]["epochs"] == 1
    assert len(card["training"]["warmup"]["history"]) == 1
    assert (weights.parent / "tiny-lesion.reliability.png").exists()
    assert (weights.parent / "tiny-lesion.card.md").read_text().count("| test |") == 1


@needs_tf
def test_one_epoch_keras_writes_weights_that_load(tmp_path, benchmark):
    weights = tmp_path / "w" / "tiny-keras.weights.h5"
    entry = _tiny_entry(weights, id="tiny-keras", framework="keras", architecture="keras_cnn",
                        target_layer="conv2b",
                        input={"size": 32, "channels": 3, "normalize": "minus1_1"})
    card, manager = _train_one_epoch(tmp_path, benchmark, entry)
    assert manager.status("tiny-keras").state == "ready"
    probs = manager.get("tiny-keras").predict(np.full((2, 32, 32), 0.5, np.float32))
    assert probs.shape == (2, 2)
    assert card["weights"]["file"] == "tiny-keras.weights.h5"


# --------------------------------------------------------------------------------------------
# CheXpert


def _chexpert_tree(root: Path) -> Path:
    """A CheXpert-v1.0-small look-alike: 8 training patients, 2 validation studies."""
    base = root / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Lung Lesion",
              "Edema"]
    train = [  # (patient, view, No Finding, Lung Lesion)
        (1, "Frontal", "", "1.0"), (1, "Lateral", "", "1.0"), (2, "Frontal", "1.0", ""),
        (3, "Frontal", "", "-1.0"), (4, "Frontal", "", ""), (5, "Frontal", "1.0", "0.0"),
        (6, "Frontal", "", "1.0"), (7, "Frontal", "1.0", ""), (8, "Frontal", "", "1.0"),
    ]
    valid = [(101, "Frontal", "", "1.0"), (102, "Frontal", "1.0", "")]

    def write(name: str, split: str, rows) -> None:
        with open(base / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for k, (patient, view, no_finding, lesion) in enumerate(rows):
                rel = f"CheXpert-v1.0-small/{split}/patient{patient:05d}/study1/" \
                      f"view{k}_{view.lower()}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((chest_like(80, seed=k) * 255).astype(np.uint8)).save(root / rel)
                writer.writerow([rel, "Female", "60", view, "PA", no_finding, lesion, ""])

    base.mkdir(parents=True)
    write("train.csv", "train", train)
    write("valid.csv", "valid", valid)
    return base


@needs_torch
@pytest.mark.parametrize("policy, n_train_val, n_pos", [("ignore", 6, 3), ("ones", 7, 4),
                                                        ("zeros", 6, 3)])
def test_chexpert_reader_follows_the_uncertainty_policy(tmp_path, policy, n_train_val, n_pos):
    from training.xray.data import read_chexpert

    root = _chexpert_tree(tmp_path)
    spec = load_config([write_config(tmp_path / "c.yaml", [_tiny_entry(tmp_path / "w.pt")])],
                       base=None).model("tiny-lesion")
    data = read_chexpert(root, spec, uncertain=policy, val_fraction=0.25, seed=0)
    train, val, test = data.splits["train"], data.splits["validation"], data.splits["test"]
    assert len(train.y) + len(val.y) == n_train_val  # lateral, no-label studies left out
    assert int((train.y == 1).sum() + (val.y == 1).sum()) == n_pos
    patients = [{p.split("/")[2] for p in s.ids} for s in (train, val)]
    assert not patients[0] & patients[1] and len(patients[1]) == 2  # split by patient
    assert test.ids[0].startswith("CheXpert-v1.0-small/valid/") and list(test.y) == [1, 0]
    assert train.x.shape[1:] == (32, 32) and 0 <= train.x.min() and train.x.max() <= 1
    assert data.details["uncertain_policy"] == policy


def test_chexpert_labels():
    from training.xray.data import chexpert_label

    row = lambda lesion, nf: {"Lung Lesion": lesion, "No Finding": nf}  # noqa: E731
    assert chexpert_label(row("1.0", ""), "ignore") is True
    assert chexpert_label(row("-1.0", ""), "ignore") is None
    assert chexpert_label(row("-1.0", ""), "ones") is True
    assert chexpert_label(row("-1.0", ""), "zeros") is None  # "no lesion" is not "normal"
    assert chexpert_label(row("", "1.0"), "ignore") is False
    assert chexpert_label(row("0.0", ""), "ignore") is None


# --------------------------------------------------------------------------------------------
# Shipped examples and weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "xray"


def test_example_radiograph_is_deidentified_monochrome1():
    import pydicom

    from xai_platform.preprocessing.image import load_image

    path = EXAMPLES / "rg1-chest-pa.dcm"
    assert path.stat().st_size < 1_000_000
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1" and ds.PatientIdentityRemoved == "YES"
    assert "PatientBirthDate" not in ds and "InstitutionName" not in ds
    assert str(ds.PatientName) == "Anonymous^RG1"
    loaded = load_image(path)
    assert loaded.pixels.shape == (1955, 1841) and "MONOCHROME1 inverted" in loaded.notes


def test_example_lesion_masks_match_their_images():
    rows = list(csv.DictReader(open(EXAMPLES / "examples.csv", newline="")))
    assert {r["label"] for r in rows} == {"normal", "lesion"}
    for r in rows:
        image = np.asarray(Image.open(EXAMPLES / r["file"]))
        assert image.shape == (256, 256) and (EXAMPLES / r["file"]).stat().st_size < 200_000
        if r["label"] == "lesion":
            assert mask_png(EXAMPLES / r["lesion_mask"]).shape == image.shape
            assert mask_png(EXAMPLES / r["lesion_mask"]).any()


def _shipped(framework: str) -> list:
    config = load_config()
    return [s for s in config.models if s.modality == "xray" and s.framework == framework
            and s.positive_label == "lesion" and s.weights is not None and s.weights.is_file()]


@pytest.mark.parametrize("framework", [pytest.param("torch", marks=needs_torch),
                                       pytest.param("keras", marks=needs_tf)])
def test_shipped_detectors_find_the_example_lesions(framework):
    from xai_platform.preprocessing.image import load_image, to_model_plane

    specs = _shipped(framework)
    if not specs:
        pytest.skip(f"no trained {framework} X-ray weights in weights/xray/")
    manager = ModelManager(load_config(), device="cpu")
    for spec in specs:
        assert manager.status(spec.id).state == "ready"
        card = manager.card(spec.id)
        # A shipped detector must detect (the target, 0.95, is tracked in docs/XRAY.md; a
        # model shipped below it must say so in its description).
        assert card.metrics["test"].roc_auc >= 0.9 and card.model.notice == spec.notice
        if card.metrics["test"].roc_auc < 0.95:
            assert "below the 0.95 target" in spec.description
        if card.mask_supervision:  # users comparing explanations must be told
            assert "lesion masks" in spec.description
            assert all(layer in spec.description for layer in card.mask_supervision.layers)
        handle = manager.get(spec.id)
        threshold = handle.calibration.threshold
        assert threshold is not None, f"{spec.id}: the card carries no decision threshold"
        files = ["synthetic-nodule-lesion", "synthetic-mass-lesion", "synthetic-nodule-normal"]
        planes = np.stack([to_model_plane(load_image(EXAMPLES / f"{f}.png").pixels, spec.input_shape)
                           for f in files])
        p = handle.predict(planes)[:, spec.positive_index]
        # The verdicts a user sees on the examples: both lesions called "lesion", the clean normal
        # called "normal". synthetic-mass-normal is left out on purpose: its drawn anatomy holds a
        # small bright vessel crossing that DenseNet-121 and MobileNetV2 call a lesion (their test
        # false-alarm rate is 0.14, in their cards); the app shows that false alarm as it is.
        assert p[0] >= threshold and p[1] >= threshold, f"{spec.id}: missed a lesion {p[:2]}"
        assert p[2] < threshold, f"{spec.id}: false alarm on the clean normal {p[2]}"


@needs_torch
def test_training_is_reproducible_by_its_command(tmp_path, benchmark):
    import torch

    states = []
    for run in ("a", "b"):
        weights = tmp_path / run / "tiny-lesion.pt"
        card, _ = _train_one_epoch(tmp_path / run, benchmark, _tiny_entry(weights))
        states.append((torch.load(weights, weights_only=True), card["metrics"]["test"]["roc_auc"]))
    (first, auc_a), (second, auc_b) = states
    assert auc_a == auc_b
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_augmentation_moves_masks_with_the_image_and_draws_the_same():
    from training.xray.augment import augment

    rng_x = np.random.default_rng(5)
    x = rng_x.random((6, 50, 50), dtype=np.float32) * 0.4
    masks = np.zeros((6, 50, 50), bool)
    masks[:, 20:26, 30:34] = True
    x[masks] = 1.0  # a marker the photometric steps keep brightest
    plain = augment(x.copy(), np.random.default_rng(1))
    moved_x, moved = augment(x.copy(), np.random.default_rng(1), masks=masks)
    assert np.array_equal(plain, moved_x)  # the masks do not change the random stream
    assert moved.sum() == masks.sum()  # shifted and flipped, never cut (the pad is 2 px)
    for image, mask in zip(moved_x, moved):
        assert image[mask].min() > np.percentile(image[~mask], 99)


@needs_torch
def test_mask_supervision_trains_and_leaves_no_head_in_the_weights(tmp_path, benchmark):
    import torch

    weights = tmp_path / "w" / "tiny-lesion.pt"
    card, manager = _train_one_epoch(tmp_path, benchmark, _tiny_entry(weights),
                                     "--mask-weight", "2")
    assert card["mask_supervision"]["layers"] == ["features.1"]
    assert card["mask_supervision"]["weight"] == 2.0
    assert "Mask supervision" in (weights.parent / "tiny-lesion.card.md").read_text()
    handle = manager.get("tiny-lesion")
    assert manager.status("tiny-lesion").state == "ready"
    state = torch.load(weights, weights_only=True)
    assert set(state) == set(handle.net.state_dict())  # the plain architecture, no extra head
    # the training hook is gone: explaining the loaded and the trained net leaves no extra hooks
    from training.trainer import MaskSupervision, TrainConfig, train
    from xai_platform.models.formats.torch import build_network

    spec = load_config([write_config(tmp_path / "again.yaml", [_tiny_entry(weights)])],
                       base=None).model("tiny-lesion")
    net = build_network(spec, seed=0)
    x = np.random.default_rng(0).random((8, 32, 32), dtype=np.float32)
    y = np.array([0, 1] * 4)
    m = np.zeros((8, 32, 32), bool)
    m[1::2, 10:14, 10:14] = True
    train(spec, net, x, y, x, y, TrainConfig(epochs=1, batch_size=4),
          masks=MaskSupervision(m, ("features.0", "features.1"), 1.0))
    assert all(not mod._forward_hooks for mod in net.modules())


def test_mask_supervision_is_refused_for_keras_models(tmp_path, benchmark):
    entry = _tiny_entry(tmp_path / "k.weights.h5", id="tiny-keras", framework="keras",
                        architecture="keras_cnn", target_layer="conv2b",
                        input={"size": 32, "channels": 1, "normalize": "minus1_1"})
    with pytest.raises(SystemExit, match="PyTorch models only"):
        _train_one_epoch(tmp_path, benchmark, entry, "--mask-weight", "1")


@pytest.mark.parametrize("framework", [pytest.param("torch", marks=needs_torch),
                                       pytest.param("keras", marks=needs_tf)])
def test_shipped_detectors_withhold_their_verdict_outside_their_training_data(framework):
    """Every shipped detector carries its familiarity description, measured as its card says
    (few test images withheld, most inverted, upside-down or rotated ones withheld): a
    benchmark-like example gets a verdict, the same image on its side and the real radiograph
    none of them was trained on get "verdict withheld" (through the app's own pipeline)."""
    from xai_platform import pipeline
    from xai_platform.config import AppSettings
    from xai_platform.modalities import PreparedInput
    from xai_platform.preprocessing.image import load_image, real_radiograph_path, to_model_plane

    specs = _shipped(framework)
    if not specs:
        pytest.skip(f"no trained {framework} X-ray weights in weights/xray/")
    manager = ModelManager(load_config(), device="cpu")
    settings = AppSettings(check_inputs=False)
    for spec in specs:
        card = manager.card(spec.id)
        assert card.familiarity is not None, f"{spec.id}: no familiarity in its card"
        assert set(card.familiarity.views) == {"features", "layout"}
        rates = card.familiarity.withheld
        assert rates["test split"] <= 0.05
        for change in ("inverted (negative)", "upside down", "rotated 90 degrees"):
            assert rates[f"test images {change}"] >= 0.7, f"{spec.id}: {change} {rates}"
        assert rates["tibia radiograph (RG3)"] == 1.0
        handle = manager.get(spec.id)
        assert handle.familiarity is not None
        plane = to_model_plane(load_image(EXAMPLES / "synthetic-nodule-lesion.png").pixels,
                               spec.input_shape)
        for img, withheld in [(plane, False), (np.rot90(plane).copy(), True)]:
            prepared = PreparedInput(name="x", modality="xray", planes=img[None])
            p = pipeline.analyse(handle, prepared, settings=settings).prediction
            assert p.withheld is withheld, f"{spec.id}: withheld {p.withheld}, {p.familiarity}"
        rg1 = real_radiograph_path()
        if rg1 is not None:
            analysis = pipeline.analyse(handle, pipeline.prepare(rg1, spec, settings=settings),
                                        settings=settings)
            assert analysis.prediction.withheld, f"{spec.id}: {analysis.prediction.familiarity}"
            assert "verdict withheld" in analysis.prediction.verdict
