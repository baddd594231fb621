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
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg", force=False)

import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ..explanation import Explanation, counted  # noqa: E402
from ..modalities import get_modality  # noqa: E402

STYLE = {"font.size": 9, "axes.titlesize": 10, "font.family": "DejaVu Sans"}


def _limits(heatmap: np.ndarray, signed: bool) -> tuple[float, float]:
    if signed:
        v = float(np.percentile(np.abs(heatmap), 99.5)) or float(np.abs(heatmap).max()) or 1.0
        return -v, v
    hi = float(heatmap.max())
    lo = min(0.0, float(heatmap.min()))
    return lo, hi if hi > lo else lo + 1.0


_CMAPS = {True: "RdBu_r", False: "inferno"}  # by whether the map is signed
_HEAT_TITLES = {True: "attribution (signed)", False: "attribution"}
_BAR_LABELS = {True: "against  |  for the class", False: "importance"}


def _draw_heat(ax: Axes, expl: Explanation, *, alpha: float | None = None):
    lo, hi = _limits(expl.heatmap, expl.signed)
    return ax.imshow(expl.heatmap, cmap=_CMAPS[expl.signed], vmin=lo, vmax=hi,
                     interpolation="nearest", alpha=alpha,
                     **get_modality(expl.modality).imshow_kwargs(expl))


def _title_color(expl: Explanation) -> str:
    return "firebrick" if expl.untrained else "black"


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
    cost = f"{expl.seconds:.2f} s, {counted(expl.n_evaluations)}"
    seed = f", seed {expl.seed}" if expl.seed is not None else ""
    return f"{head}\n{verdict} | explaining '{expl.target_label}' | {cost}{seed}"


FIGSIZE = (13.0, 4.4)  # inches: three panels in a row, two title lines above


def render(expl: Explanation, *, dpi: int = 110) -> Figure:
    """The standard figure for one explanation, laid out by :func:`_place`."""
    return _render(expl, dpi)[0]


def _render(expl: Explanation, dpi: int) -> tuple[Figure, tuple]:
    """:func:`render`'s figure and the boxes :func:`_place` put its axes in."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=FIGSIZE, dpi=dpi)
        FigureCanvasAgg(fig)
        ax_in, ax_heat, ax_over = (fig.add_axes((0.0, 0.0, 1.0, 1.0)) for _ in range(3))
        ax_bar = fig.add_axes((0.0, 0.0, 1.0, 1.0), label="<colorbar>")
        modality = get_modality(expl.modality)
        modality.draw_input(ax_in, expl)
        ax_in.set_title(modality.input_title(expl))
        image = _draw_heat(ax_heat, expl)
        modality.label_axes(ax_heat, expl, panel="heatmap")
        ax_heat.set_title(_HEAT_TITLES[expl.signed])
        modality.draw_input(ax_over, expl)
        modality.label_axes(ax_over, expl, panel="overlay")
        heat = _draw_heat(ax_over, expl)
        heat.set_alpha(_overlay_alpha(expl))
        ax_over.set_title("overlay")
        fig.suptitle(title(expl), color=_title_color(expl), fontsize=10.5)
        boxes = _place(fig, (ax_in, ax_heat, ax_over), ax_bar, image, _BAR_LABELS[expl.signed])
    return fig, boxes


_PAD = 0.05  # inches: the figure's border
_GAP = 0.2  # inches: the least space between two panels' decorations (tick labels apart)
_BAR_WIDTH, _BAR_GAP = 0.16, 0.12  # inches: the colour bar, and its gap to the heatmap


def _place(fig: Figure, panels: tuple[Axes, Axes, Axes], bar_ax: Axes, image,
           bar_label: str) -> tuple:
    """Put the three panels and the colour bar where their decorations (tick labels, axis
    labels, titles) fit, measured from the decorations' own text.

    This does what matplotlib's constrained layout did here, for less: the layout engine
    measured every artist's bounding box in two passes per figure, while the strings that decide
    the margins are a dozen. An audio card's figure took 240-280 ms with it and 185-200 ms with
    this (two cores; docs/BENCHMARKS.md, thirty-seventh session). Panels of a fixed aspect
    (images of square pixels) get boxes of their own shape, and the row is centred. Returns
    the boxes (inches: the three panels', then the colour bar's)."""
    rows = _rows(fig, panels)
    _bar_on_row(fig, bar_ax, rows)
    bar = fig.colorbar(image, cax=bar_ax)
    bar.set_label(bar_label)
    boxes = _columns(fig, panels, bar_ax, rows)
    _apply(fig, (*panels, bar_ax), boxes)
    return boxes


@dataclass(frozen=True)
class _Rows:
    """The vertical layout: the panels' row and the x tick labels' extents under it."""

    bottom: float  # inches
    height: float
    x_labels: tuple[tuple[tuple[float, float], ...], ...]  # per panel, as _label_extents


def _rows(fig: Figure, panels: tuple[Axes, Axes, Axes]) -> _Rows:
    """The two title lines and the panels' titles above the row, the x decorations below."""
    renderer = fig.canvas.get_renderer()
    height = fig.get_size_inches()[1]
    suptitle = fig._suptitle
    top = (suptitle.get_window_extent(renderer).y0 / fig.dpi if suptitle is not None
           else height) - _PAD
    top -= max(_text_height(ax.title, renderer, fig.dpi) for ax in panels)
    top -= matplotlib.rcParams["axes.titlepad"] / 72
    x_labels = tuple(tuple(_label_extents(ax.xaxis, renderer, fig.dpi)) for ax in panels)
    bottom = _PAD + max(max(_decoration(ax.xaxis, list(extents), renderer, fig.dpi)
                            for ax, extents in zip(panels, x_labels)),
                        _half_height(renderer, fig.dpi))  # the colour bar's lowest tick label
    return _Rows(bottom, top - bottom, x_labels)


