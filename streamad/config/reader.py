"""Typed reading of a JSON body with error paths, used by every config class's `from_dict`."""

from __future__ import annotations

import math

from streamad.config.errors import ConfigError


class Body:
    """A JSON object being read at `path`; unknown keys are an error once `done()` is called."""

    def __init__(self, data, path: str, *, ignore: frozenset[str] = frozenset()):
        if not isinstance(data, dict):
            raise ConfigError(path or "body", "object_required", f"expected a JSON object, got {type(data).__name__}")
        self.data = data
        self.path = path
        self._seen = set(ignore)

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        self._seen.add(key)
        return key in self.data and self.data[key] is not None

    def raw(self, key: str, default=None):
        self._seen.add(key)
        value = self.data.get(key)
        return default if value is None else value

    def str(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.raw(key)
        if value is None:
            if required:
                raise ConfigError(self.at(key), f"{key}_required", f"[{key}] is required")
            return default
        if not isinstance(value, str):
            raise ConfigError(self.at(key), "string_required", f"[{key}] must be a string, got {value!r}")
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self.raw(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ConfigError(self.at(key), "boolean_required", f"[{key}] must be true or false, got {value!r}")
        return value

    def int(self, key: str, default: int | None = None, *, minimum: int | None = None) -> int | None:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value != int(value):
            raise ConfigError(self.at(key), "integer_required", f"[{key}] must be an integer, got {value!r}")
        value = int(value)
        if minimum is not None and value < minimum:
            raise ConfigError(self.at(key), f"{key}_minimum", f"[{key}] must be >= {minimum}, got {value}")
        return value

    def number(self, key: str, default: float | None = None) -> float | None:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(self.at(key), "number_required", f"[{key}] must be a finite number, got {value!r}")
        return float(value)

    def list(self, key: str) -> list:
        value = self.raw(key, [])
        if not isinstance(value, list):
            raise ConfigError(self.at(key), "array_required", f"[{key}] must be an array")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        items = self.list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ConfigError(f"{self.at(key)}[{i}]", "string_required", f"[{key}] must hold strings, got {item!r}")
        return tuple(items)

    def obj(self, key: str) -> dict | None:
        value = self.raw(key)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(self.at(key), "object_required", f"[{key}] must be a JSON object")
        return value

    def done(self) -> None:
        unknown = sorted(set(self.data) - self._seen)
        if unknown:
            raise ConfigError(self.at(unknown[0]), "unknown_field", f"unknown field [{unknown[0]}]")
