"""One detector of a job: series identity, bucket gathering, models, and the leaves of each bucket.

Series are keyed by (partition value, by value) for individual analysis, and by (partition value,
by value) *attribute* shared by every over value for population analysis (ELASTIC_MODEL §1.2).
At bucket close the detector updates its `SeriesBank`s in one batch per feature, then scores the
same values (update first, as Elastic does), and returns `Leaf`s for the job scorer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from streamad.config.functions import HIGH, LOW, TWO_SIDED
from streamad.config.job import Detector, Job
from streamad.engine.statistics import DAY, WEEK, Accumulator, features, keeps_distinct, keeps_values
from streamad.ingest.fields import MISSING, FieldGetter, keyword_string
from streamad.models import ModelParams, SeriesBank

SKIP_MODEL_UPDATE_WEIGHT = 0.005
DESCRIPTIONS = {"count": "count", "distinct_count": "distinct_count", "info_content": "info_content",
                "mean": "mean", "median": "median", "min": "min", "max": "max", "sum": "sum", "varp": "varp",
                "rare": "rare", "freq_rare": "rare", "time_of_day": "time", "time_of_week": "time",
                "lat_long": "lat_long", "metric": "metric"}
_METRIC_FEATURES = (("mean", TWO_SIDED), ("min", LOW), ("max", HIGH))


@dataclass
class Leaf:
    """One scored series in one bucket: what the job scorer aggregates and writes as a record."""

    detector_index: int
    function: str
    function_description: str
    field_name: str | None
    partition: tuple[str, str] | None
    by: tuple[str, str] | None
    over: tuple[str, str] | None
    probability: float
    actual: list[float]
    typical: list[float]
    lower: float = math.nan
    upper: float = math.nan
    multi_bucket_impact: float | None = None
    # the probability before an open anomaly episode discounted this bucket as a repeat of it: what
    # the score quantiles learn (None: the same as probability)
    model_probability: float | None = None
    influences: dict[tuple[str, str], float] = field(default_factory=dict)
    skip_result: bool = False
    skip_quantiles: bool = False
    causes: list[dict] | None = None
    plot: bool = True


def _str(value):
    if value is MISSING or value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
        if value is None:
            return None
    s = keyword_string(value)
    return None if s is MISSING else s


def _number(value):
    if isinstance(value, bool) or value is MISSING or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    if isinstance(value, list) and value:
        return _number(value[0])
    return None


class DetectorState:
    """Everything one detector keeps between buckets (its models, series registry, rare counts)."""

    def __init__(self, job: Job, det: Detector):
        self.job = job
        self.det = det
        self.spec = det.spec
        self.statistic = self.spec.statistic
        self.population = det.over_field_name is not None
        self.span = job.bucket_span_s
        self.field = FieldGetter(det.field_name) if det.field_name else None
        self.by = FieldGetter(det.by_field_name) if det.by_field_name else None
        self.over = FieldGetter(det.over_field_name) if det.over_field_name else None
        self.partition = FieldGetter(det.partition_field_name) if det.partition_field_name else None
        self.influencer_fields = tuple(f for f in job.analysis_config.influencers)
        self.influencer_getters = tuple(FieldGetter(f) for f in self.influencer_fields)
        self.own_fields = {det.partition_field_name, det.by_field_name, det.over_field_name} - {None}
        self.banks: list[SeriesBank] = []
        self.rows: list[dict] = []
        feats = _METRIC_FEATURES if self.statistic == "metric" else ((self.statistic, self.spec.side),)
        if self.statistic == "lat_long":
            feats = (("lat", TWO_SIDED), ("lon", TWO_SIDED))
        self.feature_sides = feats
        integer = True if self.statistic in ("count", "distinct_count") else (None if self.statistic in ("sum",) else False)
        if self.statistic in ("info_content",):
            integer = True
        for _, side in feats:
            params = ModelParams(
                bucket_span=self.span, side=side, nonnegative=self.spec.nonnegative,
                integer=integer if self.statistic not in ("mean", "median", "min", "max", "metric", "varp",
                                                          "time_of_day", "time_of_week", "lat_long") else None,
                seasonal=not self.population and self.statistic not in ("time_of_day", "time_of_week", "lat_long"),
                multi_bucket=not self.population and self.statistic not in ("time_of_day", "time_of_week", "lat_long"),
            )
            self.banks.append(SeriesBank(params))
            self.rows.append({})
        # rare: per partition, decayed number of buckets each by value (or by value per over) appeared in
        self.rare_counts: dict[str | None, dict[str, float]] = {}
        self.rare_people: dict[str | None, dict[str, set]] = {}
        self.buckets_seen = 0
        self.known: dict[tuple, int] = {}  # series key -> last bucket seen (for empty buckets and pruning)
        self.first_time: float | None = None

    # ----------------------------------------------------------------- gathering
    def key_of(self, doc: dict):
        """(partition, by, over) values of a record, or None if the record is ignored by this detector."""
        det = self.det
        part = _str(self.partition(doc)) if self.partition else None
        by = _str(self.by(doc)) if self.by else None
        over = _str(self.over(doc)) if self.over else None
        for getter, value in ((self.partition, part), (self.by, by), (self.over, over)):
            if getter is not None and value is None:
                if not det.use_null:
                    return None
        if self.partition:
            part = part if part is not None else ""
        if self.by:
            by = by if by is not None else ""
        if self.over:
            over = over if over is not None else ""
        return part, by, over

    def gather(self, bucket: dict, doc: dict, t: float, count: float) -> bool:
        """Add one record to the open bucket's accumulators; False if this detector ignores it."""
        key = self.key_of(doc)
        if key is None:
            return False
        stat = self.statistic
        value = 0.0
        if self.field is not None and stat not in ("distinct_count", "info_content", "rare", "freq_rare"):
            raw = self.field(doc)
            if stat == "lat_long":
                latlon = _latlon(raw)
                if latlon is None:
                    return False
            else:
                value = _number(raw)
                if value is None:
                    return False
        acc = bucket.get(key)
        if acc is None:
            acc = bucket[key] = Accumulator()
            if keeps_values(stat):
                acc.values = []
            if keeps_distinct(stat):
                acc.distinct = set()
        acc.count += count
        if stat in ("distinct_count", "info_content"):
            s = _str(self.field(doc))
            if s is None:
                return False
            acc.distinct.add(s)
        elif stat in ("time_of_day", "time_of_week"):
            acc.tsum += (t % (DAY if stat == "time_of_day" else WEEK)) * count
        elif stat == "lat_long":
            acc.lat += latlon[0]
            acc.lon += latlon[1]
            acc.n += 1
        elif self.field is not None:
            acc.n += 1
            acc.total += value
            acc.lo = min(acc.lo, value)
            acc.hi = max(acc.hi, value)
            if acc.values is not None:
                acc.values.append(value)
        if self.influencer_getters:
            pairs = []
            for fname, getter in zip(self.influencer_fields, self.influencer_getters):
                if fname in self.own_fields:
                    continue
                v = _str(getter(doc))
                if v is not None:
                    pairs.append((fname, v))
            if pairs:
                acc.add_influencers(pairs, count, value if self.field is not None else count)
        return True

    # ----------------------------------------------------------------- closing
    def _row(self, f: int, key) -> int:
        rows = self.rows[f]
        r = rows.get(key)
        if r is None:
            r = int(self.banks[f].add(1)[0])
            rows[key] = r
        return r

    def close(self, t: int, bucket: dict, interim: bool, rule_eval) -> list[Leaf]:
        """Model and score one bucket; returns its leaves (all scored series, anomalous or not)."""
        if self.first_time is None:
            if not bucket:
                return []
            self.first_time = float(t)
        self.buckets_seen += 1
        if self.statistic in ("rare", "freq_rare"):
            return self._close_rare(t, bucket, interim)
        stat = self.statistic
        # series with a value this bucket (plus known series for functions that count empty buckets)
        entries: dict[tuple, Accumulator | None] = dict(bucket)
        if self.spec.empty_buckets and not self.population:
            for key in self.known:
                if key not in entries:
                    entries[key] = None
        keys = sorted(entries, key=_sort_key)
        for key in keys:
            if entries[key] is not None:
                self.known[key] = t
        if not keys:
            return []
        model_keys = [(k[0], k[1]) if self.population else k for k in keys]
        leaves_values: list[list[float]] = []
        for key in keys:
            leaves_values.append(features(stat, entries[key]))
        nfeat = len(self.banks)
        results = []
        for f in range(nfeat):
            idx, xs, ws, vs, pos = [], [], [], [], []
            for j, key in enumerate(keys):
                vals = leaves_values[j]
                if len(vals) <= (f if stat in ("metric", "lat_long") else 0):
                    continue
                x = vals[f] if stat in ("metric", "lat_long") else vals[0]
                acc = entries[key]
                weight = 1.0
                if acc is None:  # empty bucket of a known series: weight by how often it has data
                    weight = 1.0
                skip_update = rule_eval is not None and rule_eval(self, key, x, t, "update")
                if skip_update:
                    weight = SKIP_MODEL_UPDATE_WEIGHT
                idx.append(self._row(f, model_keys[j]))
                xs.append(x)
                ws.append(weight)
                vs.append(1.0)
                pos.append(j)
            if not idx:
                results.append(None)
                continue
            idx_a = np.asarray(idx, dtype=np.int64)
            x_a = np.asarray(xs)
            # score against the model as it predicted this bucket, then learn from it: a value is
            # never judged by a model it has already moved
            sc = self.banks[f].score(idx_a, t, x_a, np.asarray(vs), multi_bucket=True)
            if not interim:
                # the probabilities just given open, extend or close each series' anomaly episode;
                # a population model is shared by every over value, and has no episodes
                self.banks[f].update(idx_a, t, x_a, np.asarray(ws), np.asarray(vs),
                                     math.nan if self.population else sc.probability)
            results.append((pos, idx_a, x_a, sc))
        leaves: list[Leaf] = []
        per_key: dict[int, list] = {}
        for f, res in enumerate(results):
            if res is None:
                continue
            pos, idx_a, x_a, sc = res
            for n, j in enumerate(pos):
                per_key.setdefault(j, []).append((f, float(x_a[n]), sc, n, int(idx_a[n])))
        det = self.det
        for j in sorted(per_key):
            key = keys[j]
            items = per_key[j]
            part, by, over = key
            # metric/lat_long: the record's probability is the smallest over its features
            best = min(items, key=lambda it: it[2].probability[it[3]])
            f, x, sc, n, row = best
            p = float(sc.probability[n])
            pm = float(sc.p_model[n])
            if stat in ("time_of_day", "time_of_week") and self.first_time is not None:
                period = DAY if stat == "time_of_day" else WEEK
                q = math.exp(-(((t - self.first_time) / period) ** 4))
                p = q + (1.0 - q) * p
                pm = q + (1.0 - q) * pm
            actual = [it[1] for it in items] if stat == "lat_long" else [x]
            typical = [float(it[2].typical[it[3]]) for it in items] if stat == "lat_long" else [float(sc.typical[n])]
            leaf = Leaf(
                detector_index=det.detector_index, function=det.function,
                function_description=("min" if f == 1 else "max" if f == 2 else "mean") if stat == "metric"
                else DESCRIPTIONS[stat],
                field_name=det.field_name,
                partition=(det.partition_field_name, part) if det.partition_field_name else None,
                by=(det.by_field_name, by) if det.by_field_name else None,
                over=(det.over_field_name, over) if det.over_field_name else None,
                probability=p, actual=actual, typical=typical,
                lower=float(sc.lower[n]), upper=float(sc.upper[n]),
                multi_bucket_impact=None if self.population else float(sc.multi_bucket_impact[n]),
                model_probability=pm,
            )
            if rule_eval is not None and rule_eval(self, key, x, t, "result", typical[0]):
                leaf.skip_result = True
            if p < 0.035 and not leaf.skip_result:
                leaf.influences = self._influences(key, entries[key], p, f, row, x, t)
            leaves.append(leaf)
        return leaves

    def _influences(self, key, acc, p: float, f: int, row: int, x: float, t: int) -> dict:
        out: dict[tuple[str, str], float] = {}
        det = self.det
        for fname in self.influencer_fields:
            if fname == det.partition_field_name and key[0] is not None:
                out[(fname, key[0])] = 1.0
            elif fname == det.by_field_name and key[1] is not None:
                out[(fname, key[1])] = 1.0
            elif fname == det.over_field_name and key[2] is not None:
                out[(fname, key[2])] = 1.0
        if acc is None or not acc.influencers:
            return out
        stat = self.statistic
        lp = math.log(max(p, 1e-308))
        for fname, values in sorted(acc.influencers.items()):
            if len(values) == 1:
                (v,) = values
                out[(fname, v)] = 1.0
                continue
            names = sorted(values)
            if stat in ("count", "sum") and self.spec.side != LOW:
                # log-probability complement: how normal would the bucket be without this value?
                alt = np.asarray([x - (values[v][0] if stat == "count" else values[v][1]) for v in names])
                sc = self.banks[f].score(np.full(len(names), row, dtype=np.int64), t, alt, multi_bucket=False)
                infl = [min(max(1.0 - math.log(max(q, 1e-308)) / lp, 0.0), 1.0) if lp < 0 else 0.0
                        for q in sc.probability]
            elif stat == "mean" and acc.n > 1:
                alt = []
                for v in names:
                    n_other = acc.n - values[v][0]
                    alt.append((acc.total - values[v][1]) / n_other if n_other > 0 else x)
                sc = self.banks[f].score(np.full(len(names), row, dtype=np.int64), t, np.asarray(alt), multi_bucket=False)
                infl = [min(max(1.0 - math.log(max(q, 1e-308)) / lp, 0.0), 1.0) if lp < 0 else 0.0
                        for q in sc.probability]
            else:
                total = sum(values[v][0] for v in names) or 1.0
                infl = [values[v][0] / total for v in names]
            ranked = sorted(zip(names, infl), key=lambda kv: (-kv[1], kv[0]))
            for v, w in ranked:
                if w >= 0.4:
                    out[(fname, v)] = w
        return out

    def _close_rare(self, t: int, bucket: dict, interim: bool) -> list[Leaf]:
        det = self.det
        leaves = []
        parts: dict[str | None, list] = {}
        for key in sorted(bucket, key=_sort_key):
            parts.setdefault(key[0], []).append(key)
        for part in sorted(parts, key=lambda v: (v is None, v or "")):
            counts = self.rare_counts.setdefault(part, {})
            people = self.rare_people.setdefault(part, {})
            keys = parts[part]
            total = sum(counts.values())
            informative = total >= 20.0
            present: dict[str, set] = {}
            for key in keys:
                present.setdefault(key[1], set()).add(key[2])
            scored = {}
            for by in sorted(present):
                if det.function == "freq_rare" or self.population:
                    own = len(people.get(by, ()))
                    weights = {b: float(len(s)) for b, s in people.items()}
                    mine = float(own)
                else:
                    weights = counts
                    mine = counts.get(by, 0.0)
                denom = sum(weights.values()) + 1.0
                if not informative:
                    p = 1.0
                else:
                    p = (sum(w for w in weights.values() if w <= mine) + 0.5) / denom
                    p = min(max(p, 1e-308), 1.0)
                scored[by] = p
            if not interim:
                decay = math.exp(-0.0005 * min(1.0, self.span / 1800.0) * 4.0)
                for b in list(counts):
                    counts[b] *= decay
                for by, overs in present.items():
                    counts[by] = counts.get(by, 0.0) + 1.0
                    people.setdefault(by, set()).update(o for o in overs if o is not None)
            for key in keys:
                part_v, by, over = key
                acc = bucket[key]
                p = scored[by]
                leaf = Leaf(
                    detector_index=det.detector_index, function=det.function, function_description="rare",
                    field_name=None,
                    partition=(det.partition_field_name, part_v) if det.partition_field_name else None,
                    by=(det.by_field_name, by), over=(det.over_field_name, over) if det.over_field_name else None,
                    probability=p, actual=[acc.count], typical=[max(counts.get(by, 0.0), 0.0) * 0 + 1.0],
                    plot=False,
                )
                if p < 0.035:
                    leaf.influences = self._influences(key, acc, p, 0, 0, acc.count, t) \
                        if not acc.influencers else {k: v for k, v in self._own_influences(key).items()}
                leaves.append(leaf)
        return leaves

    def _own_influences(self, key) -> dict:
        out = {}
        det = self.det
        for fname, v in ((det.partition_field_name, key[0]), (det.by_field_name, key[1]), (det.over_field_name, key[2])):
            if fname and fname in self.influencer_fields and v is not None:
                out[(fname, v)] = 1.0
        return out

    def series_count(self) -> int:
        return sum(len(b) for b in self.banks)

    def model_bytes(self) -> int:
        return sum(len(b) for b in self.banks) * 8 * self.banks[0].S.shape[1] + 64 * len(self.known)

    def pop_events(self):
        out = []
        for f, bank in enumerate(self.banks):
            inverse = {r: k for k, r in self.rows[f].items()}
            for ev in bank.pop_events():
                out.append((inverse.get(ev.series), ev))
        return out


def _sort_key(key):
    return tuple((v is None, v or "") for v in key)


def _latlon(raw):
    if isinstance(raw, str):
        parts = raw.split(",")
        if len(parts) == 2:
            try:
                lat, lon = float(parts[0]), float(parts[1])
            except ValueError:
                return None
            return (lat, lon) if math.isfinite(lat) and math.isfinite(lon) else None
        return None
    if isinstance(raw, dict):
        lat, lon = _number(raw.get("lat")), _number(raw.get("lon"))
        return (lat, lon) if lat is not None and lon is not None else None
    if isinstance(raw, list) and len(raw) == 2:
        lon, lat = _number(raw[0]), _number(raw[1])
        return (lat, lon) if lat is not None and lon is not None else None
    return None
