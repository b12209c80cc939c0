"""Datafeed aggregations on a stream: raw events -> the pre-summarized documents Elasticsearch feeds a job.

Supported tree: one `date_histogram` (fixed_interval / interval / calendar_interval of a fixed
length), `terms` aggregations above or below it, and metric leaves (max, min, avg, sum, value_count,
cardinality). Each histogram bucket is emitted when it closes (an event at or after its end, or a
flush), one document per leaf terms bucket, with `doc_count`, the terms keys and the finite metrics
of every enclosing level, in a deterministic order (Elastic's AggregationToJsonProcessor). A terms
`size` applies at each level within a histogram bucket (Elasticsearch applies it over the whole
search). Pipeline aggregations, scripts and composite are a clear "not supported yet".
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


def check_max_time(aggs: dict, time_field: str, path: str = "aggregations") -> None:
    """Elastic's rule: the date_histogram must have a direct `max` sub-aggregation on the job's time field."""
    plan = _Plan.compile(aggs, path)
    if not plan.histogram_has_max_time(time_field):
        raise ConfigError(plan.histogram_path, "date_histogram_max_time",
                          f"Date histogram must have nested max aggregation for time_field [{time_field}]")


@dataclass
class _Plan:
    interval_s: int
    time_field: FieldGetter
    terms: list[tuple[str, FieldGetter, int]]  # (aggregation name, getter, size) outer to inner
    metrics: list[tuple[str, str, FieldGetter, int]]  # (output name, kind, getter, level = enclosing terms)
    histogram_path: str = ""
    histogram_metrics: list[tuple[str, str]] = field(default_factory=list)  # (kind, field) directly under it

    @classmethod
    def compile(cls, aggs, path: str) -> _Plan:
        if not isinstance(aggs, dict) or not aggs:
            raise ConfigError(path, "aggregations_object", "aggregations must be a non-empty object")
        plan = cls(0, None, [], [])
        plan._walk(aggs, path, seen_histogram=False, level=0, under_histogram=False)
        if plan.time_field is None:
            raise ConfigError(path, "date_histogram_required", "datafeed aggregations need a date_histogram")
        return plan

    def histogram_has_max_time(self, time_field: str) -> bool:
        return ("max", time_field) in self.histogram_metrics

    def _walk(self, aggs: dict, path: str, seen_histogram: bool, level: int, under_histogram: bool) -> None:
        buckets = [(n, a) for n, a in aggs.items() if _kind(n, a, f"{path}.{n}")[0] in ("date_histogram", "terms")]
        if len(buckets) > 1:
            raise ConfigError(path, "aggregation_single_bucket_agg", "only one bucket aggregation per level is supported")
        for name, node in sorted(aggs.items()):
            at = f"{path}.{name}"
            kind, body = _kind(name, node, at)
            if kind in _METRICS:
                if "field" not in body or not isinstance(body["field"], str):
                    raise ConfigError(f"{at}.{kind}.field", "metric_field_required", f"[{kind}] needs a field")
                self.metrics.append((name, kind, FieldGetter(body["field"]), level))
                if under_histogram:
                    self.histogram_metrics.append((kind, body["field"]))
                continue
            if not isinstance(body.get("field"), str):
                raise ConfigError(f"{at}.{kind}.field", "bucket_field_required", f"[{kind}] needs a field")
            if kind == "date_histogram":
                if seen_histogram:
                    raise ConfigError(at, "date_histogram_once", "only one date_histogram is supported")
                self.interval_s = _interval_s(body, f"{at}.date_histogram")
                self.time_field = FieldGetter(body["field"])
                self.histogram_path = at
                seen_histogram = True
                self._walk(_children(node, at), at, seen_histogram, level, under_histogram=True)
            else:
                size = body.get("size", 10)
                if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                    raise ConfigError(f"{at}.terms.size", "terms_size", "terms size must be a positive integer")
                self.terms.append((name, FieldGetter(body["field"]), size))
                self._walk(_children(node, at), at, seen_histogram, level + 1, under_histogram=False)


@dataclass
class _Cell:
    count: int = 0
    values: dict = field(default_factory=dict)


def _term_keys(value) -> list[str]:
    """The distinct keyword terms a document holds for a field (each value of an array; none if missing)."""
    if value is MISSING or value is None:
        return []
    if type(value) is not list:
        k = keyword_string(value)
        return [] if k is MISSING else [k]
    flat: list = []
    stack = [value]
    while stack:
        for item in stack.pop():
            if type(item) is list:
                stack.append(item)
            elif item is not None:
                k = keyword_string(item)
                if k is not MISSING:
                    flat.append(k)
    return list(dict.fromkeys(flat))


class DatafeedAggregator:
    """Turns time-ordered events into summarized documents; `feed` and `advance` return closed buckets.

    Emitted items are `(t_seconds, doc)`; `doc` holds the time field (epoch ms), one field per terms
    aggregation (named after the aggregation), one field per metric with a finite value and `doc_count`
    (or the job's summary_count_field_name). As in Elastic's AggregationToJsonProcessor, a leaf document
    carries the metrics of every enclosing level: a max(time) directly under the date_histogram gives
    the same time to every terms document of that histogram bucket. A document with an array in a terms
    field counts in each value's bucket; a terms `size` keeps the top doc counts at each level, within
    each histogram bucket.
    """

    def __init__(self, aggs: dict, time_field: str, count_field: str = "doc_count", path: str = "aggregations"):
        self.plan = _Plan.compile(aggs, path)
        self.time_field_name = time_field
        self.count_field = count_field
        nlevels = len(self.plan.terms) + 1
        self._metrics_at = [[(name, kind, getter) for name, kind, getter, level in self.plan.metrics if level == lv]
                            for lv in range(nlevels)]
        # histogram bucket start -> per level (0 = no terms key): terms-key prefix -> cell
        self.open: dict[int, list[dict[tuple, _Cell]]] = {}

    def feed(self, doc: dict, t: float) -> list[tuple[float, dict]]:
        span = self.plan.interval_s
        start = int(t // span) * span
        out = self.advance(t)
        levels = self.open.get(start)
        if levels is None:
            levels = self.open[start] = [{} for _ in self._metrics_at]
        prefixes: list[tuple] = [()]
        self._add(levels[0], prefixes, doc, t, 0)
        for i, (_, getter, _) in enumerate(self.plan.terms):
            keys = _term_keys(getter(doc))
            if not keys:
                break  # Elasticsearch's terms aggregation skips documents without the field
            prefixes = [p + (k,) for p in prefixes for k in keys]
            self._add(levels[i + 1], prefixes, doc, t, i + 1)
        return out

    def _add(self, cells: dict, prefixes: list[tuple], doc: dict, t: float, level: int) -> None:
        metrics = self._metrics_at[level]
        values = []
        for _, kind, getter in metrics:
            v = getter(doc)
            if kind == "max" and getter.path == self.time_field_name:
                v = t * 1000.0
            values.append(v)
        for prefix in prefixes:
            cell = cells.get(prefix)
            if cell is None:
                cell = cells[prefix] = _Cell()
            cell.count += 1
            for (name, kind, _), v in zip(metrics, values):
                _accumulate(cell.values, name, kind, v)

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
        levels = self.open.pop(start)
        # terms `size` at each level: the top-N children of each kept parent by doc_count, ties by key
        kept: list[tuple] = [()]
        for i, (_, _, size) in enumerate(self.plan.terms):
            parents = set(kept)
            children: dict[tuple, list[tuple]] = {}
            for key, cell in levels[i + 1].items():
                if key[:-1] in parents:
                    children.setdefault(key[:-1], []).append((-cell.count, key))
            kept = []
            for parent in children:
                kept.extend(key for _, key in sorted(children[parent])[:size])
            kept.sort()
        depth = len(self.plan.terms)
        out = []
        for key in kept:
            leaf = levels[depth][key]
            doc: dict = {}
            t = float(start)
            for (name, _, _), part in zip(self.plan.terms, key):
                doc[name] = part
            for level, metrics in enumerate(self._metrics_at):
                cell = levels[level][key[:level]]
                for name, kind, getter in metrics:
                    v = _value(cell.values, name, kind)
                    if v is None:
                        continue  # Elastic writes only finite metric values
                    if kind == "max" and getter.path == self.time_field_name:
                        t = v / 1000.0
                    doc[name] = v
            doc[self.time_field_name] = int(round(t * 1000))
            doc[self.count_field] = leaf.count
            out.append((t, doc))
        out.sort(key=lambda item: item[0])
        return out


def _accumulate(values: dict, name: str, kind: str, v) -> None:
    if kind == "cardinality":
        if v is not MISSING and v is not None:
            values.setdefault(name, set()).add(keyword_string(v))
        return
    if kind == "value_count":
        if v is not MISSING and v is not None:
            values[name] = values.get(name, 0) + 1
        return
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return
    cur = values.get(name)
    if kind == "max":
        values[name] = v if cur is None else max(cur, v)
    elif kind == "min":
        values[name] = v if cur is None else min(cur, v)
    elif kind == "sum":
        values[name] = (cur or 0) + v
    elif kind == "avg":
        s, n = cur or (0.0, 0)
        values[name] = (s + v, n + 1)


def _value(values: dict, name: str, kind: str):
    """A metric's value, or None where Elasticsearch's would not be finite (avg/min/max of nothing)."""
    v = values.get(name)
    if kind == "avg":
        v = v[0] / v[1] if v else None
    elif kind == "cardinality":
        v = len(v) if v else 0
    elif kind in ("value_count", "sum"):
        v = v or 0
    if isinstance(v, float) and v - v != 0.0:
        return None
    return v
