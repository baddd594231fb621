"""A method or feature parameter with its default and allowed range.

Explainers declare their parameters with it, and so do modalities for their perturbation
features; the UI builds its controls from the declaration and the registry validates values
against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ExplainerError


@dataclass(frozen=True)
class Param:
    """A method parameter with its default and allowed range (the UI builds a control from it)."""

    name: str
    label: str
    kind: str  # int | float | choice | bool
    default: Any
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()
    help: str = ""
    modalities: tuple[str, ...] = ()  # empty: every modality

    def validate(self, value: Any, *, method: str) -> Any:
        where = f"{method}: parameter '{self.name}'"
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            raise ExplainerError(f"{where} must be true or false, got {value!r}.")
        if self.kind == "choice":
            if value in self.choices:
                return value
            raise ExplainerError(f"{where} must be one of {list(self.choices)}, got {value!r}.")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ExplainerError(f"{where} must be a number, got {value!r}.") from None
        if not np.isfinite(number):
            raise ExplainerError(f"{where} must be finite, got {value!r}.")
        if self.kind == "int":
            if number != int(number):
                raise ExplainerError(f"{where} must be a whole number, got {value!r}.")
            number = int(number)
        lo, hi = self.minimum, self.maximum
        if (lo is not None and number < lo) or (hi is not None and number > hi):
            raise ExplainerError(f"{where} must lie in [{lo}, {hi}], got {value!r}.")
        return number

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "kind": self.kind,
                "default": self.default, "minimum": self.minimum, "maximum": self.maximum,
                "step": self.step, "choices": list(self.choices), "help": self.help,
                "modalities": list(self.modalities)}
