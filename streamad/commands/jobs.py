"""`streamad jobs validate|import|export`: Elastic job configs checked and converted offline."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="jobs_command", metavar="ACTION")
    sub.required = True
    v = sub.add_parser("validate", help="check a job (create-job body) and print it as Elastic returns it")
    v.add_argument("job", help="job JSON file (or - for stdin)")
    v.add_argument("--job-id", help="job id when the body has none (as in the PUT path)")
    v.add_argument("--filters", help="JSON file with a list of filters referenced by custom rules")
    i = sub.add_parser("import", help="split a Kibana job export file into one job file per job")
    i.add_argument("file", help="Kibana export (anomaly_detection_jobs.json)")
    i.add_argument("--out", default=".", help="directory for <job_id>.json files (default: .)")
    e = sub.add_parser("export", help="bundle job files into a Kibana job export file")
    e.add_argument("jobs", nargs="+", help="job JSON files (with datafeed_config)")
    e.add_argument("--output", default="-", help="output file (default stdout)")


def _load(path: str):
    import orjson

    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    return orjson.loads(data)


def _dump(obj) -> bytes:
    import orjson

    return orjson.dumps(obj, option=orjson.OPT_INDENT_2) + b"\n"


def run(args) -> int:
    import orjson

    from streamad.config.errors import ConfigError
    from streamad.config.filters import Filter
    from streamad.config.job import Job
    from streamad.config.kibana import read_export, write_export

    try:
        if args.jobs_command == "validate":
            filters = None
            if args.filters:
                filters = {f.filter_id: f for f in (Filter.from_dict(b) for b in _load(args.filters))}
            job = Job.from_dict(_load(args.job), args.job_id, filters=filters)
            sys.stdout.buffer.write(_dump(job.to_dict()))
            return 0
        if args.jobs_command == "import":
            import os

            jobs = read_export(_load(args.file))
            os.makedirs(args.out, exist_ok=True)
            for job in jobs:
                body = job.to_dict(exclude_generated=True)
                if job.datafeed_config is not None:
                    body["datafeed_config"] = job.datafeed_config.to_dict()
                path = os.path.join(args.out, f"{job.job_id}.json")
                with open(path, "wb") as f:
                    f.write(_dump(body))
                print(path)
            return 0
        jobs = [Job.from_dict(_load(p)) for p in args.jobs]
        data = _dump(write_export(jobs))
        if args.output == "-":
            sys.stdout.buffer.write(data)
        else:
            with open(args.output, "wb") as f:
                f.write(data)
        return 0
    except ConfigError as exc:
        print(f"streamad jobs {args.jobs_command}: invalid job: {exc}", file=sys.stderr)
        return 2
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"streamad jobs {args.jobs_command}: {exc}", file=sys.stderr)
        return 2