_BAR_LABEL_ROOM = "\N{MINUS SIGN}0.000"
"""The colour bar's tick labels get at least this string's width, so that the cards of one
input, whose colour bars differ (0.0 to 1.0, -0.06 to 0.06, ...), have their panels in the same
places: the page's cards line up, and they share their drawing (:func:`to_rgb`)."""


def _columns(fig: Figure, panels: tuple[Axes, Axes, Axes], bar_ax: Axes, rows: _Rows
             ) -> tuple[tuple[float, float, float, float], ...]:
    """Each panel's box and the colour bar's (inches): each panel's y decoration on its left,
    half its widest x tick label past either side; the colour bar and its labels after the
    heatmap."""
    renderer = fig.canvas.get_renderer()
    width = fig.get_size_inches()[0]
    left = [_decoration(ax.yaxis, _label_extents(ax.yaxis, renderer, fig.dpi), renderer,
                        fig.dpi) for ax in panels]
    over = [max((w / 2 for w, _ in extents), default=0.0) for extents in rows.x_labels]
    bar_labels = _label_extents(bar_ax.yaxis, renderer, fig.dpi)
    if bar_labels:
        prop = bar_ax.yaxis.get_major_ticks()[0].label1.get_fontproperties()
        room = renderer.get_text_width_height_descent(_BAR_LABEL_ROOM, prop, ismath=False)
        bar_labels.append((room[0] / fig.dpi, room[1] / fig.dpi))
    bar_block = max(over[1], _BAR_GAP + _BAR_WIDTH
                    + _decoration(bar_ax.yaxis, bar_labels, renderer, fig.dpi))
    gaps = [max(left[0], over[0]), over[0] + max(left[1], over[1]) + _GAP,
            bar_block + max(left[2], over[2]) + _GAP, over[2]]
    # Labels too wide for the row leave the panels crowded, never of no width.
    free = max(width - 2 * _PAD - sum(gaps), 0.3 * width)
    ratios = [_aspect_ratio(ax) for ax in panels]
    box_w = [min(free / 3, rows.height * r) for r in ratios]
    # A fixed-aspect panel held by the width (a wide image) is as high as its image, centred.
    box_hs = [rows.height if r == float("inf") else min(rows.height, free / 3 / r)
              for r in ratios]
    spare = (free - sum(box_w)) / 4  # around and between the panels: the row is centred
    boxes = []
    x = _PAD
    for i in range(3):
        x += spare + gaps[i]
        y = rows.bottom + (rows.height - box_hs[i]) / 2
        boxes.append((x, y, box_w[i], box_hs[i]))
        x += box_w[i]
        if i == 1:  # the colour bar as high as the heatmap
            bar_box = (x + _BAR_GAP, y, _BAR_WIDTH, box_hs[i])
    return (*boxes, bar_box)


