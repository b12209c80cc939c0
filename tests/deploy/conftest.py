"""Fixtures for the deploy/ tests: the pinned helm (installed by scripts/check_deploy), rendering the
chart, and one real worker started with the env and the jobs ConfigMap that the chart renders."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import orjson
import pytest

from ..worker.harness import WorkerProc, http, produce, wait_for, worker_env

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "streamad"
KUBE_VERSION = "1.30.0"
JOB = "deploy_status_counts"


def tools_bin() -> Path:
    """Installs (once) and returns the bin directory of scripts/check_deploy's pinned tools."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "check_deploy"), "--tools-only"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"scripts/check_deploy --tools-only failed:\n{proc.stdout}\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


try:
    import yaml
except ModuleNotFoundError:  # not a dependency of the package: scripts/check_deploy puts it in .tools/python
    sys.path.append(str(tools_bin().parent / "python"))
    import yaml


@pytest.fixture(scope="session")
def helm() -> str:
    """The helm binary of scripts/check_deploy (built once from the Go module proxy into .tools/bin)."""
    path = tools_bin() / "helm"
    assert path.is_file(), path
    return str(path)


@pytest.fixture(scope="session")
def render(helm, tmp_path_factory):
    """render(values_file_or_dict, release="streamad") -> the manifests as a list of dicts."""

    def go(values: Path | dict | None = None, release: str = "streamad", namespace: str = "ml") -> list[dict]:
        args = [helm, "template", release, str(CHART), "--namespace", namespace, "--kube-version", KUBE_VERSION]
        if isinstance(values, dict):
            path = tmp_path_factory.mktemp("values") / "values.yaml"
            path.write_text(yaml.safe_dump(values))
            values = path
        if values is not None:
            args += ["-f", str(values)]
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [d for d in yaml.safe_load_all(proc.stdout) if d]

    return go


def find(manifests: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
    assert len(hits) == 1, f"{len(hits)} {kind} named {name}"
    return hits[0]


def worker_container(manifests: list[dict]) -> dict:
    sts = find(manifests, "StatefulSet")
    (container,) = [c for c in sts["spec"]["template"]["spec"]["containers"] if c["name"] == "worker"]
    return container


def pod_env(manifests: list[dict], pod_name: str) -> dict[str, str]:
    """The worker container's env as a pod would see it (fieldRef metadata.name -> pod_name)."""
    env = {}
    for e in worker_container(manifests)["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[e["name"]] = pod_name
        else:
            raise AssertionError(f"env {e['name']} needs a Secret: not available to a local worker")
    return env


# A real-time job (its datafeed is started without `end` when loaded from the jobs dir): 2 s buckets,
# one series per status code, closed every second by the worker's real-time flush.
JOB_BODY = {
    "description": "deploy test: events per status code",
    "analysis_config": {"bucket_span": "2s",
                        "detectors": [{"function": "count", "partition_field_name": "status"}]},
    "data_description": {"time_field": "t", "time_format": "epoch_ms"},
    "datafeed_config": {"frequency": "1s", "query_delay": "1s"},
}


def _traffic(bootstrap: str, topic: str, seconds: float) -> None:
    """Live events (timestamps = now) for `seconds`, and one malformed event in the middle."""

    async def go():
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            start = time.time()
            n = 0
            while time.time() - start < seconds:
                n += 1
                doc = {"t": int(time.time() * 1000), "status": "500" if n % 10 == 0 else "200"}
                await producer.send(topic, orjson.dumps(doc), partition=0)
                if n == 50:
                    await producer.send(topic, b"{not json", partition=0)
                await asyncio.sleep(0.02)
            await producer.flush()
        finally:
            await producer.stop()

    asyncio.run(go())


def _start_chart_worker(kafka_bootstrap: str, render, tmp: Path):
    run = uuid.uuid4().hex[:10]
    topic = f"in-{run}"
    body = json.loads(json.dumps(JOB_BODY))
    body["datafeed_config"]["indices"] = [topic]
    manifests = render({
        "replicaCount": 1,
        "kafka": {"broker": kafka_bootstrap, "inputTopics": [topic], "partitions": 4, "outputPartitions": 2,
                  "appId": f"streamad-{run}",
                  "topics": {"work": f"streamad-work-{run}", "jobs": f"streamad-jobs-{run}",
                             "shards": f"streamad-shards-{run}",
                             "results": f"streamad-results-{run}",
                             "annotations": f"streamad-annotations-{run}",
                             "deadLetter": f"streamad-dead-letter-{run}"}},
        "jobs": {JOB: body},
    }, release="sa")
    env = pod_env(manifests, "sa-streamad-0")
    # The pod's paths, mapped to this machine: the jobs ConfigMap becomes a directory of files.
    container = worker_container(manifests)
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert env["STREAMAD_JOBS_DIR"] == mounts["jobs"]
    jobs_dir = tmp / "jobs"
    jobs_dir.mkdir()
    for name, text in find(manifests, "ConfigMap")["data"].items():
        (jobs_dir / name).write_text(text)
    env["STREAMAD_JOBS_DIR"] = str(jobs_dir)
    env["STREAMAD_WEB_HOST"] = "127.0.0.1"  # the pod binds 0.0.0.0; a test stays on loopback
    env.pop("NUMBA_CACHE_DIR")  # keep this machine's kernel cache (a fresh one means minutes of JIT)
    produce(kafka_bootstrap, topic, [])  # the input topic exists before the worker subscribes
    worker = WorkerProc(worker_env(kafka_bootstrap, run, **env), tmp / "data", tmp / "worker.log").start()
    try:
        def opened():
            status, body = http("GET", f"{worker.url}/_ml/anomaly_detectors/{JOB}/_stats")
            return status == 200 and body["jobs"][0]["state"] == "opened"

        wait_for(opened, 60, f"job {JOB} created and opened from the jobs dir")
        _traffic(kafka_bootstrap, topic, 12.0)

        def consumed():
            status, body = http("GET", f"{worker.url}/_ml/anomaly_detectors/{JOB}/_stats")
            return status == 200 and body["jobs"][0]["data_counts"]["input_record_count"] > 0

        try:
            wait_for(consumed, 60, f"job {JOB} to read the events (its datafeed started from the jobs dir)")
        except AssertionError as exc:
            log = (tmp / "worker.log").read_text(errors="replace")
            raise AssertionError(f"{exc}\nworker log (tail):\n{log[-6000:]}") from None
    except BaseException:
        worker.stop()
        raise
    return worker, manifests, run


@pytest.fixture(scope="session")
def chart_worker(kafka_bootstrap, render, tmp_path_factory):
    """A real `streamad worker` (tests/worker/harness.py) on the real broker, started with the env of the
    StatefulSet and the job files of the ConfigMap that the chart renders for this broker, then fed
    live events for a few seconds (and one malformed event). Yields (worker, manifests, run).

    One retry, with a warning: on a loaded 2-core machine a fresh worker's first datafeed start
    sometimes never completes (a work-topic send that is never acknowledged; seen with the REST API
    too, outside this chart). That is the worker's bug to fix, not the chart's."""
    try:
        worker, manifests, run = _start_chart_worker(kafka_bootstrap, render, tmp_path_factory.mktemp("chart-worker"))
    except AssertionError as exc:
        warnings.warn(f"chart worker did not start its datafeed; retrying once: {str(exc)[:300]}", stacklevel=1)
        worker, manifests, run = _start_chart_worker(kafka_bootstrap, render, tmp_path_factory.mktemp("chart-worker"))
    try:
        yield worker, manifests, run
    finally:
        worker.stop()
