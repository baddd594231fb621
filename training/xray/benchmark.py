"""An offline lung-lesion benchmark with ground truth: nodules and masses inserted into chest
radiographs, each with its lesion mask and lung mask.

    python -m training.xray_benchmark --out data/xray_benchmark [--n 4000] [--size 256] [--seed 0]
    python -m training.xray_benchmark --version 2 --out data/xray_benchmark_v2 ...

``--version 2`` varies anatomy and acquisition (:mod:`training.xray.benchmark_v2`); the
default, version 1, is described here and stays as the shipped cards' commands made it.

Backgrounds (see docs/XRAY.md):

* **synthetic**: chest anatomy rendered from a real lung mask (TorchXRayVision's
  ``semantic_masks_v7labs_lungs.zip``, 435 usable masks of 517; 82 are empty): air, a body with
  lateral soft-tissue fall-off and shoulders, dark lung fields that deepen away from their
  borders, hila and branching vessels, posterior and anterior ribs, clavicles, spine, optional
  breast shadows, then detector blur, gamma, contrast and noise.
* **rg1**: pydicom-data's real PA chest radiograph (``RG1_*.dcm``) augmented by crops, flips,
  small rotations, gamma, contrast and noise; its lungs are a polygon traced by hand.
  That patient has several round opacities (metastasis-like masses) in both lungs, so its
  "normal" images are not normal: it forms the held-out ``real`` split, reported on its own,
  and is never trained on (``--real-split`` changes that).

Each rendered background gives a pair: a ``normal`` image and a ``lesion`` image with one
inserted opacity (nodule 4.5-9 % or mass 9-16 % of the image width; sharp, ill-defined,
spiculated or lobulated; peak contrast 0.12-0.32 against the local lung) whose whole extent
lies inside the lung mask. Both images of a pair get independent finishing (blur, gamma, noise), so
nothing but the lesion tells them apart.

Splits are by background: a lung mask (grouped by patient or paper, from its file name) or the
real radiograph belongs to one split only. Everything is drawn from ``--seed``.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

from .render import (CONTRAST, EDGES, LESION_TYPES, finish, frame_mask, insert_lesion,
                     render_chest, rg1_view)
from .sources import LungMask, load_lung_masks, load_rg1

SPLITS = ("train", "val", "test", "real")
SPLIT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
METADATA_FIELDS = ("id", "path", "label", "split", "pair", "background_source", "background_id",
                   "lung_mask_id", "lung_mask_path", "lesion_mask_path", "lesion_type",
                   "lesion_edge", "lesion_diameter_px", "lesion_diameter_frac",
                   "lesion_contrast", "lesion_x", "lesion_y", "lesion_area_px")



# --------------------------------------------------------------------------------------------
# The benchmark


def assign_splits(masks: list[LungMask], rng: np.random.Generator) -> dict[str, list[LungMask]]:
    """Whole groups to train / val / test, about 70 / 15 / 15 of the masks."""
    groups: dict[str, list[LungMask]] = {}
    for m in masks:
        groups.setdefault(m.group, []).append(m)
    order = [groups[g] for g in rng.permutation(sorted(groups))]
    out: dict[str, list[LungMask]] = {s: [] for s in SPLIT_FRACTIONS}
    total = len(masks)
    for members in order:  # fill the split furthest below its share
        split = min(SPLIT_FRACTIONS, key=lambda s: len(out[s]) / total - SPLIT_FRACTIONS[s])
        out[split].extend(members)
    return out


LESION_FIELDS = ("type", "edge", "diameter_px", "diameter_frac", "contrast", "x", "y",
                 "area_px")


def pair_row(image_id: str, path: Path, label: str, split: str, pair: str, background: tuple,
             mask_id: str, lung_path: Path) -> dict[str, object]:
    """One image's metadata row, its lesion fields empty; background: (source, id)."""
    return {"id": image_id, "path": path.as_posix(), "label": label, "split": split,
            "pair": pair, "background_source": background[0], "background_id": background[1],
            "lung_mask_id": mask_id, "lung_mask_path": lung_path.as_posix(),
            "lesion_mask_path": "", **{f"lesion_{k}": "" for k in LESION_FIELDS}}


def add_lesion(row: dict[str, object], out: Path, split: str, image_id: str,
               lesion_mask: np.ndarray, lesion: object) -> None:
    """Save the lesion's mask and fill the row's lesion fields."""
    mask_path = Path("lesion_masks") / split / f"{image_id}.png"
    _save_png(out / mask_path, lesion_mask.astype(np.uint8) * 255)
    row["lesion_mask_path"] = mask_path.as_posix()
    row.update({f"lesion_{k}": v for k, v in asdict(lesion).items()})


