"""The standard three-panel figure: input | heatmap with colour bar | overlay.

Drawn on a :class:`matplotlib.figure.Figure` (never pyplot's global state, which is unsafe in
Gradio's worker threads). The input panel and the axes are the input's modality's
(:meth:`~xai_platform.modalities.base.Modality.draw_input`): a log-mel spectrogram with time in
seconds and frequency in Hz for audio, grayscale pixels for images. Unsigned heatmaps use a
sequential map from 0; signed ones a diverging map centred on 0 (red: evidence for the
explained class, blue: against).
"""

from __future__ import annotations

import contextlib
import gc
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..explanation import Explanation  # noqa: E402
from ..modalities import get_modality  # noqa: E402

STYLE = {"font.size": 9, "axes.titlesize": 10, "font.family": "DejaVu Sans"}


def _limits(heatmap: np.ndarray, signed: bool) -> tuple[float, float]:
    if signed:
        v = float(np.percentile(np.abs(heatmap), 99.5)) or float(np.abs(heatmap).max()) or 1.0
        return -v, v
    hi = float(heatmap.max())
    lo = min(0.0, float(heatmap.min()))
    return lo, hi if hi > lo else lo + 1.0


def _draw_heat(ax: Axes, expl: Explanation, *, alpha: float | None = None):
    lo, hi = _limits(expl.heatmap, expl.signed)
    cmap = "RdBu_r" if expl.signed else "inferno"
    return ax.imshow(expl.heatmap, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest",
                     alpha=alpha, **get_modality(expl.modality).imshow_kwargs(expl))


def _overlay_alpha(expl: Explanation) -> np.ndarray:
    """Per-pixel opacity: strong attributions opaque, weak ones see-through."""
    h = np.abs(expl.heatmap) if expl.signed else expl.heatmap - expl.heatmap.min()
    top = float(np.percentile(h, 99.5)) or float(h.max()) or 1.0
    return np.clip(h / top, 0.0, 1.0) * 0.75


def title(expl: Explanation) -> str:
    p = expl.prediction
    head = f"{expl.model_name} | {expl.method_label}"
    if p.untrained:
        verdict = f"UNTRAINED MODEL, no verdict (top output {p.label} {p.score:.0%})"
    elif p.withheld:
        why = ("input unlike the training data" if p.familiarity is not None
               else "model not fit for a verdict")
        verdict = f"VERDICT WITHHELD: {why} (model would answer {p.label} {p.score:.0%})"
    elif p.multilabel:
        verdict = f"top finding {p.label} {p.score:.0%}"
    elif p.undecided or p.unconfirmed:
        pos = p.labels[p.positive]  # type: ignore[index]
        verdict = f"{p.headline}, p({pos}) {p.probabilities[p.positive]:.1%}"
    else:
        verdict = f"prediction {p.label} {p.score:.1%}"
    cost = f"{expl.seconds:.2f} s, {expl.n_evaluations} model evaluations"
    seed = f", seed {expl.seed}" if expl.seed is not None else ""
    return f"{head}\n{verdict} | explaining '{expl.target_label}' | {cost}{seed}"


def render(expl: Explanation, *, dpi: int = 110) -> Figure:
    """The standard figure for one explanation."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13.0, 4.4), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax_in, ax_heat, ax_over = fig.subplots(1, 3)
        modality = get_modality(expl.modality)
        modality.draw_input(ax_in, expl)
        ax_in.set_title(modality.input_title(expl))
        image = _draw_heat(ax_heat, expl)
        modality.label_axes(ax_heat, expl, panel="heatmap")
        ax_heat.set_title("attribution (signed)" if expl.signed else "attribution")
        bar = fig.colorbar(image, ax=ax_heat, fraction=0.046, pad=0.02)
        bar.set_label("against  |  for the class" if expl.signed else "importance")
        modality.draw_input(ax_over, expl)
        modality.label_axes(ax_over, expl, panel="overlay")
        heat = _draw_heat(ax_over, expl)
        heat.set_alpha(_overlay_alpha(expl))
        ax_over.set_title("overlay")
        color = "firebrick" if expl.untrained else "black"
        fig.suptitle(title(expl), color=color, fontsize=10.5)
    return fig


def warm_up() -> None:
    """Draw one throw-away figure of :func:`render`'s layout (three image panels, titles, axis
    labels, a colorbar). matplotlib loads its fonts and sets up its text layout and colorbar
    machinery on the first draw of a process (about 0.7 s on two cores), which the first
    explanation's figure would otherwise wait for; :mod:`xai_platform.preload` calls this."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13.0, 4.4), dpi=110, layout="constrained")
        canvas = FigureCanvasAgg(fig)
        axes = fig.subplots(1, 3)
        plane = np.linspace(-1.0, 1.0, 32 * 32).reshape(32, 32)
        for ax in axes:
            image = ax.imshow(plane, cmap="RdBu_r", aspect="auto")
            ax.set_title("input | heatmap | overlay")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("frequency (Hz)")
        fig.colorbar(image, ax=axes[1], fraction=0.046)
        fig.suptitle("warm-up")
        canvas.draw()


_pause_lock = threading.Lock()
_pauses = 0  # figures being drawn with the collector paused, in any thread
_resume = False  # whether the first of them found the collector enabled


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's automatic garbage collection paused while a figure is built and drawn.

    A figure is about 10,000 objects in reference cycles (an audio card, measured). The
    collections that the drawing's own allocations trigger would promote them to the oldest
    generation, where they wait, dead, for a full collection: some 60,000 objects a comparison
    page, and a full collection of the app's ~650,000 objects (0.4-0.5 s on two cores) every other
    request. Paused, they stay in the youngest generation, and the first collection after the
    pause frees them if the figure was dropped inside it. A collector that was already off stays
    off; concurrent figures share one pause."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()


def to_rgb(expl: Explanation, *, dpi: int = 110) -> np.ndarray:
    """The standard figure as an (H, W, 3) uint8 array."""
    with collector_paused():
        fig = render(expl, dpi=dpi)
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        del fig  # garbage before the collector resumes: the first young collection frees it
    return image


def to_png(expl: Explanation, *, dpi: int = 110) -> bytes:
    with collector_paused():
        fig = render(expl, dpi=dpi)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        del fig  # garbage before the collector resumes: the first young collection frees it
    return buf.getvalue()


def save_png(expl: Explanation, path: str | Path, *, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png(expl, dpi=dpi))
    return path
