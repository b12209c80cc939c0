"""Filters (lists of items with `*` wildcards) and calendars (scheduled events) used by rules and jobs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from streamad.config.errors import ConfigError

_ID = re.compile(r"^[a-z0-9](?:[a-z0-9_\-]{0,62}[a-z0-9])?$")


def check_id(value, field_name: str) -> str:
    """Elastic's id rule for jobs, filters, calendars and datafeeds."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ConfigError(
            field_name, "id_format",
            f"{value!r} must be lowercase alphanumerics, '-' or '_', start and end alphanumeric, at most 64 characters",
        )
    return value


@dataclass(frozen=True)
class Filter:
    """A named list of values; an item may start and/or end with `*` (prefix, suffix, contains)."""

    filter_id: str
    items: tuple[str, ...]
    description: str = ""
    _exact: frozenset = field(default=frozenset(), repr=False, compare=False)
    _patterns: tuple = field(default=(), repr=False, compare=False)

    @classmethod
    def from_dict(cls, body: dict, filter_id: str | None = None) -> Filter:
        if not isinstance(body, dict):
            raise ConfigError("filter", "object_required", "a filter body must be a JSON object")
        fid = check_id(filter_id or body.get("filter_id"), "filter_id")
        items = body.get("items", [])
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise ConfigError("items", "string_list", "items must be a list of strings")
        if len(items) > 10000:
            raise ConfigError("items", "max_items", "a filter holds at most 10000 items")
        items = tuple(sorted(set(items)))
        exact, patterns = set(), []
        for item in items:
            if item.startswith("*") or item.endswith("*"):
                patterns.append((item.startswith("*"), item.endswith("*"), item.strip("*")))
            else:
                exact.add(item)
        return cls(fid, items, str(body.get("description", "")), frozenset(exact), tuple(patterns))

    def matches(self, value: str) -> bool:
        if value in self._exact:
            return True
        for lead, trail, core in self._patterns:
            if lead and trail:
                if core in value:
                    return True
            elif lead:
                if value.endswith(core):
                    return True
            elif value.startswith(core):
                return True
        return False

    def to_dict(self) -> dict:
        out = {"filter_id": self.filter_id, "items": list(self.items)}
        if self.description:
            out["description"] = self.description
        return out


def _event_time(value) -> int | None:
    """An event time as epoch ms: a number, a string of digits, or an ISO-8601 date-time (UTC if no zone)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if value == value and abs(value) < 1e17 else None
    if not isinstance(value, str):
        return None
    try:
        return int(value)
    except ValueError:
        pass
    from streamad.ingest.timeparse import parse_iso8601

    t = parse_iso8601(value)
    return None if t is None else int(round(t * 1000))


@dataclass(frozen=True)
class ScheduledEvent:
    description: str
    start_ms: int
    end_ms: int
    skip_result: bool = True
    skip_model_update: bool = True
    event_id: str = ""


@dataclass(frozen=True)
class Calendar:
    """Job ids (or groups) plus scheduled events during which results and/or model updates are skipped."""

    calendar_id: str
    job_ids: tuple[str, ...]
    events: tuple[ScheduledEvent, ...] = ()
    description: str = ""

    @classmethod
    def from_dict(cls, body: dict, calendar_id: str | None = None) -> Calendar:
        cid = check_id(calendar_id or body.get("calendar_id"), "calendar_id")
        job_ids = body.get("job_ids", [])
        if not isinstance(job_ids, list) or not all(isinstance(j, str) for j in job_ids):
            raise ConfigError("job_ids", "string_list", "job_ids must be a list of strings")
        events = []
        for i, ev in enumerate(body.get("events", [])):
            path = f"events[{i}]"
            if not isinstance(ev, dict):
                raise ConfigError(path, "object_required", "a scheduled event must be an object")
            start, end = _event_time(ev.get("start_time")), _event_time(ev.get("end_time"))
            if start is None or end is None:
                raise ConfigError(path, "event_times", "start_time and end_time (epoch ms or ISO-8601) are required")
            if end <= start:
                raise ConfigError(f"{path}.end_time", "event_order", "end_time must be after start_time")
            events.append(ScheduledEvent(str(ev.get("description", "")), start, end,
                                         bool(ev.get("skip_result", True)), bool(ev.get("skip_model_update", True)),
                                         str(ev.get("event_id", ""))))
        return cls(cid, tuple(job_ids), tuple(sorted(events, key=lambda e: (e.start_ms, e.end_ms))),
                   str(body.get("description", "")))

    def applies_to(self, job_id: str, groups: tuple[str, ...] = ()) -> bool:
        return "_all" in self.job_ids or job_id in self.job_ids or any(g in self.job_ids for g in groups)

    def events_in_bucket(self, start_ms: int, span_ms: int) -> list[ScheduledEvent]:
        """Events covering the bucket starting at `start_ms`, each widened to whole buckets as Elastic does
        (ScheduledEvent.toDetectionRule: start floored and end ceiled to the bucket span)."""
        out = []
        for ev in self.events:
            lo = ev.start_ms - ev.start_ms % span_ms
            hi = -(-ev.end_ms // span_ms) * span_ms
            if lo <= start_ms < hi:
                out.append(ev)
        return out

    def active_event(self, t_ms: int) -> ScheduledEvent | None:
        for ev in self.events:
            if ev.start_ms <= t_ms < ev.end_ms:
                return ev
        return None
