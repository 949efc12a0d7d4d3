"""Helpers of the chart tests: render and lint ``charts/vdimport`` offline with Helm's own Go code.

``helm_python`` (PyPI ``helm-python-sdk``) embeds Helm 4's SDK, so ``render`` and ``lint`` are
what ``helm template`` and ``helm lint`` do, with no helm binary and no cluster. Importing this
module also puts ``dags/`` on ``sys.path`` (as Airflow does for the DAG bundle) so the tests can
compare the chart with the DAG's settings and labels.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "vdimport"
DAGS = REPO / "dags"
if str(DAGS) not in sys.path:
    sys.path.insert(0, str(DAGS))

RELEASE = "vdimport"
NAMESPACE = "vdimport"
NOTES = "vdimport/templates/NOTES.txt"
# The one key of vdimport-dag-settings that is not a DAG setting but the KubernetesPodOperator's
# connection (airflow.xcomSidecarImage); test_xcom_sidecar.py derives it from Airflow and the provider.
KUBERNETES_CONN_ENV = "AIRFLOW_CONN_KUBERNETES_DEFAULT"
KUBERNETES_VERSIONS = ("1.31", "1.32", "1.33", "1.34")
# "default" is the chart's values.yaml alone; the others are the examples in charts/vdimport/ci/.
VALUES_FILES: dict[str, Path | None] = {"default": None} | {
    path.name.removesuffix("-values.yaml"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))
}


@dataclass(frozen=True)
class Render:
    """One values file rendered: what the user gave, what Helm used, and what came out."""

    name: str
    user: dict[str, Any]
    values: dict[str, Any]
    text: dict[str, str]
    objects: list[dict[str, Any]]


def user_values(name: str) -> dict[str, Any]:
    """The values a user passes with ``-f`` for the named values file ({} for the defaults)."""
    path = VALUES_FILES[name]
    return {} if path is None else helm.values_from_yaml(path.read_text())


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``, nested maps merged (as ``-f a.yaml -f b.yaml``)."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def render(values: dict[str, Any] | None = None, *, namespace: str = NAMESPACE, release: str = RELEASE) -> dict[str, str]:
    """``helm template``: rendered text by template path (raises ``helm.HelmError`` on bad values)."""
    with helm.Chart.load(CHART) as chart:
        return chart.render(values or {}, name=release, namespace=namespace)


def merged_values(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values a release would use: the chart's defaults with ``values`` on top."""
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values or {})


def lint(values: dict[str, Any] | None = None, kube_version: str = KUBERNETES_VERSIONS[0]) -> dict[str, Any]:
    """``helm lint --strict`` for a Kubernetes version: ``{"messages": [...], "errors": [...]}``."""
    return helm.lint(CHART, values or {}, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}.0")


def manifests(rendered: dict[str, str]) -> list[dict[str, Any]]:
    """Every Kubernetes object of a render (NOTES.txt and empty templates left out)."""
    objects: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The only object of ``kind`` (fails when there are none or several)."""
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[o['metadata']['name'] for o in found]}"
    return found[0]


def configmap(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ConfigMap called ``name``."""
    found = [obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one ConfigMap {name}, got {len(found)}"
    return found[0]
