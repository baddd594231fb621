"""Import Gradio without regenerating its type stubs: a second off every start-up.

Each Gradio component class, as it is defined, calls ``gradio.component_meta.
create_or_modify_pyi``: it reads the class's source file, parses it with ``ast`` (a file with
twenty classes twenty times), renders a Jinja template of the event methods and compares the
result with the ``.pyi`` file next to the source, writing it when they differ. That keeps
Gradio's own stubs current while Gradio is developed; an installed Gradio ships them current
already (nothing is written), and nothing at run time reads a ``.pyi``. On this machine it is
about 1 s of the 2-2.6 s that ``import gradio`` takes (bench/startup.py, docs/BENCHMARKS.md).

:func:`skip_stub_writing` installs an import hook that, once ``gradio.component_meta`` has been
executed and before any component class exists, replaces that function with one that does
nothing. It changes nothing else in Gradio: the classes, their events and the served page are
the same. Set ``XAI_GRADIO_STUBS=1`` to keep Gradio's behaviour (when developing a custom
component, whose ``.pyi`` Gradio writes next to its source).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any

TARGET = "gradio.component_meta"
HOOK = "create_or_modify_pyi"


def _no_stub(*args: Any, **kwargs: Any) -> None:
    """Gradio's ``create_or_modify_pyi``, skipped (see the module docstring)."""


class _Loader(importlib.abc.Loader):
    """The path loader of ``gradio.component_meta``, then the hook swapped out."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self._loader.exec_module(module)
        if callable(getattr(module, HOOK, None)):  # a Gradio without it: nothing to skip
            setattr(module, HOOK, _no_stub)

    def __getattr__(self, name: str) -> Any:  # get_source etc., for tracebacks and inspect
        return getattr(self._loader, name)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: ModuleType | None = None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)  # once: the module is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


def skip_stub_writing() -> bool:
    """Make the coming ``import gradio`` skip its stub regeneration.

    Returns whether the hook was installed: not when Gradio's component classes exist already
    (imported earlier in this process), when ``XAI_GRADIO_STUBS=1``, or when installed before.
    """
    if os.environ.get("XAI_GRADIO_STUBS", "").strip() not in ("", "0"):
        return False
    if TARGET in sys.modules or any(isinstance(f, _Finder) for f in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Finder())
    return True
