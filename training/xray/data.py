"""X-ray training data: the lesion benchmark that :mod:`training.xray.benchmark` writes, or
CheXpert-v1.0-small, as planes through the app's own preprocessing.

The splits are ``train``, ``validation`` and ``test`` (the benchmark's ``val`` is read as
``validation``), plus the benchmark's held-out ``real`` split.
"""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.config import ModelSpec
from xai_platform.preprocessing.image import load_image, to_model_plane

UNCERTAIN_POLICIES = ("ignore", "ones", "zeros")


@dataclass
class Split:
    """x: (N, H, W) float16 planes in [0, 1]; y: (N,) class index in ``spec.labels``."""

    x: np.ndarray
    y: np.ndarray
    ids: list[str]
    masks: np.ndarray | None = None  # (N, H, W) bool lesion masks (benchmark, on request)

    def counts(self, positive: int) -> dict[str, int]:
        return {"n": int(len(self.y)), "n_positive": int((self.y == positive).sum())}


@dataclass
class Dataset:
    """The splits of one data source and what its builder recorded (for the card)."""

    kind: str
    root: Path
    splits: dict[str, Split]
    details: dict[str, Any] = field(default_factory=dict)


def _plane(path: Path, shape: tuple[int, int]) -> np.ndarray:
    return to_model_plane(load_image(path).pixels, shape).astype(np.float16)


def _progress(label: str, i: int, n: int) -> None:
    if i % 200 == 0 or i == n:
        sys.stderr.write(f"\r  loading {label}: {i}/{n}   ")
        if i == n:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _load_split(label: str, items: list[tuple[Path, bool, str]], spec: ModelSpec) -> Split:
    """items: (image path, is_positive, id)."""
    positive = spec.positive_index
    x = np.zeros((len(items), *spec.input_shape), np.float16)
    for i, (path, _, _) in enumerate(items):
        x[i] = _plane(path, spec.input_shape)
        _progress(label, i + 1, len(items))
    y = np.array([positive if pos else 1 - positive for _, pos, _ in items], np.int64)
    return Split(x, y, [item_id for _, _, item_id in items])


def _lesion_masks(root: Path, rows: list[dict[str, str]], shape: tuple[int, int]) -> np.ndarray:
    """Each row's lesion mask on the model's grid (the same crop and resize as the image),
    all False for a normal image."""
    out = np.zeros((len(rows), *shape), bool)
    for i, row in enumerate(rows):
        if row.get("lesion_mask_path"):
            out[i] = to_model_plane(load_image(root / row["lesion_mask_path"]).pixels, shape) > 0.5
    return out


