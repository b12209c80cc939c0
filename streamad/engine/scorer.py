"""The job scorer: one bucket's leaves -> hierarchy, normalized scores, Elastic result documents.

Leaves aggregate into detector nodes and a root (ELASTIC_MODEL §4.2); each influencer field gets a
pivot (bucket influencer) and each influencer value an influencer result (§5); every level is
normalized with its own normalizer (§4.3), and `anomaly_score` is the largest bucket influencer
score (§4.4). Interim buckets are normalized without updating the normalizers.

Renormalization (ELASTIC_MODEL §4.3): every final document keeps what its score was computed
from (normalizer, raw score, probability, scope); `renormalize` re-scores the documents of the
renormalization window against the normalizers as they are now and returns those whose score
changed, to be emitted again under the same `_id` (the last one wins). `initial_*` scores stay.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from streamad.config.job import Job
from streamad.engine import ids
from streamad.engine.leaves import Leaf, LeafBatch
from streamad.scoring.aggregate import DETECTORS, PEOPLE, aggregate
from streamad.scoring.normalizer import Normalizer
from streamad.scoring.rawscore import MAX_ANOMALOUS_PROBABILITY, anomaly_score

RENORMALIZE_MIN_CHANGE = 0.5  # a re-scored document is emitted again when it moves by this much
_FEW = 16  # leaves of a batch up to which the scorer loops in Python rather than with numpy
RECORD_LIMIT = 500  # records per bucket, lowest probability first (Elastic's per-bucket limit default)


def _root(det_p: list[float]) -> tuple[float, float]:
    """The root (probability, raw score) from the detectors' probabilities."""
    if len(det_p) > 1:
        return aggregate(det_p, DETECTORS)
    if det_p:
        return det_p[0], anomaly_score(det_p[0])
    return 1.0, 0.0


def _r(x: float) -> float:
    """Round a score for output: stable across platforms, enough digits for Kibana."""
    return float(f"{x:.12g}") if x == x else 0.0


