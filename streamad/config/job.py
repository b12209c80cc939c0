"""The anomaly detection job: Elastic's create-job body, validated once, frozen, with defaults filled.

`Job.from_dict(body)` applies Elastic's rules (each failure is a `ConfigError` naming the field and
the rule); `Job.to_dict()` renders the job as `GET _ml/anomaly_detectors/<id>` would, in Elastic's
field order, so output is byte-stable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from streamad.config import functions as fn
from streamad.config.errors import ConfigError
from streamad.config.filters import Filter, check_id
from streamad.config.reader import Body
from streamad.config.units import format_bytesize, format_duration, parse_bytesize, parse_duration

JOB_VERSION = "8.15.0"  # the Elastic API version whose job and result shapes streamad reproduces
DAY = 86400
_GENERATED = frozenset({"job_type", "job_version", "create_time", "finished_time", "model_snapshot_id",
                        "model_snapshot_min_version", "deleting", "blocked", "datafeed_id"})
_ACTIONS = ("skip_result", "skip_model_update", "force_time_shift")
_APPLIES_TO = ("actual", "typical", "diff_from_typical", "time")
_OPERATORS = ("gt", "gte", "lt", "lte")


def _check_field_name(value: str | None, path: str) -> str | None:
    if value is None:
        return None
    if value == "":
        raise ConfigError(path, "field_name_empty", "field names must not be empty")
    if '"' in value or "\\" in value:
        raise ConfigError(path, "field_name_characters", f"field name {value!r} must not contain quotes or backslashes")
    return value


@dataclass(frozen=True)
class RuleCondition:
    applies_to: str
    operator: str
    value: float

    def holds(self, x: float) -> bool:
        if self.operator == "gt":
            return x > self.value
        if self.operator == "gte":
            return x >= self.value
        if self.operator == "lt":
            return x < self.value
        return x <= self.value

    def to_dict(self) -> dict:
        return {"applies_to": self.applies_to, "operator": self.operator, "value": self.value}


@dataclass(frozen=True)
class RuleScope:
    field_name: str
    filter_id: str
    filter_type: str  # include | exclude


@dataclass(frozen=True)
class Rule:
    """A custom rule: actions apply when every condition holds and the series is in scope."""

    actions: tuple[str, ...]
    scope: tuple[RuleScope, ...]
    conditions: tuple[RuleCondition, ...]

    @property
    def skip_result(self) -> bool:
        return "skip_result" in self.actions

    @property
    def skip_model_update(self) -> bool:
        return "skip_model_update" in self.actions

    def in_scope(self, values: dict[str, str | None], filters: dict[str, Filter]) -> bool:
        for s in self.scope:
            value = values.get(s.field_name)
            hit = value is not None and filters[s.filter_id].matches(value)
            if hit != (s.filter_type == "include"):
                return False
        return True

    def to_dict(self) -> dict:
        out: dict = {"actions": list(self.actions)}
        if self.scope:
            out["scope"] = {s.field_name: {"filter_id": s.filter_id, "filter_type": s.filter_type} for s in self.scope}
        if self.conditions:
            out["conditions"] = [c.to_dict() for c in self.conditions]
        return out


@dataclass(frozen=True)
class Detector:
    function: str  # canonical name (aliases resolved)
    field_name: str | None
    by_field_name: str | None
    over_field_name: str | None
    partition_field_name: str | None
    use_null: bool
    exclude_frequent: str | None
    custom_rules: tuple[Rule, ...]
    detector_index: int
    detector_description: str
    spec: fn.FunctionSpec = field(repr=False, compare=False, default=None)

    @property
    def split_fields(self) -> tuple[str, ...]:
        return tuple(f for f in (self.partition_field_name, self.over_field_name, self.by_field_name) if f)

    def to_dict(self) -> dict:
        out: dict = {"detector_description": self.detector_description, "function": self.function}
        for key in ("field_name", "by_field_name", "over_field_name", "partition_field_name"):
            if getattr(self, key):
                out[key] = getattr(self, key)
        if self.use_null:
            out["use_null"] = True
        if self.exclude_frequent:
            out["exclude_frequent"] = self.exclude_frequent
        if self.custom_rules:
            out["custom_rules"] = [r.to_dict() for r in self.custom_rules]
        out["detector_index"] = self.detector_index
        return out


def _default_description(function: str, field_name, by, over, partition) -> str:
    text = f'{function}("{field_name}")' if field_name else function
    if by:
        text += f' by "{by}"'
    if over:
        text += f' over "{over}"'
    if partition:
        text += f' partitionfield="{partition}"'
    return text


def _parse_rule(raw, path: str, det: dict, filters: dict[str, Filter] | None) -> Rule:
    b = Body(raw, path)
    actions = b.strings("actions") if b.has("actions") else ("skip_result",)
    if not actions:
        raise ConfigError(f"{path}.actions", "rule_actions_required", "a rule needs at least one action")
    for i, a in enumerate(actions):
        if a not in _ACTIONS:
            raise ConfigError(f"{path}.actions[{i}]", "rule_action", f"unknown action [{a}]; expected one of {', '.join(_ACTIONS)}")
    scope: list[RuleScope] = []
    raw_scope = b.obj("scope") or {}
    allowed_scope = {det.get("by_field_name"), det.get("over_field_name"), det.get("partition_field_name")} - {None}
    for fname in sorted(raw_scope):
        spath = f"{path}.scope.{fname}"
        if fname not in allowed_scope:
            raise ConfigError(spath, "rule_scope_field",
                              f"scope field [{fname}] must be one of the detector's by/over/partition fields "
                              f"({', '.join(sorted(allowed_scope)) or 'none'})")
        sb = Body(raw_scope[fname], spath)
        fid = sb.str("filter_id", required=True)
        ftype = sb.str("filter_type", "include")
        sb.done()
        if ftype not in ("include", "exclude"):
            raise ConfigError(f"{spath}.filter_type", "rule_filter_type", "filter_type must be include or exclude")
        if filters is not None and fid not in filters:
            raise ConfigError(f"{spath}.filter_id", "rule_filter_exists", f"filter [{fid}] does not exist")
        scope.append(RuleScope(fname, fid, ftype))
    conditions = []
    for i, c in enumerate(b.list("conditions")):
        cpath = f"{path}.conditions[{i}]"
        cb = Body(c, cpath)
        applies_to = cb.str("applies_to", required=True)
        operator = cb.str("operator", required=True)
        value = cb.number("value")
        cb.done()
        if applies_to not in _APPLIES_TO:
            raise ConfigError(f"{cpath}.applies_to", "rule_applies_to", f"applies_to must be one of {', '.join(_APPLIES_TO)}")
        if operator not in _OPERATORS:
            raise ConfigError(f"{cpath}.operator", "rule_operator", f"operator must be one of {', '.join(_OPERATORS)}")
        if value is None:
            raise ConfigError(f"{cpath}.value", "rule_value_required", "a condition needs a numeric value")
        if applies_to != "time" and det["function"] in fn.TIME_ONLY_RULE_FUNCTIONS:
            raise ConfigError(f"{cpath}.applies_to", "rule_condition_time_only",
                              f"function [{det['function']}] only supports conditions that apply to time")
        conditions.append(RuleCondition(applies_to, operator, value))
    b.done()
    if not scope and not conditions:
        raise ConfigError(path, "rule_scope_or_conditions", "a rule needs a scope or at least one condition")
    return Rule(tuple(actions), tuple(scope), tuple(conditions))


def _parse_detector(raw, index: int, path: str, filters, summary_count: str | None, categorization: str | None) -> Detector:
    b = Body(raw, path)
    name = b.str("function", required=True)
    canonical = fn.canonical(name)
    if canonical is None:
        raise ConfigError(f"{path}.function", "function_unknown", f"unknown function [{name}]")
    spec = fn.FUNCTIONS[canonical]
    fields = {k: _check_field_name(b.str(k), f"{path}.{k}")
              for k in ("field_name", "by_field_name", "over_field_name", "partition_field_name")}
    if spec.field == "forbidden" and fields["field_name"]:
        raise ConfigError(f"{path}.field_name", "field_name_forbidden", f"function [{canonical}] does not take a field_name")
    if spec.field in ("required", "geo") and not fields["field_name"]:
        raise ConfigError(f"{path}.field_name", "field_name_required", f"function [{canonical}] requires a field_name")
    if spec.needs_by and not fields["by_field_name"]:
        raise ConfigError(f"{path}.by_field_name", "by_field_name_required", f"function [{canonical}] requires a by_field_name")
    if spec.needs_over and not fields["over_field_name"]:
        raise ConfigError(f"{path}.over_field_name", "over_field_name_required", f"function [{canonical}] requires an over_field_name")
    if canonical == "metric" and summary_count:
        raise ConfigError(f"{path}.function", "metric_with_summary_count",
                          "function [metric] cannot be used with summary_count_field_name")
    for key, value in fields.items():
        if value == "mlcategory" and not categorization:
            raise ConfigError(f"{path}.{key}", "mlcategory_needs_categorization",
                              "[mlcategory] requires analysis_config.categorization_field_name")
    split = [fields[k] for k in ("by_field_name", "over_field_name", "partition_field_name") if fields[k]]
    if len(set(split)) != len(split):
        raise ConfigError(path, "split_fields_distinct", "by, over and partition fields must be different")
    exclude = b.str("exclude_frequent")
    if exclude is not None:
        exclude = exclude.lower()
        if exclude not in ("all", "none", "by", "over"):
            raise ConfigError(f"{path}.exclude_frequent", "exclude_frequent_value", "exclude_frequent must be all, none, by or over")
    det = {"function": canonical, **fields}
    rules = tuple(_parse_rule(r, f"{path}.custom_rules[{i}]", det, filters) for i, r in enumerate(b.list("custom_rules")))
    use_null = b.bool("use_null", False)
    description = b.str("detector_description") or _default_description(
        canonical, fields["field_name"], fields["by_field_name"], fields["over_field_name"], fields["partition_field_name"])
    b.raw("detector_index")  # assigned by position; input values are ignored, as Elastic does
    b.done()
    return Detector(canonical, fields["field_name"], fields["by_field_name"], fields["over_field_name"],
                    fields["partition_field_name"], use_null, exclude, rules, index, description, spec)


@dataclass(frozen=True)
class AnalysisConfig:
    bucket_span_s: int
    detectors: tuple[Detector, ...]
    influencers: tuple[str, ...]
    latency_s: float
    summary_count_field_name: str | None
    model_prune_window_s: int
    categorization_field_name: str | None = None
    categorization_filters: tuple[str, ...] = ()
    categorization_analyzer: object = None
    per_partition_categorization: dict | None = None
    multivariate_by_fields: bool | None = None
    latency_set: bool = False

    def to_dict(self) -> dict:
        out: dict = {"bucket_span": format_duration(self.bucket_span_s)}
        if self.summary_count_field_name:
            out["summary_count_field_name"] = self.summary_count_field_name
        if self.categorization_field_name:
            out["categorization_field_name"] = self.categorization_field_name
        if self.categorization_filters:
            out["categorization_filters"] = list(self.categorization_filters)
        if self.categorization_analyzer is not None:
            out["categorization_analyzer"] = self.categorization_analyzer
        if self.categorization_field_name:
            out["per_partition_categorization"] = self.per_partition_categorization or {"enabled": False}
        out["detectors"] = [d.to_dict() for d in self.detectors]
        out["influencers"] = list(self.influencers)
        if self.latency_set:
            out["latency"] = format_duration(self.latency_s)
        out["model_prune_window"] = format_duration(self.model_prune_window_s)
        if self.multivariate_by_fields is not None:
            out["multivariate_by_fields"] = self.multivariate_by_fields
        return out


def _parse_analysis(raw, filters) -> AnalysisConfig:
    path = "analysis_config"
    b = Body(raw, path)
    span = parse_duration(b.raw("bucket_span", "5m"), f"{path}.bucket_span")
    if span <= 0 or span != int(span):
        raise ConfigError(f"{path}.bucket_span", "bucket_span_whole_seconds", "bucket_span must be a positive whole number of seconds")
    span = int(span)
    summary = _check_field_name(b.str("summary_count_field_name"), f"{path}.summary_count_field_name")
    cat_field = _check_field_name(b.str("categorization_field_name"), f"{path}.categorization_field_name")
    cat_filters = b.strings("categorization_filters")
    cat_analyzer = b.raw("categorization_analyzer")
    if cat_filters and cat_analyzer is not None:
        raise ConfigError(f"{path}.categorization_filters", "categorization_filters_analyzer_exclusive",
                          "categorization_filters cannot be used with categorization_analyzer: put char_filters in the analyzer")
    if (cat_filters or cat_analyzer is not None) and not cat_field:
        raise ConfigError(f"{path}.categorization_field_name", "categorization_field_required",
                          "categorization_filters or categorization_analyzer need categorization_field_name")
    ppc = b.obj("per_partition_categorization")
    raw_detectors = b.list("detectors")
    if not raw_detectors:
        raise ConfigError(f"{path}.detectors", "detectors_required", "an analysis_config needs at least one detector")
    detectors = tuple(_parse_detector(d, i, f"{path}.detectors[{i}]", filters, summary, cat_field)
                      for i, d in enumerate(raw_detectors))
    influencers = b.strings("influencers")
    for i, inf in enumerate(influencers):
        _check_field_name(inf, f"{path}.influencers[{i}]")
    latency_set = b.has("latency")
    latency = parse_duration(b.raw("latency", "0s"), f"{path}.latency", allow_bare_number=True)
    if latency < 0 or (latency_set and 0 < latency < 1):
        raise ConfigError(f"{path}.latency", "latency_minimum", "latency must be 0 or at least 1s")
    if b.has("model_prune_window"):
        prune = parse_duration(b.raw("model_prune_window"), f"{path}.model_prune_window")
        if prune % span != 0:
            raise ConfigError(f"{path}.model_prune_window", "model_prune_window_multiple",
                              f"model_prune_window must be a multiple of bucket_span ({format_duration(span)})")
        if prune < 2 * span:
            raise ConfigError(f"{path}.model_prune_window", "model_prune_window_minimum",
                              "model_prune_window must be at least 2 bucket spans")
        prune = int(prune)
    else:
        prune = max(30 * DAY, 20 * span)
        prune = int(math.ceil(prune / span) * span)
    mv = b.raw("multivariate_by_fields")
    b.done()
    return AnalysisConfig(span, detectors, influencers, float(latency), summary, prune, cat_field, cat_filters,
                          cat_analyzer, ppc, mv, latency_set)


@dataclass(frozen=True)
class DataDescription:
    time_field: str = "time"
    time_format: str = "epoch"
    format: str | None = None
    field_delimiter: str | None = None

    def to_dict(self) -> dict:
        out = {"time_field": self.time_field, "time_format": self.time_format}
        if self.format:
            out["format"] = self.format
        if self.field_delimiter:
            out["field_delimiter"] = self.field_delimiter
        return out


@dataclass(frozen=True)
class ModelPlotConfig:
    enabled: bool = False
    annotations_enabled: bool = False
    terms: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        out: dict = {"enabled": self.enabled, "annotations_enabled": self.annotations_enabled}
        if self.terms:
            out["terms"] = ",".join(self.terms)
        return out


def java_string_hash(text: str) -> int:
    """Java's String.hashCode (UTF-16 code units, 32-bit wrap)."""
    h = 0
    data = text.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
    return h - (1 << 32) if h >= (1 << 31) else h


