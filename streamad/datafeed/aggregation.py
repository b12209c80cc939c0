"""Datafeed aggregations on a stream: raw events -> the pre-summarized documents Elasticsearch feeds a job.

Supported tree: one `date_histogram` (fixed_interval / interval / calendar_interval of a fixed
length), `terms` aggregations above or below it, and metric leaves (max, min, avg, sum, value_count,
cardinality). Each histogram bucket is emitted when it closes (an event at or after its end, or a
flush), one document per combination of terms, with `doc_count` and one field per metric, in a
deterministic order. Pipeline aggregations, scripts and composite are a clear "not supported yet".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamad.config.errors import ConfigError
from streamad.config.units import parse_duration
from streamad.ingest.fields import MISSING, FieldGetter, keyword_string

_METRICS = ("max", "min", "avg", "sum", "value_count", "cardinality")
_UNSUPPORTED = ("derivative", "bucket_script", "bucket_selector", "cumulative_sum", "moving_fn", "composite",
                "scripted_metric", "percentiles", "serial_diff")


def _children(node: dict, path: str) -> dict:
    kids = node.get("aggregations", node.get("aggs", {}))
    if not isinstance(kids, dict):
        raise ConfigError(path, "aggregations_object", "sub-aggregations must be an object")
    return kids


def _kind(name: str, node, path: str) -> tuple[str, dict]:
    if not isinstance(node, dict):
        raise ConfigError(path, "aggregation_object", f"aggregation [{name}] must be an object")
    kinds = [k for k in node if k not in ("aggregations", "aggs", "meta")]
    if len(kinds) != 1:
        raise ConfigError(path, "aggregation_single_type", f"aggregation [{name}] must have exactly one type")
    kind = kinds[0]
    if kind in _UNSUPPORTED:
        raise ConfigError(f"{path}.{kind}", "aggregation_not_supported", f"{kind} aggregations are not supported yet")
    if kind not in ("date_histogram", "terms", *_METRICS):
        raise ConfigError(f"{path}.{kind}", "aggregation_unknown", f"aggregation type [{kind}] is not supported")
    body = node[kind]
    if not isinstance(body, dict):
        raise ConfigError(f"{path}.{kind}", "aggregation_body", f"[{kind}] must be an object")
    if "script" in body:
        raise ConfigError(f"{path}.{kind}.script", "aggregation_script_not_supported", "scripts in aggregations are not supported yet")
    return kind, body


def _interval_s(body: dict, path: str) -> int:
    for key in ("fixed_interval", "interval", "calendar_interval"):
        if key in body:
            raw = body[key]
            if isinstance(raw, (int, float)) and not isinstance(raw, bool):
                seconds = raw / 1000.0  # the old numeric form is milliseconds
            elif key == "calendar_interval" and raw in ("minute", "1m", "hour", "1h", "day", "1d"):
                seconds = {"minute": 60, "1m": 60, "hour": 3600, "1h": 3600, "day": 86400, "1d": 86400}[raw]
            else:
                seconds = parse_duration(raw, f"{path}.{key}")
            if seconds <= 0 or seconds != int(seconds):
                raise ConfigError(f"{path}.{key}", "histogram_interval_whole_seconds", "the histogram interval must be whole seconds")
            return int(seconds)
    raise ConfigError(path, "histogram_interval_required", "date_histogram needs fixed_interval (or interval)")


def histogram_interval_s(aggs: dict, path: str = "aggregations") -> int:
    """The date_histogram interval of a datafeed's aggregations (ConfigError if none or malformed)."""
    return _Plan.compile(aggs, path).interval_s


@dataclass
class _Plan:
    interval_s: int
    time_field: FieldGetter
    terms: list[tuple[str, FieldGetter, int]]  # (output field name, getter, size) outer to inner
    metrics: list[tuple[str, str, FieldGetter]]  # (output name, kind, getter)

    @classmethod
    def compile(cls, aggs, path: str) -> _Plan:
        if not isinstance(aggs, dict) or not aggs:
            raise ConfigError(path, "aggregations_object", "aggregations must be a non-empty object")
        plan = cls(0, None, [], [])
        plan._walk(aggs, path, seen_histogram=False)
        if plan.time_field is None:
            raise ConfigError(path, "date_histogram_required", "datafeed aggregations need a date_histogram")
        return plan

    def _walk(self, aggs: dict, path: str, seen_histogram: bool) -> None:
        buckets = [(n, a) for n, a in aggs.items() if _kind(n, a, f"{path}.{n}")[0] in ("date_histogram", "terms")]
        if len(buckets) > 1:
            raise ConfigError(path, "aggregation_single_bucket_agg", "only one bucket aggregation per level is supported")
        for name, node in sorted(aggs.items()):
            at = f"{path}.{name}"
            kind, body = _kind(name, node, at)
            if kind in _METRICS:
                if "field" not in body or not isinstance(body["field"], str):
                    raise ConfigError(f"{at}.{kind}.field", "metric_field_required", f"[{kind}] needs a field")
                self.metrics.append((name, kind, FieldGetter(body["field"])))
                continue
            if not isinstance(body.get("field"), str):
                raise ConfigError(f"{at}.{kind}.field", "bucket_field_required", f"[{kind}] needs a field")
            if kind == "date_histogram":
                if seen_histogram:
                    raise ConfigError(at, "date_histogram_once", "only one date_histogram is supported")
                self.interval_s = _interval_s(body, f"{at}.date_histogram")
                self.time_field = FieldGetter(body["field"])
                seen_histogram = True
            else:
                size = body.get("size", 10)
                if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                    raise ConfigError(f"{at}.terms.size", "terms_size", "terms size must be a positive integer")
                self.terms.append((body["field"], FieldGetter(body["field"]), size))
            self._walk(_children(node, at), at, seen_histogram)


