"""Model and app configuration: YAML files -> frozen dataclasses, validated at start-up.

A model is a config entry (``config/*.yaml``, plus any ``--config PATH`` a user adds)::

    models:
      - id: audio-cnn
        name: Custom CNN (log-mel)
        framework: torch            # a registered model format: torch | keras | onnx | torchscript
        modality: audio             # a registered modality: audio | xray
        architecture: custom_cnn    # a registered builder, or keras_file for a whole .keras model
        weights: audio/audio-cnn.pt # relative to weights/, or absolute; null = no trained weights
        labels: [real, fake]
        output: sigmoid             # probabilities | logits | sigmoid | sigmoid_probability | multilabel
        target_layer: features.3    # dotted module name / Keras layer name / outer/inner
        input: {sample_rate: 16000, duration: 2.0, n_mels: 64, ...}

Structure, types and allowed values are checked here without importing any framework; the
``input:`` mapping is parsed by the entry's modality (:mod:`xai_platform.modalities`). The model
side (that the framework is a registered format and the architecture one of its builders) is
checked by :class:`~xai_platform.models.ModelManager` when it catalogues the models, and that a
``target_layer`` exists and is convolutional when the architecture is built
(:meth:`~xai_platform.models.ModelManager.verify`). This module imports nothing from
``models/``. Every problem raises one :class:`~xai_platform.errors.ConfigError` naming the
file, the key and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError
from .modalities import InputSpec, get_modality
from .validation import check_choice, check_keys, check_positive, check_type

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG_DIR = ROOT / "config"
DEFAULT_WEIGHTS_DIR = ROOT / "weights"

OutputKind = Literal["probabilities", "logits", "sigmoid", "sigmoid_probability", "multilabel"]

OUTPUT_KINDS = ("probabilities", "logits", "sigmoid", "sigmoid_probability", "multilabel")
#: one network output for two labels: a logit, or the probability of the positive label
SINGLE_OUTPUT = ("sigmoid", "sigmoid_probability")
_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


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
    input: InputSpec
    output: str
    target_layer: str | None = None
    description: str = ""
    notice: str = ""
    train_command: str = ""
    positive_label: str | None = None
    arch_args: Mapping[str, Any] = field(default_factory=dict)
    #: a binary detector that can flag its positive label but not confirm the other: measured
    #: on data unlike its training set it lets most positives through, so a negative decision
    #: is reported as "no <positive> found", never as the other label (explanation.Prediction)
    one_sided: bool = False
    #: False for a model shown to explain, not to judge: measured unfit for a verdict (its
    #: ``notice`` says why), so its verdict is always withheld while its probabilities and
    #: explanations are still shown (explanation.Prediction.withheld)
    verdict: bool = True
    #: rows per forward batch for this model (None: ``app.batch_size``); DenseNet-121 at 224 px
    #: runs faster per row in small batches (docs/BENCHMARKS.md), a small CNN in large ones
    batch_size: int | None = None
    source: str = "<memory>"

    @property
    def num_outputs(self) -> int:
        """Width of the network's last layer (one logit for ``sigmoid``)."""
        return 1 if self.output in SINGLE_OUTPUT else len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int]:
        return self.input.shape

    @property
    def positive_index(self) -> int | None:
        """Index of the 'positive' class (fake voice, lesion) for binary models."""
        if self.positive_label is not None:
            return self.labels.index(self.positive_label)
        return 1 if len(self.labels) == 2 and self.output != "multilabel" else None


#: ``app.forward_precision`` values: exact, or the opt-in reduced precision
FORWARD_PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class AppSettings:
    """App-wide defaults (``app:`` section of a config file)."""

    max_audio_seconds: float = 600.0
    max_image_pixels: int = 60_000_000
    max_upload_mb: float = 200.0
    model_cache_size: int = 3
    concurrency: int = 2
    batch_size: int = 32
    #: rows per backward pass of a PyTorch model (Integrated Gradients' steps, Grad-CAM's
    #: batches); larger gradient batches are split into these, with the same results. On this
    #: CPU, DenseNet-121 at 224 px took 2-4x longer per row at 24-48 rows than at 4-16 (the
    #: allocator page-faults its larger buffers again on every pass; docs/BENCHMARKS.md)
    gradient_batch_size: int = 8
    #: PyTorch networks with 2-D convolutions keep their 4-D weights channels-last on the CPU,
    #: so oneDNN runs them without reordering: gradient passes (Grad-CAM, saliency, Integrated
    #: Gradients) and PyTorch forward passes 1.2-1.6x faster, the same results to float
    #: rounding (docs/BENCHMARKS.md, forty-sixth session); false keeps PyTorch's default layout
    channels_last: bool = True
    device: str = "auto"
    #: refuse inputs a modality can tell are not what its models expect (an X-ray upload that
    #: is not a frontal chest radiograph); off only for tests with synthetic images
    check_inputs: bool = True
    #: segment rule: this many consecutive windows at or above a binary model's threshold flag
    #: the input (see :mod:`xai_platform.pipeline`); a documented default, not yet chosen on
    #: validation recordings
    segment_windows: int = 2
    #: audio: the least speech (seconds, found by voice activity detection) a recording must
    #: hold to get a verdict, and a window to be scored; windows with less are left out of the
    #: verdict and the timeline ("no speech"). 0 turns both off. Applies with check_inputs.
    min_speech_s: float = 0.3
    #: the exact fast path: PyTorch models export to ONNX when they load and run their
    #: forward-only batches (LIME, SHAP, deletion / insertion, the window timeline) on ONNX
    #: Runtime when the probabilities match to 1e-5 (:mod:`xai_platform.models.fast_forward`);
    #: false (or ``--no-fast-forward``) keeps every pass in PyTorch
    fast_forward: bool = True
    #: the fast path's precision: float32 (exact, ONNX Runtime) or bf16 (opt-in, ``--bf16``:
    #: the same graph on OpenVINO in bfloat16 when its probabilities stay within 1e-2 and no
    #: example decision changes; :mod:`xai_platform.models.reduced_precision`)
    forward_precision: str = "float32"


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


