"""What a modality is: the declared interface, the prepared input, and the registry.

A modality is everything that depends on the kind of input: its input spec and YAML parser,
decoding and preparation into feature planes, what "removed" means (the masked value), the
perturbation features and their parameters, how the input panel of the figure is drawn, its
readouts, accepted file extensions, its examples folder, its UI input and how ground truth for
evaluation is read. The rest of the platform asks the registry
(``get_modality(spec.modality).masked_value(x)``) and never compares modality names.

A modality registers itself where it is defined::

    @register_modality
    class Audio(Modality):
        name = "audio"
        ...

The defaults below are those of a plain grayscale image, so a new image-like modality only
declares its input spec and how to decode a file.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from ..errors import InputError
from ..files import array_key
from ..params import Param
from ..registry import Registry

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ..config import AppSettings, ModelSpec
    from ..explanation import Explanation

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Source = str | Path | bytes | tuple[int, Any]


class InputSpec(Protocol):
    """What every modality's input spec offers the rest of the platform."""

    channels: int
    normalize: str

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the feature plane the model sees."""


@dataclass(frozen=True)
class PreparedInput:
    """An input made ready for one model.

    planes: (n, H, W) float32, one feature plane per window (n = 1 for an input seen whole);
    starts_s: (n,) start of each window in seconds for inputs scored in windows over time,
    else None; data: what the modality keeps for its readouts (e.g. each window's waveform);
    scored: (n,) bool, the windows that hold what the model judges (audio: speech), or None
    for all of them: the others are left out of the verdict and the timeline, and shown as
    ``unscored_label`` ("no speech"). ``judged_seconds``: how many seconds of what the model
    judges the input holds (audio: speech found by voice activity detection), None where the
    modality does not measure it; a card's band for short inputs reads it.
    """

    name: str
    modality: str
    planes: FloatArray
    starts_s: np.ndarray | None = None
    notes: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    scored: np.ndarray | None = None
    unscored_label: str = ""
    judged_seconds: float | None = None

    @property
    def scored_mask(self) -> np.ndarray:
        """(n,) bool: which windows count towards the verdict (all when :attr:`scored` is
        None)."""
        if self.scored is None:
            return np.ones(len(self.planes), dtype=bool)
        return np.asarray(self.scored, dtype=bool)


@dataclass(frozen=True)
class Readout:
    """A modality's extra view of one explanation: an optional figure, optional listening
    clips (paths) and a line of text."""

    figure: Any = None
    clips: tuple[str, ...] = ()
    text: str = ""
    record: Mapping[str, Any] = field(default_factory=dict)


class Modality(ABC):
    """One kind of input. Subclasses set the class attributes and implement the two abstract
    methods; everything else has image-like defaults."""

    name: ClassVar[str]
    label: ClassVar[str]  # the UI's modality selector
    extensions: ClassVar[tuple[str, ...]]  # accepted file suffixes, lowercase with the dot
    input_kind: ClassVar[str] = "image"  # the upload widget: "audio" or "image"/"file"
    examples: ClassVar[str] = ""  # folder under examples/ (empty: none)
    #: (folder under data/, command that builds it): what `evaluate --data benchmark` reads
    benchmark: ClassVar[tuple[str, str] | None] = None
    feature_params: ClassVar[tuple[Param, ...]] = (
        Param("n_segments", "Superpixels", "int", 60, minimum=4, maximum=400, step=1,
              help="About how many SLIC superpixels."),
        Param("compactness", "Superpixel compactness", "float", 0.2, minimum=0.01,
              maximum=10.0, step=0.001,
              help="Higher gives squarer superpixels, lower follows intensity."),
    )
    #: the window selector's label on the Classification page (None: inputs are seen whole)
    window_label: ClassVar[str | None] = None
    #: the region an explanation should fall in (e.g. "lungs"), scored as the share of the
    #: attribution inside it when a mask is given; None: no such region
    focus_region: ClassVar[str | None] = None

    # --- configuration ----------------------------------------------------------------------
    @abstractmethod
    def parse_input(self, raw: Mapping[str, Any], *, source: str) -> InputSpec:
        """The ``input:`` mapping of a config entry as this modality's frozen spec; every
        mistake raises :class:`ConfigError` naming ``source``, the key and the fix."""

    # --- inputs ---------------------------------------------------------------------------------
    @abstractmethod
    def prepare(self, source: Source, spec: ModelSpec, *, settings: AppSettings,
                name: str) -> PreparedInput:
        """Decode ``source`` and build the feature planes ``spec`` expects; bad input raises
        :class:`InputError` with what to do."""

    def accepts(self, path: str | Path) -> bool:
        return Path(path).suffix.lower() in self.extensions

    def preview(self, path: str | Path, settings: AppSettings) -> np.ndarray | None:
        """An (H, W) or (H, W, 3) uint8 picture of the upload as loaded, or None."""
        return None

    def window_seconds(self, spec: ModelSpec) -> float | None:
        """Length of one scoring window in seconds (None: inputs are seen whole)."""
        return None

    def segment_phrase(self, positive_label: str) -> str:
        """What a flagged stretch of windows holds, for the headline ("synthetic speech at
        7.0-14.5 s")."""
        return f"'{positive_label}'"

    def window_names(self, spec: ModelSpec, prepared: PreparedInput) -> list[str]:
        """A label per window ("3: 1.0-3.0 s"), empty when the input is one window."""
        length = self.window_seconds(spec)
        if prepared.starts_s is None or len(prepared.starts_s) < 2 or length is None:
            return []
        scored = prepared.scored_mask
        return [f"{i + 1}: {s:.1f}-{s + length:.1f} s"
                + ("" if scored[i] else f" ({prepared.unscored_label or 'not scored'})")
                for i, s in enumerate(prepared.starts_s)]

    # --- the model on this modality's inputs ----------------------------------------------------
    def predict(self, model: Any, prepared: PreparedInput) -> FloatArray:
        """Probabilities (n, K) of every window of ``prepared`` (default: the model on its
        planes)."""
        return model.predict(prepared.planes)

    def reference(self, prepared: PreparedInput, window: int) -> dict[str, Any]:
        """What explaining window ``window`` needs besides its plane (kept in the explanation's
        ``extras``, so its scorecard sees the same model); default: nothing."""
        return {}

    def explained_model(self, model: Any, display: FloatArray, extras: Mapping[str, Any]) -> Any:
        """The function of the plane ``display`` that the methods explain (a
        :class:`~xai_platform.models.handle.ModelHandle`); ``extras``: the explanation's, holding
        :meth:`reference`. Default: the model itself, which takes the planes."""
        return model

    # --- perturbations --------------------------------------------------------------------------
    def masked_value(self, x: FloatArray) -> FloatArray:
        """The plane that replaces removed features, (H, W) float32: a heavily blurred copy
        (sigma = 1/8 of the size), which removes local structure but keeps the brightness."""
        import cv2

        sigma = max(x.shape) / 8.0
        return cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma,
                                borderType=cv2.BORDER_REFLECT)

    def features(self, x: FloatArray, params: Mapping[str, Any]) -> IntArray:
        """Perturbation features: labels (H, W) int64, 0..M-1 (default: SLIC superpixels)."""
        from ..explainers.perturbation import superpixels

        return superpixels(x, n_segments=int(params["n_segments"]),
                           compactness=float(params["compactness"]))

    def params(self) -> tuple[Param, ...]:
        """The feature parameters, each marked as this modality's."""
        from dataclasses import replace

        return tuple(replace(p, modalities=(self.name,)) for p in self.feature_params)

    # --- display --------------------------------------------------------------------------------
    def axes(self, spec: ModelSpec, prepared: PreparedInput, window: int) -> Any:
        """Display axes of one window for the figure (None: plain pixels)."""
        return None

    def input_title(self, expl: Explanation) -> str:
        return "input"

    def imshow_kwargs(self, expl: Explanation) -> dict[str, Any]:
        """How a plane of this modality is placed on a matplotlib axis (origin, extent...)."""
        return {}

    def draw_input(self, ax: Axes, expl: Explanation) -> None:
        ax.imshow(expl.display, cmap="gray", vmin=0.0, vmax=1.0, **self.imshow_kwargs(expl))
        self.label_axes(ax, expl, panel="input")

    def label_axes(self, ax: Axes, expl: Explanation, *, panel: str) -> None:
        """Ticks and labels of one panel: ``input``, ``heatmap`` or ``overlay`` (drawn over
        the input panel's)."""
        ax.set_xticks([])
        ax.set_yticks([])

    def figure_key(self, expl: Explanation) -> tuple | None:
        """A key for what :meth:`draw_input`, :meth:`label_axes`, :meth:`input_title` and
        :meth:`imshow_kwargs` draw of ``expl``: the input panel and every panel's frame, ticks
        and labels. Figures of explanations with equal keys draw those parts alike, so the
        cards of one input share them (:func:`~xai_platform.visualization.figure.to_rgb`).
        None: nothing is shared. That is the default for a modality that overrides any of the
        four without saying here what they depend on."""
        drawing = ("draw_input", "label_axes", "input_title", "imshow_kwargs")
        if any(getattr(type(self), name) is not getattr(Modality, name) for name in drawing):
            return None
        return (type(self).__qualname__, array_key(expl.display))

    def record(self, expl: Explanation) -> dict[str, Any]:
        """Modality-specific fields of the explanation record (default: the :meth:`focus`
        found, if any)."""
        focus = expl.extras.get("focus")
        return {"focus": dict(focus)} if focus else {}

    def focus(self, prepared: PreparedInput, heatmap: FloatArray, *, signed: bool,
              window: int = 0) -> tuple[dict[str, Any], np.ndarray] | None:
        """Where the map of window ``window`` looks relative to what this upload holds (X-ray:
        the lung fields; audio: the speech), found on the upload itself: (a dict with the
        shares, ``flagged``, ``message`` (a warning, "" when not flagged) and ``summary`` (one
        line for the page), the region mask (H, W) bool), or None where the modality finds no
        such region."""
        return None

    @property
    def has_readout(self) -> bool:
        """Whether :meth:`readout` gives extra views (the UI shows their panels only then)."""
        return type(self).readout is not Modality.readout

    def readout(self, model: Any, expl: Explanation, prepared: PreparedInput,
                base: Path) -> Readout | None:
        """Extra views of an explanation (files written as ``<base>_<what>.<ext>``), or None."""
        return None

    # --- evaluation -----------------------------------------------------------------------------
    def region_mask(self, path: Path, spec: ModelSpec, settings: AppSettings) -> np.ndarray:
        """A ground-truth region file (an image, or ``.npy`` over the model's plane) on the
        model's plane: (H, W) bool, through the same crop and resize as the input it belongs
        to (a pixel is in where at least half of it was, or, for a region smaller than one
        model pixel, any of it)."""
        from ..preprocessing.image import load_image, to_model_plane

        if not path.is_file():
            raise InputError(f"{path}: mask file not found (listed in metadata.csv).")
        if path.suffix.lower() == ".npy":
            pixels = np.load(path, allow_pickle=False).astype(np.float32)
            pixels = pixels / max(float(pixels.max()), 1e-12)
        else:
            pixels = load_image(path, max_pixels=settings.max_image_pixels).pixels
        plane = to_model_plane(pixels, spec.input_shape)
        mask = plane > 0.5
        return mask if mask.any() else plane > 0  # a lesion smaller than a model pixel survives

    def sample_plane(self, spec: ModelSpec, rng: np.random.Generator) -> FloatArray:
        """A structured feature plane for benchmarks: (H, W) float32 (default: a chest-like
        grayscale image in [0, 1])."""
        h, w = spec.input_shape
        yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
        lungs = np.exp(-(((xx - 0.3) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2)) + \
            np.exp(-(((xx - 0.7) / 0.15) ** 2 + ((yy - 0.5) / 0.3) ** 2))
        plane = np.clip(0.75 - 0.45 * lungs + 0.03 * rng.standard_normal((h, w)), 0, 1)
        return plane.astype(np.float32)

    def to_unit(self, x: FloatArray) -> FloatArray:
        """A plane mapped to [0, 1] for libraries that expect images (LIME's segmenters)."""
        return x

    def from_unit(self, x: FloatArray, reference: FloatArray) -> FloatArray:
        """Inverse of :meth:`to_unit` for planes made from ``reference``."""
        return x


_MODALITIES: Registry[Modality] = Registry("modality", key="modality")


def register_modality(cls: type[Modality]) -> type[Modality]:
    """Class decorator: register one instance of ``cls`` under ``cls.name``. A duplicate
    raises."""
    _MODALITIES.register(cls.name, cls())
    return cls


unregister_modality = _MODALITIES.unregister
all_modalities = _MODALITIES.all
modality_names = _MODALITIES.names


def get_modality(name: str, *, source: str | None = None) -> Modality:
    """The registered modality ``name``; an unknown one raises :class:`ConfigError`."""
    return _MODALITIES.get(name, source=source)
