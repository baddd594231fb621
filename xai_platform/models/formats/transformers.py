"""Hugging Face audio classifiers (``framework: transformers``): wav2vec2, HuBERT, WavLM and AST
sequence classification from a ``save_pretrained`` folder, or fetched from the hub.

``weights:`` is the folder (``config.json``, ``model.safetensors``,
``preprocessor_config.json``); with ``arch_args: {hub: org/name}`` (and optionally
``revision``) the folder is fetched there when asked (the Models tab's *Fetch weights*, or
``python -m xai_platform fetch ID``), never at import or start-up. Loading is safe:
``use_safetensors=True`` (no pickle), ``trust_remote_code=False`` (no code from the folder or
the hub), ``local_files_only=True`` (loading never downloads).

The model takes the window's samples (``input.kind: waveform``). Its feature extractor is
applied inside the network, in torch, so gradients reach the samples:

* :class:`Wav2Vec2FeatureExtractor <transformers.Wav2Vec2FeatureExtractor>` (wav2vec2, HuBERT,
  WavLM): zero mean and unit variance per window when ``do_normalize``;
* :class:`ASTFeatureExtractor <transformers.ASTFeatureExtractor>` (AST): Kaldi-style log-mel
  filterbank (25 ms frames, 10 ms hop, DC removal, pre-emphasis 0.97, Hann window, 512-point
  FFT, Kaldi mel bands), padded or cut to ``max_length`` frames and normalised with its mean
  and std, as the extractor's NumPy path computes it (a test checks both against it).

Labels come from the model's ``config.json`` (``id2label``): an entry without ``labels`` gets
them from there (:func:`xai_platform.config.folder_labels`); written, they must list them in
that order (generic ``LABEL_0, LABEL_1, ...`` may be named freely). ``output: logits``.
``target_layer`` names a module of the Hugging Face model (e.g.
``wav2vec2.feature_extractor.conv_layers.6``: a 1-D convolution over time).

transformers and torch are imported when the first such model loads.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...config import ModelSpec, folder_labels
from ...errors import ConfigError, ModelUnavailableError, first_line
from ..architectures import register_lazy_fetcher
from ..handle import Calibration
from .base import Capabilities, ModelFormat, register_format
from .torch import TorchHandle, _torch, layer_output_shape, resolve_device

if TYPE_CHECKING:
    from torch import nn

#: the one architecture: AutoModelForAudioClassification (its class comes from config.json)
ARCHITECTURE = "audio_classification"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PREFIX = "model."  # the Hugging Face model inside the wrapper
_GENERIC_LABEL = re.compile(r"^LABEL_\d+$")


def _where(spec: ModelSpec) -> str:
    return f"{spec.source} (model '{spec.id}')"


def check_labels(spec: ModelSpec, labels: list[str]) -> None:
    """The entry's labels against the model's ``id2label`` (ConfigError with the line to
    write)."""
    fix = f"write labels: [{', '.join(labels)}] (the model's config.json, id2label)."
    if len(labels) != len(spec.labels):
        raise ConfigError(f"the model has {len(labels)} classes ({', '.join(labels)}) but the "
                          f"entry lists {len(spec.labels)}.", source=_where(spec), key="labels",
                          fix=fix)
    if not all(_GENERIC_LABEL.match(name) for name in labels) and list(spec.labels) != labels:
        raise ConfigError(f"the model names its classes {', '.join(labels)} (in this order), "
                          f"not {', '.join(spec.labels)}.", source=_where(spec), key="labels",
                          fix=fix)


@functools.cache
def _modules() -> tuple[type, type, type]:
    """(Wrapper, WaveformNormaliser, ASTFilterbank): torch modules, defined on first use."""
    torch = _torch()
    nn = torch.nn

    class Wrapper(nn.Module):
        """(N, n_samples) -> the feature extractor -> the Hugging Face model -> logits."""

        def __init__(self, model: nn.Module, features: nn.Module) -> None:
            super().__init__()
            self.features = features
            self.model = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.model(input_values=self.features(x)).logits

    class WaveformNormaliser(nn.Module):
        """Wav2Vec2FeatureExtractor: (x - mean) / sqrt(var + 1e-7) per window when
        ``do_normalize`` (population variance, as its zero_mean_unit_var_norm)."""

        def __init__(self, do_normalize: bool) -> None:
            super().__init__()
            self.do_normalize = bool(do_normalize)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.do_normalize:
                return x
            mean = x.mean(dim=-1, keepdim=True)
            var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
            return (x - mean) / torch.sqrt(var + 1e-7)

    class ASTFilterbank(nn.Module):
        """ASTFeatureExtractor's NumPy path in torch: (N, n_samples) -> (N, max_length,
        num_mel_bins)."""

        def __init__(self, fe: Any) -> None:
            super().__init__()
            from transformers.audio_utils import mel_filter_bank

            filters = mel_filter_bank(num_frequency_bins=257, num_mel_filters=fe.num_mel_bins,
                                      min_frequency=20, max_frequency=fe.sampling_rate // 2,
                                      sampling_rate=fe.sampling_rate, norm=None,
                                      mel_scale="kaldi", triangularize_in_mel_space=True)
            self.register_buffer("filters", torch.from_numpy(np.asarray(filters, np.float32)),
                                 persistent=False)
            self.register_buffer("window", torch.hann_window(400, periodic=False),
                                 persistent=False)
            self.max_length = int(fe.max_length)
            self.do_normalize = bool(fe.do_normalize)
            self.mean, self.std = float(fe.mean), float(fe.std)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            frames = x.unfold(-1, 400, 160)  # (N, F, 400), no centring
            frames = frames - frames.mean(dim=-1, keepdim=True)
            frames = torch.cat([frames[..., :1] * (1 - 0.97),
                                frames[..., 1:] - 0.97 * frames[..., :-1]], dim=-1)
            power = torch.fft.rfft(frames * self.window, n=512).abs() ** 2
            fbank = torch.log(torch.clamp(power @ self.filters, min=1.192092955078125e-07))
            n = fbank.shape[1]
            if n < self.max_length:
                fbank = nn.functional.pad(fbank, (0, 0, 0, self.max_length - n))
            else:
                fbank = fbank[:, :self.max_length]
            return (fbank - self.mean) / (self.std * 2) if self.do_normalize else fbank

    return Wrapper, WaveformNormaliser, ASTFilterbank


def feature_module(fe: Any, spec: ModelSpec) -> nn.Module:
    """The torch module applying the folder's feature extractor ``fe`` to (N, n_samples)."""
    from transformers import ASTFeatureExtractor, Wav2Vec2FeatureExtractor

    _, normaliser, filterbank = _modules()
    if int(fe.sampling_rate) != int(spec.input.sample_rate):
        raise ConfigError(f"the model was trained at {fe.sampling_rate} Hz "
                          "(preprocessor_config.json).", source=_where(spec),
                          key="input.sample_rate", fix=f"write sample_rate: {fe.sampling_rate}.")
    if isinstance(fe, ASTFeatureExtractor):
        return filterbank(fe)
    if isinstance(fe, Wav2Vec2FeatureExtractor):
        return normaliser(getattr(fe, "do_normalize", True))
    raise ModelUnavailableError(f"feature extractor {type(fe).__name__} is not supported; "
                                "supported: Wav2Vec2FeatureExtractor (wav2vec2, HuBERT, WavLM) "
                                "and ASTFeatureExtractor (AST).")


