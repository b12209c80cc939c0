"""Top-cost tables from pyinstrument sessions and py-spy raw (collapsed) stacks.

Both give: the functions with the most self time, the functions with the most inclusive time
(generic frames such as the event loop and the CLI entry are left out of that list), and self
time by component (streamad engine, numba kernels, worker glue, aiokafka, faust, event loop, ...).
"""

from __future__ import annotations

import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Frames present in (nearly) every stack: useless in an inclusive-time list.
_GENERIC = ("asyncio/", "stdlib/base_events.py", "stdlib/events.py", "<frozen runpy>", "streamad/cli.py",
            "streamad/__main__.py", "streamad/commands/worker.py", "mode/worker.py", "mode/services.py",
            "mode/threads.py", "stdlib/threading.py", "<thread>", "scripts/bench.d/", "stdlib/runpy.py")


def short_path(path: str | None) -> str:
    path = path or "?"
    if path.startswith(ROOT + os.sep):
        return path[len(ROOT) + 1:]
    if "site-packages" + os.sep in path:
        return path.split("site-packages" + os.sep, 1)[1]
    if "/lib/python3" in path:
        tail = path.split("/lib/python3", 1)[1].split(os.sep, 1)
        return "stdlib/" + (tail[1] if len(tail) > 1 else tail[0])
    return path


def category(path: str) -> str:
    if path.startswith("streamad/models/bank.py") or path.startswith("streamad/kernels/"):
        return "numba kernels (SeriesBank calls)"
    if path.startswith(("streamad/runtime/", "streamad/commands/")):
        return "streamad worker glue (runtime)"
    if path.startswith("streamad/scoring/"):
        return "streamad scoring (normalizers)"
    if path.startswith("streamad/engine/"):
        return "streamad engine (buckets, detectors, scorer)"
    if path.startswith(("streamad/ingest/", "streamad/datafeed/", "streamad/config/")):
        return "streamad ingest (fields, time, query, counts)"
    if path.startswith("streamad/"):
        return "streamad other"
    if path.startswith("aiokafka/"):
        return "aiokafka (Kafka client)"
    if path.startswith(("faust/", "mode/")):
        return "faust + mode"
    if path.startswith(("rocksdict", "faust/stores")):
        return "rocksdb"
    if path.startswith(("stdlib/asyncio", "stdlib/selectors", "asyncio/", "selectors.py")):
        return "asyncio event loop"
    if path.startswith(("stdlib/pickle", "pickle.py", "copyreg.py")):
        return "pickle"
    if path.startswith("scripts/bench.d/"):
        return "bench harness"
    if path.startswith("<built-in>"):
        return "builtins (C)"
    if path.startswith(("stdlib/", "<frozen")) or ("/" not in path and path.endswith(".py")):
        return "stdlib other"
    return "other"


def _name(function: str, path: str, line: int | None) -> str:
    return f"{function} ({path}:{line})" if line else f"{function} ({path})"


def _rows(d: dict, total: float, limit: int, digits: int = 4):
    return [(k, round(v, digits), round(v / total, 4)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:limit]]


def pyinstrument_top(session, limit: int = 15) -> dict:
    """{"total_s", "self", "inclusive", "components"} of a pyinstrument session (seconds, share)."""
    root = session.root_frame()
    if root is None:
        return {"total_s": 0.0, "self": [], "inclusive": [], "components": []}
    self_t: dict[str, float] = defaultdict(float)
    incl_t: dict[str, float] = defaultdict(float)
    comp_t: dict[str, float] = defaultdict(float)

    def walk(frame, ancestors: frozenset) -> None:
        if frame.is_synthetic_leaf:
            return
        path = short_path(frame.file_path or frame.file_path_short)
        key = _name(frame.function, path, frame.line_no)
        children = list(frame.children)
        own = max(frame.time - sum(c.time for c in children if not c.is_synthetic_leaf), 0.0)
        self_t[key] += own
        comp_t[category(path)] += own
        if key not in ancestors and not path.startswith(_GENERIC):
            incl_t[key] += frame.time
        for c in children:
            walk(c, ancestors | {key})

    walk(root, frozenset())
    total = root.time or 1e-12
    return {"total_s": round(total, 3), "self": _rows(self_t, total, limit), "inclusive": _rows(incl_t, total, limit),
            "components": _rows(comp_t, total, 20)}


def pyspy_top(raw_path: str, limit: int = 15) -> dict:
    """Top functions of a py-spy `--format raw` file (collapsed stacks: "f1;f2;f3 count").

    Samples whose leaf is the event loop's selector (waiting for I/O) count as idle.
    """
    self_n: dict[str, int] = defaultdict(int)
    incl_n: dict[str, int] = defaultdict(int)
    comp_n: dict[str, int] = defaultdict(int)
    total = idle = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = [_pyspy_frame(s) for s in stack.split(";") if s]
            if not frames:
                continue
            total += n
            leaf_name, leaf_path = frames[-1]
            if leaf_name.endswith(".select") or leaf_path.startswith("stdlib/selectors"):
                idle += n
                continue
            self_n[_name(leaf_name, leaf_path, None)] += n
            comp_n[category(leaf_path)] += n
            for name, path in set(frames):
                if not path.startswith(_GENERIC):
                    incl_n[_name(name, path, None)] += n
    busy = max(total - idle, 1)
    return {"samples": total, "idle_samples": idle, "busy_samples": total - idle,
            "self": _rows(self_n, busy, limit), "inclusive": _rows(incl_n, busy, limit),
            "components": _rows(comp_n, busy, 20)}


def _pyspy_frame(text: str) -> tuple[str, str]:
    # "function (path/to/file.py:123)" or "function (path/to/file.py)"
    name, _, rest = text.partition(" (")
    rest = rest.rstrip(")")
    path, _, line = rest.rpartition(":")
    if not path or not line.isdigit():
        path = rest
    return name, short_path(path)


def format_top(title: str, top: dict, limit: int = 8) -> list[str]:
    lines = [title]
    for kind, label in (("components", "self time by component"), ("self", "top self time"),
                        ("inclusive", "top inclusive time")):
        lines.append(f"  {label}:")
        for name, _v, share in top.get(kind, [])[:limit]:
            lines.append(f"    {share * 100:5.1f}%  {name}")
    return lines
