"""The Helm chart (deploy/helm/streamad) as rendered by the pinned helm: probes on the worker's health
paths, a locked-down pod with writable volumes exactly where the worker writes, settings the worker
knows, SASL/TLS from existing Secrets, selectors that match; and a real worker started from the
rendered env and jobs ConfigMap loads the job."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamad.runtime.settings import Settings

from ..worker.harness import http, wait_for
from .conftest import CHART, JOB, find, worker_container

CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
SETTINGS_ENV = {f"STREAMAD_{name.upper()}" for name in Settings.__dataclass_fields__}


def test_ci_values_files_exist():
    names = {p.name for p in CI_VALUES}
    assert {"default-values.yaml", "servicemonitor-values.yaml", "sasl-tls-values.yaml"} <= names


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_probes_on_the_health_paths(render, values: Path):
    c = worker_container(render(values))
    (port,) = [p for p in c["ports"] if p["name"] == "http"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert int(env["STREAMAD_WEB_PORT"]) == port["containerPort"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz/live", "port": "http"}
    # the startup budget covers numba warm-up and recovery before liveness may kill the pod
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120


def test_probes_can_be_turned_off(render):
    c = worker_container(render({"kafka": {"broker": "k:9092"}, "startupProbe": {"enabled": False}}))
    assert "startupProbe" not in c and c["livenessProbe"] and c["readinessProbe"]


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_pod_is_locked_down_and_writes_only_to_volumes(render, values: Path):
    manifests = render(values)
    sts = find(manifests, "StatefulSet")
    pod = sts["spec"]["template"]["spec"]
    c = worker_container(manifests)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"]
    assert pod["enableServiceLinks"] is False and pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert c["command"] == ["streamad"] and c["args"][0] == "worker"
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    env = {e["name"]: e.get("value") for e in c["env"]}
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert mounts[env["STREAMAD_DATA_DIR"]] == "data"
    assert mounts[env["NUMBA_CACHE_DIR"]] == "numba-cache"
    assert mounts["/tmp"] == "tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["numba-cache"] and "emptyDir" in volumes["tmp"]
    claims = [t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])]
    if claims:
        assert claims == ["data"] and "data" not in volumes
        assert sts["spec"]["persistentVolumeClaimRetentionPolicy"]
    else:
        assert "emptyDir" in volumes["data"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    assert sts["spec"]["serviceName"] == f"{sts['metadata']['name']}-headless"


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.stem)
def test_env_names_are_worker_settings(render, values: Path):
    """A typo in a STREAMAD_* name would be ignored silently by the worker."""
    c = worker_container(render(values))
    names = {e["name"] for e in c["env"]}
    assert {n for n in names if n.startswith("STREAMAD_")} <= SETTINGS_ENV
    assert {"STREAMAD_BROKER", "STREAMAD_INPUT_TOPICS", "STREAMAD_PARTITIONS"} <= names


def test_static_membership_uses_the_pod_name(render):
    c = worker_container(render(CHART / "ci" / "default-values.yaml"))
    (member,) = [e for e in c["env"] if e["name"] == "STREAMAD_STATIC_MEMBER_ID"]
    assert member["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    c = worker_container(render({"kafka": {"broker": "k:9092", "staticMembership": False}}))
    assert "STREAMAD_STATIC_MEMBER_ID" not in {e["name"] for e in c["env"]}


def test_sasl_and_tls_come_from_existing_secrets(render):
    manifests = render(CHART / "ci" / "sasl-tls-values.yaml")
    assert not [m for m in manifests if m["kind"] == "Secret"]
    c = worker_container(manifests)
    env = {e["name"]: e for e in c["env"]}
    assert env["STREAMAD_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
    assert env["STREAMAD_SASL_MECHANISM"]["value"] == "SCRAM-SHA-512"
    assert env["STREAMAD_SASL_USERNAME"]["valueFrom"]["secretKeyRef"] == {"name": "streamad-kafka-user", "key": "user"}
    assert env["STREAMAD_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "streamad-kafka-user", "key": "password"}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert env["STREAMAD_SSL_CAFILE"]["value"] == mounts["tls-ca"] + "/ca.crt"
    volumes = {v["name"]: v for v in find(manifests, "StatefulSet")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls-ca"]["secret"]["secretName"] == "kafka-cluster-ca-cert"
    assert volumes["jobs"]["configMap"]["name"] == "streamad-jobs"  # jobsExistingConfigMap
    for protocol, values in [("SSL", {"tls": {"enabled": True}}),
                             ("SASL_PLAINTEXT", {"sasl": {"enabled": True, "existingSecret": "s"}}),
                             ("PLAINTEXT", {})]:
        c = worker_container(render({"kafka": {"broker": "k:9092"}, **values}))
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["STREAMAD_SECURITY_PROTOCOL"] == protocol
        assert ("STREAMAD_SSL_CAFILE" in env) is False  # no caSecret: the image's system CAs


def test_selectors_match(render):
    manifests = render(CHART / "ci" / "servicemonitor-values.yaml")
    sts = find(manifests, "StatefulSet")
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()
    services = {s["metadata"]["name"]: s for s in manifests if s["kind"] == "Service"}
    headless = services[sts["spec"]["serviceName"]]
    assert headless["spec"]["clusterIP"] == "None"
    for svc in services.values():
        assert svc["spec"]["selector"].items() <= pod_labels.items()
        assert [p["targetPort"] for p in svc["spec"]["ports"]] == ["http"]
    pdb = find(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert pdb["spec"]["maxUnavailable"] == 1
    sm = find(manifests, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= headless["metadata"]["labels"].items()
    assert [s for s in services.values()
            if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()] == [headless]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in headless["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert sm["spec"]["namespaceSelector"]["matchNames"] == ["ml"]
    assert sm["metadata"]["namespace"] == "monitoring"


def test_service_monitor_is_off_by_default(render):
    assert not [m for m in render(CHART / "ci" / "default-values.yaml") if m["kind"] == "ServiceMonitor"]


def test_jobs_config_map(render):
    manifests = render(CHART / "ci" / "servicemonitor-values.yaml")
    cm = find(manifests, "ConfigMap")
    assert sorted(cm["data"]) == ["error_rate.json", "low_request_rate.json"]
    for text in cm["data"].values():
        assert json.loads(text)["analysis_config"]["detectors"]
    sts = find(manifests, "StatefulSet")
    assert sts["spec"]["template"]["metadata"]["annotations"]["checksum/jobs"]
    env = {e["name"]: e.get("value") for e in worker_container(manifests)["env"]}
    mounts = {m["name"]: m["mountPath"] for m in worker_container(manifests)["volumeMounts"]}
    assert env["STREAMAD_JOBS_DIR"] == mounts["jobs"]
    # without jobs, no ConfigMap and no jobs dir
    manifests = render(CHART / "ci" / "default-values.yaml")
    assert not [m for m in manifests if m["kind"] == "ConfigMap"]
    assert "STREAMAD_JOBS_DIR" not in {e["name"] for e in worker_container(manifests)["env"]}


@pytest.mark.kafka
def test_worker_from_the_rendered_chart_loads_its_jobs(chart_worker):
    """The chart's env is accepted by the worker, and the job of the jobs ConfigMap is created, opened
    and its datafeed started at start-up."""
    worker, _manifests, run = chart_worker

    def stats():
        status, body = http("GET", f"{worker.url}/_ml/anomaly_detectors/{JOB}/_stats")
        return body["jobs"][0] if status == 200 else None

    # created and opened from the jobs dir, and fed: its datafeed was started on the chart's input topic
    job = wait_for(lambda: (lambda s: s if s and s["data_counts"]["processed_record_count"] > 0 else None)(stats()),
                   180, f"job {JOB} loaded from the jobs ConfigMap and fed")
    assert job["state"] == "opened"
    status, body = http("GET", f"{worker.url}/_ml/datafeeds/datafeed-{JOB}")
    assert status == 200 and body["datafeeds"][0]["indices"] == [f"in-{run}"], body
    assert http("GET", worker.url + "/healthz/live")[0] == 200
    assert http("GET", worker.url + "/healthz/ready")[0] == 200