def default_query_delay_ms(job_id: str) -> int:
    """Elastic's per-job default query_delay: java.util.Random(jobId.hashCode()).longs(60000, 120000) first value."""
    mask = (1 << 48) - 1
    seed = (java_string_hash(job_id) ^ 0x5DEECE66D) & mask

    def next_bits(bits: int) -> int:
        nonlocal seed
        seed = (seed * 0x5DEECE66D + 0xB) & mask
        value = seed >> (48 - bits)
        return value - (1 << bits) if value >= (1 << (bits - 1)) else value

    def next_long() -> int:
        v = ((next_bits(32) << 32) + next_bits(32)) & 0xFFFFFFFFFFFFFFFF
        return v - (1 << 64) if v >= (1 << 63) else v

    origin, bound = 60000, 120000
    n, m = bound - origin, bound - origin - 1
    r = next_long()
    u = (r & 0xFFFFFFFFFFFFFFFF) >> 1
    while True:
        r = u % n
        if u + m - r < (1 << 63):  # no signed overflow in Java's `u + m - r < 0` test
            break
        u = (next_long() & 0xFFFFFFFFFFFFFFFF) >> 1
    return r + origin


def default_frequency_s(bucket_span_s: int) -> int:
    if bucket_span_s <= 120:
        return 60
    if bucket_span_s <= 1200:
        return bucket_span_s // 2
    if bucket_span_s <= 12 * 3600:
        return 600
    return 3600


