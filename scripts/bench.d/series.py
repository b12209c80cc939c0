"""Section 2: per-series cost at one size, in a fresh process (so RSS growth is this size's alone).

  --mode bank:   a `SeriesBank(ModelParams(bucket_span=3600))` of N series; per bucket
                 `sc = bank.score(idx, t, x, 1.0)` then `bank.update(idx, t, x, 1.0, 1.0, sc)` (the engine's
                 order: judge, then learn) on all N series at once; then `bank.to_bytes()`.
  --mode engine: a `JobEngine` of `mean(value)` partitioned by `host` with N hosts, one event per
                 series per bucket; finalization is timed by calling `engine.advance(end of bucket)`
                 just before the next bucket's first event (what `feed` would do), then
                 `engine.snapshot()`.
RSS is VmRSS of /proc/self/status; growth = after - before (the inputs are generated in chunks and
dropped, so they are not counted); peak is VmHWM.

Usage: series.py --mode bank|engine --series N --buckets B
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _summary(per_bucket_us: list[float]) -> dict:
    s = sorted(per_bucket_us)
    return {"mean_us": round(statistics.fmean(s), 3), "p50_us": round(statistics.median(s), 3),
            "max_us": round(s[-1], 3), "first_us": round(per_bucket_us[0], 3),
            "per_bucket_us": [round(v, 3) for v in per_bucket_us]}


def bank_mode(n: int, buckets: int) -> dict:
    import numpy as np

    from streamad.models.bank import ModelParams, SeriesBank

    warm = SeriesBank(ModelParams(bucket_span=3600))  # compile or load every kernel first
    wi = warm.add(4)
    warm.score(wi, common.T0, np.ones(4), 1.0)
    warm.update(wi, common.T0, np.ones(4), 1.0, 1.0)
    SeriesBank.from_bytes(warm.to_bytes())
    del warm, wi
    gc.collect()
    rss0 = common.rss_bytes()
    bank = SeriesBank(ModelParams(bucket_span=3600))
    started = time.perf_counter()
    idx = bank.add(n)
    add_us = (time.perf_counter() - started) / n * 1e6
    rss_added = common.rss_bytes()
    rng = np.random.default_rng(7)
    base = 100.0 + 20.0 * rng.random(n)
    score_us, update_us, total_us = [], [], []
    for b in range(buckets):
        t = common.T0 + b * 3600
        x = base * (1.0 + 0.3 * np.sin(2 * np.pi * b / 24)) + rng.normal(0.0, 2.0, n)
        t1 = time.perf_counter()
        sc = bank.score(idx, t, x, 1.0)
        t2 = time.perf_counter()
        bank.update(idx, t, x, 1.0, 1.0, sc)
        t3 = time.perf_counter()
        score_us.append((t2 - t1) / n * 1e6)
        update_us.append((t3 - t2) / n * 1e6)
        total_us.append((t3 - t1) / n * 1e6)
    del x
    rss_model = common.rss_bytes()
    started = time.perf_counter()
    blob = bank.to_bytes()
    to_bytes_us = (time.perf_counter() - started) / n * 1e6
    state_bytes = len(blob)
    del blob
    return {"mode": "bank", "series": n, "buckets": buckets, "add_us_per_series": round(add_us, 3),
            "finalize": _summary(total_us), "score": _summary(score_us), "update": _summary(update_us),
            "state_bytes": state_bytes, "state_bytes_per_series": round(state_bytes / n, 1),
            "to_bytes_us_per_series": round(to_bytes_us, 3),
            "rss_growth_bytes_per_series": round((rss_model - rss0) / n, 1),
            "rss_after_add_bytes_per_series": round((rss_added - rss0) / n, 1),
            "rss_peak_bytes": _hwm(), "capacity_rows": int(bank.S.shape[0])}


def engine_mode(n: int, buckets: int) -> dict:
    from streamad.engine.job import JobEngine
    from streamad.ingest.reader import decode_json

    common.warm_numba()
    gc.collect()
    docs = [0]

    def emit(doc: dict) -> None:
        docs[0] += 1

    rss0 = common.rss_bytes()
    engine = JobEngine(common.highcard_job(), emit)
    finalize_us, feed_s = [], 0.0
    chunk = 20_000
    for b in range(buckets):
        if b > 0:
            t1 = time.perf_counter()
            engine.advance(common.T0 + b * 3600)  # closes bucket b-1, as the next event would
            finalize_us.append((time.perf_counter() - t1) / n * 1e6)
        for lo in range(0, n, chunk):
            lines = _bucket_chunk(n, b, lo, min(lo + chunk, n))
            t1 = time.perf_counter()
            for raw in lines:
                r, d, e = decode_json(raw)
                engine.feed(r, d, e)
            feed_s += time.perf_counter() - t1
            del lines
    t1 = time.perf_counter()
    engine.advance(common.T0 + buckets * 3600)
    finalize_us.append((time.perf_counter() - t1) / n * 1e6)
    gc.collect()
    rss_model = common.rss_bytes()
    t1 = time.perf_counter()
    snap = engine.snapshot()
    snapshot_s = time.perf_counter() - t1
    snap_bytes = len(snap)
    t1 = time.perf_counter()
    JobEngine.restore(snap, emit)
    restore_s = time.perf_counter() - t1
    del snap
    det = engine.detectors[0]
    bank = det.banks[0]
    return {"mode": "engine", "series": n, "buckets": buckets, "finalize": _summary(finalize_us),
            "feed_events_per_s": round(n * buckets / feed_s, 1),
            "snapshot_bytes": snap_bytes, "snapshot_bytes_per_series": round(snap_bytes / n, 1),
            "bank_rows_used": len(bank), "bank_capacity_rows": int(bank.S.shape[0]),
            "snapshot_s": round(snapshot_s, 3), "restore_s": round(restore_s, 3),
            "rss_growth_bytes_per_series": round((rss_model - rss0) / n, 1), "rss_peak_bytes": _hwm(),
            "docs": docs[0]}


def _bucket_chunk(n: int, b: int, lo: int, hi: int) -> list[bytes]:
    import orjson

    start_ms = (common.T0 + b * 3600) * 1000
    step = 3600 * 1000 / n
    return [orjson.dumps({"timestamp": start_ms + int(s * step), "host": f"host-{s:07d}",
                          "value": round(100.0 + (s % 17) + 10.0 * (((s * 7919 + b * 104729) % 1000) / 1000.0), 3)})
            for s in range(lo, hi)]


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=("bank", "engine"), required=True)
    p.add_argument("--series", type=int, required=True)
    p.add_argument("--buckets", type=int, default=12)
    args = p.parse_args()
    started = time.perf_counter()
    out = bank_mode(args.series, args.buckets) if args.mode == "bank" else engine_mode(args.series, args.buckets)
    out["wall_s"] = round(time.perf_counter() - started, 2)
    common.emit(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
