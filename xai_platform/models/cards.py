"""Model cards: what training wrote beside a weights file, as one typed `ModelCard`.

``<weights stem>.card.json`` holds the machine-readable part (`ModelCard.to_dict`: model, data,
splits, training run, metrics per split, calibration, reliability figure, robustness,
explanations, mask supervision, weights file); ``<weights stem>.card.md`` the same for people.
Both trainers (``training/``) write this one layout and the app reads it; `ModelCard.from_dict`
also reads the layouts written before it (``val`` for ``validation``, ``model`` as a string,
a top-level ``command``, ``reliability_diagram`` / ``reliability_figure``), so an old card
still loads. The manager reads the calibration (temperature, decision threshold).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..explanation import ScoreShares
from .handle import Calibration

_WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".pt", ".pth", ".h5", ".safetensors")

T = TypeVar("T")
log = logging.getLogger(__name__)


class CardError(ValueError):
    """A model card that does not fit the `ModelCard` layout."""


# --------------------------------------------------------------------------------------------
# The layout


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """The config entry the weights were trained for."""

    id: str
    name: str
    framework: str
    modality: str | None = None
    architecture: str | None = None
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    positive_label: str | None = None
    output: str | None = None
    target_layer: str | None = None
    input: Mapping[str, Any] = field(default_factory=dict)  # the config's input spec
    description: str | None = None
    notice: str | None = None


@dataclass(frozen=True, kw_only=True)
class DataInfo:
    """Where the training data came from; ``details`` is what its builder recorded."""

    kind: str
    root: str
    command: str | None = None  # the command that built the data set
    split_rule: str | None = None
    generators_trained_on: tuple[str, ...] | None = None  # audio: the fakes seen in training
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class SplitInfo:
    """One data split: ``n`` items (clips or images), ``n_positive`` of the positive class."""

    n: int
    n_positive: int
    windows: int | None = None  # audio: the model's inputs (several per clip)
    languages: tuple[str, ...] | None = None
    generators: tuple[str, ...] | None = None


@dataclass(frozen=True, kw_only=True)
class SplitMetrics:
    """Every figure for one split, at the card's calibration (rates at ``threshold``)."""

    n: int
    n_positive: int
    roc_auc: float
    eer: float
    sensitivity_at_90_specificity: float
    false_alarm_rate: float
    miss_rate: float
    accuracy: float
    threshold: float
    reliability: Mapping[str, Any] = field(default_factory=dict)  # {bins: [...], ece}
    by_language: Mapping[str, Any] | None = None
    by_generator: Mapping[str, Any] | None = None
    #: what the calibration's "cannot tell" band does on this split (coverage, how often each
    #: verdict is wrong; per source and per generator), where the card has a band
    band: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class TrainingInfo:
    """How the weights were trained: the command, its settings, the clock and the history."""

    command: str
    seed: int
    epochs: int
    epochs_run: int
    best_epoch: int
    batch_size: int
    lr: float
    threads: int | None = None
    time_limit_s: float | None = None
    weight_decay: float | None = None
    best_validation_auc: float | None = None
    stopped_by_time_limit: bool | None = None
    augmentation: str | None = None
    init: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # modality-specific settings
    warmup: Mapping[str, Any] | None = None  # a curriculum run before training
    seconds: float | None = None  # training seconds (summed over a resumed run's sessions)
    seconds_per_epoch: float | None = None
    other_seconds: float | None = None  # data loading and evaluation
    total_seconds: float | None = None
    history: tuple[Mapping[str, Any], ...] = ()  # per epoch: {epoch, loss, val}
    environment: Mapping[str, str] | None = None  # package versions
    created: str | None = None


