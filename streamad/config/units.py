"""Elastic's time units and byte sizes, parsed once at the config edge."""

from __future__ import annotations

import re

from streamad.config.errors import ConfigError

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(nanos|micros|ms|s|m|h|d)?\s*$")
_SECONDS = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
_BYTES = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb|pb)?\s*$", re.IGNORECASE)
_BYTE_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40, "pb": 1 << 50}


def parse_duration(value, field: str, *, allow_bare_number: bool = False) -> float:
    """Seconds in an Elastic time value (`5m`, `1h`, `300s`, `90000ms`, `7d`, `10micros`).

    A bare number is an error unless `allow_bare_number` (then it means seconds).
    """
    if isinstance(value, bool):
        raise ConfigError(field, "time_value_type", f"expected a time value like '15m', got {value!r}")
    if isinstance(value, (int, float)):
        if not allow_bare_number:
            raise ConfigError(field, "time_unit_required", f"time value {value!r} needs a unit (d h m s ms micros nanos)")
        return float(value)
    if not isinstance(value, str):
        raise ConfigError(field, "time_value_type", f"expected a time value like '15m', got {value!r}")
    m = _DURATION.match(value)
    if not m:
        raise ConfigError(field, "time_value_format", f"cannot parse time value {value!r} (units: d h m s ms micros nanos)")
    number, unit = m.groups()
    if unit is None:
        if not allow_bare_number:
            raise ConfigError(field, "time_unit_required", f"time value {value!r} needs a unit (d h m s ms micros nanos)")
        unit = "s"
    return float(number) * _SECONDS[unit]


def format_duration(seconds: float) -> str:
    """The shortest exact Elastic rendering: 86400 -> '1d', 300 -> '5m', 0.5 -> '500ms'."""
    if seconds == int(seconds):
        s = int(seconds)
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if s and s % size == 0:
                return f"{s // size}{unit}"
        return f"{s}s"
    ms = seconds * 1000
    if ms == int(ms):
        return f"{int(ms)}ms"
    return f"{int(round(seconds * 1e6))}micros"


def parse_bytesize(value, field: str) -> int:
    """Bytes in an Elastic byte size (`10mb`, `1gb`, `4096kb`); a bare number means MiB; < 1 MiB is an error."""
    if isinstance(value, bool):
        raise ConfigError(field, "byte_size_type", f"expected a byte size like '10mb', got {value!r}")
    if isinstance(value, (int, float)):
        nbytes = int(value * (1 << 20))
    elif isinstance(value, str):
        m = _BYTES.match(value)
        if not m:
            raise ConfigError(field, "byte_size_format", f"cannot parse byte size {value!r} (units: b kb mb gb tb pb)")
        number, unit = m.groups()
        nbytes = int(float(number) * _BYTE_UNITS[(unit or "mb").lower()])
    else:
        raise ConfigError(field, "byte_size_type", f"expected a byte size like '10mb', got {value!r}")
    if nbytes < (1 << 20):
        raise ConfigError(field, "byte_size_minimum", f"{value!r} is below the minimum of 1mb")
    return nbytes


def format_bytesize(nbytes: int) -> str:
    """Elastic's rendering of model_memory_limit: whole mb when exact, else kb or b."""
    for unit, size in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if nbytes % size == 0 and unit != "gb":
            return f"{nbytes // size}{unit}"
    return f"{nbytes}b"
