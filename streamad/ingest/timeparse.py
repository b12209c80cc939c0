"""Event time parsing: `epoch`, `epoch_ms`, Java DateTimeFormatter patterns, and ISO-8601 always.

`TimeParser(fmt)(value)` returns epoch seconds (float) or None when the value is not a valid time
(the caller counts it as invalid_date_count). Patterns are compiled once to a regular expression and
converted with integer calendar arithmetic (no strptime, no datetime per event on the fast path).
A pattern without a zone means UTC.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime

from streamad.config.errors import ConfigError

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_ZONES = {"utc": 0, "gmt": 0, "z": 0, "ut": 0, "est": -5 * 3600, "edt": -4 * 3600, "cst": -6 * 3600,
          "cdt": -5 * 3600, "mst": -7 * 3600, "mdt": -6 * 3600, "pst": -8 * 3600, "pdt": -7 * 3600,
          "cet": 3600, "cest": 7200, "bst": 3600}
_MAX_EPOCH_S = 253402300799.0  # 9999-12-31T23:59:59Z
_MIN_EPOCH_S = -62135596800.0  # 0001-01-01T00:00:00Z


def days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm)."""
    y -= m <= 2
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    return 30 if m in (4, 6, 9, 11) else 31


_TOKEN = re.compile(r"'(?:[^']|'')*'|([A-Za-z])\1*|.", re.DOTALL)


def _compile(pattern: str, field: str):
    parts: list[str] = []
    groups: list[tuple[str, int]] = []
    for m in _TOKEN.finditer(pattern):
        tok = m.group(0)
        if tok.startswith("'"):
            lit = tok[1:-1].replace("''", "'") if len(tok) > 1 else "'"
            parts.append(re.escape(lit if tok != "''" else "'"))
            continue
        letter, n = tok[0], len(tok)
        if not letter.isalpha():
            parts.append(re.escape(tok))
            continue
        name = f"g{len(groups)}"
        if letter in "yu":
            rx = r"\d{2}" if n == 2 else r"[+-]?\d{4,9}"
            groups.append(("year2" if n == 2 else "year", 0))
        elif letter in "ML":
            if n >= 3:
                rx = r"[A-Za-z]{3,9}"
                groups.append(("monthname", 0))
            else:
                rx = r"\d{1,2}" if n == 1 else r"\d{2}"
                groups.append(("month", 0))
        elif letter == "d":
            rx = r"\d{1,2}" if n == 1 else r"\d{2}"
            groups.append(("day", 0))
        elif letter in "HkhK":
            # H: hour-of-day 0-23, k: clock-hour-of-day 1-24, h: clock-hour-of-am-pm 1-12, K: hour-of-am-pm 0-11
            rx = r"\d{1,2}" if n == 1 else r"\d{2}"
            groups.append(({"H": "hour", "k": "hour1_24", "h": "hour12", "K": "hour0_11"}[letter], 0))
        elif letter == "m":
            rx = r"\d{1,2}" if n == 1 else r"\d{2}"
            groups.append(("minute", 0))
        elif letter == "s":
            rx = r"\d{1,2}" if n == 1 else r"\d{2}"
            groups.append(("second", 0))
        elif letter == "S":
            rx = r"\d{" + str(n) + "}"
            groups.append(("fraction", n))
        elif letter == "a":
            rx = r"[AaPp][Mm]"
            groups.append(("ampm", 0))
        elif letter in "Xx":
            rx = r"Z|[+-]\d{2}(?::?\d{2})?" if letter == "X" else r"[+-]\d{2}(?::?\d{2})?"
            groups.append(("offset", 0))
        elif letter == "Z":
            rx = r"Z|[+-]\d{2}:?\d{2}"
            groups.append(("offset", 0))
        elif letter in "zVO":
            rx = r"[A-Za-z][A-Za-z/_+\-0-9:]*"
            groups.append(("zone", 0))
        elif letter in "E":
            rx = r"[A-Za-z]{2,9}"
            groups.append(("ignore", 0))
        elif letter == "D":
            rx = r"\d{1,3}"
            groups.append(("dayofyear", 0))
        else:
            raise ConfigError(field, "time_format_pattern", f"unsupported letter {letter!r} in time_format {pattern!r}")
        parts.append(f"(?P<{name}>{rx})")
    return re.compile("".join(parts) + r"\Z"), groups


