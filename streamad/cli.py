"""The `streamad` command line: a thin dispatcher to `streamad.commands.<name>`.

Each command module exposes `add_arguments(parser)` and `run(args) -> int`. Modules are imported
lazily so that `streamad jobs validate` does not pay for numba or Faust start-up.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "jobs": "validate, import and export Elastic anomaly detection job configs",
    "demo": "generate web logs with planted incidents, run the sample jobs, show the top anomalies",
    "run": "run jobs over a file or stdin in-process and write result documents",
    "worker": "run a Kafka stream worker (Faust) with the REST API and /metrics",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamad", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, help_text in COMMANDS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        module = _module(name)
        if module is not None:
            module.add_arguments(cmd)
        cmd.set_defaults(_command=name)
    return parser


def _module(name: str):
    try:
        return importlib.import_module(f"streamad.commands.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"streamad.commands.{name}":
            return None
        raise


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    module = _module(args._command)
    if module is None:
        print(f"streamad {args._command}: not available in this build", file=sys.stderr)
        return 2
    return int(module.run(args) or 0)
