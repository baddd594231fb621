"""Model and app configuration: YAML files -> frozen dataclasses, validated at start-up.

A model is a config entry (``config/*.yaml``, plus any ``--config PATH`` a user adds)::

    models:
      - id: audio-cnn
        name: Custom CNN (log-mel)
        framework: torch            # torch | keras
        modality: audio             # audio | xray
        architecture: custom_cnn    # a registered builder, or keras_file for a whole .keras model
        weights: audio/audio-cnn.pt # relative to weights/, or absolute; null = no trained weights
        labels: [real, fake]
        output: sigmoid             # probabilities | logits | sigmoid | multilabel
        target_layer: features.3    # dotted module name / Keras layer name / outer/inner
        input: {sample_rate: 16000, duration: 2.0, n_mels: 64, ...}

Structure, types and allowed values are checked here without importing any framework; that a
``target_layer`` exists and is convolutional is checked when the architecture is built
(:func:`xai_platform.models.manager.ModelManager.verify`). Every problem raises one
:class:`~xai_platform.errors.ConfigError` naming the file, the key and the fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = ROOT / "config"
DEFAULT_WEIGHTS_DIR = ROOT / "weights"

Framework = Literal["torch", "keras"]
Modality = Literal["audio", "xray"]
OutputKind = Literal["probabilities", "logits", "sigmoid", "multilabel"]

FRAMEWORKS = ("torch", "keras")
MODALITIES = ("audio", "xray")
OUTPUT_KINDS = ("probabilities", "logits", "sigmoid", "multilabel")
IMAGE_NORMALIZATIONS = ("imagenet", "xrv", "unit", "minus1_1")
AUDIO_NORMALIZATIONS = ("db", "none")
KERAS_FILE = "keras_file"
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


@dataclass(frozen=True)
class ImageInput:
    """Input of an image (X-ray) model: a (size, size) grayscale plane in [0, 1].

    ``channels`` is what the network's first layer takes; the grayscale plane is repeated to
    fill them, and ``normalize`` maps [0, 1] to the range the network was trained on.
    """

    size: tuple[int, int] = (224, 224)
    channels: int = 1
    normalize: str = "unit"

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the feature plane the model sees."""
        return self.size


@dataclass(frozen=True)
class AudioInput:
    """Input of an audio model: a log-mel spectrogram in dB, (n_mels, frames).

    One definition for training and inference; see :func:`xai_platform.preprocessing.audio.log_mel`.
    """

    sample_rate: int = 16000
    duration: float = 2.0
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int | None = None
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float | None = None
    top_db: float = 80.0
    window_hop: float | None = None
    channels: int = 1
    normalize: str = "db"

    @property
    def n_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def n_frames(self) -> int:
        # librosa's centred STFT: one frame per hop plus one.
        return 1 + self.n_samples // self.hop_length

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) = (n_mels, frames) of the feature plane the model sees."""
        return (self.n_mels, self.n_frames)

    @property
    def f_max(self) -> float:
        return float(self.fmax) if self.fmax is not None else self.sample_rate / 2.0

    @property
    def hop_seconds(self) -> float:
        """Step between scoring windows on long recordings (default: half a window)."""
        return float(self.window_hop) if self.window_hop is not None else self.duration / 2.0


@dataclass(frozen=True)
class ModelSpec:
    """One configured model."""

    id: str
    name: str
    framework: str
    modality: str
    architecture: str
    weights: Path | None
    labels: tuple[str, ...]
    input: ImageInput | AudioInput
    output: str
    target_layer: str | None = None
    description: str = ""
    notice: str = ""
    train_command: str = ""
    positive_label: str | None = None
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def num_outputs(self) -> int:
        """Width of the network's last layer (one logit for ``sigmoid``)."""
        return 1 if self.output == "sigmoid" else len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.input.shape

    @property
    def positive_index(self) -> int | None:
        """Index of the 'positive' class (fake voice, lesion) for binary models."""
        if self.positive_label is not None:
            return self.labels.index(self.positive_label)
        return 1 if len(self.labels) == 2 and self.output != "multilabel" else None


