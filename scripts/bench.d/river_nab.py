"""river's `anomaly.HalfSpaceTrees` on a NAB-layout folder, written the way nab_run.py writes streamad's.

Protocol, as /work/shared/tools/nab_run.py: every file of `labels/combined_windows.json` present
under `data/`, rows in file order, a row's score may depend only on rows up to it. Per row:
`score_one(x)` then `learn_one(x)` (score before learning, as streamad judges a bucket before it
learns it), x = {"value": value} through an online `preprocessing.MinMaxScaler` (HalfSpaceTrees
expects features in [0, 1]; river's documented pipeline). Model parameters are river's defaults
(n_trees=10, height=8, window_size=250) with seed=42. Scores (already in [0, 1]) go to
OUT/scores/<category>/<file>.csv as `timestamp,value,anomaly_score`, which nab_score.py scores.

Usage: river_nab.py [--nab DIR] [--out DIR] [--only SUBSTRING] [--parallel 2]
Prints "files=.. rows=.. wall=..s process_seconds=..s out=.." then nab_score's profile lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

TOOLS = "/work/shared/tools"


def run_one(args: tuple[str, str, str]) -> tuple[str, int, float]:
    from river import anomaly, preprocessing

    nab, rel, out_dir = args
    with open(os.path.join(nab, "data", rel)) as f:
        rows = list(csv.reader(f))[1:]
    model = preprocessing.MinMaxScaler() | anomaly.HalfSpaceTrees(seed=42)
    scores = []
    started = time.perf_counter()
    for row in rows:
        x = {"value": float(row[1])}
        scores.append(model.score_one(x))
        model.learn_one(x)
    elapsed = time.perf_counter() - started
    target = os.path.join(out_dir, "scores", os.path.dirname(rel))
    os.makedirs(target, exist_ok=True)
    with open(os.path.join(target, os.path.basename(rel)), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score"])
        for r, s in zip(rows, scores):
            w.writerow([r[0], r[1], f"{min(max(s, 0.0), 1.0):.6f}"])
    return rel, len(rows), elapsed


def main() -> int:
    here = os.path.dirname(TOOLS)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nab", default=os.path.join(here, "data", "nab"))
    p.add_argument("--out", default=None)
    p.add_argument("--only", default=None)
    p.add_argument("--parallel", type=int, default=2)
    args = p.parse_args()
    out_dir = args.out or tempfile.mkdtemp(prefix="nab-river-")
    windows = json.load(open(os.path.join(args.nab, "labels", "combined_windows.json")))
    files = sorted(
        f"{c}/{n}"
        for c in os.listdir(os.path.join(args.nab, "data"))
        if os.path.isdir(os.path.join(args.nab, "data", c))
        for n in os.listdir(os.path.join(args.nab, "data", c))
        if n.endswith(".csv") and f"{c}/{n}" in windows
    )
    if args.only:
        files = [f for f in files if args.only in f]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.parallel) as pool:
        done = list(pool.map(run_one, [(args.nab, rel, out_dir) for rel in files]))
    wall = time.perf_counter() - started
    rows = sum(n for _, n, _ in done)
    busy = sum(e for _, _, e in done)
    print(f"files={len(done)} rows={rows} wall={wall:.1f}s process_seconds={busy:.1f}s out={out_dir}", flush=True)
    score = subprocess.run([sys.executable, os.path.join(TOOLS, "nab_score.py"), args.nab,
                            os.path.join(out_dir, "scores")], capture_output=True, text=True)
    sys.stdout.write(score.stdout)
    if score.returncode != 0:
        sys.stderr.write(score.stderr)
    return score.returncode


if __name__ == "__main__":
    sys.exit(main())
