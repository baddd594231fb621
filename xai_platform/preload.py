"""Import once, ahead of the first request, what explanations and figures import lazily.

The page is served before any framework or plotting library is imported (start-up time), so the
first explanation would otherwise wait about 1 s (two cores) for matplotlib, lime, scikit-image,
scikit-learn, cv2 and pytorch-grad-cam, and its figure about 0.7 s more for matplotlib's first
draw (fonts, text layout); the first audio upload 1.4 s for librosa's spectral features; the
randomisation test reads the exported graphs with onnx (0.6 s to import). The first X-ray upload
would also wait for the gate's lung segmenter (loaded and its ONNX Runtime graph checked: about
0.7 s; exported the first time on a machine: about 8 s).
``python app.py`` runs :func:`warm_up` in a background thread once the page is up
(:func:`xai_platform.ui.app.launch`); the benchmarks run :func:`preload` in their warm-up, so a
timed call measures the method, not its imports.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

#: what the first explanation and figure of a session would otherwise import; and the first
#: audio upload's spectrogram: librosa loads its spectral features (and with them numba, which
#: compiles some of librosa's kernels as it imports) on first use, 1.4 s of the first audio
#: request's time here, measured in the app's first Compare press (0.05 s once imported)
PRELOAD = ("matplotlib.backends.backend_agg", "xai_platform.visualization.figure",
           "xai_platform.evaluation.scorecard", "skimage.segmentation", "skimage.metrics",
           "lime.lime_base", "sklearn.linear_model", "cv2", "pytorch_grad_cam", "onnx",
           "librosa.feature.spectral")


def preload(modules: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import ``modules`` (those not installed are skipped) and, once the figure module is
    among them, draw one throw-away figure; returns the modules imported."""
    done = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            log.info("preload: %s not imported (%s)", name, exc)
        else:
            done.append(name)
    if "xai_platform.visualization.figure" in done:
        from .visualization.figure import warm_up

        warm_up()
    return done


def warm_up(*, gate: bool = False) -> str:
    """:func:`preload`, then (``gate``) the X-ray gate's lung segmenter; returns the line the
    app prints when it is done."""
    start = time.perf_counter()
    done = preload()
    parts = [f"{len(done)} libraries imported and one figure drawn"]
    if gate:
        try:
            from .anatomy import lung_segmenter

            segmenter = lung_segmenter()
        except Exception as exc:  # noqa: BLE001 - the first X-ray upload reports it instead
            log.warning("preload: the lung segmenter did not load (%s)", exc)
        else:
            if segmenter is not None:
                parts.append(f"the X-ray gate's lung segmenter loaded ({segmenter.engine})")
    return (f"[xai] Ready for the first request: {', '.join(parts)} in "
            f"{time.perf_counter() - start:.1f} s")
