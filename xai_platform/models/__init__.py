"""Models: config entries -> loaded handles, for PyTorch and Keras alike."""

from .handle import LayerGradients, ModelHandle
from .manager import ModelManager, ModelStatus

__all__ = ["LayerGradients", "ModelHandle", "ModelManager", "ModelStatus"]
