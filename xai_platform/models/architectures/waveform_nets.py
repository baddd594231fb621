"""Raw-waveform networks (imports torch): a slim RawNet2 for ``input.kind: waveform``.

RawNet2 for anti-spoofing (Tak et al., "End-to-end anti-spoofing with RawNet2", ICASSP 2021,
arXiv:2011.01108): a fixed bank of mel-spaced sinc band-pass filters on the samples, |.|,
max-pooling, then residual blocks of 1-D convolutions each followed by max-pooling and
filter-wise feature-map scaling (FMS: a sigmoid gate per channel from its mean), a GRU over
the remaining frames and a linear head. The original has 20 / 128 channels, 1024-tap filters
and a 1024-unit GRU (about 25 M parameters); this one is cut to AASIST-L size (Jung et al.,
ICASSP 2022, 85 k parameters) so it trains on a CPU.

The network takes (N, n_samples) float waveforms in [-1, 1] (what the handle's input adapter
gives for ``kind: waveform``) and returns (N, spec.num_outputs) raw outputs.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def sinc_filters(n_filters: int, kernel_size: int, sample_rate: int, *,
                 fmin: float = 0.0) -> np.ndarray:
    """(n_filters, kernel_size) float32 band-pass filters (difference of two windowed sincs,
    Hamming window) with band edges evenly spaced on the mel scale from ``fmin`` to Nyquist,
    as RawNet2's fixed front-end."""
    edges = _hz(np.linspace(_mel(np.float64(fmin)), _mel(np.float64(sample_rate / 2)),
                            n_filters + 1))
    t = (np.arange(kernel_size) - (kernel_size - 1) / 2) / sample_rate
    window = np.hamming(kernel_size)
    bank = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        band = 2 * hi * np.sinc(2 * hi * t) - 2 * lo * np.sinc(2 * lo * t)
        band = band * window
        bank.append(band / (np.abs(band).sum() + 1e-12))
    return np.asarray(bank, dtype=np.float32)


class SincFrontEnd(nn.Module):
    """Fixed sinc filters on the waveform: (N, L) -> (N, n_filters, L) (zero-padded 'same')."""

    def __init__(self, n_filters: int, kernel_size: int, sample_rate: int) -> None:
        super().__init__()
        filters = torch.from_numpy(sinc_filters(n_filters, kernel_size, sample_rate))
        self.register_buffer("filters", filters[:, None, :], persistent=False)
        self.padding = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv1d(x[:, None], self.filters, padding=self.padding)


class FMS(nn.Module):
    """Filter-wise feature-map scaling: x * s + s with s = sigmoid(linear(mean over time))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc(x.mean(dim=-1)))[:, :, None]
        return x * s + s


class ResBlock(nn.Module):
    """BN, LeakyReLU, conv3, BN, LeakyReLU, conv3, plus the (1x1-projected) input, then
    max-pool by 3 and FMS; (N, c_in, L) -> (N, c_out, L // 3)."""

    def __init__(self, c_in: int, c_out: int, *, first: bool = False) -> None:
        super().__init__()
        self.pre = nn.Identity() if first else nn.Sequential(nn.BatchNorm1d(c_in),
                                                             nn.LeakyReLU(0.3))
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.mid = nn.Sequential(nn.BatchNorm1d(c_out), nn.LeakyReLU(0.3))
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 1)
        self.pool = nn.MaxPool1d(3)
        self.fms = FMS(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.mid(self.conv1(self.pre(x))))
        return self.fms(self.pool(out + self.skip(x)))


class RawNet2Slim(nn.Module):
    """A slim RawNet2 (module docstring). ``blocks.<i>`` are the residual blocks, each
    (N, C, L) over time: ``blocks.4`` (about 46 ms per step at 16 kHz) is the Grad-CAM layer."""

    def __init__(self, num_outputs: int, *, sample_rate: int = 16000, n_filters: int = 20,
                 kernel_size: int = 129, widths: tuple[int, ...] = (20, 20, 32, 32, 64, 64),
                 gru: int = 64, dropout: float = 0.2) -> None:
        super().__init__()
        self.sinc = SincFrontEnd(n_filters, kernel_size, sample_rate)
        self.stem = nn.Sequential(nn.MaxPool1d(3), nn.BatchNorm1d(n_filters), nn.SELU())
        blocks, c_in = [], n_filters
        for i, c_out in enumerate(widths):
            blocks.append(ResBlock(c_in, c_out, first=i == 0))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pre_gru = nn.Sequential(nn.BatchNorm1d(c_in), nn.LeakyReLU(0.3))
        self.gru = nn.GRU(c_in, gru, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(gru, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.stem(torch.abs(self.sinc(x))))
        _, last = self.gru(self.pre_gru(h).transpose(1, 2))
        return self.head(self.dropout(last[-1]))


def build_rawnet2_slim(spec) -> nn.Module:
    """``rawnet2_slim``: arch_args ``n_filters`` (20), ``kernel_size`` (129, odd), ``widths``
    (the six blocks' channels, [20, 20, 32, 32, 64, 64]), ``gru`` (64), ``dropout`` (0.2);
    needs ``input.kind: waveform``. Grad-CAM layer: ``blocks.4``."""
    if not getattr(spec.input, "waveform", False):
        from ...errors import ConfigError

        raise ConfigError("rawnet2_slim takes the raw waveform.", source=spec.source,
                          key="input.kind", fix="write kind: waveform in the input mapping.")
    args = dict(spec.arch_args)
    kernel = int(args.get("kernel_size", 129))
    return RawNet2Slim(spec.num_outputs, sample_rate=int(spec.input.sample_rate),
                       n_filters=int(args.get("n_filters", 20)),
                       kernel_size=kernel + (1 - kernel % 2),
                       widths=tuple(int(w) for w in args.get("widths", (20, 20, 32, 32, 64, 64))),
                       gru=int(args.get("gru", 64)), dropout=float(args.get("dropout", 0.2)))


def n_parameters(net: nn.Module) -> int:
    return int(sum(p.numel() for p in net.parameters()))


__all__ = ["RawNet2Slim", "build_rawnet2_slim", "n_parameters", "sinc_filters"]
