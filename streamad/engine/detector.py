"""One detector of a job: series identity, bucket gathering, models, and the leaves of each bucket.

Series are keyed by (partition value, by value) for individual analysis, and by (partition value,
by value) *attribute* shared by every over value for population analysis (ELASTIC_MODEL §1.2).
At bucket close the detector scores its `SeriesBank`s in one batch per feature, then updates them
(a value is judged by the model that predicted it), and returns a `LeafBatch` for the job scorer:
arrays over all its series (a `SeriesTable` keeps ids, key order and rows), so that only the
anomalous series cost per-series Python work.
"""

from __future__ import annotations

import math

import numpy as np

from streamad.config.functions import HIGH, LOW, TWO_SIDED
from streamad.config.job import Detector, Job
from streamad.engine.leaves import Leaf, LeafBatch
from streamad.engine.packed import PackedArray
from streamad.engine.series import SeriesTable
from streamad.engine.statistics import DAY, WEEK, Accumulator, features, keeps_distinct, keeps_values
from streamad.ingest.fields import MISSING, FieldGetter, keyword_string
from streamad.models import ModelParams, SeriesBank

SKIP_MODEL_UPDATE_WEIGHT = 0.005
DESCRIPTIONS = {"count": "count", "distinct_count": "distinct_count", "info_content": "info_content",
                "mean": "mean", "median": "median", "min": "min", "max": "max", "sum": "sum", "varp": "varp",
                "rare": "rare", "freq_rare": "rare", "time_of_day": "time", "time_of_week": "time",
                "lat_long": "lat_long", "metric": "metric"}