@dataclass(frozen=True, kw_only=True)
class CardCalibration:
    """Temperature and decision threshold, fitted on ``fitted_on``."""

    temperature: float = 1.0
    threshold: float | None = None
    fitted_on: str = "validation"
    method: str | None = None
    verdict_rule: str | None = None
    #: the "cannot tell" band on the positive class's calibrated probability, where fitted:
    #: {"below": p, "above": p, "target": share, "fitted_on": "...", "method": "..."}
    band: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class FamiliarityInfo:
    """The description of the training distribution that withholds verdicts on unfamiliar
    inputs (:mod:`xai_platform.familiarity`): the file, the layer whose pooled activations it
    describes, the limit and how it was set, and the measured share of inputs withheld per
    split and per kind of changed input (``withheld``: name -> rate in [0, 1])."""

    file: str
    sha256: str | None = None
    layer: str | None = None
    method: str = "mahalanobis-ppca"
    views: tuple[str, ...] = ("features",)
    components: int | None = None
    dims: int | None = None
    quantile: float = 0.99
    fitted_on: str = "train"
    limit_from: str = "validation"
    command: str | None = None
    withheld: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ReliabilityFigure:
    """The reliability diagram (before and after calibration) drawn for one split."""

    file: str
    split: str
    uncalibrated_ece: float | None = None


@dataclass(frozen=True, kw_only=True)
class RobustnessCheck:
    """Figures for a split whose inputs were all degraded the way ``condition`` says."""

    condition: str
    metrics: SplitMetrics


@dataclass(frozen=True, kw_only=True)
class ExplanationSummary:
    """Where explanations point, summarised over ``n_clips`` test inputs, per method."""

    n_clips: int
    target: str
    window: str | None = None
    methods: Mapping[str, Any] = field(default_factory=dict)  # method -> label -> summary


@dataclass(frozen=True, kw_only=True)
class MaskSupervisionInfo:
    """Training-only supervision of layers by ground-truth masks (explanations there are
    trained towards the regions, so their localisation scores are not a fair test)."""

    layers: tuple[str, ...]
    weight: float
    what: str = ""


@dataclass(frozen=True, kw_only=True)
class WeightsInfo:
    """The weights file as shipped."""

    file: str
    bytes: int
    sha256: str | None = None
    dtype: str | None = None


