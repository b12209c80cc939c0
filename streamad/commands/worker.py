"""`streamad worker`: a Kafka stream worker (Faust) with the Elastic REST API and /metrics.

Settings come from STREAMAD_* environment variables (see streamad/runtime/settings.py and the
README): broker, web port, data dir, topics, jobs dir, SASL/TLS.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--loglevel", default="warning", help="faust/worker log level (default warning)")


def run(args) -> int:
    from streamad.runtime.app import Worker
    from streamad.runtime.settings import Settings

    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"streamad worker: {exc}", file=sys.stderr)
        return 2
    worker = Worker(settings)
    import faust

    faust.Worker(worker.app, loglevel=args.loglevel, quiet=True).execute_from_commandline()
    return 0
