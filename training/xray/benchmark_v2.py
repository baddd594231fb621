"""Benchmark v2: the lesion benchmark with the anatomy and acquisition varied, closer to real
radiographs (``python -m training.xray_benchmark --version 2``).

Per pair (both images share it): a patient from :func:`scene.draw_patient` (adult or child,
with a child's proportions: the thorax smaller in the field, a larger heart, more horizontal
ribs, sometimes a thymus; an adult's build: body width and soft-tissue density), a real lung
mask framed for that age, anatomy rendered around it (:func:`render.render_chest` with the
patient's :class:`render.Habitus`), the patient's pose (in-plane tilt, axial rotation), one
inserted lesion in the lesion image, then lines and devices (ECG electrodes and leads, a
central line, an endotracheal and a nasogastric tube, sternal wires, a pacemaker).

Per image: an acquisition from :func:`scene.draw_acquisition` (dose and quantum noise, detector
saturation, blur, grid lines, gamma, contrast, brightness, electronic noise, collimation dark
or bright, burned-in side markers and text). Every setting is a column of ``metadata.csv``;
the ranges and the counts per split are in ``benchmark.json``.

Splits as v1: whole lung-mask groups (patient or paper) to train / val / test, so the test
split's anatomy is never trained on; the real radiograph (RG1) is its own ``real`` split.
"""
from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from .benchmark import (METADATA_FIELDS, SPLITS, _save_png, _sources, add_lesion,
                        assign_splits, pair_row, plan_pairs, write_benchmark)
from .render import ADULT, CONTRAST, EDGES, LESION_TYPES, insert_lesion, render_chest, rg1_view
from .scene import (AGE_GROUPS, DEVICE_PROBABILITIES, MU, PHOTONS, RANGES, TEXTS, Patient,
                    acquire, draw_acquisition, draw_devices, draw_patient,
                    frame_lungs, pose)
from .sources import LungMask, load_lung_masks, load_rg1

VERSION = 2
PATIENT_FIELDS = ("age_group", "habitus_width", "habitus_tissue", "habitus_heart",
                  "habitus_rib_slope", "habitus_thymus", "habitus_breasts", "tilt_deg",
                  "axial_rotation", "devices")
ACQUISITION_FIELDS = ("dose", "saturation", "blur_px", "gamma", "contrast", "brightness",
                      "noise", "grid_lines", "collimation", "collimation_margins",
                      "collimation_angle", "markers")
METADATA_FIELDS_V2 = METADATA_FIELDS + PATIENT_FIELDS + ACQUISITION_FIELDS


def _flat(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return "+".join(str(v) for v in value)
    return value


def generate_v2(out: Path, *, n: int = 4000, size: int = 256, seed: int = 0,
                contrast: tuple[float, float] = CONTRAST, real_split: str = "real",
                real_fraction: float = 0.1, masks: list[LungMask] | None = None,
                quiet: bool = False) -> Path:
    """Write benchmark v2 under ``out``; returns the path of ``metadata.csv``."""
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
            if source is None:  # the real radiograph: its own anatomy and pose, v2's devices
                base, lung = rg1_view(rg1, rg1_lungs, size, pair_rng)
                patient = Patient("adult", ADULT, 0.0, 0.0, devices=draw_patient(pair_rng).devices)
                bg_source, bg_id, mask_id = "rg1", rg1_id, f"{rg1_id}-traced"
            else:
                patient = draw_patient(pair_rng)
                lung, _ = frame_lungs(source.mask, size, pair_rng, patient.age_group)
                base = render_chest(lung, pair_rng, habitus=patient.habitus)
                base, lung = pose(base, lung, patient)
                bg_source, bg_id, mask_id = "synthetic", source.id, source.id
            pair = f"{split}-{j:05d}"
            lung_path = Path("lung_masks") / split / f"{pair}.png"
            _save_png(out / lung_path, lung.astype(np.uint8) * 255)
            lesioned, lesion_mask, lesion = insert_lesion(base, lung, pair_rng,
                                                          contrast_range=contrast)
            devices = draw_devices(lung, patient.devices, pair_rng)
            for label, img in (("normal", base), ("lesion", lesioned)):
                image_id = f"{pair}-{label}"
                path = Path("images") / split / f"{image_id}.png"
                settings = draw_acquisition(pair_rng, lung)
                final, settings["markers"] = acquire(img, lung, settings, pair_rng,
                                                     devices=devices)
                _save_png(out / path, final)
                row = pair_row(image_id, path, label, split, pair, (bg_source, bg_id),
                               mask_id, lung_path)
                row.update({k: _flat(v) for k, v in patient.settings().items()})
                row.update({k: _flat(v) for k, v in settings.items()})
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
        "version": VERSION,
        "command": "python -m training.xray_benchmark " + " ".join(
            [f"--version {VERSION}", f"--out {out}", f"--n {n}", f"--size {size}",
             f"--seed {seed}", f"--real-split {real_split}", f"--real-fraction {real_fraction}"]
            + ([f"--contrast {contrast[0]:g} {contrast[1]:g}"] if tuple(contrast) != CONTRAST
               else [])),
        "seed": seed, "size": size, "n_images": len(rows),
        "images": {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS},
        "lung_masks": {s: len(v) for s, v in split_masks.items()},
        "lung_mask_groups": {s: len({m.group for m in v}) for s, v in split_masks.items()},
        "real_background": {"file": rg1_id, "split": real_split},
        "lesion_types": {k: list(v) for k, v in LESION_TYPES.items()},
        "contrast": list(contrast), "edges": list(EDGES),
        "settings": {"age_groups": AGE_GROUPS, "devices": DEVICE_PROBABILITIES,
                     "ranges": RANGES, "texts": list(TEXTS), "photons_at_dose_1": PHOTONS,
                     "mu": MU},
        "conditions": conditions(rows),
        "split_masks": {s: sorted(m.id for m in v) for s, v in split_masks.items()},
        "seconds": round(time.time() - t0, 1),
    }
    return write_benchmark(out, rows, METADATA_FIELDS_V2, summary)