def _bar_on_row(fig: Figure, bar_ax: Axes, rows: _Rows) -> None:
    """The colour bar as high as the row, where its tick labels are measured (its locator
    chooses them by its height); :func:`_columns` then puts it beside the heatmap."""
    width, height = fig.get_size_inches()
    bar_ax.set_position(_fraction((0.0, rows.bottom, _BAR_WIDTH, rows.height), width, height))


def _apply(fig: Figure, axes: tuple[Axes, ...], boxes) -> None:
    width, height = fig.get_size_inches()
    for ax, box in zip(axes, boxes):
        ax.set_position(_fraction(box, width, height))


def _fraction(box: tuple[float, float, float, float], width: float, height: float):
    x, y, w, h = box
    return (x / width, y / height, w / width, h / height)


def _aspect_ratio(ax: Axes) -> float:
    """Width over height of a panel of fixed aspect (an image of square pixels); infinite for
    a panel that fills its box."""
    aspect = ax.get_aspect()
    if aspect == "auto":
        return float("inf")
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    return abs(x1 - x0) / (abs(y1 - y0) * float(aspect))


def _text_height(text, renderer, dpi: float) -> float:
    """The height (inches) of a text artist as drawn; 0 when it is empty."""
    if text is None or not text.get_text():
        return 0.0
    return text.get_window_extent(renderer).height / dpi


def _drawn_locs(axis) -> list[float]:
    """The major tick positions the axis will draw: those inside its limits."""
    low, high = sorted(axis.get_view_interval())
    slack = (high - low) * 1e-9
    return [v for v in axis.get_majorticklocs() if low - slack <= v <= high + slack]


def _tick_labels(axis) -> list[str]:
    """The major tick labels the axis will draw for its current limits."""
    locs = _drawn_locs(axis)
    return [s for s in axis.major.formatter.format_ticks(locs) if s] if locs else []


def _label_extents(axis, renderer, dpi: float) -> list[tuple[float, float]]:
    """(width, height) in inches of each tick label the axis will draw."""
    from matplotlib import cbook

    labels = _tick_labels(axis)
    if not labels:
        return []
    prop = axis.get_major_ticks()[0].label1.get_fontproperties()
    sizes = (renderer.get_text_width_height_descent(s, prop, ismath=cbook.is_math_text(s))
             for s in labels)
    return [(w / dpi, h / dpi) for w, h, _ in sizes]


def _half_height(renderer, dpi: float) -> float:
    """Half the height (inches) of a y tick label: how far the lowest reaches below its panel."""
    from matplotlib.font_manager import FontProperties

    prop = FontProperties(size=matplotlib.rcParams["ytick.labelsize"])
    return renderer.get_text_width_height_descent("0", prop, ismath=False)[1] / dpi / 2


def _decoration(axis, extents: list[tuple[float, float]], renderer, dpi: float) -> float:
    """The depth (inches) of an axis' decoration outside its panel: tick marks, tick labels
    (``extents``: :func:`_label_extents` of the axis) and the axis label."""
    name = axis.axis_name
    depth = 0.0
    if _drawn_locs(axis):
        params = axis.get_tick_params()
        depth += (params.get("length", matplotlib.rcParams[f"{name}tick.major.size"])
                  + params.get("pad", matplotlib.rcParams[f"{name}tick.major.pad"])) / 72
    if extents:
        depth += max(w if name == "y" else h for w, h in extents)
    if axis.label.get_text():
        depth += axis.labelpad / 72 + _line_depth(axis.label, name, renderer) / dpi
    return depth