@dataclass(frozen=True, kw_only=True)
class ModelCard:
    """The machine-readable model card: one layout for every modality."""

    model: ModelInfo
    data: DataInfo
    splits: Mapping[str, SplitInfo]
    training: TrainingInfo
    metrics: Mapping[str, SplitMetrics]
    calibration: CardCalibration
    weights: WeightsInfo
    reliability: ReliabilityFigure | None = None
    robustness: Mapping[str, RobustnessCheck] = field(default_factory=dict)
    explanations: ExplanationSummary | None = None
    mask_supervision: MaskSupervisionInfo | None = None
    familiarity: FamiliarityInfo | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, strict: bool = False) -> ModelCard:
        """The card from its JSON form, new layout or old. ``strict``: refuse unknown keys."""
        if not isinstance(d, Mapping):
            raise CardError(f"a model card is a JSON object, not {type(d).__name__}.")
        d = _upgrade(d)
        return _build(cls, d, "card", strict, {
            "model": lambda v, w: _build(ModelInfo, v, w, strict, {
                "labels": _tuple, "arch_args": _mapping, "input": _mapping}),
            "data": lambda v, w: _build(DataInfo, v, w, strict, {
                "generators_trained_on": _tuple, "details": _mapping}),
            "splits": lambda v, w: _each(v, w, lambda s, ws: _build(SplitInfo, s, ws, strict, {
                "languages": _tuple, "generators": _tuple})),
            "training": lambda v, w: _build(TrainingInfo, v, w, strict, {
                "history": _tuple, "options": _mapping}),
            "metrics": lambda v, w: _each(v, w, lambda s, ws: _metrics(s, ws, strict)),
            "calibration": lambda v, w: _build(CardCalibration, v, w, strict, {}),
            "weights": lambda v, w: _build(WeightsInfo, v, w, strict, {}),
            "reliability": lambda v, w: _build(ReliabilityFigure, v, w, strict, {}),
            "robustness": lambda v, w: _each(v, w, lambda s, ws: _build(
                RobustnessCheck, s, ws, strict,
                {"metrics": lambda m, wm: _metrics(m, wm, strict)})),
            "explanations": lambda v, w: _build(ExplanationSummary, v, w, strict,
                                                {"methods": _mapping}),
            "mask_supervision": lambda v, w: _build(MaskSupervisionInfo, v, w, strict,
                                                    {"layers": _tuple}),
            "familiarity": lambda v, w: _build(FamiliarityInfo, v, w, strict,
                                               {"withheld": _mapping, "views": _tuple}),
        })

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (every key present; None where a part does not apply)."""
        return _plain(self)


# --------------------------------------------------------------------------------------------
# Reading and writing


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _tuple(value: Any, where: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise CardError(f"{where}: expected a list, got {type(value).__name__}.")
    return tuple(value)


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CardError(f"{where}: expected an object, got {type(value).__name__}.")
    return dict(value)


def _each(value: Any, where: str, build: Callable[[Any, str], T]) -> dict[str, T]:
    return {k: build(v, f"{where}.{k}") for k, v in _mapping(value, where).items()}


def _metrics(value: Any, where: str, strict: bool) -> SplitMetrics:
    return _build(SplitMetrics, value, where, strict, {
        "reliability": _mapping, "by_language": _mapping, "by_generator": _mapping})


def _build(cls: type[T], value: Any, where: str, strict: bool,
           nested: Mapping[str, Callable[[Any, str], Any]]) -> T:
    """``cls`` from a JSON object: nested parts converted, None kept for an optional part."""
    d = _mapping(value, where)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - names)
    if strict and unknown:
        raise CardError(f"{where}: unknown key(s) {unknown}; the layout has {sorted(names)}. "
                        "Rename them or move them under a `details`/`options` object.")
    kwargs = {k: v for k, v in d.items() if k in names}
    for key, convert in nested.items():
        if kwargs.get(key) is not None:
            kwargs[key] = convert(kwargs[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise CardError(f"{where}: {exc}; the card is incomplete (retrain, or fix the JSON "
                        "by hand).") from None


_OLD_MODEL_KEYS = ("name", "framework", "architecture", "arch_args", "input", "labels",
                   "positive_label", "output", "target_layer", "description", "notice")


def _renamed_split(name: str) -> str:
    return "validation" if name == "val" else name


def _upgrade(old: Mapping[str, Any]) -> dict[str, Any]:
    """The new layout from an old card (the X-ray or the audio trainer's first layouts); a new
    card passes unchanged."""
    d = dict(old)
    if isinstance(d.get("model"), str):  # X-ray: the model's fields at the top level
        model = {"id": d.pop("model")}
        model.update({k: d.pop(k) for k in _OLD_MODEL_KEYS if k in d})
        if model.get("arch_args") is None:
            model["arch_args"] = {}
        model.setdefault("modality", "xray")
        d["model"] = model
    elif isinstance(d.get("model"), Mapping) and "modality" not in d["model"]:
        if "sample_rate" in (d["model"].get("input") or {}):  # the audio trainer's layout
            d["model"] = {**d["model"], "modality": "audio"}

    training = dict(d.get("training") or {})
    for key in ("command", "environment", "created", "total_seconds", "warmup"):
        if key in d:
            training.setdefault(key, d.pop(key))
    for before, after in (("train_seconds", "seconds"), ("best_val_auc", "best_validation_auc")):
        if before in training:
            training.setdefault(after, training.pop(before))
    if isinstance(training.get("augment"), bool):
        training.setdefault("augmentation", "online: shifts, flips, gamma, contrast, noise "
                            "(masks move with the image)" if training["augment"] else "none")
        training.pop("augment")
    if isinstance(training.get("warmup"), Mapping) and "best_val_auc" in training["warmup"]:
        warmup = dict(training["warmup"])
        warmup["best_validation_auc"] = warmup.pop("best_val_auc")
        training["warmup"] = warmup
    options = dict(training.get("options") or {})
    for key in ("cap_per_language", "match_speech_duration_s"):
        if key in training:
            options[key] = training.pop(key)
    if options or "options" in training:
        training["options"] = options
    if training:
        d["training"] = training

    data = dict(d.get("data") or {})
    if data and "details" not in data:  # old: everything the builder recorded, flat
        details = {k: v for k, v in data.items()
                   if k not in ("kind", "root", "command", "splits")}
        corpus = dict(details.get("corpus") or {})
        command = data.get("command") or corpus.pop("command", None)
        if corpus:
            details["corpus"] = corpus
        new_data: dict[str, Any] = {"kind": data.get("kind"), "root": data.get("root"),
                                    "command": command, "details": details}
        old_splits = d.get("splits") or {}
        if isinstance(old_splits, Mapping) and "rule" in old_splits:  # audio
            new_data["split_rule"] = old_splits["rule"]
            d["splits"] = {
                s: {"n": v["real"] + v["fake"], "n_positive": v["fake"],
                    "windows": v.get("windows"), "languages": v.get("languages"),
                    "generators": v.get("generators")}
                for s, v in (data.get("splits") or {}).items()}
        if "generators_trained_on" in d:
            new_data["generators_trained_on"] = d.pop("generators_trained_on")
        d["data"] = new_data
    if isinstance(d.get("splits"), Mapping):
        d["splits"] = {_renamed_split(k): v for k, v in d["splits"].items()}

    metrics = dict(d.get("metrics") or {})
    ece = metrics.pop("test_uncalibrated_ece", None)
    degraded = metrics.pop("robustness", None)
    if metrics:
        d["metrics"] = {_renamed_split(k): v for k, v in metrics.items()}
    if degraded is not None or "robustness_conditions" in d:
        conditions = d.pop("robustness_conditions", None) or {}
        d["robustness"] = {k: {"condition": conditions.get(k, ""), "metrics": v}
                           for k, v in (degraded or {}).items()}
    if "reliability_diagram" in d:  # audio: drawn for the test split
        d["reliability"] = {"file": d.pop("reliability_diagram"), "split": "test",
                            "uncalibrated_ece": ece}
    elif "reliability_figure" in d:  # X-ray: drawn for the validation split
        d["reliability"] = {"file": d.pop("reliability_figure"), "split": "validation",
                            "uncalibrated_ece": ece}

    if isinstance(d.get("calibration"), Mapping):
        cal = dict(d["calibration"])
        if "fitted_on" in cal:
            cal["fitted_on"] = _renamed_split(cal["fitted_on"])
        d["calibration"] = cal

    if "explanations_methods" in d:
        methods = d.pop("explanations_methods")
        old_bands = d.get("explanations") or {}
        d["explanations"] = None if not old_bands else {
            "n_clips": old_bands.get("n_clips"), "target": old_bands.get("target"),
            "window": old_bands.get("window"),
            "methods": {m: old_bands[m] for m in methods if m in old_bands}}
    return d


def card_stem(weights: Path) -> Path:
    """``weights`` without its weights suffix (``a/b.weights.h5`` -> ``a/b``)."""
    name = weights.name
    for suffix in _WEIGHT_SUFFIXES:
        if name.endswith(suffix):
            return weights.with_name(name[: -len(suffix)])
    return weights.with_name(weights.stem)


def card_path(weights: Path, *, kind: str = "json") -> Path:
    """The card beside ``weights``: ``<stem>.card.json`` (or ``.card.md`` for kind="md")."""
    stem = card_stem(weights)
    return stem.with_name(f"{stem.name}.card.{kind}")


def read_card(weights: Path | None) -> ModelCard | None:
    """The JSON model card beside ``weights``, or None when there is none (or it is unreadable
    or malformed, which is logged: a card is documentation, never a reason not to load a
    model)."""
    if weights is None:
        return None
    path = card_path(weights)
    try:
        return ModelCard.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # CardError and JSONDecodeError are ValueErrors
        log.warning("%s is not a complete model card (%s); only its calibration and "
                    "familiarity blocks, if it has them, are applied. Fix the file, or rewrite an old one with "
                    "`python scripts/migrate_cards.py`.", path, exc)
        return None


def calibration_from_card(card: ModelCard | None) -> Calibration:
    """The calibration the app applies: the card's temperature and threshold (identity and
    no threshold without a card, or with unusable values)."""
    if card is None:
        return Calibration()
    calibration = _calibration(card.calibration.temperature, card.calibration.threshold,
                               card.calibration.band)
    test = card.metrics.get("test")
    if calibration.band is None or test is None or not test.band:
        return calibration
    return dataclasses.replace(calibration, test_fakes=_shares(
        test.band.get("fake_scores"), "metrics.test.band.fake_scores", above=False))


def _calibration(temperature: Any, threshold: Any, band: Any = None) -> Calibration:
    try:
        temperature = float(temperature)
        threshold = None if threshold is None else float(threshold)
    except (TypeError, ValueError):
        return Calibration()
    band_edges = _band(band)
    unseen = None if band_edges is None else _shares(
        (band.get("out_of_source") or {}).get("real_scores"),
        "calibration.band.out_of_source.real_scores", above=True)
    return Calibration(temperature=temperature if temperature > 0 else 1.0, threshold=threshold,
                       band=band_edges, unseen_reals=unseen,
                       short_band=None if band_edges is None else _short_band(band, band_edges))


def band_calibration(band: Any) -> Calibration:
    """A card's ``calibration.band`` block read as the app reads it: the pooled band and the
    short-input band where one was adopted (:meth:`Calibration.band_for` picks between them);
    no band where the block is unusable. For code that applies the app's rule outside it (the
    audio trainer's test figures)."""
    return _calibration(1.0, None, band)


