#!/usr/bin/env python3
"""NAB score of the time-series model alone (no engine, no normalizer): a model-quality check.

For each NAB file: bucket span = the median sampling interval, bucket value = mean of the rows in
it (like `nab_run.py` with a `mean` detector), one `SeriesBank` series updated then scored per
bucket (Elastic's order). A row's score is the raw anomaly score (ELASTIC_MODEL §4.1) of its
bucket's probability / 100, a monotone transform of -log p; NAB optimises one threshold per
profile, so this is close to what the normalized scores would give.

With --normalize each file's raw scores go through a `scoring.Normalizer` (online, as the
pipeline's record scores do), which rescales each file by its own score history.

Usage: scripts/nab_model.py [--nab DIR] [--only SUBSTRING] [--per-file] [--side 0] [--normalize]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import time
from datetime import UTC

import numpy as np

TOOLS = "/work/shared/tools"
sys.path.insert(0, TOOLS)
import nab_score  # noqa: E402

from streamad.models import ModelParams, SeriesBank  # noqa: E402
from streamad.scoring.normalizer import Normalizer  # noqa: E402
from streamad.scoring.rawscore import anomaly_score  # noqa: E402


def file_scores(path: str, side: int = 0, normalize: bool = False) -> tuple[list[float], int]:
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    stamps = [nab_score.parse_ts(r[0]).replace(tzinfo=UTC).timestamp() for r in rows]
    values = [float(r[1]) for r in rows]
    gaps = [b - a for a, b in zip(stamps, stamps[1:]) if b > a]
    span = max(1, int(round(statistics.median(gaps))))
    sums: dict[int, list[float]] = {}
    for s, v in zip(stamps, values):
        b = int(s // span * span)
        acc = sums.setdefault(b, [0.0, 0.0])
        acc[0] += v
        acc[1] += 1.0
    bank = SeriesBank(ModelParams(bucket_span=span, side=side))
    idx = bank.add(1)
    norm = Normalizer(span) if normalize else None
    score_of: dict[int, float] = {}
    for b in sorted(sums):
        total, n = sums[b]
        x = np.array([total / n])
        bank.update(idx, b, x, 1.0, 1.0)
        sc = bank.score(idx, b, x, 1.0)
        p = float(sc.probability[0])
        raw = anomaly_score(p)
        if norm is None:
            score_of[b] = raw / 100.0
        else:
            norm.update(raw)
            score_of[b] = norm.normalize(raw, p) / 100.0
            norm.end_bucket()
    return [score_of[int(s // span * span)] for s in stamps], span


def per_file_table(nab_dir: str, scores: dict[str, list[float]], threshold: float) -> None:
    """Each file's contribution at the corpus threshold: TP windows, FP count and cost."""
    windows = json.load(open(os.path.join(nab_dir, "labels", "combined_windows.json")))
    costs = json.load(open(os.path.join(nab_dir, "config", "profiles.json")))["standard"]["CostMatrix"]
    for rel in sorted(scores):
        pts = nab_score.weighted_points(nab_score.read_timestamps(nab_dir, rel), windows[rel], costs)
        fp, fpn, best = 0.0, 0, {}
        for i, c, w in pts:
            if scores[rel][i] >= threshold:
                if w is None:
                    fp += c
                    fpn += 1
                else:
                    best[w] = max(best.get(w, -1.0), c)
        tp = sum(best.values())
        miss = len(windows[rel]) - len(best)
        print(f"{fp + tp - miss * costs['fnWeight']:8.2f}  windows={len(windows[rel])} hit={len(best)} "
              f"tp={tp:5.2f} fp={fpn:3d} fpcost={fp:6.2f}  {rel}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nab", default="/work/shared/data/nab")
    p.add_argument("--only", default=None)
    p.add_argument("--per-file", action="store_true")
    p.add_argument("--side", type=int, default=0)
    p.add_argument("--normalize", action="store_true",
                   help="per-file Normalizer (like a record score of the pipeline) instead of raw scores")
    args = p.parse_args()
    windows = json.load(open(os.path.join(args.nab, "labels", "combined_windows.json")))
    files = sorted(rel for rel in windows if os.path.exists(os.path.join(args.nab, "data", rel)))
    if args.only:
        files = [f for f in files if args.only in f]
    started = time.perf_counter()
    scores = {}
    buckets = 0
    for rel in files:
        scores[rel], _span = file_scores(os.path.join(args.nab, "data", rel), args.side, args.normalize)
        buckets += len(scores[rel])
    wall = time.perf_counter() - started
    result = nab_score.score_corpus(args.nab, scores)
    print(f"files={len(files)} rows={buckets} wall={wall:.1f}s")
    for profile, (final, raw, threshold) in result.items():
        print(f"{profile:20s} final={final:7.2f} raw={raw:9.3f} threshold={threshold:.4f}")
    if args.per_file:
        per_file_table(args.nab, scores, result["standard"][2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
