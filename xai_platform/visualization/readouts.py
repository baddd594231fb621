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


def varies_with_frequency(heatmap: np.ndarray) -> bool:
    """Whether a map (n_bands, n_frames) differs between frequency bands anywhere.

    Grad-CAM from a layer with a time axis only (Whisper's encoder positions, a 1-D
    convolution over samples) repeats one curve in every band: its band profile is flat by
    construction and names no band, whatever the model hears.
    """
    scale = float(np.abs(heatmap).max(initial=0.0))
    return scale > 0 and float(np.ptp(heatmap, axis=0).max()) > 1e-6 * scale


def no_bands_reason(expl: Explanation) -> tuple[str, str] | None:
    """Why the band profile cannot name bands: (the reason, what it means), or None when it
    can."""
    per_band, _, _ = band_and_time_profiles(expl)
    if not per_band.sum() > 0:
        return "the map has no evidence for the class in any band", ""
    if not varies_with_frequency(expl.heatmap):
        return ("the map is the same in every band",
                (" (it comes from a layer with a time axis only); saliency, Integrated "
                 "Gradients, SHAP or LIME show frequencies"))
    return None


def top_bands(expl: Explanation, k: int = 3) -> list[tuple[float, float]]:
    """The ``k`` mel bands with most evidence: (centre Hz, share of the total); none when the
    map cannot name bands (:func:`no_bands_reason`)."""
    if no_bands_reason(expl) is not None:
        return []
    per_band, _, _ = band_and_time_profiles(expl)
    total = float(per_band.sum())
    order = np.argsort(-per_band, kind="stable")[:k]
    return [(float(expl.axes.band_centers_hz[i]), float(per_band[i] / total)) for i in order]


def render_readouts(expl: Explanation, *, dpi: int = 110) -> Figure:
    import matplotlib

    per_band, starts, per_time = band_and_time_profiles(expl)
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8.0, 2.6), dpi=dpi, layout="constrained")
        FigureCanvasAgg(fig)
        ax_f, ax_t = fig.subplots(1, 2)
        hz = expl.axes.band_centers_hz
        reason = no_bands_reason(expl)
        if reason is None:
            ax_f.barh(np.arange(len(per_band)), per_band, color="#b2182b", height=0.9)
        else:  # equal bars would read as "every band matters alike"
            ax_f.text(0.5, 0.5, "no band stands out:\n" + reason[0],
                      transform=ax_f.transAxes, ha="center", va="center", wrap=True,
                      fontsize="small", color="0.35")
            ax_f.set_xticks([])
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
