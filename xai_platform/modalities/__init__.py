"""Modalities: one file per kind of input, registered where it is defined.

Importing this package registers the built-in modalities (as timm's ``models/__init__.py``
registers its models); none of them imports a deep-learning framework. See
:mod:`xai_platform.modalities.base` for the interface.
"""

from .base import (InputSpec, Modality, PreparedInput, Readout, Source, all_modalities,
                   get_modality, modality_names, register_modality,
                   unregister_modality)

from . import audio, xray  # noqa: E402,F401  (each registers itself)

__all__ = ["InputSpec", "Modality", "PreparedInput", "Readout", "Source", "all_modalities",
           "get_modality", "modality_names", "register_modality", "unregister_modality"]
