"""`PartitionEngine`: one shard of a job's modelling, for a set of partition values.

A job's series are spread over N shards by partition value (`shard_of`; a detector without a
partition field has the value None, which is shard 0). A shard holds, per detector, one
`DetectorState` restricted to its series, so many partition values share one bank per feature and
its numba calls stay batched. The job frontend (`JobEngine`) gathers buckets, and at bucket close
sends every shard that has ever had a series a `CloseRequest` (this shard's part of each
detector's gather dict); the shard models and scores the bucket and answers a `CloseReply`
(per detector its `LeafBatch`, its model events, its series and model-bytes counts). The frontend
merges the replies in series-key order and scores the bucket as one.

Requests and replies are plain values (`to_bytes` / `from_bytes`, pickle protocol 5; no callbacks
or compiled objects inside) so a topic can sit between the frontend and the shards. What a shard
needs from the job's context comes with each request: the job-global first bucket with data per
detector (time_of_day/week scoring), the custom rules and the filters their scopes name, and
whether a scheduled event skips the model update.
"""

from __future__ import annotations

import bisect
import heapq
import pickle
from dataclasses import dataclass, field

import numpy as np

from streamad.config.filters import Filter
from streamad.config.job import Job
from streamad.engine.detector import DetectorState, _sort_key
from streamad.engine.ids import murmur3_x64_128
from streamad.engine.leaves import LeafBatch

SHARD_STATE_VERSION = 1


def shard_of(partition_value: str | None, shards: int) -> int:
    """The shard of a partition value: murmur3 (x64, 128; h1) of its UTF-8 bytes mod `shards`; None: 0.

    Stable across processes and versions (no Python `hash`)."""
    if partition_value is None or shards <= 1:
        return 0
    return murmur3_x64_128(partition_value.encode("utf-8"))[0] % shards