@dataclass(frozen=True)
class AppSettings:
    """App-wide defaults (``app:`` section of a config file)."""

    max_audio_seconds: float = 600.0
    max_image_pixels: int = 60_000_000
    max_upload_mb: float = 200.0
    model_cache_size: int = 3
    concurrency: int = 2
    batch_size: int = 32
    device: str = "auto"


@dataclass(frozen=True)
class PlatformConfig:
    """Everything the config files declare."""

    models: tuple[ModelSpec, ...]
    app: AppSettings = AppSettings()
    sources: tuple[str, ...] = ()

    def model(self, model_id: str) -> ModelSpec:
        for spec in self.models:
            if spec.id == model_id:
                return spec
        known = ", ".join(s.id for s in self.models) or "none"
        raise ConfigError(f"unknown model '{model_id}'.",
                          fix=f"use one of: {known} (see `python -m xai_platform models`).")


# --------------------------------------------------------------------------------------------
# Validation helpers


def _type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(_type_name(k) for k in kind)
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false",
            list: "a list", dict: "a mapping", type(None): "null"}.get(kind, str(kind))


def _check_type(value: Any, kind: Any, *, source: str, key: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"expected {_type_name(kind)}, got {value!r}.", source=source, key=key,
                          fix=f"write {_type_name(kind)}.")
    if not isinstance(value, kinds):
        raise ConfigError(f"expected {_type_name(kind)}, got {type(value).__name__} {value!r}.",
                          source=source, key=key, fix=f"write {_type_name(kind)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{value!r} is not a finite number.", source=source, key=key,
                          fix="write a finite number.")
    return value


def _check_choice(value: str, choices: Iterable[str], *, source: str, key: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"'{value}' is not allowed.", source=source, key=key,
                          fix=f"use one of: {', '.join(choices)}.")
    return value


def _check_keys(entry: Mapping[str, Any], allowed: Iterable[str], *, source: str,
                prefix: str = "") -> None:
    allowed = tuple(allowed)
    for key in entry:
        if key not in allowed:
            close = [a for a in allowed if a.startswith(str(key)[:3])]
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key{hint}.", source=source, key=f"{prefix}{key}",
                              fix=f"remove it or use one of: {', '.join(allowed)}.")


def _positive(value: float, *, source: str, key: str, minimum: float = 0.0,
              strict: bool = True) -> None:
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ConfigError(f"must be {op} {minimum}, got {value}.", source=source, key=key,
                          fix=f"set a value {op} {minimum}.")


_AUDIO_TYPES: dict[str, Any] = {
    "sample_rate": int, "duration": float, "n_fft": int, "hop_length": int,
    "win_length": (int, type(None)), "n_mels": int, "fmin": float,
    "fmax": (float, type(None)), "top_db": float, "window_hop": (float, type(None)),
    "channels": int, "normalize": str,
}
_IMAGE_TYPES: dict[str, Any] = {"size": (int, list), "channels": int, "normalize": str}


def _parse_audio_input(raw: Mapping[str, Any], *, source: str) -> AudioInput:
    _check_keys(raw, _AUDIO_TYPES, source=source, prefix="input.")
    values = {k: _check_type(v, _AUDIO_TYPES[k], source=source, key=f"input.{k}")
              for k, v in raw.items()}
    spec = AudioInput(**values)
    for key in ("sample_rate", "duration", "n_fft", "hop_length", "n_mels", "top_db"):
        _positive(getattr(spec, key), source=source, key=f"input.{key}")
    _positive(spec.fmin, source=source, key="input.fmin", strict=False)
    if spec.f_max <= spec.fmin or spec.f_max > spec.sample_rate / 2:
        raise ConfigError(f"fmax {spec.f_max} must lie in (fmin, sample_rate / 2].", source=source,
                          key="input.fmax", fix=f"use at most {spec.sample_rate / 2}.")
    if spec.hop_length > spec.n_fft:
        raise ConfigError("hop_length is larger than n_fft, so samples would be skipped.",
                          source=source, key="input.hop_length", fix="use hop_length <= n_fft.")
    if spec.window_hop is not None:
        _positive(spec.window_hop, source=source, key="input.window_hop")
    if spec.channels not in (1, 3):
        raise ConfigError("channels must be 1 or 3.", source=source, key="input.channels",
                          fix="use 1, or 3 for a network with an RGB stem.")
    _check_choice(spec.normalize, AUDIO_NORMALIZATIONS, source=source, key="input.normalize")
    return spec


