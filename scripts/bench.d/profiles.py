"""Top-cost tables from pyinstrument sessions and py-spy raw (collapsed) stacks."""

from __future__ import annotations

import os
from collections import defaultdict


def _key(function: str, path: str | None, line: int | None) -> str:
    path = path or "?"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if path.startswith(root + os.sep):
        path = path[len(root) + 1:]
    elif "site-packages" in path:
        path = path.split("site-packages" + os.sep, 1)[1]
    elif "/lib/python3" in path:
        path = "stdlib/" + path.rsplit(os.sep, 1)[-1]
    return f"{function} ({path}:{line})" if line else f"{function} ({path})"


def pyinstrument_top(session, limit: int = 12) -> dict:
    """{"total_s", "self": [(name, seconds, share)], "inclusive": [...]} of a pyinstrument session."""
    root = session.root_frame()
    if root is None:
        return {"total_s": 0.0, "self": [], "inclusive": []}
    self_t: dict[str, float] = defaultdict(float)
    incl_t: dict[str, float] = defaultdict(float)

    def walk(frame, ancestors: frozenset) -> None:
        if frame.is_synthetic_leaf:
            return
        key = _key(frame.function, frame.file_path, frame.line_no)
        children = list(frame.children)
        own = frame.time - sum(c.time for c in children if not c.is_synthetic_leaf)
        self_t[key] += max(own, 0.0)
        if key not in ancestors:
            incl_t[key] += frame.time
        for c in children:
            walk(c, ancestors | {key})

    walk(root, frozenset())
    total = root.time or 1e-12

    def rows(d):
        return [(k, round(v, 4), round(v / total, 4)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:limit]]

    return {"total_s": round(total, 3), "self": rows(self_t), "inclusive": rows(incl_t)}


def pyspy_top(raw_path: str, limit: int = 12) -> dict:
    """Top functions of a py-spy `--format raw` file (collapsed stacks: "f1;f2;f3 count")."""
    self_n: dict[str, int] = defaultdict(int)
    incl_n: dict[str, int] = defaultdict(int)
    total = 0
    idle = 0
    with open(raw_path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = [_pyspy_frame(s) for s in stack.split(";") if s]
            if not frames:
                continue
            total += n
            if _is_idle(frames):
                idle += n
                continue
            self_n[frames[-1]] += n
            for fr in set(frames):
                incl_n[fr] += n
    busy = max(total - idle, 1)

    def rows(d):
        return [(k, v, round(v / busy, 4)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:limit]]

    return {"samples": total, "idle_samples": idle, "busy_samples": total - idle,
            "self": rows(self_n), "inclusive": rows(incl_n)}


def _pyspy_frame(text: str) -> str:
    # "function (path/to/file.py:123)" -> shortened path
    name, _, rest = text.partition(" (")
    rest = rest.rstrip(")")
    path, _, line = rest.rpartition(":")
    if not path:
        path, line = rest, ""
    return _key(name, path, int(line) if line.isdigit() else None)


_IDLE = ("select (stdlib/selectors.py", "epoll", "_run_once (stdlib/base_events.py", "poll (stdlib/selectors.py")


def _is_idle(frames: list[str]) -> bool:
    leaf = frames[-1]
    return leaf.startswith(("select (", "poll (", "wait (stdlib/threading.py", "_wait_for_tstate_lock"))


def format_top(title: str, top: dict, unit: str = "s", limit: int = 10) -> str:
    lines = [title]
    for kind in ("self", "inclusive"):
        lines.append(f"  by {kind} time:")
        for name, v, share in top.get(kind, [])[:limit]:
            v_txt = f"{v:8.3f}s" if unit == "s" else f"{v:8d} samples"
            lines.append(f"    {share * 100:5.1f}%  {v_txt}  {name}")
    return "\n".join(lines)