@dataclass
class CloseRequest:
    """Close one bucket on one shard."""

    seq: int  # the job's close sequence number (every close, interim ones included, counts)
    start: int  # bucket start, epoch seconds
    interim: bool
    buckets: list  # per detector: this shard's gather dict (series key -> Accumulator)
    first_times: list  # per detector: the job's first bucket with data (float seconds) or None
    skip_model_update: bool = False  # a scheduled event skips every model update
    rules: tuple | None = None  # per detector its custom rules; None: the job has none
    filters: dict[str, Filter] | None = None  # the filters rule scopes name (with rules)
    pop_events: bool = False  # a final bucket with annotations: hand back (and forget) model events

    def to_bytes(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    @classmethod
    def from_bytes(cls, blob: bytes) -> CloseRequest:
        return _unpickle(blob, cls)


@dataclass
class CloseReply:
    """What one shard made of one bucket."""

    seq: int
    shard: int
    batches: list  # per detector: LeafBatch (its leaves in series-key order) or None
    # per detector: model events as (feature, order key, model key, ModelEvent), in the order the
    # shard's banks raised them; the order key merges shards into the one-engine order
    events: list = field(default_factory=list)
    series: list = field(default_factory=list)  # per detector: modelled series (bank rows in use)
    model_bytes: list = field(default_factory=list)  # per detector
    # per detector: known (partition, by) pairs, (partition, over) pairs and partition values
    # (`PartitionEngine.size_counts`); they add up across shards
    sizes: list = field(default_factory=list)

    def to_bytes(self) -> bytes:
        compact = CloseReply(self.seq, self.shard, [None if b is None else compact_batch(b) for b in self.batches],
                             self.events, self.series, self.model_bytes, self.sizes)
        return pickle.dumps(compact, protocol=5)

    @classmethod
    def from_bytes(cls, blob: bytes) -> CloseReply:
        return _unpickle(blob, cls)


def compact_batch(b: LeafBatch) -> LeafBatch:
    """The batch with only its own leaves' keys and scopes (not the detector's whole series table),
    ids 0..n-1, and no detector config (the frontend attaches its own): what crosses a topic."""
    n = len(b)
    if b._leaves is None:
        ids = b.ids.tolist()
        keys = b.keys
        scopes = b.scopes
        keys = [keys[i] for i in ids]
        scopes = [scopes[i] for i in ids]
    else:
        keys, scopes = b.keys, b.scopes
    out = LeafBatch(None, keys, np.arange(n, dtype=np.int64), b.probability, b.actual, b.typical, b.lower, b.upper,
                    b.mbi, b.descriptions, b.skip, b.influences, scopes, plot=b.plot, skipped=b.skipped,
                    model_probability=b.model_probability)
    out._leaves = b._leaves
    return out


def merge_batches(det, parts: list[LeafBatch]) -> LeafBatch:
    """One detector's batches from several shards as the one batch a single engine would give: leaves
    in series-key order. Keys start with the partition value, each batch is in key order and a
    partition value lives in one shard, so a stable sort by partition value is that order."""
    if len(parts) == 1:
        b = parts[0]
        b.det = det
        return b
    keys_all: list = []
    for b in parts:
        keys = b.keys
        keys_all.extend(keys if b._leaves is not None else [keys[i] for i in b.ids.tolist()])
    pv = [k[0] for k in keys_all]
    n_all = len(keys_all)
    if None in pv:  # never for a partitioned detector (a detector without one lives in shard 0)
        order_list = sorted(range(n_all), key=lambda i: (pv[i] is None, pv[i] or ""))
    else:
        order_list = sorted(range(n_all), key=pv.__getitem__)  # timsort: a merge of the sorted runs
    if any(b._leaves is not None for b in parts):  # rare functions: leaves already built
        leaves = [lf for b in parts for lf in b._leaves]
        return LeafBatch.of_leaves(det, [leaves[i] for i in order_list])
    order = np.asarray(order_list, dtype=np.int64)

    def cat(arrays):
        return np.concatenate(arrays)[order]

    scopes_all: list = []
    desc_all: list = []
    any_desc_list = any(not isinstance(b.descriptions, str) for b in parts)
    offsets = []
    off = 0
    for b in parts:
        offsets.append(off)
        off += len(b)
        scopes = b.scopes
        scopes_all.extend(scopes[i] for i in b.ids.tolist())
        if any_desc_list:
            desc_all.extend([b.descriptions] * len(b) if isinstance(b.descriptions, str) else b.descriptions)
    keys_m = [keys_all[i] for i in order_list]
    scopes_m = [scopes_all[i] for i in order_list]
    descriptions = [desc_all[i] for i in order_list] if any_desc_list else parts[0].descriptions
    new_pos = np.empty(n_all, dtype=np.int64)
    new_pos[order] = np.arange(n_all, dtype=np.int64)
    infl = []
    for j, b in enumerate(parts):
        for i, d in b.influences.items():
            infl.append((int(new_pos[offsets[j] + i]), d))
    infl.sort(key=lambda kv: kv[0])  # in leaf order, as a detector fills them
    actual = [cat([b.actual[k] for b in parts]) for k in range(len(parts[0].actual))]
    typical = [cat([b.typical[k] for b in parts]) for k in range(len(parts[0].typical))]
    mbi = None if all(b.mbi is None for b in parts) else cat([b.mbi for b in parts])
    pm = None
    if any(b.model_probability is not None for b in parts):
        pm = cat([b.probability if b.model_probability is None else b.model_probability for b in parts])
    return LeafBatch(det, keys_m, np.arange(n_all, dtype=np.int64), cat([b.probability for b in parts]),
                     actual, typical, cat([b.lower for b in parts]), cat([b.upper for b in parts]), mbi,
                     descriptions, cat([b.skip for b in parts]), dict(infl), scopes_m,
                     plot=all(b.plot for b in parts), skipped=any(b.skipped for b in parts), model_probability=pm)


def merge_events(parts: list[list]) -> list:
    """One detector's model events from several shards in the order one engine raises them."""
    parts = [p for p in parts if p]
    if len(parts) <= 1:
        return parts[0] if parts else []
    return list(heapq.merge(*parts, key=lambda e: (e[0], e[1])))


def rule_evaluator(rules: tuple | None, filters: dict[str, Filter], skip_model_update: bool):
    """The `rule_eval(det, key, x, t, phase, typical)` of `DetectorState.close` for one bucket: the
    custom rules of each detector (by detector index), and every model update skipped when a
    scheduled event says so. None when nothing applies."""
    if rules is None:
        if not skip_model_update:
            return None

        def only_skip(det, key, x, t, phase, typical=None):
            return phase == "update"
        return only_skip

    def evaluate(det, key, x, t, phase, typical=None):
        if phase == "update" and skip_model_update:
            return True
        spec = det.det
        values = {spec.partition_field_name: key[0], spec.by_field_name: key[1], spec.over_field_name: key[2]}
        for rule in rules[spec.detector_index]:
            if phase == "update" and not rule.skip_model_update:
                continue
            if phase == "result" and not rule.skip_result:
                continue
            if not rule.in_scope(values, filters):
                continue
            ok = True
            for c in rule.conditions:
                if c.applies_to == "actual":
                    ok = c.holds(x)
                elif c.applies_to == "time":
                    ok = c.holds(float(t))
                elif typical is None:
                    ok = False
                elif c.applies_to == "typical":
                    ok = c.holds(typical)
                else:
                    ok = c.holds(abs(x - typical))
                if not ok:
                    break
            if ok:
                return True
        return False
    return evaluate


class PartitionEngine:
    """The models of one shard of a job: one `DetectorState` per detector over this shard's series."""

    def __init__(self, job: Job, index: int = 0, count: int = 1, detectors: list[DetectorState] | None = None):
        self.job = job
        self.index = index
        self.count = count
        self.detectors = detectors if detectors is not None else [DetectorState(job, d) for d in job.detectors]
        # population detectors of a sharded job: per detector and feature, [(close seq, first row)] of
        # the bank rows each close created (the one-engine row order, which orders population events)
        self.row_stamps: list[list[list[tuple[int, int]]]] = [[[] for _ in d.banks] for d in self.detectors]
        self.last_seq = -1

    def update_job(self, job: Job) -> None:
        """A job update (rules, descriptions, ...): what is analysed is unchanged."""
        self.job = job
        for state, det in zip(self.detectors, job.detectors):
            state.job, state.det = job, det

    # ------------------------------------------------------------------ close
    def close(self, req: CloseRequest) -> CloseReply:
        """Model and score one bucket of this shard's series."""
        rule_eval = rule_evaluator(req.rules, req.filters or {}, req.skip_model_update)
        track = self.count > 1
        batches = []
        events = []
        for d, (state, bucket) in enumerate(zip(self.detectors, req.buckets)):
            first = req.first_times[d]
            if first is not None and state.first_time is None:
                state.first_time = first
            sizes = [b._size for b in state.banks] if track and state.population else None
            batches.append(state.close(req.start, bucket if bucket is not None else {}, req.interim, rule_eval))
            if sizes is not None:
                for f, b in enumerate(state.banks):
                    if b._size > sizes[f]:
                        self.row_stamps[d][f].append((req.seq, sizes[f]))
            events.append(self._events(d) if req.pop_events else [])
        self.last_seq = req.seq
        return CloseReply(req.seq, self.index, batches, events,
                          [state.series_count() for state in self.detectors],
                          [state.model_bytes() for state in self.detectors], self.size_counts())

    def _events(self, d: int) -> list:
        state = self.detectors[d]
        out = []
        for f, bank in enumerate(state.banks):
            evs = bank.pop_events()
            if not evs:
                continue
            inverse = state.table.model_key_of_rows(f)
            stamps = self.row_stamps[d][f]
            starts = [s for _, s in stamps]
            for ev in evs:
                key = inverse.get(ev.series)
                order = None
                if self.count > 1:
                    skey = _sort_key(key) if key is not None else ()
                    if state.population:
                        at = bisect.bisect_right(starts, ev.series) - 1
                        order = (ev.time, stamps[at][0] if at >= 0 else -1, skey)
                    else:
                        order = (ev.time, skey)
                out.append((f, order, key, ev))
        return out

    # ------------------------------------------------------------------ reads
    def size_counts(self) -> list[tuple[int, int, int]]:
        """Per detector: its known (partition, by) pairs, (partition, over) pairs and partition values.

        Elastic models each partition value with its own gatherer and sums their counts in
        model_size_stats, so a by value seen in two partitions counts twice; that is also what makes
        the counts add up across shards (a partition value lives in one shard). Recounted only when
        the shard's series changed."""
        cache = self.__dict__.setdefault("_size_cache", {})
        out = []
        for d, state in enumerate(self.detectors):
            n = len(state.table)
            hit = cache.get(d)
            if hit is None or hit[0] != n:
                known = state.known
                hit = cache[d] = (n, (len({(k[0], k[1]) for k in known if k[1] is not None}),
                                      len({(k[0], k[2]) for k in known if k[2] is not None}),
                                      len({k[0] for k in known if k[0] is not None})))
            out.append(hit[1])
        return out

    def forecast(self, times: np.ndarray) -> list[list]:
        """Per detector, per feature: (series keys in key order, pred, lower, upper) shaped
        (len(times), series), or None without series. The models are read, never changed."""
        out = []
        for state in self.detectors:
            feats = []
            for f in range(len(state.feature_sides)):
                series = state.forecast_series(f)
                if not series or not len(times):
                    feats.append(None)
                    continue
                rows = np.asarray([row for _key, row in series], dtype=np.int64)
                pred, lower, upper = state.banks[f].forecast(rows, times.astype(np.float64))
                feats.append(([key for key, _row in series], pred, lower, upper))
            out.append(feats)
        return out

    # ------------------------------------------------------------------ state
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["shard_state_version"] = SHARD_STATE_VERSION
        return state

    def __setstate__(self, state: dict) -> None:
        state.pop("shard_state_version", None)
        self.__dict__.update(state)

    def snapshot(self) -> bytes:
        return pickle.dumps(self, protocol=5)

    @classmethod
    def restore(cls, blob: bytes) -> PartitionEngine:
        return _unpickle(blob, cls)


def _unpickle(blob: bytes, cls):
    """The `cls` value pickled in `blob`; ValueError if it holds anything else."""
    value = pickle.loads(blob)
    if not isinstance(value, cls):
        raise ValueError(f"not a {cls.__name__}")
    return value


def merge_forecast(parts: list) -> tuple | None:
    """One detector feature's forecast columns from several shards, in series-key order."""
    parts = [p for p in parts if p is not None]
    if len(parts) <= 1:
        return parts[0] if parts else None
    keys = [k for p in parts for k in p[0]]
    order = sorted(range(len(keys)), key=lambda j: _sort_key(keys[j]))
    return ([keys[j] for j in order], *(np.concatenate([p[i] for p in parts], axis=1)[:, order] for i in (1, 2, 3)))