_MODEL_TYPES: dict[str, Any] = {
    "id": str, "name": str, "framework": str, "modality": str, "architecture": str,
    "weights": (str, type(None)), "labels": list, "input": dict, "output": str,
    "target_layer": (str, type(None)), "description": str, "notice": str,
    "train_command": str, "positive_label": (str, type(None)), "arch_args": dict,
    "batch_size": (int, type(None)), "one_sided": bool, "verdict": bool,
}
_REQUIRED = ("id", "name", "framework", "modality", "architecture", "weights", "labels",
             "input", "output")


def shown_weights(path: Path | str | None) -> str | None:
    """A weights file as records and reports name it: relative to the project
    (``weights/audio/audio-cnn.pt``), else by its file name only. Records and reports go to the
    page's users (a share link may be public), who need not learn the server's folders; the
    sha256 beside the name identifies the file."""
    if path is None:
        return None
    path = Path(path)
    try:
        return path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path.name


def resolve_weights(value: str | None, *, weights_dir: Path) -> Path | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    return path if path.is_absolute() else (weights_dir / path)


def folder_labels(folder: Path) -> list[str] | None:
    """The class names of a Hugging Face ``save_pretrained`` folder: its ``config.json``'s
    ``id2label`` in index order, read as JSON (nothing imported); None when the folder has no
    ``config.json``. ValueError when the file is not such a config."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        id2label = json.loads(path.read_text(encoding="utf-8")).get("id2label") or {}
        return [str(id2label[k]) for k in sorted(id2label, key=int)]
    except (AttributeError, TypeError, KeyError) as exc:
        raise ValueError(f"{path} is not a model config ({exc})") from None


def _labels_from_folder(weights: Any, weights_dir: Path, where: str) -> list[str]:
    """The labels of an entry that leaves them out (``framework: transformers``): read from
    its weights folder (:func:`folder_labels`)."""
    fix = ("add `labels:` (the model's classes in output order), or fetch the model first "
           "(python -m xai_platform fetch MODEL) so they can be read from its config.json.")
    folder = resolve_weights(weights, weights_dir=weights_dir) if isinstance(weights, str) else None
    try:
        labels = folder_labels(folder) if folder is not None else None
    except ValueError as exc:
        raise ConfigError(f"could not be read: {exc}.", source=where, key="labels",
                          fix=fix) from None
    if labels is None:
        raise ConfigError("is missing, and there is no config.json in the weights folder to read "
                          "the model's id2label from.", source=where, key="labels", fix=fix)
    if not labels:
        raise ConfigError(f"{folder / 'config.json'} has no id2label.", source=where,
                          key="labels", fix=fix)
    return labels


def parse_model(entry: Any, *, source: str, weights_dir: Path = DEFAULT_WEIGHTS_DIR) -> ModelSpec:
    """Validate one ``models:`` entry and build its :class:`ModelSpec`."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"a model entry must be a mapping, got {type(entry).__name__}.",
                          source=source, fix="write `- id: ...` entries under `models:`.")
    where = f"{source} (model '{entry.get('id', '?')}')"
    check_keys(entry, _MODEL_TYPES, source=where)
    if "labels" not in entry and entry.get("framework") == "transformers":
        entry = {**entry, "labels": _labels_from_folder(entry.get("weights"), weights_dir, where)}
    for key in _REQUIRED:
        if key not in entry:
            raise ConfigError("is required but missing.", source=where, key=key,
                              fix=f"add `{key}:` to the entry (see SETUP.md, 'Config format').")
    v = {k: check_type(val, _MODEL_TYPES[k], source=where, key=k) for k, val in entry.items()}
    if not _ID_PATTERN.match(v["id"]):
        raise ConfigError(f"'{v['id']}' is not a valid id.", source=where, key="id",
                          fix="use lowercase letters, digits, '-', '_' or '.'.")
    get_modality(v["modality"], source=where)
    check_choice(v["output"], OUTPUT_KINDS, source=where, key="output")
    arch = v["architecture"]
    if not v["framework"] or not arch:
        raise ConfigError("framework and architecture must not be empty.", source=where,
                          key="framework" if not v["framework"] else "architecture",
                          fix="name a model format (e.g. torch) and one of its architectures.")

    labels = v["labels"]
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise ConfigError("must be a non-empty list of strings.", source=where, key="labels",
                          fix="write e.g. [real, fake].")
    if len(set(labels)) != len(labels):
        raise ConfigError("has duplicates.", source=where, key="labels", fix="name each class once.")
    if v["output"] in SINGLE_OUTPUT and len(labels) != 2:
        raise ConfigError("a single sigmoid output needs exactly two labels [negative, positive].",
                          source=where, key="labels", fix="write e.g. [real, fake].")
    if v["output"] in ("probabilities", "logits") and len(labels) < 2:
        raise ConfigError("a softmax head needs at least two labels.", source=where, key="labels",
                          fix="add the other class, or use output: sigmoid.")
    positive = v.get("positive_label")
    if positive is not None and positive not in labels:
        raise ConfigError(f"'{positive}' is not one of the labels.", source=where,
                          key="positive_label", fix=f"use one of: {', '.join(labels)}.")

    if v.get("batch_size") is not None:
        check_positive(v["batch_size"], source=where, key="batch_size", strict=True)
    if v.get("one_sided") and (positive is None or v["output"] == "multilabel"):
        raise ConfigError("one_sided needs a binary model with a positive_label.", source=where,
                          key="one_sided", fix="set positive_label, or remove one_sided.")
    if v.get("verdict") is False and not v.get("notice"):
        raise ConfigError("a model withheld from verdicts needs a notice that says why.",
                          source=where, key="verdict",
                          fix="add a notice with the measured figures, or remove verdict.")
    spec_input = get_modality(v["modality"]).parse_input(v["input"], source=where)

    return ModelSpec(
        id=v["id"], name=v["name"], framework=v["framework"], modality=v["modality"],
        architecture=arch, weights=resolve_weights(v["weights"], weights_dir=weights_dir),
        labels=tuple(labels), input=spec_input, output=v["output"],
        target_layer=v.get("target_layer"), description=v.get("description", ""),
        notice=v.get("notice", ""), train_command=v.get("train_command", ""),
        positive_label=positive, arch_args=dict(v.get("arch_args", {})),
        batch_size=v.get("batch_size"), one_sided=bool(v.get("one_sided", False)),
        verdict=bool(v.get("verdict", True)), source=str(source),
    )


