"""Helm chart: lints clean, renders with default and production values, every rendered
manifest passes Kubernetes schema validation, and values.schema.json rejects unknown keys."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHART = DEPLOY / "helm" / "privacy-pipeline"
PRODUCTION = DEPLOY / "helm" / "values-production.yaml"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
# Our helm is built without release ldflags, so its default cluster version is ancient:
# always render for the version we validate against.
KUBE_VERSION = "1.30.0"
# prometheus-operator CRDs: kubernetes-validate has no schema for them; checked by hand below.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
COMPONENTS = {"worker", "sink-clickhouse", "sink-training", "api"}


def _helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], capture_output=True, text=True, timeout=300,
                          check=False)


def _render(helm: str, *values: Path | str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "privacy",
            "--kube-version", KUBE_VERSION]
    for value in values:
        args += ["-f", str(value)]
    result = _helm(helm, *args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def _validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


def _check_deployments(docs: list[dict[str, Any]]) -> None:
    deployments = _by_kind(docs, "Deployment")
    components = {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in deployments}
    assert components == COMPONENTS
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        (container,) = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        env = {e["name"]: e for e in container["env"]}
        assert {"KAFKA_BOOTSTRAP_SERVERS", "CLICKHOUSE_DSN", "PRIVACY_PIPELINE_MASTER_KEY",
                "PRIVACY_PIPELINE_POLICY_FILE", "PRIVACY_PIPELINE_METRICS_PORT"} <= set(env)
        # The master key only ever comes from a Secret, never as a literal value.
        assert "value" not in env["PRIVACY_PIPELINE_MASTER_KEY"]
        assert env["PRIVACY_PIPELINE_MASTER_KEY"]["valueFrom"]["secretKeyRef"]
        policy_dir = next(m["mountPath"] for m in container["volumeMounts"]
                          if m["name"] == "policy")
        assert env["PRIVACY_PIPELINE_POLICY_FILE"]["value"].startswith(policy_dir + "/")


@pytest.mark.unit
def test_chart_alerts_copy_equals_source() -> None:
    assert (CHART / "files" / "alerts.yaml").read_bytes() == ALERTS.read_bytes(), (
        "cp deploy/prometheus/alerts.yaml deploy/helm/privacy-pipeline/files/alerts.yaml")


@pytest.mark.unit
def test_chart_default_policy_is_the_packaged_policy_file() -> None:
    """The ConfigMap's default policy is the one the pipeline ships (schemas/policy.yaml)."""
    packaged = DEPLOY.parent / "schemas" / "policy.yaml"
    assert (CHART / "files" / "policy.yaml").read_bytes() == packaged.read_bytes(), (
        "cp schemas/policy.yaml deploy/helm/privacy-pipeline/files/policy.yaml")


def _merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Values as Helm merges them: maps deep-merged, everything else replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.unit
def test_values_files_point_at_and_satisfy_the_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in (CHART / "values.yaml", PRODUCTION):
        assert path.read_text().startswith("# yaml-language-server: $schema=")
        jsonschema.validate(_merged(defaults, yaml.safe_load(path.read_text())), schema)


def _object_schemas(node: Any, where: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            found.append((where, node))
        for key, value in node.items():
            found += _object_schemas(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _object_schemas(value, f"{where}[{i}]")
    return found


@pytest.mark.unit
def test_schema_closes_every_object() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    objects = _object_schemas(schema)
    assert len(objects) > 20
    for where, node in objects:
        assert node.get("additionalProperties") is False, where


def _leaf_paths(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in {
                "resources", "podSecurityContext", "securityContext"}:
            paths += _leaf_paths(value, path + ".")
        else:
            paths.append(path)
    return paths


@pytest.mark.unit
def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [path for path in _leaf_paths(values) if f"`{path}`" not in readme]
    assert not missing, f"undocumented values: {missing}"


@pytest.mark.integration
@pytest.mark.parametrize("values", [None, PRODUCTION], ids=["default", "production"])
def test_helm_lint_is_clean(helm: str, values: Path | None) -> None:
    args = ["lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION]
    if values:
        args += ["-f", str(values)]
    result = _helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.integration
def test_default_values_render_valid_manifests(helm: str) -> None:
    docs = _render(helm)
    _validate(docs)
    _check_deployments(docs)
    kinds = {doc["kind"] for doc in docs}
    # Cluster extras are off by default.
    assert not kinds & (CRD_KINDS | {"HorizontalPodAutoscaler"})
    assert {"ConfigMap", "Service", "PodDisruptionBudget", "ServiceAccount"} <= kinds


@pytest.mark.integration
def test_production_values_render_valid_manifests(helm: str) -> None:
    docs = _render(helm, PRODUCTION)
    _validate(docs)
    _check_deployments(docs)
    (hpa,) = _by_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"].endswith("-worker")
    worker = next(d for d in _by_kind(docs, "Deployment") if d["metadata"]["name"].endswith(
        "-worker"))
    assert "replicas" not in worker["spec"]  # the HPA owns it
    (rule,) = _by_kind(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
    (monitor,) = _by_kind(docs, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    metrics_service = next(s for s in _by_kind(docs, "Service")
                           if s["metadata"]["name"].endswith("-metrics"))
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= metrics_service["metadata"]["labels"].items()
    # Policy from an existing ConfigMap: the chart must not create its own.
    assert not _by_kind(docs, "ConfigMap")


@pytest.mark.integration
@pytest.mark.parametrize("bad", [
    {"workr": {"replicaCount": 1}},
    {"worker": {"replicas": 3}},
    {"metrics": {"serviceMonitor": {"enabled": True, "intervall": "10s"}}},
], ids=["top-level", "component", "nested"])
def test_unknown_values_key_is_rejected(helm: str, tmp_path: Path, bad: dict[str, Any]) -> None:
    values = tmp_path / "bad.yaml"
    values.write_text(yaml.safe_dump(bad))
    result = _helm(helm, "template", "rel", str(CHART), "--kube-version", KUBE_VERSION,
                   "-f", str(values))
    assert result.returncode != 0
    assert "Additional property" in result.stderr, result.stderr
