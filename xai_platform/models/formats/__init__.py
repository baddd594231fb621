"""Model formats: one file per format, registered where it is defined.

Importing this package registers the built-in formats without importing any framework. See
:mod:`xai_platform.models.formats.base` for the interface.
"""

from .base import (CAPABILITY_TEXT, Capabilities, ModelFormat, all_formats, get_format,
                   register_format, unregister_format)

from . import torch, keras, onnx, torchscript, transformers  # noqa: E402,F401,I001  (each registers itself; listed in this order)

__all__ = ["CAPABILITY_TEXT", "Capabilities", "ModelFormat", "all_formats", "get_format",
           "register_format", "unregister_format"]
