"""Section 1 (+ the engine half of section 6): the embedded engine's ceiling ratio.

The engine run is what `streamad run` does (streamad/commands/run.py): `Runner(jobs, write,
dead_letter).run(read_records(path))`, every record decoded by `decode_json`, result documents
buffered and written (here to /dev/null). The bare loop reads the same file line by line and only
`orjson.loads` each line, in the same process, after numba has been warmed up by a small run.
Ratio = engine events/s / bare events/s.

Usage: engine.py --out DIR [--quick] [--profile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import orjson  # noqa: E402


def bare_rate(path: str) -> tuple[float, int]:
    n = 0
    started = time.perf_counter()
    with open(path, "rb") as f:
        for line in f:
            orjson.loads(line)
            n += 1
    return n / (time.perf_counter() - started), n


def engine_run(path: str, jobs) -> dict:
    """`streamad run` in-process: the same Runner, reader and output buffering, output to /dev/null."""
    from streamad.engine.runner import Runner
    from streamad.ingest.reader import read_records

    out = open(os.devnull, "wb")  # noqa: SIM115
    buf: list[bytes] = []
    written = [0, 0]

    def write(data: bytes) -> None:
        buf.append(data)
        written[0] += 1
        written[1] += len(data)
        if len(buf) >= 4096:
            out.write(b"".join(buf))
            buf.clear()

    def dead_letter(raw: bytes, job_id: str, reason: str) -> None:
        out.write(orjson.dumps({"job_id": job_id, "reason": reason, "raw": raw.decode("utf-8", "replace")}) + b"\n")

    started = time.perf_counter()
    runner = Runner(jobs, write, dead_letter)
    runner.run(read_records(path))
    out.write(b"".join(buf))
    elapsed = time.perf_counter() - started
    out.close()
    n = max(e.counts.input_record_count for e in runner.engines)
    return {"events": n, "seconds": round(elapsed, 3), "events_per_s": round(n / elapsed, 1),
            "docs": written[0], "doc_bytes": written[1],
            "processed": {e.job.job_id: e.counts.processed_record_count for e in runner.engines}}


def measure(path: str, jobs, repeats_bare: int = 3) -> dict:
    bares = [bare_rate(path)[0] for _ in range(repeats_bare // 2 + 1)]
    eng = engine_run(path, jobs)
    bares += [bare_rate(path)[0] for _ in range(repeats_bare - len(bares))]
    bare = statistics.median(bares)
    eng["bare_events_per_s"] = round(bare, 1)
    eng["bare_runs_events_per_s"] = [round(b, 1) for b in bares]
    eng["ratio"] = round(eng["events_per_s"] / bare, 4)
    return eng


def profile_run(path: str, jobs, out_dir: str, name: str) -> dict:
    from profiles import pyinstrument_top
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001)
    profiler.start()
    engine_run(path, jobs)
    profiler.stop()
    session = profiler.last_session
    with open(os.path.join(out_dir, f"profile-engine-{name}.txt"), "w") as f:
        f.write(profiler.output_text(unicode=False, color=False, show_all=False))
    with open(os.path.join(out_dir, f"profile-engine-{name}.html"), "w") as f:
        f.write(profiler.output_html())
    return pyinstrument_top(session)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--profile", action="store_true")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    quick = args.quick
    result: dict = {"mode": "quick" if quick else "full"}

    common.log("engine: warming numba (small run of every job kind)")
    t = time.perf_counter()
    common.warm_numba()
    result["warmup_s"] = round(time.perf_counter() - t, 2)

    # (a) the three sample web-log jobs
    days, rate = (28, 120.0) if quick else (28, 600.0)
    weblogs_path = os.path.join(args.out, "weblogs.ndjson")
    common.log(f"engine: generating web logs ({days} days, base rate {rate}/h)")
    from streamad.demo import weblogs

    n = weblogs.write_ndjson(weblogs_path, days=days, base_rate=rate)
    jobs = common.sample_jobs()
    common.log(f"engine: {n} web-log events through the 3 sample jobs")
    wl = measure(weblogs_path, jobs)
    wl.update(days=days, base_rate=rate, jobs=list(common.SAMPLE_JOBS))
    if not quick:  # each job alone over the same input: which job costs what
        per_job = {}
        for job in common.sample_jobs():
            r = engine_run(weblogs_path, [job])
            per_job[job.job_id] = {"events_per_s": r["events_per_s"], "seconds": r["seconds"]}
        wl["per_job_alone"] = per_job
    result["weblogs"] = wl

    # (b) high cardinality: mean(value) partitioned by host, one event per series per bucket
    series = 10_000 if quick else 100_000
    buckets = 6
    hc_path = os.path.join(args.out, f"highcard-{series}.ndjson")
    n = common.write_highcard(hc_path, series, buckets)
    common.log(f"engine: {n} high-cardinality events ({series} series x {buckets} buckets)")
    hc = measure(hc_path, [common.highcard_job()])
    hc.update(series=series, buckets=buckets)
    result["highcard"] = hc

    if args.profile:
        common.log("engine: pyinstrument profiles of both runs")
        result["profile_weblogs"] = profile_run(weblogs_path, common.sample_jobs(), args.out, "weblogs")
        result["profile_highcard"] = profile_run(hc_path, [common.highcard_job()], args.out, "highcard")
    for path in (weblogs_path, hc_path):
        os.remove(path)
    common.emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