def _short_band(band: Mapping[str, Any], pooled: tuple[float, float]
                ) -> tuple[float, float, float] | None:
    """(seconds, below, above) from a band's adopted ``short_speech`` block; None where there
    is none or it is unusable (logged): it must hold the pooled band, never narrow it."""
    short = band.get("short_speech")
    if not isinstance(short, Mapping) or not short.get("adopted"):
        return None
    try:
        seconds, below, above = (float(short[k]) for k in ("below_s", "below", "above"))
    except (KeyError, TypeError, ValueError):
        log.warning("calibration.band.short_speech %r is not {below_s, below, above}: ignored",
                    short)
        return None
    if not (seconds > 0 and 0.0 <= below <= pooled[0] and pooled[1] <= above <= 1.0):
        log.warning("calibration.band.short_speech needs below_s > 0 and a band holding the "
                    "pooled one, got %r: ignored", short)
        return None
    return seconds, below, above


def _band(band: Any) -> tuple[float, float] | None:
    """(below, above) from a card's band block; None (no band) where it is missing or unusable
    (logged: the verdict then follows the threshold alone)."""
    if band is None:
        return None
    try:
        below, above = float(band["below"]), float(band["above"])
    except (KeyError, TypeError, ValueError):
        log.warning("calibration.band %r is not {below, above}: ignored", band)
        return None
    if not 0.0 <= below <= above <= 1.0:
        log.warning("calibration.band needs 0 <= below <= above <= 1, got %r: ignored", band)
        return None
    return below, above


