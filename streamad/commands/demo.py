"""`streamad demo`: generate four weeks of web-server logs, run the three sample web-log jobs
over them in-process, and print the top anomalies as Kibana's anomalies table shows them."""

from __future__ import annotations

import argparse
import os
import sys
import time

JOBS = ("low_request_rate", "response_code_rates", "url_scanning")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", default=".demo", help="where the generated events and results go (default .demo)")
    parser.add_argument("--per-job", type=int, default=5, help="rows of the table per job (default 5)")


def module_dir() -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(os.path.dirname(here)), "config", "modules", "sample_weblogs")


def run(args) -> int:
    import orjson

    from streamad.config.job import Job
    from streamad.demo import weblogs
    from streamad.demo.table import format_table, top_anomalies
    from streamad.engine.runner import Runner
    from streamad.ingest.reader import read_records

    os.makedirs(args.dir, exist_ok=True)
    events = os.path.join(args.dir, "weblogs.ndjson")
    results = os.path.join(args.dir, "results.ndjson")
    started = time.monotonic()
    n = weblogs.write_ndjson(events)
    print(f"demo: generated {n} web-log events over 28 days -> {events}", file=sys.stderr)
    jobs = []
    for name in JOBS:
        with open(os.path.join(module_dir(), f"{name}.json"), "rb") as f:
            jobs.append(Job.from_dict(orjson.loads(f.read())))
    docs: list[dict] = []
    with open(results, "wb") as out:
        def write(data: bytes) -> None:
            out.write(data)
            docs.append(orjson.loads(data))

        runner = Runner(jobs, write)
        runner.run(read_records(events, None))
    took = time.monotonic() - started
    print(f"demo: {len(docs)} result documents -> {results} ({took:.1f} s)", file=sys.stderr)
    for inc in weblogs.incidents():
        print(f"demo: planted {inc.kind} for {inc.job_id} at "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(inc.start))} {inc.entity}".rstrip(), file=sys.stderr)
    print(format_table(top_anomalies(docs, args.per_job)))
    return 0