def write_benchmark(out: Path, rows: list[dict[str, object]], fields: tuple[str, ...],
                    summary: dict[str, object]) -> Path:
    """metadata.csv (``fields`` in order) and benchmark.json; returns the metadata path."""
    meta = out / "metadata.csv"
    with open(meta, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    (out / "benchmark.json").write_text(json.dumps(summary, indent=1) + "\n")
    return meta


def _save_png(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = img if img.dtype == np.uint8 else np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(data).save(path, optimize=False, compress_level=6)


def plan_pairs(n: int, real_fraction: float, real_split: str,
               split_masks: dict[str, list[LungMask]]) -> dict[str, tuple[int, int]]:
    """Pairs per split: (on drawn anatomy, in proportion to the split's lung masks; on the real
    radiograph, all in ``real_split``), ``n`` images in all, ``real_fraction`` of them real."""
    pairs = max(n // 2, 1)
    real_pairs = int(round(pairs * real_fraction))
    n_masks = sum(len(v) for v in split_masks.values())
    return {s: (int(round((pairs - real_pairs) * len(split_masks[s]) / n_masks))
                if s in split_masks else 0, real_pairs if s == real_split else 0) for s in SPLITS}


def generate(out: Path, *, n: int = 4000, size: int = 256, seed: int = 0,
             contrast: tuple[float, float] = CONTRAST,
             real_split: str = "real", real_fraction: float = 0.1,
             masks: list[LungMask] | None = None, quiet: bool = False) -> Path:
    """Write the benchmark under ``out``; returns the path of ``metadata.csv``."""
    t0 = time.time()
    rng = np.random.default_rng(seed)
    masks = masks if masks is not None else load_lung_masks()
    split_masks = assign_splits(masks, rng)
    rg1, rg1_lungs, rg1_id = load_rg1()
    plan = plan_pairs(n, real_fraction, real_split, split_masks)
    rows: list[dict[str, object]] = []
    total_pairs, done = sum(a + b for a, b in plan.values()), 0
    out.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        synthetic, real = plan[split]
        for j, source in enumerate(_sources(synthetic, real, split_masks.get(split, []), rng)):
            pair_rng = np.random.default_rng(rng.integers(2 ** 63))
            if source is None:
                base, lung = rg1_view(rg1, rg1_lungs, size, pair_rng)
                bg_source, bg_id, mask_id = "rg1", rg1_id, f"{rg1_id}-traced"
            else:
                lung = frame_mask(source.mask, size, pair_rng)
                base = render_chest(lung, pair_rng)
                bg_source, bg_id, mask_id = "synthetic", source.id, source.id
            pair = f"{split}-{j:05d}"
            lung_path = Path("lung_masks") / split / f"{pair}.png"
            _save_png(out / lung_path, lung.astype(np.uint8) * 255)
            lesioned, lesion_mask, lesion = insert_lesion(base, lung, pair_rng,
                                                          contrast_range=contrast)
            for label, img in (("normal", base), ("lesion", lesioned)):
                image_id = f"{pair}-{label}"
                path = Path("images") / split / f"{image_id}.png"
                _save_png(out / path, finish(img, pair_rng))
                row = pair_row(image_id, path, label, split, pair, (bg_source, bg_id),
                               mask_id, lung_path)
                if label == "lesion":
                    add_lesion(row, out, split, image_id, lesion_mask, lesion)
                rows.append(row)
            done += 1
            if not quiet and (done % 25 == 0 or done == total_pairs):
                sys.stderr.write(f"\r  {done}/{total_pairs} pairs ({split}) "
                                 f"[{time.time() - t0:.0f} s]   ")
                sys.stderr.flush()
    if not quiet:
        sys.stderr.write("\n")
    summary = {
        "command": "python -m training.xray_benchmark " + " ".join(
            [f"--out {out}", f"--n {n}", f"--size {size}", f"--seed {seed}",
             f"--real-split {real_split}", f"--real-fraction {real_fraction}"]
            + ([f"--contrast {contrast[0]:g} {contrast[1]:g}"] if tuple(contrast) != CONTRAST
               else [])),
        "seed": seed, "size": size, "n_images": len(rows),
        "images": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
        "lung_masks": {s: len(v) for s, v in split_masks.items()},
        "lung_mask_groups": {s: len({m.group for m in v}) for s, v in split_masks.items()},
        "real_background": {"file": rg1_id, "split": real_split},
        "lesion_types": {k: list(v) for k, v in LESION_TYPES.items()},
        "contrast": list(contrast), "edges": list(EDGES),
        "split_masks": {s: sorted(m.id for m in v) for s, v in split_masks.items()},
        "seconds": round(time.time() - t0, 1),
    }
    return write_benchmark(out, rows, METADATA_FIELDS, summary)


def _sources(synthetic: int, real: int, pool: list[LungMask], rng: np.random.Generator
             ) -> Iterator[LungMask | None]:
    """Backgrounds for one split: each mask in turn (reshuffled every round), then the real
    radiograph (None) ``real`` times."""
    for i in range(synthetic):
        if i % len(pool) == 0:
            order = rng.permutation(len(pool))
        yield pool[order[i % len(pool)]]
    for _ in range(real):
        yield None


def export_examples(root: Path, out: Path) -> list[Path]:
    """Copy a few test and real-split pairs (normal + lesion, with the lesion masks) and the
    real radiograph as a de-identified DICOM into ``out`` (the app's examples)."""
    with open(root / "metadata.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    positives = {r["pair"]: r for r in rows if r["label"] == "lesion"}

    def pick(split: str, kind: str) -> dict[str, str]:
        found = [r for r in positives.values() if r["split"] == split and r["lesion_type"] == kind
                 and float(r["lesion_contrast"]) >= 0.2  # clearly visible, whole in the lung
                 and int(r["lesion_area_px"]) >= 0.7 * math.pi * float(r["lesion_diameter_px"]) ** 2 / 4]
        return sorted(found, key=lambda r: r["id"])[0]

    chosen = [pick("test", "nodule"), pick("test", "mass"), pick("real", "mass")]
    out.mkdir(parents=True, exist_ok=True)
    written, table = [], []
    for r in chosen:
        normal = next(x for x in rows if x["pair"] == r["pair"] and x["label"] == "normal")
        stem = f"{r['background_source']}-{r['lesion_type']}"
        for row, name in ((r, f"{stem}-lesion.png"), (normal, f"{stem}-normal.png")):
            (out / name).write_bytes((root / row["path"]).read_bytes())
            written.append(out / name)
        mask_name = f"{stem}-lesion.mask.png"
        (out / mask_name).write_bytes((root / r["lesion_mask_path"]).read_bytes())
        written.append(out / mask_name)
        for row, name in ((r, f"{stem}-lesion.png"), (normal, f"{stem}-normal.png")):
            table.append({"file": name, "label": row["label"], "source": row["id"],
                          "background": row["background_source"],
                          "lesion_mask": mask_name if row["label"] == "lesion" else "",
                          "lesion_type": row["lesion_type"], "lesion_edge": row["lesion_edge"],
                          "lesion_diameter_px": row["lesion_diameter_px"],
                          "lesion_contrast": row["lesion_contrast"]})
    with open(out / "examples.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    written += [out / "examples.csv", export_radiograph(out / "rg1-chest-pa.dcm")]
    return written


def export_radiograph(path: Path) -> Path:
    """pydicom-data's RG1 (JPEG 2000, 1955 x 1841, 15-bit MONOCHROME1, ~0.7 MB) with the
    identifying tags removed or replaced and new UIDs; the pixel data is copied unchanged."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("RG1_J2KI.dcm", download=False))
    for keyword in ("PatientBirthDate", "OtherPatientIDs", "InstitutionName",
                    "InstitutionalDepartmentName", "ReferringPhysicianName", "StationName",
                    "DeviceSerialNumber", "AccessionNumber", "SourceImageSequence",
                    "InstanceCreatorUID", "StudyID"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.remove_private_tags()
    ds.PatientName, ds.PatientID = "Anonymous^RG1", "RG1-EXAMPLE"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "xai_platform example: identifying tags removed, UIDs replaced"
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["xai_platform", "rg1", "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["xai_platform", "rg1", "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["xai_platform", "rg1", "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.xray_benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", type=int, choices=(1, 2), default=1,
                        help="1: the shipped models' benchmark (unchanged); 2: anatomy and "
                             "acquisition varied, lines and devices, markers "
                             "(training.xray.benchmark_v2)")
    parser.add_argument("--out", type=Path, default=Path("data/xray_benchmark"))
    parser.add_argument("--n", type=int, default=4000, help="images in all (half with a lesion)")
    parser.add_argument("--size", type=int, default=256, help="side of the stored PNGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--real-split", choices=SPLITS, default="real",
                        help="where the real radiograph's images go (default: their own split)")
    parser.add_argument("--real-fraction", type=float, default=0.1,
                        help="share of the images drawn on the real radiograph")
    parser.add_argument("--contrast", type=float, nargs=2, default=CONTRAST, metavar=("LO", "HI"),
                        help=f"range of the lesions' peak contrast (default {CONTRAST[0]:g} "
                             f"{CONTRAST[1]:g}); higher makes an easier set, e.g. for a warm-up")
    parser.add_argument("--export-examples", type=Path, default=None, metavar="DIR",
                        help="copy a few pairs of the benchmark at --out and the real "
                             "radiograph (DICOM) into DIR, then stop")
    args = parser.parse_args(argv)
    if args.export_examples is not None:
        for path in export_examples(args.out, args.export_examples):
            print(f"wrote {path}")
        return 0
    if args.n < 8 or args.size < 64:
        parser.error("use --n >= 8 and --size >= 64")
    build = generate
    if args.version == 2:
        from .benchmark_v2 import generate_v2 as build
    meta = build(args.out, n=args.n, size=args.size, seed=args.seed,
                 contrast=tuple(args.contrast),
                 real_split=args.real_split, real_fraction=args.real_fraction)
    print(f"wrote {meta}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