_METRIC_FEATURES = (("mean", TWO_SIDED), ("min", LOW), ("max", HIGH))


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
        self.table = SeriesTable(len(self.banks), self.population)  # series ids, key order, rows, last seen
        # rare: per partition, decayed number of buckets each by value (or by value per over) appeared in
        self.rare_counts: dict[str | None, dict[str, float]] = {}
        self.rare_people: dict[str | None, dict[str, set]] = {}
        self.buckets_seen = 0
        self.first_time: float | None = None

    # ----------------------------------------------------------------- state
    STATE_VERSION = 2  # 2: series table, banks pickled packed without spare capacity (1: known/rows dicts)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["banks"] = [_trimmed(b) for b in self.banks]
        state["state_version"] = self.STATE_VERSION
        return state

    def __setstate__(self, state: dict) -> None:
        version = state.pop("state_version", 1)
        if version == 1:
            known, rows = state.pop("known"), state.pop("rows")
            state["table"] = SeriesTable.of_dicts(len(state["banks"]), state["population"], known, rows)
        self.__dict__.update(state)

    @property
    def known(self) -> list[tuple]:
        """Keys of the series that have had a value (for empty buckets and model size stats)."""
        return self.table.known_keys()

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
    def close(self, t: int, bucket: dict, interim: bool, rule_eval) -> LeafBatch | None:
        """Model and score one bucket; its leaves (all scored series, anomalous or not), None if none."""
        if self.first_time is None:
            if not bucket:
                return None
            self.first_time = float(t)
        self.buckets_seen += 1
        if self.statistic in ("rare", "freq_rare"):
            leaves = self._close_rare(t, bucket, interim)
            return LeafBatch.of_leaves(self.det, leaves) if leaves else None
        stat = self.statistic
        table = self.table
        # series with a value this bucket (plus known series for functions that count empty buckets)
        accs: list[Accumulator | None] = list(bucket.values())
        sids = table.ids_of(list(bucket))
        if accs:
            table.seen[sids] = t
        if self.spec.empty_buckets and not self.population:
            known = table.known()
            if known.shape[0] > sids.shape[0]:
                absent = np.ones(len(table), dtype=bool)
                absent[sids] = False
                extra = known[absent[known]]
                sids = np.concatenate([sids, extra])
                accs.extend([None] * extra.shape[0])
        n_all = sids.shape[0]
        if n_all == 0:
            return None
        if n_all > 1:
            order = np.argsort(table.rank[sids], kind="stable")  # key order
            sids = sids[order]
            accs = [accs[i] for i in order.tolist()]
        ones = np.ones(n_all)  # count variance scales, and update weights unless a rule lowers them
        results = []
        for f, (x_all, has) in enumerate(self._values(accs)):
            if has is None:  # every series has a value
                pos, fs, x_a = None, sids, x_all
            else:
                pos = np.flatnonzero(has)
                if pos.shape[0] == 0:
                    results.append(None)
                    continue
                fs, x_a = sids[pos], x_all[pos]
            m = fs.shape[0]
            idx_a = table.rows_of(f, fs, self.banks[f])
            vs = ones if m == n_all else ones[:m]
            ws = vs
            if rule_eval is not None:
                ws = np.ones(m)
                keys = table.keys
                for k, sid in enumerate(fs.tolist()):
                    if rule_eval(self, keys[sid], float(x_a[k]), t, "update"):
                        ws[k] = SKIP_MODEL_UPDATE_WEIGHT
            # score against the model as it predicted this bucket, then learn from it: a value is
            # never judged by a model it has already moved
            sc = self.banks[f].score(idx_a, t, x_a, vs, multi_bucket=True)
            if not interim:
                # the probabilities just given open, extend or close each series' anomaly episode;
                # a population model is shared by every over value, and has no episodes
                if self.population:
                    # each over value's value is one sample of its attribute's model, learnt in
                    # (model, value) order as Elastic sorts a bucket's samples by value: the first
                    # value a model ever sees, which places its skewed candidates' offset, is the
                    # smallest of its first bucket, not whichever over value sorts first
                    order = np.lexsort((x_a, idx_a))
                    self.banks[f].update(idx_a[order], t, x_a[order], ws[order], vs[order], None)
                    self.banks[f].penalize_samples(idx_a)
                else:
                    self.banks[f].update(idx_a, t, x_a, ws, vs, sc)
            results.append((pos, idx_a, x_a, sc))
        if results[0] is None:
            return None
        pos = results[0][0]
        # a multi-feature statistic (metric, lat_long) has every feature or none
        assert len(results) == 1 or all(r is not None and (r[0] is pos or np.array_equal(r[0], pos))
                                        for r in results)
        leaf_sids = sids if pos is None else sids[pos]
        n = leaf_sids.shape[0]
        p = results[0][3].probability
        pm = results[0][3].p_model  # before an open anomaly episode discounted the bucket
        if len(results) == 1:
            best = None
            x, rows, sc = results[0][2], results[0][1], results[0][3]
            typical0, lower, upper, mbi = sc.typical, sc.lower, sc.upper, sc.multi_bucket_impact
        else:
            # metric/lat_long: the record's probability is the smallest over its features (first on ties)
            best = np.zeros(n, dtype=np.int64)
            for f in range(1, len(results)):
                pf = results[f][3].probability
                better = pf < p
                p = np.where(better, pf, p)
                pm = np.where(better, results[f][3].p_model, pm)
                best[better] = f
            at = np.arange(n)

            def pick(arrays):
                return np.stack(arrays)[best, at]

            x = pick([r[2] for r in results])
            rows = pick([r[1] for r in results])
            typical0 = pick([r[3].typical for r in results])
            lower, upper = pick([r[3].lower for r in results]), pick([r[3].upper for r in results])
            mbi = pick([r[3].multi_bucket_impact for r in results])
        if stat in ("time_of_day", "time_of_week"):
            period = DAY if stat == "time_of_day" else WEEK
            q = math.exp(-(((t - self.first_time) / period) ** 4))
            p = q + (1.0 - q) * p
            pm = q + (1.0 - q) * pm
        if stat == "lat_long":
            actual = [r[2] for r in results]
            typical = [r[3].typical for r in results]
        else:
            actual = [x]
            typical = [typical0]
        if stat == "metric":
            names = ("mean", "min", "max")
            descriptions = [names[b] for b in best.tolist()]
        else:
            descriptions = DESCRIPTIONS[stat]
        skip = np.zeros(n, dtype=bool)
        skipped = False
        keys = table.keys
        if rule_eval is not None:
            first_typical = typical[0]
            for i, sid in enumerate(leaf_sids.tolist()):
                if rule_eval(self, keys[sid], float(x[i]), t, "result", float(first_typical[i])):
                    skip[i] = skipped = True
            low = np.flatnonzero((p < 0.035) & ~skip).tolist()
        elif n <= 16:
            low = [i for i, v in enumerate(p.tolist()) if v < 0.035]
        else:
            low = np.flatnonzero(p < 0.035).tolist()
        influences = {}
        for i in low:
            influences[i] = self._influences(keys[leaf_sids[i]], accs[i if pos is None else pos[i]], float(p[i]),
                                             0 if best is None else int(best[i]), int(rows[i]), float(x[i]), t)
        return LeafBatch(self.det, keys, leaf_sids, p, actual, typical, lower, upper,
                         None if self.population else mbi, descriptions, skip, influences, table.scopes,
                         skipped=skipped, model_probability=None if np.array_equal(pm, p) else pm)

    def _values(self, accs: list) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Per model feature: each series' value (in order) and which have one (`features`; None: all)."""
        stat = self.statistic
        if stat in ("mean", "min", "max", "metric"):  # never an empty-bucket entry (None)
            ns = [a.n for a in accs]
            has = None if 0 not in ns else np.asarray(ns) > 0
            if stat in ("mean", "metric"):
                mean = np.asarray([a.total / a.n if a.n else 0.0 for a in accs], dtype=np.float64)
            if stat == "metric":
                lo = np.asarray([a.lo for a in accs], dtype=np.float64)
                hi = np.asarray([a.hi for a in accs], dtype=np.float64)
                return [(mean, has), (lo, has), (hi, has)]
            if stat == "mean":
                return [(mean, has)]
            return [(np.asarray([a.lo if stat == "min" else a.hi for a in accs], dtype=np.float64), has)]
        if stat == "count":
            return [(np.asarray([0.0 if a is None else a.count for a in accs], dtype=np.float64), None)]
        if stat == "sum":
            return [(np.asarray([0.0 if a is None or a.n == 0 else a.total for a in accs], dtype=np.float64), None)]
        values = [features(stat, a) for a in accs]
        multi = stat in ("metric", "lat_long")
        out = []
        for f in range(len(self.banks)):
            has = np.asarray([len(v) > (f if multi else 0) for v in values], dtype=bool)
            x = np.asarray([v[f if multi else 0] if h else 0.0 for v, h in zip(values, has.tolist())],
                           dtype=np.float64)
            out.append((x, has))
        return out

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

    def forecast_series(self, f: int) -> list[tuple[tuple, int]]:
        """(series key, bank row) of every series modelled for feature f, in key order."""
        return sorted(((key, row) for row, key in self.table.model_key_of_rows(f).items()),
                      key=lambda kv: _sort_key(kv[0]))

    @property
    def description(self) -> str:
        return DESCRIPTIONS[self.statistic]

    def series_count(self) -> int:
        return sum(len(b) for b in self.banks)

    def model_bytes(self) -> int:
        return sum(len(b) for b in self.banks) * 8 * self.banks[0].S.shape[1] + 64 * self.table.known().shape[0]

    def pop_events(self):
        out = []
        for f, bank in enumerate(self.banks):
            events = bank.pop_events()
            if events:
                inverse = self.table.model_key_of_rows(f)
                for ev in events:
                    out.append((inverse.get(ev.series), ev))
        return out


def _trimmed(bank: SeriesBank) -> SeriesBank:
    """The bank as it pickles: same state, its state matrix cut to the rows in use (no spare capacity)
    and packed (mostly 0 and NaN: see `PackedArray`)."""
    copy = object.__new__(type(bank))
    copy.__dict__.update(bank.__dict__)
    copy.S = PackedArray(bank.S[: getattr(bank, "_size", bank.S.shape[0])])
    return copy


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