def condition_of(row: dict[str, Any]) -> dict[str, str]:
    """The conditions one image belongs to (for counts and per-condition metrics)."""
    devices = [d for d in str(row.get("devices", "")).split("+") if d]
    dose = float(row["dose"])
    tilt, axial = abs(float(row["tilt_deg"])), abs(float(row["axial_rotation"]))
    return {
        "age_group": str(row["age_group"]),
        "devices": "any" if devices else "none",
        "ecg_leads": "yes" if "ecg_leads" in devices else "no",
        "collimation": str(row["collimation"]),
        "markers": "any" if row.get("markers") else "none",
        "dose": "low (<0.7)" if dose < 0.7 else "high (>1.5)" if dose > 1.5 else "mid",
        "saturated": "yes" if float(row["saturation"]) < 1 else "no",
        "rotated": "strong (|tilt|>6 or |axial|>0.6)" if tilt > 6 or axial > 0.6 else "mild",
        "grid_lines": "yes" if str(row["grid_lines"]) in ("True", "true", "1") else "no",
    }


def conditions(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """Images per split, condition and value."""
    out: dict[str, dict[str, Counter[str]]] = {}
    for r in rows:
        for key, value in condition_of(r).items():
            out.setdefault(r["split"], {}).setdefault(key, Counter())[value] += 1
    return {s: {k: dict(sorted(c.items())) for k, c in v.items()} for s, v in out.items()}


def example_figure(root: Path, out: Path, *, n: int = 12, split: str = "test",
                   seed: int = 0) -> Path:
    """A grid of ``n`` images of one split (lesion images with their mask outlined in red), each
    titled with its settings: the figure of docs/XRAY.md."""
    import matplotlib
    from matplotlib.figure import Figure
    from PIL import Image

    with open(root / "metadata.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    rng = np.random.default_rng(seed)
    # Show the variety: children, devices, collimation, markers first, then any.
    wanted = [lambda r: r["age_group"] == "child", lambda r: "ecg" in r["devices"],
              lambda r: r["collimation"] == "dark", lambda r: r["collimation"] == "bright",
              lambda r: "tube" in r["devices"], lambda r: "central_line" in r["devices"],
              lambda r: float(r["dose"]) < 0.5, lambda r: float(r["saturation"]) < 0.7,
              lambda r: abs(float(r["tilt_deg"])) > 7, lambda r: r["markers"] != "",
              lambda r: "sternal" in r["devices"] or "pacemaker" in r["devices"]]
    chosen: list[dict[str, str]] = []
    for i, want in enumerate(wanted + [lambda r: True] * n):
        pool = [r for r in rows if want(r) and r not in chosen
                and r["label"] == ("lesion" if i % 2 == 0 else "normal")]
        if pool and len(chosen) < n:
            chosen.append(pool[rng.integers(len(pool))])
    cols = 4
    fig = Figure(figsize=(cols * 3.0, (len(chosen) + cols - 1) // cols * 3.45), dpi=90)
    with matplotlib.rc_context({"font.size": 7}):
        for k, r in enumerate(chosen):
            ax = fig.add_subplot((len(chosen) + cols - 1) // cols, cols, k + 1)
            ax.imshow(np.asarray(Image.open(root / r["path"])), cmap="gray", vmin=0, vmax=255)
            if r["lesion_mask_path"]:
                ax.contour(np.asarray(Image.open(root / r["lesion_mask_path"])) > 127,
                           levels=[0.5], colors="red", linewidths=0.8)
            devices = r["devices"].replace("_", " ").replace("+", ", ") or "no devices"
            ax.set_title(f"{r['label']}, {r['age_group']}, tilt {float(r['tilt_deg']):+.0f}°, "
                         f"dose {float(r['dose']):.2f}\n{devices}; "
                         f"collimation {r['collimation']}", fontsize=6.5)
            ax.axis("off")
        fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    # 63 grays and the outlines' red keep the figure small for the repository.
    palette = Image.new("P", (1, 1))
    palette.putpalette([v for g in np.linspace(0, 255, 63).astype(int) for v in (g, g, g)]
                       + [255, 0, 0])
    Image.open(out).convert("RGB").quantize(palette=palette, dither=Image.Dither.NONE).save(
        out, optimize=True)
    return out
