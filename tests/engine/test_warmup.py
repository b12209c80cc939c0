"""The worker's kernel warm-up loads every numba kernel that the engine calls from Python."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# Run in a fresh interpreter: in the test process other tests have long since loaded the kernels.
_PROBE = textwrap.dedent("""
    import importlib, pkgutil, sys
    from numba.core.registry import CPUDispatcher
    import streamad.engine, streamad.kernels, streamad.scoring

    def loaded():
        mods = [importlib.import_module(f"{pkg.__name__}.{m.name}")
                for pkg in (streamad.kernels, streamad.scoring, streamad.engine)
                for m in pkgutil.iter_modules(pkg.__path__)]
        # (kernel, argument types): a kernel called with other types compiles again
        return {f"{m.__name__}.{n}{sig}".replace(" ", "") for m in mods for n, v in vars(m).items()
                if isinstance(v, CPUDispatcher) and v.__module__ == m.__name__ for sig in v.signatures}

    if sys.argv[1] == "warm":
        from streamad.engine.warmup import warm_kernels
        warm_kernels()
    else:  # a broad real run: the sample web-log jobs over a week of demo logs, and a forecast
        import orjson
        from pathlib import Path
        from streamad.commands.demo import JOBS, module_dir
        from streamad.config.job import Job
        from streamad.demo import weblogs
        from streamad.engine.forecast import ForecastRequest
        from streamad.engine.job import JobEngine
        from streamad.ingest.reader import read_records
        path = sys.argv[2]
        weblogs.write_ndjson(path, days=7)
        jobs = [Job.from_dict(orjson.loads(Path(module_dir(), f"{j}.json").read_bytes())) for j in JOBS]
        engines = [JobEngine(job, lambda d: None, shards=2, wire=True) for job in jobs]
        for raw, doc, err in read_records(path, None):
            for e in engines:
                e.feed(raw, doc, err)
        for e in engines:
            e = JobEngine.restore(e.snapshot(), lambda d: None)
            e.finish()
        e.forecast(ForecastRequest("f", 86400, 0, 0))
    print("\\n".join(sorted(loaded())))
""")


def _loaded(*args: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_warm_up_loads_the_kernels_a_real_run_uses(tmp_path):
    warm = _loaded("warm")
    real = _loaded("real", str(tmp_path / "weblogs.ndjson"))
    names = {sig.split("(")[0] for sig in real}
    assert {"streamad.kernels.series.score", "streamad.kernels.series.update", "streamad.engine.packed._pack"} <= names
    assert real <= warm, sorted(real - warm)