@dataclass(frozen=True)
class DatafeedConfig:
    """Where a job's events come from: topics (or files) in `indices`, a query, optional aggregations."""

    datafeed_id: str
    job_id: str
    indices: tuple[str, ...]
    query: dict
    aggregations: dict | None
    frequency_s: int
    frequency_set: bool
    query_delay_s: float
    scroll_size: int
    chunking_config: dict
    delayed_data_check_config: dict
    max_empty_searches: int | None
    indices_options: dict
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"datafeed_id": self.datafeed_id, "job_id": self.job_id,
                     "query_delay": f"{int(round(self.query_delay_s * 1000))}ms",
                     "chunking_config": self.chunking_config, "indices_options": self.indices_options,
                     "query": self.query, "indices": list(self.indices), "scroll_size": self.scroll_size,
                     "delayed_data_check_config": self.delayed_data_check_config}
        if self.frequency_set:
            out["frequency"] = format_duration(self.frequency_s)
        if self.aggregations is not None:
            out["aggregations"] = self.aggregations
        if self.max_empty_searches is not None:
            out["max_empty_searches"] = self.max_empty_searches
        out.update(self.extra)
        return out


_UNSUPPORTED_DATAFEED = {"script_fields": "script_fields", "runtime_mappings": "runtime_mappings"}