def _parse_image_input(raw: Mapping[str, Any], *, source: str) -> ImageInput:
    _check_keys(raw, _IMAGE_TYPES, source=source, prefix="input.")
    values = {k: _check_type(v, _IMAGE_TYPES[k], source=source, key=f"input.{k}")
              for k, v in raw.items()}
    size = values.get("size", 224)
    if isinstance(size, int):
        size = (size, size)
    elif len(size) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
        raise ConfigError(f"expected an integer or [height, width], got {size!r}.", source=source,
                          key="input.size", fix="write e.g. 224 or [224, 224].")
    for s in size:
        _positive(s, source=source, key="input.size", minimum=8, strict=False)
    values["size"] = tuple(size)
    spec = ImageInput(**values)
    if spec.channels not in (1, 3):
        raise ConfigError("channels must be 1 or 3.", source=source, key="input.channels",
                          fix="use 1 (grayscale stem) or 3 (the plane is repeated).")
    _check_choice(spec.normalize, IMAGE_NORMALIZATIONS, source=source, key="input.normalize")
    return spec


_MODEL_TYPES: dict[str, Any] = {
    "id": str, "name": str, "framework": str, "modality": str, "architecture": str,
    "weights": (str, type(None)), "labels": list, "input": dict, "output": str,
    "target_layer": (str, type(None)), "description": str, "notice": str,
    "train_command": str, "positive_label": (str, type(None)), "arch_args": dict,
}
_REQUIRED = ("id", "name", "framework", "modality", "architecture", "weights", "labels",
             "input", "output")


