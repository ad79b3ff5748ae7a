"""The Helm chart (deploy/helm/lamina), rendered by the real helm binary and checked against the
Kubernetes API schemas; then its pods' commands run for real against PostgreSQL and S3.

No Kubernetes cluster runs here: what a cluster adds (scheduling, the HPA acting on a custom metric,
MinIO and PostgreSQL images) is not exercised; docs/scale.md lists it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from tests.conftest import REPO, S3Location, free_port, require

CHART = REPO / "deploy" / "helm" / "lamina"
OLDEST, NEWEST = "1.27.0", "1.37.0"  # Chart.yaml's kubeVersion, and the newest schemas shipped


def helm() -> str:
    found = Path(sys.executable).parent / "helm"
    if not found.exists():
        require("helm", "run `make test` (it fetches helm into .venv/bin: deploy/fetch_helm.py)")
    return str(found)


def render(*sets: str, expect_ok: bool = True) -> list[dict[str, Any]] | str:
    args = [helm(), "template", "rel", str(CHART), "--namespace", "ml"]
    for item in sets:
        args += ["--set-json" if item.startswith("json:") else "--set", item.removeprefix("json:")]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if not expect_ok:
        assert done.returncode != 0, "helm rendered values it should refuse"
        return done.stderr
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def decoded_secret(docs: list[dict[str, Any]]) -> dict[str, str]:
    data = by_kind(docs, "Secret")["rel-lamina"]["data"]
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    spec = deployment["spec"]["template"]["spec"]
    return next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)


def test_helm_lint_passes_strictly() -> None:
    done = subprocess.run([helm(), "lint", "--strict", "--with-subcharts", str(CHART)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("values", [(), ("autoscaling.enabled=false", "worker.enabled=false",
                                         "server.grpc.enabled=false", "json:server.models=[\"a@champion\"]")],
                         ids=["defaults", "fixed-replicas"])  # fmt: skip
def test_every_rendered_object_is_valid_for_the_oldest_and_newest_kubernetes(values: tuple[str, ...]) -> None:
    docs = render(*values)
    assert isinstance(docs, list) and len(docs) >= 6
    for version in (OLDEST, NEWEST):
        for doc in docs:
            # strict: an unknown or misspelt field is an error, not something the API server drops
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_does_catch_a_misspelt_field() -> None:
    docs = render()
    assert isinstance(docs, list)
    server = by_kind(docs, "Deployment")["rel-lamina-server"]
    container(server, "server")["readinessProbes"] = container(server, "server").pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(server, NEWEST, strict=True)


def test_the_server_is_probed_on_health_and_ready_and_scaled_on_queue_depth() -> None:
    docs = render()
    assert isinstance(docs, list)
    server = by_kind(docs, "Deployment")["rel-lamina-server"]
    main = container(server, "server")
    assert main["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in main["ports"]} == {"http": 8000, "grpc": 50051}
    assert "replicas" not in server["spec"]  # the HPA owns the count
    hpa = by_kind(docs, "HorizontalPodAutoscaler")["rel-lamina-server"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                             "name": "rel-lamina-server"}  # fmt: skip
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "lamina_queue_depth"  # the gauge /metrics exports
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    service = by_kind(docs, "Service")["rel-lamina"]
    assert service["spec"]["selector"] == server["spec"]["selector"]["matchLabels"]
    pdb = by_kind(docs, "PodDisruptionBudget")["rel-lamina-server"]
    assert pdb["spec"]["selector"] == server["spec"]["selector"]
    worker = by_kind(docs, "Deployment")["rel-lamina-worker"]
    assert container(worker, "worker")["args"] == ["loop", "worker", "--interval=5m"]


def test_postgresql_and_s3_come_as_dependencies_and_the_pods_point_at_them() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert {d["name"]: d["condition"] for d in chart["dependencies"]} == {
        "postgresql": "postgresql.enabled", "s3": "s3.enabled"}  # fmt: skip
    docs = render()
    assert isinstance(docs, list)
    assert set(by_kind(docs, "StatefulSet")) == {"rel-lamina-postgresql", "rel-lamina-s3"}
    assert {"rel-lamina-postgresql", "rel-lamina-s3"} <= set(by_kind(docs, "Service"))
    secret = decoded_secret(docs)
    password = secret["postgres-password"]
    assert (
        secret["catalog-url"] == f"postgresql+psycopg://lamina:{password}@rel-lamina-postgresql:5432/lamina"
    )
    assert secret["admin-key"].startswith("lam-admin-") and len(secret["s3-secret-key"]) == 40
    init = container(by_kind(docs, "Deployment")["rel-lamina-server"], "init-workspace")
    assert "--artifact-url=s3://lamina/lamina" in init["args"]
    assert "--artifact-option=endpoint_url=http://rel-lamina-s3:9000" in init["args"]


def test_values_that_cannot_work_are_refused_with_what_to_set() -> None:
    no_db = render("postgresql.enabled=false", expect_ok=False)
    assert "set catalog.url" in no_db
    no_store = render("s3.enabled=false", expect_ok=False)
    assert "set artifacts.url" in no_store
    assert "maxReplicas must be at least" in render("autoscaling.minReplicas=5", "autoscaling.maxReplicas=2",
                                                    expect_ok=False)  # fmt: skip


def pod_process(spec: dict[str, Any], secret: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The command and environment Kubernetes would give this container (tini → lamina ARGS)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    for item in spec["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["valueFrom"]["secretKeyRef"]["key"] in secret:
            env[item["name"]] = secret[item["valueFrom"]["secretKeyRef"]["key"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in spec["args"]]
    return [sys.executable, "-m", "lamina", *args], env


@pytest.mark.postgres
@pytest.mark.slow
def test_the_pods_commands_start_a_ready_server_on_external_postgresql_and_s3(
    tmp_path: Path, postgres_url: str, s3_location: S3Location
) -> None:
    port, grpc_port = free_port(), free_port()
    docs = render(
        "postgresql.enabled=false", "s3.enabled=false", f"catalog.url={postgres_url}",
        f"artifacts.url={s3_location.url}", f"artifacts.endpoint={s3_location.endpoint}",
        "artifacts.accessKey=testing", "artifacts.secretKey=testing", f"server.port={port}",
        f"server.grpc.port={grpc_port}",
        "json:env=" + json.dumps([{"name": "AWS_DEFAULT_REGION", "value": "us-east-1"}]),
    )  # fmt: skip
    assert isinstance(docs, list)
    assert not by_kind(docs, "StatefulSet")  # external services: nothing bundled
    secret = decoded_secret(docs)
    server = by_kind(docs, "Deployment")["rel-lamina-server"]
    workspace = tmp_path / "workspace"  # the pod's emptyDir
    command, env = pod_process(container(server, "init-workspace"), secret)
    command = [a.replace("/workspace", str(workspace)) for a in command]
    env["LAMINA_HOME"] = str(workspace)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr + done.stdout
    command, env = pod_process(container(server, "server"), secret)
    env["LAMINA_HOME"] = str(workspace)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        ready = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.3)
        assert ready is not None, f"the server did not answer: {proc.stdout.read() if proc.stdout else ''}"
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert httpx.get(f"http://127.0.0.1:{port}/health").json() == {"status": "ok"}
        # the admin key from the chart's secret is the server's: /metrics (operators only) answers to it
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics",
                            headers={"Authorization": f"Bearer {secret['admin-key']}"})  # fmt: skip
        assert metrics.status_code == 200 and "lamina_queue_depth" in metrics.text
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    settings = yaml.safe_load((workspace / "lamina.yaml").read_text())
    assert settings["artifact_url"] == s3_location.url
    assert json.dumps(settings["artifact_options"]).count(s3_location.endpoint) == 1