@dataclass
class _Cell:
    count: int = 0
    values: dict = field(default_factory=dict)


class DatafeedAggregator:
    """Turns time-ordered events into summarized documents; `feed` and `advance` return closed buckets.

    Emitted items are `(t_seconds, doc)`; `doc` holds the time field (epoch ms), the terms fields,
    one field per metric and `doc_count` (or the job's summary_count_field_name).
    """

    def __init__(self, aggs: dict, time_field: str, count_field: str = "doc_count", path: str = "aggregations"):
        self.plan = _Plan.compile(aggs, path)
        self.time_field_name = time_field
        self.count_field = count_field
        self.open: dict[int, dict[tuple, _Cell]] = {}

    def feed(self, doc: dict, t: float) -> list[tuple[float, dict]]:
        span = self.plan.interval_s
        start = int(t // span) * span
        out = self.advance(t)
        key_parts = []
        for _, getter, _ in self.plan.terms:
            v = getter(doc)
            s = keyword_string(v) if v is not MISSING and v is not None else MISSING
            if s is MISSING:
                return out  # Elasticsearch's terms aggregation skips documents without the field
            key_parts.append(s)
        cell = self.open.setdefault(start, {}).setdefault(tuple(key_parts), _Cell())
        cell.count += 1
        for name, kind, getter in self.plan.metrics:
            v = getter(doc)
            if kind == "max" and getter.path == self.time_field_name:
                v = t * 1000.0
            if kind == "cardinality":
                if v is not MISSING and v is not None:
                    cell.values.setdefault(name, set()).add(keyword_string(v))
                continue
            if kind == "value_count":
                if v is not MISSING and v is not None:
                    cell.values[name] = cell.values.get(name, 0) + 1
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                continue
            cur = cell.values.get(name)
            if kind == "max":
                cell.values[name] = v if cur is None else max(cur, v)
            elif kind == "min":
                cell.values[name] = v if cur is None else min(cur, v)
            elif kind == "sum":
                cell.values[name] = (cur or 0) + v
            elif kind == "avg":
                s, n = cur or (0.0, 0)
                cell.values[name] = (s + v, n + 1)
        return out

    def advance(self, t: float) -> list[tuple[float, dict]]:
        """Emit every histogram bucket that ends at or before `t`."""
        span = self.plan.interval_s
        out = []
        for start in sorted(self.open):
            if start + span <= t:
                out.extend(self._emit(start))
        return out

    def flush(self) -> list[tuple[float, dict]]:
        out = []
        for start in sorted(self.open):
            out.extend(self._emit(start))
        return out

    def _emit(self, start: int) -> list[tuple[float, dict]]:
        cells = self.open.pop(start)
        top = {}
        for key in sorted(cells):
            cell = cells[key]
            doc: dict = {}
            t = float(start)
            for (name, _, _), part in zip(self.plan.terms, key):
                doc[name] = part
            for name, kind, getter in self.plan.metrics:
                v = cell.values.get(name)
                if kind == "avg":
                    v = v[0] / v[1] if v else None
                elif kind == "cardinality":
                    v = len(v) if v else 0
                elif kind == "value_count":
                    v = v or 0
                if kind == "max" and getter.path == self.time_field_name and v is not None:
                    t = v / 1000.0
                doc[name] = v
            doc[self.time_field_name] = int(round(t * 1000))
            doc[self.count_field] = cell.count
            top.setdefault(key[:-1] if key else (), []).append((cell.count, key, t, doc))
        # terms `size`: keep the top-N by doc_count (ties by key) at the innermost level, like Elasticsearch.
        out = []
        limit = self.plan.terms[-1][2] if self.plan.terms else None
        for prefix in sorted(top):
            rows = top[prefix]
            if limit is not None:
                rows = sorted(rows, key=lambda r: (-r[0], r[1]))[:limit]
                rows.sort(key=lambda r: r[1])
            out.extend((t, doc) for _, _, t, doc in rows)
        out.sort(key=lambda item: item[0])
        return out