def _offset_seconds(text: str) -> int | None:
    if text in ("Z", "z"):
        return 0
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    if len(digits) not in (2, 4) or not digits.isdigit():
        return None
    hours, minutes = int(digits[:2]), int(digits[2:] or 0)
    return sign * (hours * 3600 + minutes * 60)


def parse_iso8601(text: str) -> float | None:
    """ISO-8601 date or date-time (`Z`, offsets, fractions, a space for `T`), UTC when no zone."""
    s = text.strip()
    if len(s) < 4 or not s[0].isdigit():
        return None
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        return dt.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


class TimeParser:
    """Callable turning a raw time field value into epoch seconds, or None if it is not a valid time."""

    def __init__(self, time_format: str = "epoch", field: str = "data_description.time_format"):
        if not isinstance(time_format, str) or not time_format:
            raise ConfigError(field, "time_format_required", "time_format must be a non-empty string")
        self.time_format = time_format
        self._scale = None
        self._regex = None
        if time_format == "epoch":
            self._scale = 1.0
        elif time_format == "epoch_ms":
            self._scale = 1e-3
        else:
            self._regex, self._groups = _compile(time_format, field)

    def __call__(self, value) -> float | None:
        if isinstance(value, bool) or value is None:
            return None
        if isinstance(value, (int, float)):
            if self._scale is None:
                return None
            try:
                t = float(value) * self._scale
            except OverflowError:  # an int beyond the float range (a CSV cell of hundreds of digits)
                return None
            return t if math.isfinite(t) and _MIN_EPOCH_S <= t <= _MAX_EPOCH_S else None
        if not isinstance(value, str):
            return None
        if self._scale is not None:
            try:
                t = float(value) * self._scale
            except ValueError:
                return parse_iso8601(value)
            return t if math.isfinite(t) and _MIN_EPOCH_S <= t <= _MAX_EPOCH_S else None
        t = self._pattern(value)
        return t if t is not None else parse_iso8601(value)

    def _pattern(self, text: str) -> float | None:
        m = self._regex.match(text)
        if m is None:
            return None
        year, month, day, hour, minute, second, frac = 1970, 1, 1, 0, 0, 0, 0.0
        hour12, hour0_11, pm, offset, doy = None, None, None, 0, None
        for (kind, width), raw in zip(self._groups, m.groups()):
            if kind == "year":
                year = int(raw)
            elif kind == "year2":
                year = 2000 + int(raw)
            elif kind == "month":
                month = int(raw)
            elif kind == "monthname":
                key = raw[:3].lower()
                if key not in _MONTHS:
                    return None
                month = _MONTHS.index(key) + 1
            elif kind == "day":
                day = int(raw)
            elif kind == "hour":
                hour = int(raw)
            elif kind == "hour12":
                hour12 = int(raw)
            elif kind == "hour0_11":
                hour0_11 = int(raw)
            elif kind == "hour1_24":
                hour = int(raw)
                if not 1 <= hour <= 24:
                    return None
                hour %= 24
            elif kind == "minute":
                minute = int(raw)
            elif kind == "second":
                second = int(raw)
            elif kind == "fraction":
                frac = int(raw) / (10 ** width)
            elif kind == "ampm":
                pm = raw.lower() == "pm"
            elif kind == "offset":
                off = _offset_seconds(raw)
                if off is None:
                    return None
                offset = off
            elif kind == "zone":
                off = _ZONES.get(raw.lower())
                if off is None:
                    off = _offset_seconds(raw[3:]) if raw[:3].upper() in ("UTC", "GMT") and len(raw) > 3 else None
                if off is None:
                    return None
                offset = off
            elif kind == "dayofyear":
                doy = int(raw)
        if hour12 is not None:
            if not 1 <= hour12 <= 12:
                return None
            hour = hour12 % 12 + (12 if pm else 0)
        elif hour0_11 is not None:
            if not 0 <= hour0_11 <= 11:
                return None
            hour = hour0_11 + (12 if pm else 0)
        if not (1 <= month <= 12 and 0 <= hour <= 24 and minute < 60 and second < 61 and 1 <= year <= 9999):
            return None
        if hour == 24 and (minute or second or frac):
            return None  # Java accepts 24:00 (end of day) only
        if doy is not None:
            leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
            if not 1 <= doy <= (366 if leap else 365):
                return None
            days = days_from_civil(year, 1, 1) + doy - 1
        else:
            if not 1 <= day <= _days_in_month(year, month):
                return None
            days = days_from_civil(year, month, day)
        return days * 86400 + hour * 3600 + minute * 60 + second + frac - offset
