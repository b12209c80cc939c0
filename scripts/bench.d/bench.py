"""The benchmark driver behind scripts/bench: runs every section in its own process, prints a table,
the profile findings, and as the last line one JSON object with every figure.

Sections (issue "Benchmarks"):
  engine  1. embedded engine events/s vs a bare orjson.loads loop (+ pyinstrument profile)
  worker  3. one worker vs a bare aiokafka consumer, watermark-to-result delay;
          4. scale-out with one and two workers (+ py-spy profile of the worker)
  series  2. per-series finalization time, state bytes and RSS growth (SeriesBank and JobEngine)
  nab     5. NAB standard score and rows/s: streamad vs river HalfSpaceTrees

Usage: bench.py [--quick] [--only engine,worker,series,nab] [--out DIR] [--no-profile]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402
from profiles import format_top  # noqa: E402

SECTIONS = ("engine", "worker", "series", "nab")
TARGET_RATIO = 0.5
TARGET_US = 5.0
TARGET_BYTES = 4096


def run_section(name: str, argv: list[str], timeout: float) -> dict:
    """Run one section script; its last stdout line is its JSON figures."""
    cmd = [sys.executable, os.path.join(HERE, argv[0]), *argv[1:]]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s", "command": " ".join(argv)}
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode != 0 or not lines:
        return {"error": f"exit {proc.returncode}", "stdout_tail": "\n".join(lines[-5:]), "command": " ".join(argv)}
    try:
        out = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": "no JSON result line", "stdout_tail": "\n".join(lines[-5:])}
    out["section_wall_s"] = round(time.perf_counter() - started, 1)
    return out


def series_plan(quick: bool) -> list[tuple[str, str, int, int]]:
    sizes = (10_000, 100_000) if quick else (10_000, 100_000, 1_000_000)
    plan = [(f"bank_{n}", "bank", n, 12) for n in sizes]
    plan.append(("bank_long_10000", "bank", 10_000, 96 if quick else 240))
    plan += [(f"engine_{n}", "engine", n, 2 if quick and n > 10_000 else 3) for n in sizes]
    return plan


def linearity(runs: dict, mode: str, sizes: list[int], field: str) -> dict:
    pts = [(n, runs.get(f"{mode}_{n}", {})) for n in sizes]
    pts = [(n, r) for n, r in pts if "error" not in r and r]
    if len(pts) < 2:
        return {}
    (n0, r0), (n1, r1) = pts[0], pts[-1]
    v0, v1 = _dig(r0, field), _dig(r1, field)
    if not v0 or not v1:
        return {}
    return {"from_series": n0, "to_series": n1, "per_series_ratio": round(v1 / v0, 3)}


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


def flat_figures(res: dict, quick: bool) -> dict:
    """The headline numbers, one key each."""
    f: dict = {}
    eng = res.get("engine", {})
    for part in ("weblogs", "highcard"):
        r = eng.get(part)
        if r:
            f[f"engine_{part}_events_per_s"] = r["events_per_s"]
            f[f"engine_{part}_bare_events_per_s"] = r["bare_events_per_s"]
            f[f"engine_{part}_ratio"] = r["ratio"]
            if part == "highcard":
                f["engine_highcard_series"] = r["series"]
    ser = res.get("series", {})
    for key, r in ser.items():
        if not isinstance(r, dict) or "error" in r or "mode" not in r:
            continue
        f[f"{key}_finalize_us_per_series_mean"] = r["finalize"]["mean_us"]
        f[f"{key}_finalize_us_per_series_max"] = r["finalize"]["max_us"]
        if r["mode"] == "bank":
            f[f"{key}_state_bytes_per_series"] = r["state_bytes_per_series"]
        else:
            f[f"{key}_snapshot_bytes_per_series"] = r["snapshot_bytes_per_series"]
        f[f"{key}_rss_bytes_per_series"] = r["rss_growth_bytes_per_series"]
    wk = res.get("worker", {})
    if wk.get("ceiling"):
        f["worker_events_per_s"] = wk["ceiling"]["events_per_s"]
        f["worker_bare_consumer_events_per_s"] = wk["bare"]["events_per_s"]
        f["worker_ratio"] = wk["ceiling"]["ratio"]
        f["worker_events_per_worker_cpu_s"] = wk["ceiling"]["events_per_worker_cpu_s"]
        f["worker_cpu_utilization"] = wk["ceiling"]["worker_cpu_utilization"][0]
        f["worker_steady_events_per_s"] = wk["ceiling"].get("steady_events_per_s")
        f["worker_first_event_applied_s"] = wk["ceiling"].get("first_event_applied_s")
    if wk.get("latency"):
        f["latency_series"] = wk["latency"]["series"]
        f["latency_p50_ms"] = wk["latency"]["p50_ms"]
        f["latency_p99_ms"] = wk["latency"]["p99_ms"]
        f["latency_buckets_measured"] = wk["latency"]["buckets_measured"]
    if wk.get("scaleout"):
        s = wk["scaleout"]
        f["scaleout_jobs"] = len(s["jobs"])
        f["scaleout_1_worker_events_per_s"] = s["workers_1"]["events_per_s"]
        f["scaleout_2_workers_events_per_s"] = s["workers_2"]["events_per_s"]
        f["scaleout_speedup"] = s["speedup"]
        f["scaleout_1_worker_steady_events_per_s"] = s["workers_1"].get("steady_events_per_s")
        f["scaleout_2_workers_steady_events_per_s"] = s["workers_2"].get("steady_events_per_s")
    if wk:
        f["worker_stalls"] = len(wk.get("stalls", []))
    nab = res.get("nab", {})
    for who in ("streamad", "river_hst"):
        r = nab.get(who)
        if r:
            f[f"nab_{who}_standard"] = r.get("standard_score")
            f[f"nab_{who}_rows_per_s_wall"] = r.get("rows_per_s_wall")
            f[f"nab_{who}_rows_per_process_s"] = r.get("rows_per_process_s")
    if nab.get("streamad", {}).get("engine_in_process"):
        f["nab_streamad_engine_rows_per_s"] = nab["streamad"]["engine_in_process"]["rows_per_s"]
    if nab:
        f["nab_subset"] = nab.get("subset")
    return f


def _n(v, digits: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _status(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "MISSED")


def table(res: dict, quick: bool) -> list[str]:
    rows: list[tuple[str, str, str, str]] = []
    eng = res.get("engine", {})
    if "error" in eng:
        rows.append(("1 engine ceiling", "error", eng["error"], ""))
    for part, label in (("weblogs", "1a engine, 3 sample web-log jobs"), ("highcard", "1b engine, mean by host")):
        r = eng.get(part)
        if not r:
            continue
        extra = f" ({r['series']:,} series x {r['buckets']} buckets)" if part == "highcard" else ""
        rows.append((label + extra, "events", _n(r["events"]), ""))
        rows.append(("", "engine events/s", _n(r["events_per_s"]), ""))
        rows.append(("", "bare orjson.loads events/s (median of 3)", _n(r["bare_events_per_s"]), ""))
        rows.append(("", "ratio engine / bare", f"{r['ratio']:.4f}", f">= {TARGET_RATIO}  {_status(r['ratio'] >= TARGET_RATIO)}"))
        for job, pj in (r.get("per_job_alone") or {}).items():
            rows.append(("", f"  {job} alone: events/s", _n(pj["events_per_s"]), ""))
    ser = res.get("series", {})
    if "error" in ser:
        rows.append(("2 per-series cost", "error", ser["error"], ""))
    for key, r in ser.items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            rows.append((f"2 {key}", "error", r["error"], ""))
            continue
        if "mode" not in r:
            continue
        fin = r["finalize"]
        label = (f"2 SeriesBank {r['series']:,} series" if r["mode"] == "bank" else
                 f"2 JobEngine {r['series']:,} series") + f", {r['buckets']} buckets"
        what = "score+update" if r["mode"] == "bank" else "engine.advance (close bucket)"
        rows.append((label, f"{what} us/series mean / p50 / max",
                     f"{fin['mean_us']:.2f} / {fin['p50_us']:.2f} / {fin['max_us']:.2f}",
                     f"<= {TARGET_US:g} us  {_status(fin['mean_us'] <= TARGET_US)}"))
        if r["mode"] == "bank":
            rows.append(("", "bank.to_bytes() bytes/series", _n(r["state_bytes_per_series"], 1),
                         f"<= {TARGET_BYTES}  {_status(r['state_bytes_per_series'] <= TARGET_BYTES)}"))
            rows.append(("", "bank.to_bytes() us/series", _n(r["to_bytes_us_per_series"], 2), ""))
        else:
            rows.append(("", "engine.snapshot() bytes/series", _n(r["snapshot_bytes_per_series"], 1),
                         f"<= {TARGET_BYTES}  {_status(r['snapshot_bytes_per_series'] <= TARGET_BYTES)}"))
            rows.append(("", "bank rows used / allocated", f"{r['bank_rows_used']:,} / {r['bank_capacity_rows']:,}", ""))
            rows.append(("", "feed events/s (bucket open, no close)", _n(r["feed_events_per_s"]), ""))
        rows.append(("", "RSS growth bytes/series", _n(r["rss_growth_bytes_per_series"], 1), ""))
        rows.append(("", "peak RSS (VmHWM) MiB", _n(r["rss_peak_bytes"] / 2**20), ""))
    for mode in ("bank", "engine"):
        lin = ser.get(f"linearity_{mode}")
        if lin:
            rows.append((f"2 linearity ({mode})", f"us/series at {lin['to_series']:,} / at {lin['from_series']:,}",
                         f"{lin['per_series_ratio']:.2f}", "1.00 = linear"))
    wk = res.get("worker", {})
    if "error" in wk:
        rows.append(("3/4 worker", "error", wk["error"], ""))
    if wk.get("ceiling"):
        c = wk["ceiling"]
        rows.append(("3 worker ceiling (3 sample jobs, 1 worker)", "events", _n(c["events"]), ""))
        rows.append(("", "worker events/s", _n(c["events_per_s"], 1), ""))
        rows.append(("", "bare aiokafka consumer events/s", _n(wk["bare"]["events_per_s"]), ""))
        rows.append(("", "ratio worker / bare", f"{c['ratio']:.5f}", ""))
        rows.append(("", "worker CPU utilization (cores)", f"{c['worker_cpu_utilization'][0]:.2f}", ""))
        rows.append(("", "events per worker CPU-second", _n(c["events_per_worker_cpu_s"]), ""))
        rows.append(("", "first event applied after _start (s)", _n(c.get("first_event_applied_s"), 1), ""))
        rows.append(("", "steady events/s (20% -> 80% of input)", _n(c.get("steady_events_per_s"), 1), ""))
        rows.append(("", "events/s by _stats data_counts", _n(c["events_per_s_by_stats"], 1), ""))
    for st in wk.get("stalls", []):
        rows.append(("3/4 worker FAILED try (phase re-run)", st["phase"], f"try {st['try']}", st["reason"][:70]))
    if wk.get("latency"):
        lat = wk["latency"]
        rows.append((f"3 watermark -> bucket result ({lat['series']:,} series)",
                     f"p50 / p99 / max ms over {lat['buckets_measured']} buckets",
                     f"{lat['p50_ms']:.0f} / {lat['p99_ms']:.0f} / {lat['max_ms']:.0f}", ""))
        if lat.get("snapshot_bytes"):
            rows.append(("", "worker snapshot of that job, bytes/series",
                         _n(lat["snapshot_bytes"] / lat["series"], 1), ""))
    if wk.get("scaleout"):
        s = wk["scaleout"]
        rows.append((f"4 scale-out ({len(s['jobs'])} x response_code_rates)", "1 worker events/s",
                     _n(s["workers_1"]["events_per_s"], 1), ""))
        rows.append(("", "  steady events/s (20% -> 80%)", _n(s["workers_1"].get("steady_events_per_s"), 1), ""))
        rows.append(("", "  worker CPU utilization (cores)",
                     " / ".join(f"{u:.2f}" for u in s["workers_1"]["worker_cpu_utilization"]), ""))
        rows.append(("", "2 workers events/s", _n(s["workers_2"]["events_per_s"], 1), ""))
        rows.append(("", "  steady events/s (20% -> 80%)", _n(s["workers_2"].get("steady_events_per_s"), 1), ""))
        rows.append(("", "  worker CPU utilization (cores)",
                     " / ".join(f"{u:.2f}" for u in s["workers_2"]["worker_cpu_utilization"]), ""))
        rows.append(("", "speed-up", f"{s['speedup']:.2f}x", "2 cores shared with the broker"))
        rows.append(("", "events applied per worker (2 workers)",
                     " / ".join(_n(v) for v in s["workers_2"]["per_worker_events_consumed"]), ""))
    nab = res.get("nab", {})
    if "error" in nab:
        rows.append(("5 NAB", "error", nab["error"], ""))
    for who, label in (("streamad", "5 NAB streamad"), ("river_hst", "5 NAB river HalfSpaceTrees")):
        r = nab.get(who)
        if not r:
            continue
        rows.append((f"{label} ({nab.get('subset')}, {r.get('files')} files)", "standard score",
                     _n(r.get("standard_score"), 2), ""))
        rows.append(("", "rows/s (wall, 2 in parallel)", _n(r.get("rows_per_s_wall")), ""))
        rows.append(("", "rows per process-second", _n(r.get("rows_per_process_s")), ""))
        if who == "streamad" and r.get("engine_in_process"):
            rows.append(("", "rows/s, engine in one process (no start-up)",
                         _n(r["engine_in_process"]["rows_per_s"]), ""))
    w0 = max([len(r[0]) for r in rows] + [10])
    w1 = max([len(r[1]) for r in rows] + [10])
    w2 = max([len(r[2]) for r in rows] + [10])
    out = [f"{'section':<{w0}}  {'figure':<{w1}}  {'value':>{w2}}  target"]
    out.append("-" * (w0 + w1 + w2 + 16))
    for a, b, c, d in rows:
        out.append(f"{a:<{w0}}  {b:<{w1}}  {c:>{w2}}  {d}".rstrip())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller inputs, under 3 minutes")
    p.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections (default all)")
    p.add_argument("--out", default=None, help="where inputs, logs and profiles go (default a temp dir)")
    p.add_argument("--no-profile", action="store_true", help="skip pyinstrument / py-spy profiles")
    args = p.parse_args()
    quick = args.quick
    wanted = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        p.error(f"unknown sections: {sorted(unknown)}")
    out = args.out or tempfile.mkdtemp(prefix="streamad-bench-")
    os.makedirs(out, exist_ok=True)
    mode = ["--quick"] if quick else []
    prof = [] if args.no_profile else ["--profile"]
    started = time.perf_counter()
    res: dict = {}
    common.log(f"bench: {'quick' if quick else 'full'} mode, sections {wanted}, artefacts in {out}")
    for name in SECTIONS:
        if name not in wanted:
            continue
        t = time.perf_counter()
        if name == "engine":
            res[name] = run_section(name, ["engine.py", "--out", out, *mode, *prof], 900)
        elif name == "worker":
            res[name] = run_section(name, ["worker.py", "--out", out, *mode, *prof], 1200)
        elif name == "nab":
            res[name] = run_section(name, ["nab.py", "--out", out, *(["--only", "realTraffic"] if quick else [])], 900)
        elif name == "series":
            runs: dict = {}
            for key, smode, n, buckets in series_plan(quick):
                common.log(f"series: {key} ({buckets} buckets)")
                runs[key] = run_section(key, ["series.py", "--mode", smode, "--series", str(n),
                                              "--buckets", str(buckets)], 900)
            sizes = sorted({n for _, m, n, _ in series_plan(quick) if m == "engine"})
            runs["linearity_bank"] = linearity(runs, "bank", sizes, "finalize.mean_us")
            runs["linearity_engine"] = linearity(runs, "engine", sizes, "finalize.mean_us")
            res[name] = runs
        common.log(f"bench: {name} done in {time.perf_counter() - t:.0f}s")
    elapsed = time.perf_counter() - started

    m = common.machine()
    print(f"streamad benchmarks, {'quick' if quick else 'full'} mode: {m['nproc']} x {m['cpu_model']}, "
          f"{m['mem_bytes'] / 2**30:.0f} GiB, Python {m['python']}; {elapsed:.0f} s; artefacts in {out}")
    print()
    for line in table(res, quick):
        print(line)
    profiles = []
    for key, title in (("profile_weblogs", "engine profile (pyinstrument), 3 sample web-log jobs"),
                       ("profile_highcard", "engine profile (pyinstrument), mean by host")):
        top = res.get("engine", {}).get(key)
        if top:
            profiles += format_top(f"{title}: {top['total_s']:.1f} s sampled", top)
    top = res.get("worker", {}).get("profile_worker")
    if top:
        profiles += format_top(f"worker profile (py-spy, non-blocking, 100 Hz): {top['busy_samples']} busy samples, "
                               f"{top['idle_samples']} in the selector", top)
    if profiles:
        print()
        for line in profiles:
            print(line)
    print()
    summary = {"mode": "quick" if quick else "full", "machine": m, "elapsed_s": round(elapsed, 1),
               "command": " ".join(["scripts/bench", *sys.argv[1:]]), "artefacts": out,
               "targets": {"engine_ratio_min": TARGET_RATIO, "finalize_us_per_series_max": TARGET_US,
                           "state_bytes_per_series_max": TARGET_BYTES},
               "figures": flat_figures(res, quick), "sections": res}
    print(json.dumps(summary, sort_keys=True, separators=(",", ":"), default=float), flush=True)
    failed = [k for k, v in res.items() if isinstance(v, dict) and "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