def _line_depth(label, name: str, renderer) -> float:
    """The depth (pixels) of an axis label across its axis: its text's, but at least that of a
    line with the font's lowest glyphs ("lp|"), so that labels of one font take the same room
    whatever their letters ("importance" is a third of a pixel thinner than "against | for the
    class", and the colour bar's label is one or the other)."""
    from matplotlib.text import Text

    depths = []
    for text in (label.get_text(), "lp|"):
        probe = Text(text=text, fontproperties=label.get_fontproperties(),
                     rotation=label.get_rotation())
        probe.set_figure(label.get_figure(root=True))
        box = probe.get_window_extent(renderer)
        depths.append(box.width if name == "y" else box.height)
    return max(depths)


def warm_up() -> None:
    """Draw one throw-away figure of :func:`render`'s layout (three image panels, titles, axis
    labels, a colour bar, placed by :func:`_place`). matplotlib loads its fonts and sets up its
    text layout and colour bar machinery on the first draw of a process (about 0.7 s on two
    cores), which the first explanation's figure would otherwise wait for;
    :mod:`xai_platform.preload` calls this."""
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=FIGSIZE, dpi=110)
        canvas = FigureCanvasAgg(fig)
        axes = [fig.add_axes((0.0, 0.0, 1.0, 1.0)) for _ in range(4)]
        plane = np.linspace(-1.0, 1.0, 32 * 32).reshape(32, 32)
        for ax in axes[:3]:
            image = ax.imshow(plane, cmap="RdBu_r", aspect="auto")
            ax.set_title("input | heatmap | overlay")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("frequency (Hz)")
        fig.suptitle("warm-up")
        _place(fig, tuple(axes[:3]), axes[3], image, "importance")
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
    """The standard figure as an (H, W, 3) uint8 array.

    The cards of one input share what depends only on the input (:class:`_Card`): the first
    draws the whole figure, the next ones only the heatmap, the overlay's heat, the colour bar
    and the titles over it."""
    key = get_modality(expl.modality).figure_key(expl)
    with collector_paused():
        card = _cards.take((key, dpi, expl.heatmap.shape)) if key is not None else None
        if card is None or not card.show(expl):
            card = _Card(expl, dpi)
        image = card.draw()
        if key is not None:
            _cards.keep((key, dpi, expl.heatmap.shape), card)
        del card  # the cache holds it, or it is garbage for the first young collection
    return image


