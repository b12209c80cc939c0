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
    _declare_internal_topics(settings)
    _warm_kernels()
    worker = Worker(settings)
    import faust

    faust.Worker(worker.app, loglevel=args.loglevel, quiet=True).execute_from_commandline()
    return 0


def _warm_kernels() -> None:
    """Load the numba kernels before Faust starts, not in the event loop at the first bucket close
    and the first snapshot (`streamad.engine.warmup`). A failure only costs that delay later."""
    import logging

    from streamad.engine.warmup import warm_kernels

    log = logging.getLogger("streamad.worker")
    try:
        log.info("numba kernels loaded in %.2f s", warm_kernels())
    except Exception as exc:  # noqa: BLE001 - the warm-up is an optimisation, never a reason not to start
        log.warning("kernel warm-up failed: %r", exc)


def _declare_internal_topics(settings) -> None:
    """Create the work and shards topics before Faust subscribes to them. Faust creates its internal
    topics itself, but one created a few milliseconds before the consumer group's first assignment
    can be missing from the broker's metadata then ("Ignoring missing topic"), and the worker then
    never consumed it (seen for the shards topic: jobs waited for model replies forever)."""
    import asyncio
    import logging
    import time

    from streamad.runtime.registry import ensure_topics, wait_for_topics

    wanted = [(settings.work_topic, settings.partitions, {}), (settings.shards_topic, settings.partitions, {})]
    deadline = time.monotonic() + 30.0
    while True:
        try:
            asyncio.run(ensure_topics(settings, wanted))
            asyncio.run(wait_for_topics(settings, [name for name, _, _ in wanted], deadline - time.monotonic()))
            return
        except Exception as exc:  # noqa: BLE001 - the broker may still be starting; Faust retries on its own
            if time.monotonic() > deadline:
                logging.getLogger("streamad.worker").warning("internal topics not declared ahead: %r", exc)
                return
            time.sleep(1.0)