class JobScorer:
    def __init__(self, job: Job):
        self.job = job
        self.span = job.bucket_span_s
        self.normalizers: dict[tuple, Normalizer] = {}
        self.window_s = job.renormalization_window_s
        # final buckets of the renormalization window: (time, bucket doc, [(doc, field, norm, raw, p, scope)])
        self.history: deque[tuple[int, dict, list]] = deque()

    def _norm(self, *key) -> Normalizer:
        n = self.normalizers.get(key)
        if n is None:
            n = self.normalizers[key] = Normalizer(self.span)
        return n

    def score_bucket(self, t: int, batches: list[LeafBatch], event_count: float, interim: bool,
                     processing_time_ms: int = 0) -> list[dict]:
        job = self.job
        jid = job.job_id
        ts = int(t) * 1000
        span = self.span
        update = not interim
        # the leaves that are not skipped: (batch, their positions or None for all, their probabilities)
        live = []
        for b in batches:
            pm = b.model_probability  # None: the same as the probabilities
            if b.skipped:
                at = np.flatnonzero(~b.skip)
                if at.shape[0]:
                    live.append((b, at, b.probability[at], None if pm is None else pm[at]))
            else:
                live.append((b, None, b.probability, pm))
        # detector nodes and the root
        by_det: dict[int, list[np.ndarray]] = {}
        for b, _, ps, _ in live:
            by_det.setdefault(b.det.detector_index, []).append(ps)
        det_p = [aggregate(ps[0] if len(ps) == 1 else np.concatenate(ps), PEOPLE)[0]
                 for ps in (by_det[d] for d in sorted(by_det))]
        root_p, root_raw = _root(det_p)
        # the quantiles learn what the models make of the values, before an open anomaly episode
        # discounted a bucket as a repeat of it (else a long episode would teach the normalizer
        # that such scores are rare and lift every later moderate score)
        root_pm = root_p
        if any(pms is not None for _, _, _, pms in live):
            by_det_m: dict[int, list[np.ndarray]] = {}
            for b, _, ps, pms in live:
                by_det_m.setdefault(b.det.detector_index, []).append(ps if pms is None else pms)
            root_pm = _root([aggregate(ps[0] if len(ps) == 1 else np.concatenate(ps), PEOPLE)[0]
                             for ps in (by_det_m[d] for d in sorted(by_det_m))])[0]
        touched: list[Normalizer] = []

        provenance: list[tuple] = []  # (kind, norm, raw, p, scope) in scoring order

        def normalize(norm: Normalizer, p: float, scope: str, p_model: float | None = None) -> tuple[float, float]:
            s = anomaly_score(p) if p < MAX_ANOMALOUS_PROBABILITY else 0.0
            if update:
                if norm not in touched:
                    touched.append(norm)
                if p_model is None or p_model == p:
                    norm.update(s, scope)
                else:
                    norm.update(anomaly_score(p_model) if p_model < MAX_ANOMALOUS_PROBABILITY else 0.0, scope)
            provenance.append((norm, s, p, scope))
            return s, norm.normalize(s, p, scope)

        bucket_influencers = []
        root_s, root_norm = normalize(self._norm("root"), root_p, "", root_pm)
        root_prov = provenance[-1]
        infl_prov: dict[str, tuple] = {}
        value_prov: dict[tuple[str, str], tuple] = {}
        record_prov: list[tuple] = []
        # influencers: pivot per (field, value) and per field
        infl_nodes: dict[str, dict[str, list[tuple[float, float]]]] = {}
        for b, at, _, _ in live:
            pm_all = b.model_probability
            for i, influences in b.influences.items():  # in leaf order
                if not influences or (at is not None and b.skip[i]):
                    continue
                p = float(b.probability[i])
                pm = p if pm_all is None else float(pm_all[i])
                for (fname, value), w in influences.items():
                    infl_nodes.setdefault(fname, {}).setdefault(value, []).append(
                        (p ** w, pm ** w) if w > 0 else (1.0, 1.0))
        influencer_docs = []
        for fname in job.analysis_config.influencers:
            values = infl_nodes.get(fname)
            if not values:
                continue
            value_ps = {}
            value_pms = {}
            for value in sorted(values):
                qs = [q for q, _ in values[value]]
                qms = [q for _, q in values[value]]
                value_ps[value] = aggregate(qs, PEOPLE)[0]
                value_pms[value] = value_ps[value] if qms == qs else aggregate(qms, PEOPLE)[0]
            field_p, _ = aggregate(list(value_ps.values()), PEOPLE)
            field_pm = aggregate(list(value_pms.values()), PEOPLE)[0] if value_pms != value_ps else field_p
            raw, score = normalize(self._norm("inflb", fname), field_p, "", field_pm)
            infl_prov[fname] = provenance[-1]
            bucket_influencers.append((fname, raw, score, field_p))
            for value in sorted(value_ps):
                p = value_ps[value]
                raw_v, score_v = normalize(self._norm("infl", fname), p, f"{fname}\x00{value}", value_pms[value])
                if p < MAX_ANOMALOUS_PROBABILITY:
                    value_prov[(fname, value)] = provenance[-1]
                    influencer_docs.append({
                        "job_id": jid, "result_type": "influencer", "influencer_field_name": fname,
                        "influencer_field_value": value, fname: value, "influencer_score": _r(score_v),
                        "initial_influencer_score": _r(score_v), "probability": p, "bucket_span": span,
                        "is_interim": interim, "timestamp": ts,
                        "_id": ids.influencer_id(jid, ts, span, fname, value),
                    })
        # records: the anomalous leaves (p < MAX_ANOMALOUS_PROBABILITY, so a raw score > 0) come first in
        # probability order and are normalized one by one; every other leaf scores 0, which only marks
        # its scope as seen (the same whatever the order), so those are touched in bulk
        records = []
        anomalous: list[Leaf] = []
        for b, at, ps, pms in live:
            n = ps.shape[0]
            # a leaf whose undiscounted probability is anomalous teaches its normalizer a raw score
            # too (see `normalize`), so it is normalized one by one as well
            if n <= _FEW:  # plain Python is quicker than numpy calls on a few leaves
                where = range(n) if at is None else at.tolist()
                low, rest = [], []
                lows = ps.tolist() if pms is None else np.minimum(ps, pms).tolist()
                for i, v in zip(where, lows):
                    (low if v < MAX_ANOMALOUS_PROBABILITY else rest).append(i)
                n_rest = len(rest)
            else:
                mask = (ps if pms is None else np.minimum(ps, pms)) < MAX_ANOMALOUS_PROBABILITY
                low = np.flatnonzero(mask)
                low = (low if at is None else at[low]).tolist()
                n_rest = n - len(low)
            if low:
                anomalous.extend(b.leaf(i) for i in low)
            if n_rest:
                norm = self._norm("leaf", *b.normalizer_key())  # one leaf normalizer per detector
                if update:
                    if norm not in touched:
                        touched.append(norm)
                    leaf_ids, scopes = b.ids, b.scopes
                    if n <= _FEW:
                        sids = [leaf_ids[i] for i in rest]
                    else:
                        sids = (leaf_ids if at is None else leaf_ids[at])[~mask].tolist()
                    norm.touch([scopes[s] for s in sids])
        if len(anomalous) > 1:
            anomalous.sort(key=lambda lf: (lf.probability, lf.detector_index, _leaf_sort(lf)))
        for lf in anomalous:
            # members of a population share one scope (`leaves.scope_of`)
            scope = "" if lf.over else f"{lf.partition[1] if lf.partition else ''}\x00{lf.by[1] if lf.by else ''}"
            raw, score = normalize(self._leaf_norm(lf), lf.probability, scope, lf.model_probability)
            if lf.probability < MAX_ANOMALOUS_PROBABILITY and len(records) < RECORD_LIMIT:
                records.append(self._record(lf, ts, score, interim))
                record_prov.append(provenance[-1])
        bucket_time_doc = {
            "job_id": jid, "result_type": "bucket_influencer", "influencer_field_name": "bucket_time",
            "initial_anomaly_score": _r(root_norm), "anomaly_score": _r(root_norm), "raw_anomaly_score": _r(root_s),
            "probability": root_p, "timestamp": ts, "bucket_span": span, "is_interim": interim,
        }
        binfl = []
        for fname, raw, score, p in bucket_influencers:
            binfl.append({"job_id": jid, "result_type": "bucket_influencer", "influencer_field_name": fname,
                          "initial_anomaly_score": _r(score), "anomaly_score": _r(score), "raw_anomaly_score": _r(raw),
                          "probability": p, "timestamp": ts, "bucket_span": span, "is_interim": interim})
        scored = root_raw > 0.0 or any(b["anomaly_score"] > 0 for b in binfl) or root_p < MAX_ANOMALOUS_PROBABILITY
        all_binfl = (binfl + [bucket_time_doc]) if (scored or binfl) else []
        anomaly = max([b["anomaly_score"] for b in all_binfl], default=0.0)
        bucket = {
            "job_id": jid, "timestamp": ts, "anomaly_score": _r(anomaly), "bucket_span": span,
            "initial_anomaly_score": _r(anomaly), "event_count": int(event_count), "is_interim": interim,
            "bucket_influencers": all_binfl, "processing_time_ms": processing_time_ms, "result_type": "bucket",
            "_id": ids.bucket_id(jid, ts, span),
        }
        if update:
            for norm in touched:
                norm.end_bucket()
            items = []
            for b in all_binfl:
                prov = root_prov if b["influencer_field_name"] == "bucket_time" else infl_prov[b["influencer_field_name"]]
                items.append((b, "anomaly_score", *prov))
            items.extend((doc, "record_score", *prov) for doc, prov in zip(records, record_prov))
            items.extend((doc, "influencer_score", *value_prov[(doc["influencer_field_name"],
                                                               doc["influencer_field_value"])])
                         for doc in influencer_docs)
            if items:
                self.history.append((int(t), bucket, items, records, influencer_docs))
            while self.history and self.history[0][0] <= int(t) - self.window_s:
                self.history.popleft()
        return [bucket, *records, *influencer_docs]

    def renormalize(self) -> list[dict]:
        """Re-score the window's final documents against today's normalizers; the changed ones."""
        out: list[dict] = []
        for _t, bucket, items, records, influencer_docs in self.history:
            changed: set[int] = set()
            for doc, field, norm, raw, p, scope in items:
                new = _r(norm.normalize(raw, p, scope))
                if abs(new - doc[field]) >= RENORMALIZE_MIN_CHANGE:
                    doc[field] = new
                    changed.add(id(doc))
            if not changed:
                continue
            binfl = bucket["bucket_influencers"]
            if any(id(b) in changed for b in binfl):
                bucket["anomaly_score"] = _r(max(b["anomaly_score"] for b in binfl))
                out.append(bucket)
            out.extend(d for d in records if id(d) in changed)
            out.extend(d for d in influencer_docs if id(d) in changed)
        return out

    def _leaf_norm(self, lf: Leaf) -> Normalizer:
        person = lf.over or lf.by
        return self._norm("leaf", lf.partition[0] if lf.partition else "", person[0] if person else "",
                          lf.function, lf.field_name or "")

    def _record(self, lf: Leaf, ts: int, score: float, interim: bool) -> dict:
        jid = self.job.job_id
        doc: dict = {"job_id": jid, "result_type": "record", "probability": lf.probability}
        if lf.multi_bucket_impact is not None:
            doc["multi_bucket_impact"] = lf.multi_bucket_impact
        doc.update(record_score=_r(score), initial_record_score=_r(score), bucket_span=self.span,
                   detector_index=lf.detector_index, is_interim=interim, timestamp=ts)
        if lf.by and not lf.over:
            doc["by_field_name"], doc["by_field_value"] = lf.by
        if lf.partition:
            doc["partition_field_name"], doc["partition_field_value"] = lf.partition
        doc["function"] = lf.function
        doc["function_description"] = lf.function_description
        doc["typical"] = [_r(v) for v in lf.typical]  # rare records carry them too, as Elastic's do
        doc["actual"] = [_r(v) for v in lf.actual]
        if lf.field_name:
            doc["field_name"] = lf.field_name
        if lf.over:
            doc["over_field_name"], doc["over_field_value"] = lf.over
            cause = {"probability": lf.probability, "over_field_name": lf.over[0], "over_field_value": lf.over[1]}
            if lf.by:
                cause["by_field_name"], cause["by_field_value"] = lf.by
            if lf.partition:
                cause["partition_field_name"], cause["partition_field_value"] = lf.partition
            cause.update(function=lf.function, function_description=lf.function_description,
                         typical=doc["typical"], actual=doc["actual"])
            if lf.field_name:
                cause["field_name"] = lf.field_name
            doc["causes"] = [cause]
        grouped: dict[str, list[str]] = {}
        for (fname, value), w in sorted(lf.influences.items(), key=lambda kv: (-kv[1], kv[0])):
            if w >= 0.4:
                grouped.setdefault(fname, []).append(value)
        if grouped:
            doc["influencers"] = [{"influencer_field_name": f, "influencer_field_values": v}
                                  for f, v in sorted(grouped.items())]
        if lf.lower == lf.lower and lf.probability < 0.05:
            doc["anomaly_score_explanation"] = {
                "anomaly_type": "spike" if lf.actual[0] >= lf.typical[0] else "dip",
                "single_bucket_impact": int(round(-math.log10(max(lf.probability, 1e-308)))),
                "lower_confidence_bound": _r(lf.lower), "typical_value": _r(lf.typical[0]),
                "upper_confidence_bound": _r(lf.upper),
            }
        for pair in (lf.partition, lf.over, lf.by):
            if pair and pair[0].split(".")[0] not in doc:
                doc.setdefault(pair[0], [pair[1]])
        for fname, values in grouped.items():
            if fname.split(".")[0] not in ("job_id", "timestamp", "probability"):
                existing = doc.get(fname)
                if isinstance(existing, list):
                    for v in values:
                        if v not in existing:
                            existing.append(v)
                elif existing is None:
                    doc[fname] = list(values)
        by = lf.by[1] if lf.by else None
        over = lf.over[1] if lf.over else None
        part = lf.partition[1] if lf.partition else None
        doc["_id"] = ids.record_id(jid, ts, self.span, lf.detector_index, by, over, part)
        return doc

    def state(self) -> dict:
        return {"|".join(k): n.to_state() for k, n in sorted(self.normalizers.items())}


def _leaf_sort(lf: Leaf):
    return tuple((p[1] if p else "") for p in (lf.partition, lf.over, lf.by))
