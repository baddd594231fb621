"""Time and frequency readouts of an audio explanation: attribution summed per mel band and per
time segment, drawn as two small plots beside the three-panel figure."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..explanation import Explanation
from .figure import STYLE


def band_and_time_profiles(expl: Explanation, *, n_segments: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(per mel band (n_mels,), segment start times (n_segments,), per time segment) of the
    attribution's evidence for the class (its positive part)."""
    assert expl.axes is not None
    evidence = np.maximum(expl.heatmap, 0.0) if expl.signed else expl.heatmap
    per_band = evidence.sum(axis=1)
    chunks = np.array_split(np.arange(evidence.shape[1]), n_segments)
    per_time = np.array([evidence[:, c].sum() for c in chunks])
    starts = expl.axes.start_s + np.array([c[0] for c in chunks]) / evidence.shape[1] * expl.axes.duration_s
    return per_band, starts, per_time


def top_bands(expl: Explanation, k: int = 3) -> list[tuple[float, float]]:
    """The ``k`` mel bands with most evidence: (centre Hz, share of the total)."""
    per_band, _, _ = band_and_time_profiles(expl)
    total = float(per_band.sum()) or 1.0
    order = np.argsort(-per_band)[:k]
    return [(float(expl.axes.band_centers_hz[i]), float(per_band[i] / total)) for i in order]


def render_readouts(expl: Explanation, *, dpi: int = 110) -> Figure:
    import matplotlib

    per_band, starts, per_time = band_and_time_profiles(expl)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8.0, 2.6), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax_f, ax_t = fig.subplots(1, 2)
        hz = expl.axes.band_centers_hz
        ax_f.barh(np.arange(len(per_band)), per_band, color="#b2182b", height=0.9)
        ticks = np.linspace(0, len(hz) - 1, 6).round().astype(int)
        ax_f.set_yticks(ticks, [f"{hz[t]:.0f}" for t in ticks])
        ax_f.set_ylim(-0.5, len(per_band) - 0.5)  # the top band's tick label inside the axes
        ax_f.set_ylabel("frequency (Hz)")
        ax_f.set_xlabel("attribution")
        ax_f.set_title("per frequency band")
        width = (starts[1] - starts[0]) if len(starts) > 1 else expl.axes.duration_s
        ax_t.bar(starts, per_time, width=width * 0.9, align="edge", color="#2166ac")
        ax_t.set_xlabel("time (s)")
        ax_t.set_title("per time segment")
    return fig
