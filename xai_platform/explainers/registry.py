"""The method registry: what each explainer is, what it applies to, and its parameters.

A method registers itself where it is defined::

    @register_method(id="gradcam", label="Grad-CAM", kind="gradient", ...,
                     params=(Param("relu", ...),))
    def gradcam(model, x, *, target, ctx, **params) -> Attribution: ...

The UI builds its controls from ``params``; :func:`compatibility` says, for a model, which
methods apply and why the others do not, from what the method ``needs`` and what the model's
format can do (its capabilities). There is no hand-written model-to-method table. The method
modules are imported by the package (:mod:`xai_platform.explainers`), not by this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from ..config import ModelSpec
from ..errors import CancelledError, ExplainerError
from ..params import Param

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Attribution:
    """What an explainer function returns: heatmap (H, W) float32 over the feature plane and
    how many model evaluations (rows through the network, forward or backward) it cost."""

    heatmap: FloatArray
    n_evaluations: int
    extras: dict[str, Any] = field(default_factory=dict)
    signed: bool | None = None  # None: as the method declares


class ExplainContext:
    """Per-request state handed to an explainer: seed, batch size, modality, progress and
    cancellation. Created per call, so nothing crosses requests."""

    def __init__(self, *, spec: ModelSpec, seed: int = 0, batch_size: int = 32,
                 progress: Callable[[float, str], None] | None = None,
                 cancel: threading.Event | None = None) -> None:
        self.spec = spec
        self.modality = spec.modality
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self._progress = progress
        self._cancel = cancel
        self.rng = np.random.default_rng(self.seed)

    def report(self, done: float, total: float, what: str = "") -> None:
        """Report progress (and stop here if the user cancelled)."""
        if self._cancel is not None and self._cancel.is_set():
            raise CancelledError("The request was cancelled.")
        if self._progress is not None and total:
            self._progress(min(1.0, done / total), what)


ExplainFn = Callable[..., Attribution]


@dataclass(frozen=True)
class MethodInfo:
    """A registered method and what it can do."""

    id: str
    label: str
    description: str
    paper: str
    kind: str  # gradient | perturbation
    specificity: str  # model-specific | model-agnostic
    needs: tuple[str, ...]  # capabilities of the model's format (see models.formats)
    modalities: tuple[str, ...] | None  # None: every modality
    uses_features: bool  # takes the modality's perturbation features and their parameters
    needs_conv_layer: bool
    stochastic: bool
    signed: bool
    params: tuple[Param, ...]
    caveats: str
    speed: int  # rough rank of cost: lower appears first on the comparison page
    fn: ExplainFn
    stochastic_when: Callable[[Mapping[str, Any]], bool] | None = None

    def uses_seed(self, params: Mapping[str, Any]) -> bool:
        """Whether the method draws random numbers with these resolved parameters (a method
        that is ``stochastic`` with some parameters only says which through
        ``stochastic_when``)."""
        return self.stochastic and (self.stochastic_when is None or
                                    bool(self.stochastic_when(params)))

    def params_for(self, modality: str) -> tuple[Param, ...]:
        """The parameters that apply to inputs of ``modality`` (the method's own, then the
        modality's feature parameters for a method that perturbs features)."""
        own = tuple(p for p in self.params if not p.modalities or modality in p.modalities)
        if not self.uses_features:
            return own
        from ..modalities import get_modality

        return own + get_modality(modality).params()

    def taken_from(self, shared: dict[str, Any], *, modality: str) -> dict[str, Any]:
        """The entries of a parameter list shared by several methods (the CLI's ``--param``, a
        batch's settings) that this method takes for ``modality`` inputs."""
        names = {p.name for p in self.params_for(modality)}
        return {k: v for k, v in shared.items() if k in names}

    def resolve_params(self, given: dict[str, Any] | None, *, modality: str) -> dict[str, Any]:
        """Defaults filled in, every value checked against its declared range."""
        given = dict(given or {})
        out = {}
        applicable = self.params_for(modality)
        for p in applicable:
            out[p.name] = p.validate(given.pop(p.name), method=self.label) if p.name in given \
                else p.default
        if given:
            names = ", ".join(p.name for p in applicable) or "none"
            raise ExplainerError(f"{self.label} has no parameter '{next(iter(given))}' for "
                                 f"{modality} inputs; it takes: {names}.")
        return out

    def reason_incompatible(self, spec: ModelSpec) -> str | None:
        from ..models.formats import CAPABILITY_TEXT, get_format

        fmt = get_format(spec.framework)
        missing = fmt.capabilities_for(spec).missing(self.needs)
        if missing:
            return (f"{self.label} needs {CAPABILITY_TEXT[missing[0]]}, which this model's "
                    f"format ({fmt.label}) does not give.")
        if self.modalities is not None and spec.modality not in self.modalities:
            return f"{self.label} does not support {spec.modality} inputs."
        if self.needs_conv_layer and not spec.target_layer:
            return (f"{self.label} needs a convolutional target layer; model '{spec.id}' "
                    "declares none (set target_layer in its config entry).")
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "label": self.label, "description": self.description,
                "paper": self.paper, "kind": self.kind, "specificity": self.specificity,
                "needs": list(self.needs),
                "modalities": None if self.modalities is None else list(self.modalities),
                "needs_conv_layer": self.needs_conv_layer, "stochastic": self.stochastic,
                "signed": self.signed, "caveats": self.caveats,
                "params": [p.to_dict() for p in self.params]}


