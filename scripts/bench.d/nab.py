"""Section 5: NAB standard score and rows/s of streamad and of river's HalfSpaceTrees (the peer).

streamad: `python /work/shared/tools/nab_run.py --streamad .venv/bin/streamad` (one `streamad run`
process per file, 2 in parallel), plus the same jobs run in this process over the same files
(`Runner` over `read_records`) for the engine's own rows/s without process start-up.
river: scripts/bench.d/river_nab.py (same files, same output format, scored by nab_score.py).

Usage: nab.py --out DIR [--only SUBSTRING]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TOOLS = "/work/shared/tools"
NAB = "/work/shared/data/nab"
_SUMMARY = re.compile(r"files=(\d+) rows=(\d+) wall=([\d.]+)s process_seconds=([\d.]+)s")
_PROFILE = re.compile(r"^(\S+)\s+final=\s*([-\d.]+) raw=\s*([-\d.]+) threshold=([-\d.]+)")


def parse(text: str) -> dict:
    out: dict = {}
    for line in text.splitlines():
        m = _SUMMARY.search(line)
        if m:
            files, rows, wall, busy = int(m[1]), int(m[2]), float(m[3]), float(m[4])
            out.update(files=files, rows=rows, wall_s=wall, process_s=busy,
                       rows_per_s_wall=round(rows / wall, 1), rows_per_process_s=round(rows / busy, 1))
        m = _PROFILE.match(line)
        if m:
            out[m[1]] = {"final": float(m[2]), "raw": float(m[3]), "threshold": float(m[4])}
    if "standard" in out:
        out["standard_score"] = out["standard"]["final"]
    return out


def files_of(only: str | None) -> list[str]:
    windows = json.load(open(os.path.join(NAB, "labels", "combined_windows.json")))
    files = sorted(f"{c}/{n}" for c in os.listdir(os.path.join(NAB, "data"))
                   if os.path.isdir(os.path.join(NAB, "data", c))
                   for n in os.listdir(os.path.join(NAB, "data", c))
                   if n.endswith(".csv") and f"{c}/{n}" in windows)
    return [f for f in files if only is None or only in f]


def in_process(only: str | None) -> dict:
    """The nab_run.py jobs through the engine in this process: rows/s of the engine alone."""
    sys.path.insert(0, TOOLS)
    import nab_run

    from streamad.config.job import Job
    from streamad.engine.runner import Runner
    from streamad.ingest.reader import read_records

    common.warm_numba()
    rows = 0
    busy = 0.0
    for rel in files_of(only):
        path = os.path.join(NAB, "data", rel)
        with open(path) as f:
            data = list(csv.reader(f))[1:]
        stamps = [nab_run.epoch_s(r[0]) for r in data]
        body, _span = nab_run.job_for(rel, stamps, "mean")
        job = Job.from_dict(body)
        started = time.perf_counter()
        Runner([job], lambda b: None).run(read_records(path))
        busy += time.perf_counter() - started
        rows += len(data)
    return {"rows": rows, "seconds": round(busy, 3), "rows_per_s": round(rows / busy, 1)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--only", default=None)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    only = ["--only", args.only] if args.only else []
    py = sys.executable
    streamad_exe = os.path.join(os.path.dirname(py), "streamad")
    result: dict = {"subset": args.only or "all", "files": len(files_of(args.only))}

    common.log(f"nab: streamad via nab_run.py ({result['subset']})")
    proc = subprocess.run([py, os.path.join(TOOLS, "nab_run.py"), "--streamad", streamad_exe,
                           "--out", os.path.join(args.out, "nab-streamad"), *only],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nab_run.py failed:\n{proc.stderr[-3000:]}")
    result["streamad"] = parse(proc.stdout)
    result["streamad"]["engine_in_process"] = in_process(args.only)

    common.log("nab: river HalfSpaceTrees via river_nab.py")
    proc = subprocess.run([py, os.path.join(os.path.dirname(os.path.abspath(__file__)), "river_nab.py"),
                           "--out", os.path.join(args.out, "nab-river"), *only], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"river_nab.py failed:\n{proc.stderr[-3000:]}")
    result["river_hst"] = parse(proc.stdout)
    try:
        import river

        result["river_hst"]["version"] = river.__version__
    except ImportError:
        pass
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