def resolve_weights(value: str | None, *, weights_dir: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (weights_dir / path)


def parse_model(entry: Any, *, source: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> ModelSpec:
    """Validate one ``models:`` entry and build its :class:`ModelSpec`."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"a model entry must be a mapping, got {type(entry).__name__}.",
                          source=source, fix="write `- id: ...` entries under `models:`.")
    where = f"{source} (model '{entry.get('id', '?')}')"
    _check_keys(entry, _MODEL_TYPES, source=where)
    for key in _REQUIRED:
        if key not in entry:
            raise ConfigError("is required but missing.", source=where, key=key,
                              fix=f"add `{key}:` to the entry (see SETUP.md, 'Config format').")
    v = {k: _check_type(val, _MODEL_TYPES[k], source=where, key=k) for k, val in entry.items()}
    if not _ID_PATTERN.match(v["id"]):
        raise ConfigError(f"'{v['id']}' is not a valid id.", source=where, key="id",
                          fix="use lowercase letters, digits, '-', '_' or '.'.")
    _check_choice(v["framework"], FRAMEWORKS, source=where, key="framework")
    _check_choice(v["modality"], MODALITIES, source=where, key="modality")
    _check_choice(v["output"], OUTPUT_KINDS, source=where, key="output")

    from .models.architectures import known_architectures  # no framework import

    arch = v["architecture"]
    if arch != KERAS_FILE:
        known = known_architectures()
        if arch not in known:
            raise ConfigError(f"unknown architecture '{arch}'.", source=where, key="architecture",
                              fix=f"use a registered builder ({', '.join(sorted(known))}) or "
                                  f"'{KERAS_FILE}' for a whole saved Keras model.")
        if known[arch] != v["framework"]:
            raise ConfigError(f"architecture '{arch}' is a {known[arch]} builder but framework "
                              f"is '{v['framework']}'.", source=where, key="framework",
                              fix=f"set framework: {known[arch]}.")
    elif v["framework"] != "keras":
        raise ConfigError(f"'{KERAS_FILE}' loads a whole Keras model.", source=where,
                          key="architecture", fix="set framework: keras, or name a builder.")
    elif v["weights"] is None:
        raise ConfigError(f"'{KERAS_FILE}' needs the .keras file.", source=where, key="weights",
                          fix="set weights: to the path of the saved .keras model.")

    labels = v["labels"]
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError("must be a non-empty list of strings.", source=where, key="labels",
                          fix="write e.g. [real, fake].")
    if len(set(labels)) != len(labels):
        raise ConfigError("has duplicates.", source=where, key="labels", fix="name each class once.")
    if v["output"] == "sigmoid" and len(labels) != 2:
        raise ConfigError("a single sigmoid output needs exactly two labels [negative, positive].",
                          source=where, key="labels", fix="write e.g. [real, fake].")
    if v["output"] in ("probabilities", "logits") and len(labels) < 2:
        raise ConfigError("a softmax head needs at least two labels.", source=where, key="labels",
                          fix="add the other class, or use output: sigmoid.")
    positive = v.get("positive_label")
    if positive is not None and positive not in labels:
        raise ConfigError(f"'{positive}' is not one of the labels.", source=where,
                          key="positive_label", fix=f"use one of: {', '.join(labels)}.")

    parse_input = _parse_audio_input if v["modality"] == "audio" else _parse_image_input
    spec_input = parse_input(v["input"], source=where)

    return ModelSpec(
        id=v["id"], name=v["name"], framework=v["framework"], modality=v["modality"],
        architecture=arch, weights=resolve_weights(v["weights"], weights_dir=weights_dir),
        labels=tuple(labels), input=spec_input, output=v["output"],
        target_layer=v.get("target_layer"), description=v.get("description", ""),
        notice=v.get("notice", ""), train_command=v.get("train_command", ""),
        positive_label=positive, arch_args=dict(v.get("arch_args", {})), source=str(source),
    )


def _parse_app(raw: Any, *, source: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a mapping.", source=source, key="app",
                          fix="write `app:` followed by indented settings.")
    types = {f.name: (float if f.type in ("float", float) else
                      int if f.type in ("int", int) else str) for f in fields(AppSettings)}
    _check_keys(raw, types, source=source, prefix="app.")
    out = {k: _check_type(val, types[k], source=source, key=f"app.{k}") for k, val in raw.items()}
    for key, val in out.items():
        if key != "device":
            _positive(val, source=source, key=f"app.{key}")
    if "device" in out and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", out["device"]):
        raise ConfigError(f"'{out['device']}' is not a device.", source=source, key="app.device",
                          fix="use auto, cpu, cuda or cuda:N.")
    return out


def _config_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
    if path.is_file():
        return [path]
    raise ConfigError(f"config path '{path}' does not exist.",
                      fix="pass an existing YAML file or a folder of them to --config.")


def load_config(extra: Iterable[str | Path] = (), *, base: Path | None = DEFAULT_CONFIG_DIR,
                weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> PlatformConfig:
    """Read the project's ``config/`` folder plus any user files or folders.

    Later files may not redefine a model id already declared (that would silently swap a model);
    ``app:`` settings from later files override earlier ones key by key.
    """
    paths: list[Path] = []
    if base is not None:
        paths.extend(_config_files(Path(base)))
    for item in extra:
        paths.extend(_config_files(Path(item).expanduser()))

    models: list[ModelSpec] = []
    seen: dict[str, str] = {}
    app: dict[str, Any] = {}
    for path in paths:
        source = str(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"is not valid YAML{where}: {getattr(exc, 'problem', exc)}.",
                              source=source, fix="fix the YAML syntax.") from None
        except OSError as exc:
            raise ConfigError(f"cannot be read: {exc.strerror}.", source=source,
                              fix="check the path and its permissions.") from None
        if data is None:
            continue
        if not isinstance(data, Mapping):
            raise ConfigError("the top level must be a mapping with `models:` and/or `app:`.",
                              source=source, fix="start the file with `models:`.")
        _check_keys(data, ("models", "app"), source=source)
        if "app" in data:
            app.update(_parse_app(data["app"], source=source))
        entries = data.get("models") or []
        if not isinstance(entries, list):
            raise ConfigError("must be a list of model entries.", source=source, key="models",
                              fix="write each model as `- id: ...`.")
        for entry in entries:
            spec = parse_model(entry, source=source, weights_dir=weights_dir)
            if spec.id in seen:
                raise ConfigError(f"model id '{spec.id}' is already declared in {seen[spec.id]}.",
                                  source=source, key="id", fix="give each model its own id.")
            seen[spec.id] = source
            models.append(spec)
    return PlatformConfig(models=tuple(models), app=AppSettings(**app),
                          sources=tuple(str(p) for p in paths))
