"""Checks shared by every YAML parser (models, app settings, modality input specs).

Each check raises one :class:`~xai_platform.errors.ConfigError` naming the file, the key and
the fix, so a modality's input parser reports mistakes the way the model parser does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError


def type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(type_name(k) for k in kind)
    return {str: "a string", int: "an integer", float: "a number", bool: "true/false",
            list: "a list", dict: "a mapping", type(None): "null"}.get(kind, str(kind))


def check_type(value: Any, kind: Any, *, source: str, key: str) -> Any:
    """``value`` if it is of ``kind`` (a type or a tuple of types; an int passes as a float)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        raise ConfigError(f"expected {type_name(kind)}, got {value!r}.", source=source, key=key,
                          fix=f"write {type_name(kind)}.")
    if not isinstance(value, kinds):
        raise ConfigError(f"expected {type_name(kind)}, got {type(value).__name__} {value!r}.",
                          source=source, key=key, fix=f"write {type_name(kind)}.")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{value!r} is not a finite number.", source=source, key=key,
                          fix="write a finite number.")
    return value


def check_choice(value: str, choices: Iterable[str], *, source: str, key: str) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"'{value}' is not allowed.", source=source, key=key,
                          fix=f"use one of: {', '.join(choices)}.")
    return value


def check_keys(entry: Mapping[str, Any], allowed: Iterable[str], *, source: str,
               prefix: str = "") -> None:
    allowed = tuple(allowed)
    for key in entry:
        if key not in allowed:
            close = [a for a in allowed if a.startswith(str(key)[:3])]
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown key{hint}.", source=source, key=f"{prefix}{key}",
                              fix=f"remove it or use one of: {', '.join(allowed)}.")


def check_positive(value: float, *, source: str, key: str, minimum: float = 0.0,
                   strict: bool = True) -> None:
    if value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ConfigError(f"must be {op} {minimum}, got {value}.", source=source, key=key,
                          fix=f"set a value {op} {minimum}.")


def parse_fields(raw: Mapping[str, Any], types: Mapping[str, Any], *, source: str,
                 prefix: str) -> dict[str, Any]:
    """Known keys only, each of its declared type: ``{key: value}``."""
    check_keys(raw, types, source=source, prefix=prefix)
    return {k: check_type(v, types[k], source=source, key=f"{prefix}{k}") for k, v in raw.items()}
