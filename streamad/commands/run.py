"""`streamad run`: run jobs in-process over NDJSON/CSV (optionally .gz) or stdin, results as NDJSON."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--job", action="append", required=True, help="job JSON file (repeat for several jobs)")
    parser.add_argument("--input", required=True, help="NDJSON or CSV file (.gz ok), or - for NDJSON on stdin")
    parser.add_argument("--output", default="-", help="result NDJSON file, or - for stdout (default)")
    parser.add_argument("--format", choices=("ndjson", "csv"), help="input format (default: by file name)")
    parser.add_argument("--dead-letter", help="write rejected records here as NDJSON")
    parser.add_argument("--filters", help="JSON file with a list of filters (Elastic filter bodies) used by rule scopes")
    parser.add_argument("--calendars", help="JSON file with a list of calendars (calendar_id, job_ids, events)")
    parser.add_argument("--forecast", metavar="DURATION",
                        help="after the input, forecast each job this far ahead (e.g. 2d), as the _forecast API")
    parser.add_argument("--quiet", action="store_true", help="no data_counts summary on stderr")
    # hidden: model each job in N shards by partition value (same output whatever N; a check of that)
    parser.add_argument("--shards", type=int, default=None, help=argparse.SUPPRESS)


def run(args) -> int:
    import time

    import orjson

    from streamad.config.errors import ConfigError
    from streamad.config.filters import Calendar, Filter
    from streamad.config.job import Job
    from streamad.engine.runner import Runner
    from streamad.ingest.reader import read_records

    filters = calendars = None
    for path, key, make in ((args.filters, "filters", Filter.from_dict), (args.calendars, "calendars", Calendar.from_dict)):
        if not path:
            continue
        objs = _read(path, key, lambda body, key=key, make=make: [make(b) for b in _listed(body, key)])
        if objs is _BAD:
            return 2
        if key == "filters":
            filters = {f.filter_id: f for f in objs}
        else:
            calendars = tuple(objs)
    jobs = []
    for path in args.job:
        job = _read(path, "job", lambda body: Job.from_dict(body, filters=filters))
        if job is _BAD:
            return 2
        jobs.append(job)
    out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    dead = open(args.dead_letter, "wb") if args.dead_letter else None  # noqa: SIM115
    buf: list[bytes] = []

    def write(data: bytes) -> None:
        buf.append(data)
        if len(buf) >= 4096:
            out.write(b"".join(buf))
            buf.clear()

    def dead_letter(raw: bytes, job_id: str, reason: str) -> None:
        if dead is not None:
            dead.write(orjson.dumps({"job_id": job_id, "reason": reason, "raw": raw.decode("utf-8", "replace")}) + b"\n")

    try:
        shard_kw = {} if args.shards is None else {"shards": args.shards}
        runner = Runner(jobs, write, dead_letter, filters=filters, calendars=calendars or (), **shard_kw)
    except ConfigError as exc:  # e.g. a rule scope naming a filter that --filters does not hold
        print(f"streamad run: invalid job: {exc}", file=sys.stderr)
        if out is not sys.stdout.buffer:
            out.close()
        if dead is not None:
            dead.close()
        return 2
    tty = sys.stderr.isatty()
    started = time.monotonic()

    def progress(n: int) -> None:
        if tty and n:
            print(f"\rstreamad run: {n} records, {n / max(time.monotonic() - started, 1e-9):.0f}/s",
                  end="", file=sys.stderr, flush=True)

    try:
        runner.run(read_records(args.input, args.format), progress)
        if args.forecast:
            _forecast(runner, args.forecast)
        out.write(b"".join(buf))
        out.flush()
    except OSError as exc:
        print(f"streamad run: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not sys.stdout.buffer:
            out.close()
        if dead is not None:
            dead.close()
    if tty:
        print(file=sys.stderr)
    if not args.quiet:
        for engine in runner.engines:
            counts = engine.counts.to_dict(engine.job.job_id)
            print("data_counts " + orjson.dumps(counts).decode(), file=sys.stderr)
    return 0

_BAD = object()


def _forecast(runner, duration: str) -> None:
    """Forecast every job that can be; the id and create time come from the data (reproducible)."""
    from streamad.config.units import parse_duration
    from streamad.engine.forecast import ForecastRequest, unsupported_reason

    seconds = int(parse_duration(duration, "--forecast"))
    for engine in runner.engines:
        if unsupported_reason(engine.job) is not None:
            print(f"streamad run: {engine.job.job_id}: {unsupported_reason(engine.job)}", file=sys.stderr)
            continue
        created = int((engine.latest_time or 0) * 1000)
        engine.forecast(ForecastRequest(f"{engine.job.job_id}-{created}", seconds, created, 14 * 86400))


def _read(path: str, what: str, parse):
    """parse(the JSON in the file at path), or _BAD after printing an error that names the file."""
    import orjson

    from streamad.config.errors import ConfigError

    try:
        with open(path, "rb") as f:
            return parse(orjson.loads(f.read()))
    except ConfigError as exc:
        print(f"streamad run: invalid {what} {path}: {exc}", file=sys.stderr)
    except (OSError, orjson.JSONDecodeError) as exc:
        print(f"streamad run: cannot read {what} {path}: {exc}", file=sys.stderr)
    return _BAD


def _listed(body, key: str) -> list:
    """A filters/calendars file: a JSON list, or the object GET _ml/<key> returns."""
    from streamad.config.errors import ConfigError

    if isinstance(body, dict) and isinstance(body.get(key), list):
        body = body[key]
    if not isinstance(body, list):
        raise ConfigError(key, "list_required", f"the {key} file must hold a JSON list")
    return body