#: app settings for which 0 means "off" rather than a mistake
_MAY_BE_ZERO = ("min_speech_s",)


def _parse_app(raw: Any, *, source: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError("must be a mapping.", source=source, key="app",
                          fix="write `app:` followed by indented settings.")
    kinds = {"float": float, "int": int, "bool": bool}
    types = {f.name: kinds.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
             for f in fields(AppSettings)}
    check_keys(raw, types, source=source, prefix="app.")
    out = {k: check_type(val, types[k], source=source, key=f"app.{k}") for k, val in raw.items()}
    for key, val in out.items():
        if types[key] in (int, float):
            check_positive(val, source=source, key=f"app.{key}",
                           strict=key not in _MAY_BE_ZERO)
    if out.get("forward_precision", FORWARD_PRECISIONS[0]) not in FORWARD_PRECISIONS:
        raise ConfigError(f"'{out['forward_precision']}' is not a forward precision.",
                          source=source, key="app.forward_precision",
                          fix=f"use {' or '.join(FORWARD_PRECISIONS)}.")
    if "device" in out and not re.match(r"^(auto|cpu|cuda(:\d+)?)$", out["device"]):
        raise ConfigError(f"'{out['device']}' is not a device.", source=source, key="app.device",
                          fix="use auto, cpu, cuda or cuda:N.")
    return out


def read_yaml(text: str) -> Any:
    """``yaml.safe_load``, on libyaml's parser where PyYAML was built with it.

    The C parser reads the shipped config in about 2 ms against 30 ms (start-up waits for it);
    on an error the text is read again by the Python parser, whose messages name the offending
    character, so the message a user sees does not depend on how PyYAML was built.
    """
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            return yaml.load(text, Loader=fast)  # noqa: S506 (a safe loader)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(text)


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
            data = read_yaml(path.read_text(encoding="utf-8"))
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
        check_keys(data, ("models", "app"), source=source)
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