class _Card:
    """One explanation's figure, drawn in two layers.

    The background is everything that depends only on the input: the input panel, every
    panel's frame position, ticks and axis labels, the overlay's input image. It is drawn once
    with the rest hidden and kept. :meth:`show` puts another explanation of the same input into
    the figure (the heatmap, the overlay's heat, the colour bar, the titles), and :meth:`draw`
    draws those over the background in the order a whole draw would: the figure is pixel for
    pixel matplotlib's whole draw of it, over a fresh background or a kept one (tested). The six
    audio cards of a comparison page took 1.25-1.8 s drawn whole and take 0.5-0.6 s so
    (docs/BENCHMARKS.md, thirty-eighth session)."""

    def __init__(self, expl: Explanation, dpi: int) -> None:
        self.fig, self.boxes = _render(expl, dpi)
        _, self.heat_ax, self.over_ax, self.bar_ax = self.fig.axes
        self.heat, self.over = self.heat_ax.images[-1], self.over_ax.images[-1]
        # Hidden while the background is drawn. The heatmap's title is only made transparent:
        # the draw places it from its own extent, and a hidden text has none (matplotlib would
        # move it off the figure).
        title_alpha = self.heat_ax.title.get_alpha()
        layers = [a for a in self._layers() if a is not self.heat_ax.title]
        for artist in layers:
            artist.set_visible(False)
        self.heat_ax.title.set_alpha(0.0)
        self.fig.canvas.draw()
        self.background = self.fig.canvas.copy_from_bbox(self.fig.bbox)
        self.heat_ax.title.set_alpha(title_alpha)
        for artist in layers:
            artist.set_visible(True)

    def _layers(self) -> list:
        """What depends on the explanation, in the order a whole draw draws it: within an
        axes the images, then the spines (over the image's edge), then the title."""
        return [self.heat, *self.heat_ax.spines.values(), self.heat_ax.title,
                self.over, *self.over_ax.spines.values(), self.bar_ax, self.fig._suptitle]

    def show(self, expl: Explanation) -> bool:
        """Put ``expl`` (of the same input) into the figure; False when its colour bar's
        labels need another layout than the background's (the card must be drawn anew)."""
        from matplotlib.colors import Normalize

        lo, hi = _limits(expl.heatmap, expl.signed)
        for image in (self.heat, self.over):
            with image.callbacks.blocked(signal="changed"):  # the colour bar follows once
                image.set_data(expl.heatmap)
                image.set_cmap(_CMAPS[expl.signed])
                image.set_norm(Normalize(vmin=lo, vmax=hi))
        self.over.set_alpha(_overlay_alpha(expl))
        with matplotlib.rc_context(STYLE):
            self.heat_ax.set_title(_HEAT_TITLES[expl.signed])
            self.fig.suptitle(title(expl), color=_title_color(expl), fontsize=10.5)
            bar = self.bar_ax._colorbar
            bar.update_normal(self.heat)
            bar.set_label(_BAR_LABELS[expl.signed])
        return self._boxes() == self.boxes

    def _boxes(self) -> tuple:
        """Where :func:`_place` puts the panels and the colour bar for what the figure holds,
        measured as it measures them: with the colour bar as high as the row."""
        panels = tuple(self.fig.axes[:3])
        placed = self.bar_ax.get_position(original=True)
        with matplotlib.rc_context(STYLE):
            rows = _rows(self.fig, panels)
            _bar_on_row(self.fig, self.bar_ax, rows)
            boxes = _columns(self.fig, panels, self.bar_ax, rows)
        self.bar_ax.set_position(placed)
        return boxes

    def draw(self) -> np.ndarray:
        canvas = self.fig.canvas
        canvas.restore_region(self.background)
        for artist in self._layers():  # as the background was: outside the style's context
            self.fig.draw_artist(artist)
        return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class _Kept:
    """The last few cards drawn (an input's page figures at 90 dpi and its exported PNGs at
    110 dpi, for two users), each lent to one thread at a time (figures are not thread-safe)."""

    def __init__(self, size: int = 4) -> None:
        self._size, self._cards, self._lock = size, [], threading.Lock()

    def take(self, key) -> _Card | None:
        with self._lock:
            for i, (k, card) in enumerate(self._cards):
                if k == key:
                    del self._cards[i]
                    return card
        return None

    def keep(self, key, card: _Card) -> None:
        with self._lock:
            self._cards.append((key, card))
            del self._cards[:-self._size]

    def clear(self) -> None:
        with self._lock:
            self._cards.clear()


_cards = _Kept()


def forget_kept() -> None:
    """Drop the kept cards (:class:`_Kept`), which hold the inputs they drew; a session's
    close calls it. A card is only reused for an input of the same contents, whose figure it
    draws pixel for pixel as a fresh one would, so nothing of one user's input reaches
    another's page; this keeps it from staying in memory after the user has gone."""
    _cards.clear()


FAST_PNG_LEVEL = 1
"""zlib level of the PNG files the pages show (:meth:`~xai_platform.service.Service.figure`):
an audio card at 90 dpi encodes in 26 ms against 65 ms at level 6 (Pillow's default, and
Gradio's for an image handed over as an array), for a file 17% larger (218 against 187 kB;
docs/BENCHMARKS.md, thirty-ninth session)."""


def to_png(expl: Explanation, *, dpi: int = 110, compress_level: int = 6) -> bytes:
    """The standard figure as PNG, drawn as :func:`to_rgb` draws it (``compress_level``: zlib's,
    0-9; :data:`FAST_PNG_LEVEL` for a page's figures)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_rgb(expl, dpi=dpi)).save(buf, format="png", dpi=(dpi, dpi),
                                                 compress_level=compress_level)
    return buf.getvalue()


def save_png(expl: Explanation, path: str | Path, *, dpi: int = 110) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_png(expl, dpi=dpi))
    return path
