"""Elastic's detector functions: canonical names, aliases, field rules and modelling properties.

One table drives both validation (which fields a function needs or forbids) and the engine (which
bucket statistic it models, the tail that is anomalous, whether empty buckets count as zero).
"""

from __future__ import annotations

from dataclasses import dataclass

TWO_SIDED, LOW, HIGH = 0, -1, 1


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    statistic: str  # bucket statistic the engine computes
    side: int  # TWO_SIDED, LOW (only unusually low values matter) or HIGH
    field: str  # "required", "forbidden" or "geo"
    needs_by: bool = False
    needs_over: bool = False
    empty_buckets: bool = False  # an empty bucket is a 0 sample for known series
    nonnegative: bool = False
    description: str = ""


def _family(base: str, statistic: str, field: str, description: str, **kw) -> list[FunctionSpec]:
    return [
        FunctionSpec(base, statistic, TWO_SIDED, field, description=description, **kw),
        FunctionSpec(f"high_{base}", statistic, HIGH, field, description=f"high {description}", **kw),
        FunctionSpec(f"low_{base}", statistic, LOW, field, description=f"low {description}", **kw),
    ]


_SPECS: list[FunctionSpec] = [
    *_family("count", "count", "forbidden", "count", empty_buckets=True, nonnegative=True),
    *_family("non_zero_count", "count", "forbidden", "non zero count", nonnegative=True),
    *_family("distinct_count", "distinct_count", "required", "distinct count", nonnegative=True),
    *_family("info_content", "info_content", "required", "info content", nonnegative=True),
    *_family("mean", "mean", "required", "mean"),
    *_family("median", "median", "required", "median"),
    *_family("sum", "sum", "required", "sum", empty_buckets=True),
    *_family("non_null_sum", "sum", "required", "non null sum"),
    *_family("varp", "varp", "required", "varp", nonnegative=True),
    FunctionSpec("min", "min", LOW, "required", description="min"),
    FunctionSpec("max", "max", HIGH, "required", description="max"),
    FunctionSpec("metric", "metric", TWO_SIDED, "required", description="metric"),
    FunctionSpec("rare", "rare", TWO_SIDED, "forbidden", needs_by=True, description="rare"),
    FunctionSpec("freq_rare", "freq_rare", TWO_SIDED, "forbidden", needs_by=True, needs_over=True,
                 description="freq rare"),
    FunctionSpec("time_of_day", "time_of_day", TWO_SIDED, "forbidden", description="time of day"),
    FunctionSpec("time_of_week", "time_of_week", TWO_SIDED, "forbidden", description="time of week"),
    FunctionSpec("lat_long", "lat_long", TWO_SIDED, "geo", description="lat long"),
]

FUNCTIONS: dict[str, FunctionSpec] = {s.name: s for s in _SPECS}

ALIASES = {
    "avg": "mean", "high_avg": "high_mean", "low_avg": "low_mean",
    "nzc": "non_zero_count", "high_nzc": "high_non_zero_count", "low_nzc": "low_non_zero_count",
    "dc": "distinct_count", "high_dc": "high_distinct_count", "low_dc": "low_distinct_count",
}

# Functions whose custom rules may only have conditions on `time` (Elastic's DetectionRule checks).
TIME_ONLY_RULE_FUNCTIONS = frozenset({"lat_long", "metric", "rare", "freq_rare"})


def canonical(name: str) -> str | None:
    """The canonical function name for `name` or an alias; None if unknown."""
    if name in FUNCTIONS:
        return name
    return ALIASES.get(name)
