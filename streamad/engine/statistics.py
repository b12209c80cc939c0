"""Bucket statistics: what each detector function measures of one series in one bucket.

An `Accumulator` gathers a series' records in the open bucket (count, sum, min, max, values,
distinct values, influencer values); `feature_values` turns it into the model feature(s) of a
function (ELASTIC_MODEL §1.3). Rare functions are measured per partition, not per series, and
are handled by the detector.
"""

from __future__ import annotations

import math
import zlib

DAY = 86400
WEEK = 7 * DAY


class Accumulator:
    __slots__ = ("count", "n", "total", "lo", "hi", "values", "distinct", "tsum", "lat", "lon", "influencers")

    def __init__(self):
        self.count = 0.0  # records (or summed summary counts)
        self.n = 0  # numeric values seen
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.values = None  # list, for median / varp
        self.distinct = None  # set, for distinct_count / info_content
        self.tsum = 0.0
        self.lat = 0.0
        self.lon = 0.0
        # influencer field -> {value: [records, sum of the detector's value]}
        self.influencers: dict[str, dict[str, list]] | None = None

    def add_influencers(self, pairs, count: float, value: float) -> None:
        if self.influencers is None:
            self.influencers = {}
        for field, v in pairs:
            slot = self.influencers.setdefault(field, {}).setdefault(v, [0.0, 0.0])
            slot[0] += count
            slot[1] += value


def keeps_values(statistic: str) -> bool:
    return statistic in ("median", "varp")


def keeps_distinct(statistic: str) -> bool:
    return statistic in ("distinct_count", "info_content")


def info_content(values) -> float:
    """Elastic's info_content: length of the zlib-deflated sorted unique strings."""
    if not values:
        return 0.0
    data = "\n".join(sorted(values)).encode("utf-8")
    return float(len(zlib.compress(data, 6)))


def features(statistic: str, acc: Accumulator | None) -> list[float]:
    """The bucket value(s) of a statistic; an empty/absent accumulator gives the empty-bucket value."""
    if acc is None:
        if statistic in ("count", "sum"):
            return [0.0]
        return []
    if statistic == "count":
        return [acc.count]
    if statistic == "distinct_count":
        return [float(len(acc.distinct or ()))]
    if statistic == "info_content":
        return [info_content(acc.distinct)]
    if statistic in ("time_of_day", "time_of_week"):
        return [acc.tsum / acc.count] if acc.count > 0 else []
    if statistic == "lat_long":
        return [acc.lat / acc.n, acc.lon / acc.n] if acc.n > 0 else []
    if acc.n == 0:
        return [0.0] if statistic == "sum" else []
    if statistic == "mean":
        return [acc.total / acc.n]
    if statistic == "sum":
        return [acc.total]
    if statistic == "min":
        return [acc.lo]
    if statistic == "max":
        return [acc.hi]
    if statistic == "metric":
        return [acc.total / acc.n, acc.lo, acc.hi]
    if statistic == "median":
        vals = sorted(acc.values)
        mid = len(vals) // 2
        return [vals[mid] if len(vals) % 2 else 0.5 * (vals[mid - 1] + vals[mid])]
    if statistic == "varp":
        if acc.n < 2:
            return []
        mean = acc.total / acc.n
        return [sum((v - mean) ** 2 for v in acc.values) / acc.n]
    raise ValueError(f"unknown statistic {statistic}")


def metric_sample_count(statistic: str, acc: Accumulator) -> float:
    """Number of values behind a metric bucket statistic (for the count variance scale)."""
    return float(acc.n) if acc is not None else 0.0
