"""A waveform model seen through the spectrogram of one window, so that every method explains
it on the plane users read.

A raw-waveform detector (``input.kind: waveform``: AASIST, RawNet2, wav2vec2) takes samples, but
its explanation is drawn on the window's log-mel spectrogram ``P0`` (bands x frames, dB), like a
spectrogram model's. :class:`SpectrogramView` is the function the methods explain::

    f(P) = model(istft(S * W @ 10 ** ((P - P0) / 20)))

with ``S`` the window's complex STFT (its own phase), ``W`` (bins x bands) spreading each band's
amplitude gain onto the STFT bins (the same weights as the listening clips,
:func:`xai_platform.preprocessing.audio.invert_band_mask`). ``f(P0)`` is the model on the
window itself (the STFT is inverted exactly). So:

* **LIME, SHAP and the deletion / insertion metrics** set patches of the plane to the floor:
  those time-frequency cells of the STFT are turned down by the same dB, the rest keeps its
  magnitude and the original phase, and the model scores the resynthesised waveform;
* **saliency and Integrated Gradients** differentiate ``f`` with respect to each cell's level
  in dB: the waveform gradient taken back through the inverse STFT, i.e. the STFT of the
  waveform attribution projected on the window's own STFT (the chain rule, signed); Integrated
  Gradients integrates along the same floor -> window path LIME and SHAP use, so its
  attributions add up to the score difference on this plane;
* **Grad-CAM** on a 1-D convolution gives a curve over time only; it is drawn constant over
  frequency (:func:`~xai_platform.explainers.cam.cam_from_weights` resizes a one-row map), and
  its note says so.

torch is imported on first use (for ``torch.istft`` and its gradient).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .handle import FloatArray, LayerGradients, ModelHandle

if TYPE_CHECKING:
    from ..explainers.registry import MethodInfo
    from ..modalities.audio import AudioInput

_LN10_OVER_20 = float(np.log(10.0) / 20.0)


def _torch() -> Any:
    import torch  # noqa: F811 - imported on first use

    return torch


@functools.lru_cache(maxsize=8)
def _stft_setup(spec: AudioInput) -> tuple[Any, Any]:
    """(Hann window (win_length,), band-to-bin weights (bins, bands)) as torch tensors."""
    from ..preprocessing.audio import _band_to_stft_weights

    torch = _torch()
    window = torch.hann_window(spec.win_length or spec.n_fft, periodic=True)
    return window, torch.from_numpy(np.array(_band_to_stft_weights(spec), dtype=np.float32))


def stft(wave: FloatArray, spec: AudioInput) -> Any:
    """The complex STFT of one window as :func:`~xai_platform.preprocessing.audio.log_mel`
    takes it (centred, zero padding, periodic Hann): (1 + n_fft // 2, n_frames) complex64
    torch tensor."""
    torch = _torch()
    window, _ = _stft_setup(spec)
    return torch.stft(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)),
                      n_fft=spec.n_fft, hop_length=spec.hop_length, win_length=spec.win_length,
                      window=window, center=True, pad_mode="constant", return_complex=True)


def resynthesise(planes: Any, reference: Any, stft_ref: Any, spec: AudioInput) -> Any:
    """Waveforms (N, n_samples) for planes (N, bands, frames) dB (torch, differentiable): the
    reference STFT with each band's amplitude scaled by ``10 ** ((P - P0) / 20)``, inverted."""
    torch = _torch()
    window, weights = _stft_setup(spec)
    gain = torch.pow(10.0, (planes - reference[None]) / 20.0)  # (N, bands, frames)
    bins = torch.einsum("fb,nbt->nft", weights, gain)
    return torch.istft(stft_ref[None] * bins, n_fft=spec.n_fft, hop_length=spec.hop_length,
                       win_length=spec.win_length, window=window, center=True,
                       length=spec.n_samples)


class SpectrogramView(ModelHandle):
    """A waveform model as a function of one window's spectrogram (module docstring).

    model: the waveform model's handle ((N, 1, n_samples) input); wave: (n_samples,) float32,
    the window; plane: (bands, frames) float32 dB, its spectrogram (the explained input).
    Planes it takes: (N, bands, frames) dB; what it answers is the model's on the
    resynthesised waveforms.
    """

    def __init__(self, model: ModelHandle, wave: FloatArray, plane: FloatArray) -> None:
        super().__init__(model.spec, device=model.device, untrained=model.untrained,
                         default_batch_size=model.default_batch_size,
                         calibration=model.calibration)
        self.model = model
        self.framework = model.framework
        self.lock = model.lock
        self.wave = np.asarray(wave, dtype=np.float32)
        self.plane = np.asarray(plane, dtype=np.float32)
        torch = _torch()
        self._stft = stft(self.wave, model.spec.input)
        self._plane = torch.from_numpy(self.plane)

    @property
    def input_shape(self) -> tuple[int, int]:
        return tuple(self.plane.shape)  # type: ignore[return-value]

    @property
    def native(self) -> Any:
        return self.model.native

    def waveforms(self, x: FloatArray) -> FloatArray:
        """The resynthesised windows of planes (N, bands, frames): (N, 1, n_samples) float32."""
        torch = _torch()
        with torch.no_grad():
            waves = resynthesise(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
                                 self._plane, self._stft, self.spec.input)
        return waves.numpy()[:, None, :]

    def _predict_batch(self, x: FloatArray) -> FloatArray:
        return self.model.predict(self.waveforms(x), batch_size=len(x))

    def _scores_batch(self, x: FloatArray) -> FloatArray:
        return self.model.scores(self.waveforms(x), batch_size=len(x))

    def _outputs_batch(self, x: FloatArray) -> tuple[FloatArray, FloatArray]:
        return self.model.outputs(self.waveforms(x), batch_size=len(x))

    @property
    def outputs_in_one_pass(self) -> bool:
        return self.model.outputs_in_one_pass

    def input_gradients(self, x: FloatArray, targets: npt.NDArray[np.int64]
                        ) -> tuple[FloatArray, FloatArray]:
        """(d score / d P: (N, bands, frames), scores (N,)): the model's waveform gradient
        carried back through :func:`resynthesise` (its vector-Jacobian product)."""
        x = self.check_batch(x)
        torch = _torch()
        planes = torch.from_numpy(x).requires_grad_(True)
        with torch.enable_grad():
            waves = resynthesise(planes, self._plane, self._stft, self.spec.input)
            grads, scores = self.model.input_gradients(waves.detach().numpy()[:, None, :],
                                                       targets)
            (out,) = torch.autograd.grad(waves, planes, torch.from_numpy(grads[:, 0]))
        return out.numpy().astype(np.float32, copy=False), scores

    def layer_gradients(self, x: FloatArray, targets: npt.NDArray[np.int64], *,
                        layer: str | None = None) -> LayerGradients:
        """The waveform model's layer on the resynthesised windows (a 1-D convolution gives
        (N, C, 1, L): a curve over time)."""
        return self.model.layer_gradients(self.waveforms(self.check_batch(x)), targets,
                                          layer=layer)

    def layer_output_shape(self, layer: str) -> tuple[int, ...]:
        return self.model.layer_output_shape(layer)

    def layers(self) -> list[tuple[str, str]]:
        return self.model.layers()

    def randomized(self, n_layers: int, *, seed: int = 0) -> SpectrogramView:
        return SpectrogramView(self.model.randomized(n_layers, seed=seed), self.wave,
                               self.plane)

    def method_note(self, method: MethodInfo) -> str:
        if "layer_gradients" in method.needs:
            if len(self.model.layer_output_shape(self.spec.target_layer or "")) == 2:
                return (f"{method.label} of a waveform model: its layer is a 1-D convolution "
                        "over time, so the map says *when* (time only); it is drawn the same at "
                        "every frequency and says nothing about which frequencies.")
            return (f"{method.label} of a waveform model: the map lies on the model's own "
                    "feature grid (computed from the samples, e.g. its own filterbank), stretched "
                    "onto this plane; it lines up with this spectrogram only roughly.")
        if "input_gradients" in method.needs:
            return (f"{method.label} of a waveform model, on its spectrogram: the waveform "
                    "gradient is carried back through the inverse STFT (resynthesis with the "
                    "window's own phase) to each cell's level in dB: the STFT of the waveform "
                    "attribution, projected on the window's own STFT.")
        return (f"{method.label} of a waveform model: time-frequency patches of the window's "
                "STFT are turned down to the spectrogram's floor and the waveform resynthesised "
                "with the original phase for the model to score.")