def parse_datafeed(raw, job_id: str, bucket_span_s: int, path: str = "datafeed_config",
                   time_field: str | None = None) -> DatafeedConfig:
    """A datafeed for a job; with the job's `time_field`, aggregations must also hold a max on it."""
    b = Body(raw, path, ignore=frozenset({"authorization", "headers"}))
    for key, name in _UNSUPPORTED_DATAFEED.items():
        if b.has(key) and b.raw(key):
            raise ConfigError(f"{path}.{key}", f"{key}_not_supported", f"{name} are not supported yet")
    datafeed_id = b.str("datafeed_id") or f"datafeed-{job_id}"
    check_id(datafeed_id, f"{path}.datafeed_id")
    given_job = b.str("job_id")
    if given_job is not None and given_job != job_id:
        raise ConfigError(f"{path}.job_id", "datafeed_job_id_mismatch", f"datafeed job_id [{given_job}] is not [{job_id}]")
    indices = b.strings("indices") or b.strings("indexes")
    if not indices:
        raise ConfigError(f"{path}.indices", "indices_required", "a datafeed needs at least one index (topic)")
    query = b.obj("query") or {"match_all": {"boost": 1.0}}
    aggs = b.obj("aggregations")
    if b.has("aggs"):
        if aggs is not None:
            raise ConfigError(f"{path}.aggs", "aggregations_twice", "use either aggregations or aggs, not both")
        aggs = b.obj("aggs")
    from streamad.datafeed.aggregation import check_max_time, histogram_interval_s
    from streamad.datafeed.query import compile_query

    compile_query(query, f"{path}.query")
    interval = None
    if aggs is not None:
        interval = histogram_interval_s(aggs, f"{path}.aggregations")
        if bucket_span_s % interval != 0:
            raise ConfigError(f"{path}.aggregations", "histogram_interval_divides_bucket_span",
                              f"the date_histogram interval ({format_duration(interval)}) must divide bucket_span "
                              f"({format_duration(bucket_span_s)})")
        if time_field is not None:
            check_max_time(aggs, time_field, f"{path}.aggregations")
    freq_set = b.has("frequency")
    if freq_set:
        freq = parse_duration(b.raw("frequency"), f"{path}.frequency")
        if freq <= 0 or freq != int(freq):
            raise ConfigError(f"{path}.frequency", "frequency_whole_seconds", "frequency must be a positive whole number of seconds")
        freq = int(freq)
        if interval and freq % interval != 0:
            raise ConfigError(f"{path}.frequency", "frequency_multiple_of_interval",
                              "frequency must be a multiple of the aggregation interval")
    else:
        freq = default_frequency_s(bucket_span_s)
        if interval:
            freq = interval if interval > freq else (freq // interval) * interval
    if b.has("query_delay"):
        delay = parse_duration(b.raw("query_delay"), f"{path}.query_delay")
        if delay < 0:
            raise ConfigError(f"{path}.query_delay", "query_delay_minimum", "query_delay must not be negative")
    else:
        delay = default_query_delay_ms(job_id) / 1000.0
    scroll = b.int("scroll_size", 1000, minimum=0)
    chunking = b.obj("chunking_config") or ({"mode": "manual", "time_span": format_duration(1000 * interval)}
                                            if interval else {"mode": "auto"})
    delayed = b.obj("delayed_data_check_config") or {"enabled": True}
    max_empty = b.int("max_empty_searches", None, minimum=1)
    options = b.obj("indices_options") or {"expand_wildcards": ["open"], "ignore_unavailable": False,
                                           "allow_no_indices": True, "ignore_throttled": True}
    b.done()
    return DatafeedConfig(datafeed_id, job_id, indices, query, aggs, freq, freq_set, delay, scroll, chunking,
                          delayed, max_empty, options)


@dataclass(frozen=True)
class Job:
    job_id: str
    analysis_config: AnalysisConfig
    data_description: DataDescription
    model_memory_limit_bytes: int
    categorization_examples_limit: int
    model_plot_config: ModelPlotConfig | None
    datafeed_config: DatafeedConfig | None
    description: str | None
    groups: tuple[str, ...]
    custom_settings: dict | None
    create_time: int
    allow_lazy_open: bool
    background_persist_interval_s: int | None
    model_snapshot_retention_days: int
    daily_model_snapshot_retention_after_days: int
    results_retention_days: int | None
    renormalization_window_days: int | None
    results_index_name: str
    job_version: str = JOB_VERSION

    @property
    def bucket_span_s(self) -> int:
        return self.analysis_config.bucket_span_s

    @property
    def detectors(self) -> tuple[Detector, ...]:
        return self.analysis_config.detectors

    @property
    def renormalization_window_s(self) -> int:
        """Effective window: the configured days, else max(30 days, 100 bucket spans)."""
        if self.renormalization_window_days is not None:
            return self.renormalization_window_days * DAY
        return max(30 * DAY, 100 * self.bucket_span_s)

    @classmethod
    def from_dict(cls, body, job_id: str | None = None, *, filters: dict[str, Filter] | None = None,
                  now_ms: int | None = None) -> Job:
        b = Body(body, "", ignore=_GENERATED)
        given = b.str("job_id")
        if job_id is not None and given is not None and given != job_id:
            raise ConfigError("job_id", "job_id_mismatch", f"inconsistent job_id: body has [{given}], path has [{job_id}]")
        jid = check_id(job_id or given, "job_id")
        analysis = _parse_analysis(b.raw("analysis_config"), filters) if b.has("analysis_config") else None
        if analysis is None:
            raise ConfigError("analysis_config", "analysis_config_required", "[analysis_config] is required")
        limits = Body(b.raw("analysis_limits", {}), "analysis_limits")
        mml = parse_bytesize(limits.raw("model_memory_limit", "1024mb"), "analysis_limits.model_memory_limit")
        examples = limits.int("categorization_examples_limit", 4, minimum=0)
        limits.done()
        dd = Body(b.raw("data_description", {}), "data_description")
        time_field = _check_field_name(dd.str("time_field", "time"), "data_description.time_field")
        time_format = dd.str("time_format", "epoch")
        from streamad.ingest.timeparse import TimeParser

        TimeParser(time_format, "data_description.time_format")
        description = DataDescription(time_field, time_format, dd.str("format"), dd.str("field_delimiter"))
        dd.done()
        plot = None
        if b.has("model_plot_config"):
            pb = Body(b.raw("model_plot_config"), "model_plot_config")
            enabled = pb.bool("enabled", False)
            terms = tuple(t.strip() for t in (pb.str("terms") or "").split(",") if t.strip())
            plot = ModelPlotConfig(enabled, pb.bool("annotations_enabled", enabled), terms)
            pb.done()
        datafeed = None
        if b.has("datafeed_config"):
            datafeed = parse_datafeed(b.raw("datafeed_config"), jid, analysis.bucket_span_s,
                                      time_field=description.time_field)
        groups = b.strings("groups")
        for i, g in enumerate(groups):
            check_id(g, f"groups[{i}]")
        custom = b.obj("custom_settings")
        bpi = None
        if b.has("background_persist_interval"):
            bpi = parse_duration(b.raw("background_persist_interval"), "background_persist_interval")
            if bpi < 3600:
                raise ConfigError("background_persist_interval", "background_persist_interval_minimum",
                                  "background_persist_interval must be at least 1h")
            bpi = int(bpi)
        index = b.str("results_index_name", "shared")
        if index != "shared" and not index.startswith("custom-"):
            index = f"custom-{index}"
        create_time = b.int("create_time", None)
        job = cls(
            job_id=jid, analysis_config=analysis, data_description=description, model_memory_limit_bytes=mml,
            categorization_examples_limit=examples, model_plot_config=plot, datafeed_config=datafeed,
            description=b.str("description"), groups=groups, custom_settings=custom,
            create_time=create_time if create_time is not None else (now_ms if now_ms is not None else 0),
            allow_lazy_open=b.bool("allow_lazy_open", False), background_persist_interval_s=bpi,
            model_snapshot_retention_days=b.int("model_snapshot_retention_days", 10, minimum=0),
            daily_model_snapshot_retention_after_days=b.int("daily_model_snapshot_retention_after_days", 1, minimum=0),
            results_retention_days=b.int("results_retention_days", None, minimum=1),
            renormalization_window_days=b.int("renormalization_window_days", None, minimum=0),
            results_index_name=index,
        )
        b.done()
        if job.daily_model_snapshot_retention_after_days > job.model_snapshot_retention_days:
            raise ConfigError("daily_model_snapshot_retention_after_days", "snapshot_retention_order",
                              "daily_model_snapshot_retention_after_days must not exceed model_snapshot_retention_days")
        return job

    def to_dict(self, *, exclude_generated: bool = False) -> dict:
        out: dict = {"job_id": self.job_id}
        if not exclude_generated:
            out.update(job_type="anomaly_detector", job_version=self.job_version, create_time=self.create_time)
        if self.custom_settings is not None:
            out["custom_settings"] = self.custom_settings
        if self.datafeed_config is not None and not exclude_generated:
            out["datafeed_config"] = self.datafeed_config.to_dict()
        if self.groups:
            out["groups"] = list(self.groups)
        if self.description is not None:
            out["description"] = self.description
        out["analysis_config"] = self.analysis_config.to_dict()
        out["analysis_limits"] = {"model_memory_limit": format_bytesize(self.model_memory_limit_bytes),
                                  "categorization_examples_limit": self.categorization_examples_limit}
        out["data_description"] = self.data_description.to_dict()
        if self.model_plot_config is not None:
            out["model_plot_config"] = self.model_plot_config.to_dict()
        if self.renormalization_window_days is not None:
            out["renormalization_window_days"] = self.renormalization_window_days
        if self.background_persist_interval_s is not None:
            out["background_persist_interval"] = format_duration(self.background_persist_interval_s)
        out["model_snapshot_retention_days"] = self.model_snapshot_retention_days
        out["daily_model_snapshot_retention_after_days"] = self.daily_model_snapshot_retention_after_days
        if self.results_retention_days is not None:
            out["results_retention_days"] = self.results_retention_days
        out["results_index_name"] = self.results_index_name
        out["allow_lazy_open"] = self.allow_lazy_open
        return out
