"""Online augmentation of X-ray batches (masks move with the image)."""

from __future__ import annotations

import numpy as np

def augment(x: np.ndarray, rng: np.random.Generator, *, masks: np.ndarray | None = None):
    """Online augmentation of a batch (B, H, W) in [0, 1]: shifts, flips, gamma, contrast,
    noise. None of them moves a lesion out of the image or changes the label. With ``masks``
    (B, H, W) the same shifts and flips move them too, and ``(x, masks)`` is returned; the
    random draws are the same either way."""
    b, h, w = x.shape
    out = np.empty_like(x)
    pad = max(1, h // 25)
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    moved = None if masks is None else np.empty_like(masks)
    padded_masks = None if masks is None else np.pad(masks, ((0, 0), (pad, pad), (pad, pad)))
    for i in range(b):
        dy, dx = rng.integers(0, 2 * pad + 1, size=2)
        out[i] = padded[i, dy:dy + h, dx:dx + w]
        if moved is not None:
            moved[i] = padded_masks[i, dy:dy + h, dx:dx + w]
    flip = rng.random(b) < 0.5
    out[flip] = out[flip, :, ::-1]
    if moved is not None:
        moved[flip] = moved[flip, :, ::-1]
    out = np.clip(out, 0, 1) ** np.exp(rng.normal(0, 0.15, (b, 1, 1))).astype(np.float32)
    out = (out - 0.5) * rng.uniform(0.9, 1.1, (b, 1, 1)) + 0.5 + rng.uniform(-0.04, 0.04, (b, 1, 1))
    out += rng.normal(0, 1, out.shape).astype(np.float32) * rng.uniform(0, 0.012, (b, 1, 1))
    out = np.clip(out, 0, 1).astype(np.float32)
    return out if moved is None else (out, moved)

