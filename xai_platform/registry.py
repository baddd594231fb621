"""A named registry of plug-ins (modalities, model formats): one instance per name, a
duplicate refused, an unknown name a :class:`ConfigError` listing the registered ones."""

from __future__ import annotations

from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Plug-ins of one kind by name, in registration order."""

    def __init__(self, kind: str, *, key: str) -> None:
        self.kind, self.key = kind, key  # key: the config key that names one ("modality")
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._items[name] = item

    def unregister(self, name: str) -> None:
        """Remove a plug-in (tests that add a toy one clean up with this)."""
        self._items.pop(name, None)

    def get(self, name: str, *, source: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(f"'{name}' is not allowed.", source=source, key=self.key,
                              fix=f"use one of: {', '.join(self._items)}.") from None

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def all(self) -> list[T]:
        return list(self._items.values())