def _shares(raw: Any, where: str, *, above: bool) -> ScoreShares | None:
    """{group: [p, ...]} from a card as :class:`ScoreShares`; None where absent or unusable
    (logged: the verdict then leaves out how often such clips score as high or as low)."""
    if raw is None:
        return None
    try:
        scores = {str(group): tuple(sorted(float(v) for v in values))
                  for group, values in raw.items()}
    except (AttributeError, TypeError, ValueError):
        log.warning("%s is not {group: [p, ...]}: ignored", where)
        return None
    if not scores or not all(v and 0.0 <= v[0] and v[-1] <= 1.0 for v in scores.values()):
        log.warning("%s needs probabilities in [0, 1] for every group: ignored", where)
        return None
    return ScoreShares(scores, above=above)


def read_serving(weights: Path | None) -> tuple[Calibration, FamiliarityInfo | None]:
    """What the app applies from the card beside ``weights``, read once: its calibration and
    its ``familiarity`` block. For a file that is incomplete as a model card (a user's own
    model with hand-written ``{"calibration": {"temperature": ..., "threshold": ...},
    "familiarity": {"file": ..., "sha256": ...}}``), those blocks alone; identity calibration
    and no familiarity where a block is missing or malformed."""
    card = read_card(weights)
    if card is not None or weights is None:
        return calibration_from_card(card), None if card is None else card.familiarity
    try:
        raw = json.loads(card_path(weights).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Calibration(), None
    if not isinstance(raw, Mapping):
        return Calibration(), None
    try:
        cal = raw["calibration"]
        calibration = _calibration(cal.get("temperature", 1.0), cal.get("threshold"),
                                   cal.get("band"))
    except (KeyError, AttributeError, TypeError):
        calibration = Calibration()
    try:
        familiarity = _build(FamiliarityInfo, raw["familiarity"], "familiarity", False,
                             {"withheld": _mapping, "views": _tuple})
    except (KeyError, ValueError, TypeError):
        familiarity = None
    return calibration, familiarity


def read_calibration(weights: Path | None) -> Calibration:
    """The calibration beside ``weights`` (:func:`read_serving`)."""
    return read_serving(weights)[0]