class TransformersHandle(TorchHandle):
    """A Hugging Face classifier behind its feature extractor; layers are named as in the
    Hugging Face model (``wav2vec2.feature_extractor.conv_layers.6``)."""

    framework = "transformers"

    def layer_gradients(self, x, targets, *, layer=None):
        return super().layer_gradients(x, targets,
                                       layer=_PREFIX + (layer or self.spec.target_layer or ""))

    def layers(self) -> list[tuple[str, str]]:
        return [(name[len(_PREFIX):], kind) for name, kind in super().layers()
                if name.startswith(_PREFIX)]

    def layer_output_shape(self, layer: str) -> tuple[int, ...]:
        return layer_output_shape(self.net, self.spec, _PREFIX + layer)


def load_folder(spec: ModelSpec) -> tuple[Any, Any]:
    """(model, feature extractor) from the entry's folder, loaded safely (module docstring)."""
    folder = spec.weights
    if folder is None or not (Path(folder) / "config.json").is_file():
        raise ModelUnavailableError(f"{folder} is not a save_pretrained folder (no config.json).")
    import transformers
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    transformers.logging.set_verbosity_error()
    try:
        model = AutoModelForAudioClassification.from_pretrained(
            folder, use_safetensors=True, trust_remote_code=False, local_files_only=True)
        fe = AutoFeatureExtractor.from_pretrained(folder, trust_remote_code=False,
                                                  local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelUnavailableError(
            f"{folder} cannot be loaded safely as a Hugging Face audio classifier: "
            f"{first_line(exc)[:240]}. Only safetensors weights of architectures built into "
            "transformers load (no pickled weights, no remote code).") from None
    return model.eval(), fe


def load(spec: ModelSpec, *, device: str, default_batch_size: int = 32,
         calibration: Calibration | None = None) -> TransformersHandle:
    model, fe = load_folder(spec)
    labels = [str(model.config.id2label[i]) for i in range(model.config.num_labels)]
    check_labels(spec, labels)
    wrapper, _, _ = _modules()
    net = wrapper(model, feature_module(fe, spec))
    return TransformersHandle(spec, net, device=resolve_device(device), untrained=False,
                              default_batch_size=default_batch_size, calibration=calibration)


def fetch_for_entry(spec: ModelSpec, *, progress: Any = None) -> Path:
    """Download ``arch_args.hub`` (json and safetensors files only) into the entry's
    ``weights:`` folder; without internet, say how to bring the folder by hand."""
    hub = (spec.arch_args or {}).get("hub")
    if not hub or spec.weights is None:
        raise ModelUnavailableError(f"model '{spec.id}' names no hub repository: set "
                                    "arch_args: {hub: org/name} and weights: a folder.")
    folder = Path(spec.weights).expanduser()
    if progress is not None:
        progress(0.0, f"downloading {hub} from the Hugging Face hub")
    try:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=hub, revision=(spec.arch_args or {}).get("revision"),
                          local_dir=folder, allow_patterns=["*.json", "*.safetensors"])
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, refused: all said the same
        raise ModelUnavailableError(
            f"could not download '{hub}' from the Hugging Face hub ({first_line(exc)[:200]}). "
            f"Without internet here: on a machine with it, run `hf download {hub} "
            f"--include '*.json' '*.safetensors' --local-dir {folder.name}` and copy that folder "
            f"to {folder}.") from None
    if not any(folder.glob("*.safetensors")):
        raise ModelUnavailableError(f"'{hub}' has no safetensors weights; only safetensors load "
                                    "(pickled .bin files can run code).")
    if progress is not None:
        progress(1.0, "done")
    return folder