def read_benchmark(root: Path, spec: ModelSpec, *, limit: int | None = None,
                   masks: bool = False) -> Dataset:
    """The lesion benchmark's splits (``limit``: at most that many images per split, for tests
    and quick checks; ``masks``: the training split's lesion masks too)."""
    with open(root / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    splits = {}
    for name in ("train", "val", "test", "real"):
        chosen = [r for r in rows if r["split"] == name][:limit]
        items = [(root / r["path"], r["label"] == "lesion", r["id"]) for r in chosen]
        key = "validation" if name == "val" else name
        if items:
            splits[key] = _load_split(key, items, spec)
            if masks and name == "train":
                splits[key].masks = _lesion_masks(root, chosen, spec.input_shape)
    info = root / "benchmark.json"
    summary = json.loads(info.read_text()) if info.exists() else {}
    details = {k: summary[k] for k in ("version", "command", "seed", "size", "images",
                                       "lung_masks", "lung_mask_groups", "real_background",
                                       "lesion_types", "contrast", "edges", "settings",
                                       "conditions") if k in summary}
    return Dataset("xray_benchmark", root, splits, details)


def chexpert_label(row: dict[str, str], uncertain: str) -> bool | None:
    """True = lesion, False = normal, None = left out (see the module docstring)."""
    def value(key: str) -> float | None:
        text = (row.get(key) or "").strip()
        return float(text) if text else None

    lesion, no_finding = value("Lung Lesion"), value("No Finding")
    if lesion == 1.0 or (lesion == -1.0 and uncertain == "ones"):
        return True
    if lesion == -1.0 and uncertain == "ignore":
        return None
    if no_finding == 1.0:
        return False
    return None


def _chexpert_path(root: Path, text: str) -> Path:
    rel = Path(text)
    if rel.parts and rel.parts[0] == root.name:  # "CheXpert-v1.0-small/train/patient..."
        return root.parent / rel
    return root / rel


def _patient(text: str) -> str:
    return next((p for p in Path(text).parts if p.startswith("patient")), text)


def read_chexpert(root: Path, spec: ModelSpec, *, uncertain: str = "ignore",
                  val_fraction: float = 0.1, max_images: int | None = None,
                  seed: int = 0) -> Dataset:
    """CheXpert-v1.0-small: train.csv split by patient into train / validation, valid.csv as
    test.
    ``max_images`` caps the training split (a seeded sample keeping the class balance)."""
    if uncertain not in UNCERTAIN_POLICIES:
        raise ValueError(f"uncertain must be one of {UNCERTAIN_POLICIES}")
    rng = np.random.default_rng(seed)

    def read(name: str) -> list[tuple[Path, bool, str]]:
        items = []
        with open(root / name, newline="") as fh:
            for row in csv.DictReader(fh):
                if row.get("Frontal/Lateral", "Frontal") != "Frontal":
                    continue
                label = chexpert_label(row, uncertain)
                if label is not None:
                    items.append((_chexpert_path(root, row["Path"]), label, row["Path"]))
        return items

    train_items, test_items = read("train.csv"), read("valid.csv")
    patients = sorted({_patient(i[2]) for i in train_items})
    val_patients = set(rng.permutation(patients)[:max(1, int(round(len(patients) * val_fraction)))])
    val_items = [i for i in train_items if _patient(i[2]) in val_patients]
    train_items = [i for i in train_items if _patient(i[2]) not in val_patients]
    if max_images is not None and len(train_items) > max_images:
        keep = rng.permutation(len(train_items))[:max_images]
        train_items = [train_items[k] for k in sorted(keep)]
    splits = {name: _load_split(name, items, spec) for name, items in
              (("train", train_items), ("validation", val_items), ("test", test_items))
              if items}
    details = {"uncertain_policy": uncertain, "finding": "Lung Lesion", "negative": "No Finding",
               "views": "frontal", "val_fraction": val_fraction, "max_images": max_images,
               "test": "valid.csv", "val_patients": len(val_patients)}
    return Dataset("chexpert", root, splits, details)




def read_data(root: Path, spec: ModelSpec, *, limit: int | None = None, masks: bool = False,
              uncertain: str = "ignore", val_fraction: float = 0.1,
              max_images: int | None = None, seed: int = 0) -> Dataset:
    """The benchmark (``limit``, ``masks``) or CheXpert (``uncertain``, ``val_fraction``,
    ``max_images``, ``seed``) at ``root``, whichever it holds."""
    if (root / "metadata.csv").exists():
        return read_benchmark(root, spec, limit=limit, masks=masks)
    if (root / "train.csv").exists() and (root / "valid.csv").exists():
        if masks:
            raise SystemExit("--mask-weight needs lesion masks, which only the lesion benchmark "
                             "has; CheXpert gives image-level labels.")
        return read_chexpert(root, spec, uncertain=uncertain, val_fraction=val_fraction,
                             max_images=max_images, seed=seed)
    raise SystemExit(f"{root} is neither the lesion benchmark (metadata.csv; make it with "
                     "`python -m training.xray_benchmark`) nor CheXpert-v1.0-small "
                     "(train.csv and valid.csv).")