_METHODS: dict[str, MethodInfo] = {}


def register_method(*, id: str, label: str, description: str, paper: str, kind: str,
                    specificity: str, needs: tuple[str, ...] = ("predict",),
                    modalities: tuple[str, ...] | None = None, uses_features: bool = False,
                    needs_conv_layer: bool = False, stochastic: bool = False,
                    signed: bool = False, params: tuple[Param, ...] = (), caveats: str = "",
                    speed: int = 50,
                    stochastic_when: Callable[[Mapping[str, Any]], bool] | None = None
                    ) -> Callable[[ExplainFn], ExplainFn]:
    """Decorator registering an explainer function. A duplicate id raises. ``stochastic``:
    the method may sample; ``stochastic_when(params)``: whether it does with those parameters
    (default: always, when stochastic)."""
    if kind not in ("gradient", "perturbation"):
        raise ValueError(f"kind must be gradient or perturbation, not {kind!r}")
    if specificity not in ("model-specific", "model-agnostic"):
        raise ValueError(f"specificity must be model-specific or model-agnostic, not {specificity!r}")

    def decorate(fn: ExplainFn) -> ExplainFn:
        if id in _METHODS:
            raise ValueError(f"method '{id}' is already registered")
        _METHODS[id] = MethodInfo(id=id, label=label, description=description, paper=paper,
                                  kind=kind, specificity=specificity, needs=needs,
                                  modalities=modalities, uses_features=uses_features,
                                  needs_conv_layer=needs_conv_layer,
                                  stochastic=stochastic, signed=signed, params=params,
                                  caveats=caveats, speed=speed, fn=fn,
                                  stochastic_when=stochastic_when)
        return fn

    return decorate


def all_methods() -> list[MethodInfo]:
    return sorted(_METHODS.values(), key=lambda m: (m.speed, m.id))


def get_method(method_id: str) -> MethodInfo:
    if method_id not in _METHODS:
        raise ExplainerError(f"unknown method '{method_id}'; use one of: "
                             f"{', '.join(m.id for m in all_methods())}.")
    return _METHODS[method_id]


@dataclass(frozen=True)
class Compatibility:
    method: MethodInfo
    reason: str | None  # None: the method applies

    @property
    def ok(self) -> bool:
        return self.reason is None


def compatibility(spec: ModelSpec) -> list[Compatibility]:
    """Every method, with the reason it does not apply to ``spec`` (None when it does)."""
    return [Compatibility(m, m.reason_incompatible(spec)) for m in all_methods()]


def compatible_methods(spec: ModelSpec) -> list[MethodInfo]:
    return [c.method for c in compatibility(spec) if c.ok]
