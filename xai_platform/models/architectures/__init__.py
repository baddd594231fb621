"""Registry of network builders, known by name without importing any framework.

A config entry names its ``architecture``; the registry maps the name to its framework and its
builder, so the entry is checked before torch or TensorFlow is imported. A builder is called as
``builder(spec) -> network`` and reads everything it needs from the :class:`ModelSpec`
(``num_outputs``, ``input``, ``arch_args``). Builders register where they are defined:

* ``@register_architecture("keras_cnn", framework="keras")`` on a function whose body imports
  its framework (:mod:`.keras_nets`);
* ``register_lazy("custom_cnn", framework="torch", target=".torch_layers:build_custom_cnn")``
  for networks whose module imports its framework at the top (:mod:`.torch_nets`).

Importing this package imports the registering modules (as timm's ``models/__init__.py`` does)
and nothing else.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError

if TYPE_CHECKING:
    from ...config import ModelSpec

Builder = Callable[..., Any]
_BUILDERS: dict[str, tuple[str, Builder]] = {}


def register_architecture(name: str, *, framework: str) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(spec) -> network`` under ``name``. A duplicate raises."""

    def decorate(builder: Builder) -> Builder:
        if name in _BUILDERS:
            raise ValueError(f"architecture '{name}' is already registered")
        _BUILDERS[name] = (framework, builder)
        return builder

    return decorate


def register_lazy(name: str, *, framework: str, target: str) -> None:
    """Register the builder ``module:function`` (relative to this package), imported on its
    first call."""
    module, _, function = target.partition(":")

    def build(spec: ModelSpec) -> Any:
        return getattr(importlib.import_module(module, __name__), function)(spec)

    build.__name__ = name
    build.target = target  # type: ignore[attr-defined]
    register_architecture(name, framework=framework)(build)


#: architecture -> "module:function" that fetches published weights for an entry, called as
#: ``fetch(spec, progress=callable(fraction, what)) -> Path`` (imported on first use)
_FETCHERS: dict[str, str] = {}
#: architecture -> "module:function" ``missing(spec) -> bool``: whether the entry has files to
#: fetch besides its own weights file (e.g. a pretrained encoder its builder reads)
_MISSING: dict[str, str] = {}


def _resolve(target: str) -> Callable[..., Any]:
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module, __name__), function)


def register_lazy_fetcher(name: str, *, target: str, missing: str | None = None) -> None:
    """Declare that entries of architecture ``name`` can fetch their published weights with the
    function ``module:function`` (relative to this package). ``missing``: a ``module:function``
    that says whether an entry still needs fetching when its weights file is there (imported
    when asked, so it should import no framework)."""
    if name in _FETCHERS:
        raise ValueError(f"a weights fetcher for '{name}' is already registered")
    _FETCHERS[name] = target
    if missing is not None:
        _MISSING[name] = missing


def get_fetcher(name: str) -> Callable[..., Any] | None:
    """The weights fetcher of architecture ``name`` (imports its module), or None."""
    target = _FETCHERS.get(name)
    return None if target is None else _resolve(target)


def fetch_needed(spec: ModelSpec, *, weights_found: bool) -> bool:
    """Whether fetching would bring something the entry lacks: its weights file, or a file its
    architecture's ``missing`` check names. False without a fetcher."""
    if spec.architecture not in _FETCHERS:
        return False
    if not weights_found:
        return True
    check = _MISSING.get(spec.architecture)
    return check is not None and bool(_resolve(check)(spec))


def known_architectures() -> dict[str, str]:
    """Every architecture name -> its framework, without importing any framework."""
    return {name: fw for name, (fw, _) in _BUILDERS.items()}


def get_builder(name: str) -> Builder:
    if name not in _BUILDERS:
        raise KeyError(f"architecture '{name}' is not registered")
    return _BUILDERS[name][1]


def check_architecture(spec: ModelSpec, framework: str, *, extra: tuple[str, ...] = ()) -> None:
    """Raise :class:`ConfigError` unless ``spec.architecture`` is a ``framework`` builder
    (``extra``: other names the format accepts, listed in the fix)."""
    where = f"{spec.source} (model '{spec.id}')"
    arch = spec.architecture
    known = known_architectures()
    if arch not in known:
        names = sorted(n for n, fw in known.items() if fw == framework) + list(extra)
        raise ConfigError(f"unknown architecture '{arch}'.", source=where, key="architecture",
                          fix=f"use a registered builder ({', '.join(names)}); see "
                              "SETUP.md, 'Adding an architecture'.")
    if known[arch] != framework:
        raise ConfigError(f"architecture '{arch}' is a {known[arch]} builder but framework "
                          f"is '{framework}'.", source=where, key="framework",
                          fix=f"set framework: {known[arch]}.")


from . import keras_nets, torch_nets  # noqa: E402,F401  (each registers its builders)