register_lazy_fetcher(ARCHITECTURE, target="..formats.transformers:fetch_for_entry")


@register_format
class TransformersFormat(ModelFormat):
    """A Hugging Face ``save_pretrained`` folder of an audio classifier (module docstring)."""

    name = "transformers"
    label = "Hugging Face Transformers"
    modules = ("transformers", "torch")
    install_hint = "pip install transformers==5.23.0 (as requirements.txt pins it)"
    capabilities = Capabilities(layer_gradients=True, input_gradients=True, randomize=True)

    def check_spec(self, spec: ModelSpec) -> None:
        where = _where(spec)
        if spec.architecture != ARCHITECTURE:
            raise ConfigError(f"'{spec.architecture}' is not a transformers architecture.",
                              source=where, key="architecture",
                              fix=f"write architecture: {ARCHITECTURE} (the model class comes "
                                  "from the folder's config.json).")
        if not getattr(spec.input, "waveform", False):
            raise ConfigError("a Hugging Face audio classifier takes the samples and applies its "
                              "own feature extractor.", source=where, key="input.kind",
                              fix="write kind: waveform in the input mapping.")
        if spec.output != "logits":
            raise ConfigError("a Hugging Face classifier gives logits.", source=where,
                              key="output", fix="write output: logits.")
        if spec.weights is None:
            raise ConfigError("needs the model's folder.", source=where, key="weights",
                              fix="name the save_pretrained folder (fetched there when "
                                  "arch_args.hub is set).")
        unknown = set(spec.arch_args or {}) - {"hub", "revision"}
        if unknown:
            raise ConfigError(f"unknown option '{sorted(unknown)[0]}'.", source=where,
                              key="arch_args", fix="use hub (org/name) and revision.")
        hub = (spec.arch_args or {}).get("hub")
        if hub is not None and not (isinstance(hub, str) and _HUB_ID.match(hub)):
            raise ConfigError(f"'{hub}' is not a hub repository id.", source=where,
                              key="arch_args.hub", fix="write org/name.")
        labels = folder_labels(spec.weights)
        if labels is not None:
            check_labels(spec, labels)

    def weights_found(self, spec: ModelSpec) -> bool:
        return spec.weights is not None and (spec.weights / "config.json").is_file()

    def check_untrusted(self, spec: ModelSpec) -> None:
        raise ConfigError("a Hugging Face model is a folder, which this panel cannot take.",
                          source=_where(spec), key="framework",
                          fix="check it with `python -m xai_platform check-model CONFIG.yaml`.")

    def load(self, spec: ModelSpec, *, device: str, default_batch_size: int = 32,
             calibration: Calibration | None = None) -> TransformersHandle:
        return load(spec, device=device, default_batch_size=default_batch_size,
                    calibration=calibration)

    def verify(self, spec: ModelSpec) -> None:
        """The target layer exists in the folder's model and gives a convolutional map over
        time (loads the model, once, when its folder is there)."""
        if spec.target_layer is None or not self.weights_found(spec):
            return
        handle = load(spec, device="cpu")
        names = {name for name, _ in handle.layers()}
        if spec.target_layer not in names:
            import difflib

            close = difflib.get_close_matches(spec.target_layer, sorted(names), n=3)
            raise ConfigError(f"layer '{spec.target_layer}' does not exist in this model.",
                              source=_where(spec), key="target_layer",
                              fix=f"name a module by its dotted path (e.g. {', '.join(close)}).")
        shape = handle.layer_output_shape(spec.target_layer)
        if len(shape) not in (2, 3):
            raise ConfigError(f"layer '{spec.target_layer}' outputs shape {shape}, not a "
                              "convolutional feature map (C, L) or (C, h, w).",
                              source=_where(spec), key="target_layer",
                              fix="name a convolution, e.g. "
                                  "wav2vec2.feature_extractor.conv_layers.6.")

    def layers(self, spec: ModelSpec) -> list[tuple[str, str]]:
        return load(spec, device="cpu").layers() if self.weights_found(spec) else []
