"""``airflow.xcomSidecarImage`` pins the step pods' XCom sidecar, as Airflow and the provider read it.

The KubernetesPodOperator adds ``airflow-xcom-sidecar`` to every step pod; its image is the
``xcom_sidecar_container_image`` of the operator's Kubernetes connection, else the provider's
default. The chart renders that connection into ``vdimport-dag-settings`` as the variable Airflow
looks the DAG's connection up by. Checked against the installed Airflow and cncf.kubernetes
provider themselves: the variable's name, Airflow's own parse of its JSON, the field the
provider's hook reads (by asking the hook, so a renamed field fails here), that nothing else of
the connection changes, and the pod the DAG's operator builds from that environment.
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from typing import Any

import pytest
import yaml
from chartkit import CHART, KUBERNETES_CONN_ENV, VALUES_FILES, Render, configmap, deep_merge, manifests, render, user_values
from vdimport_dag.settings import DagSettings, load_settings

# Airflow reads its configuration once, at the first import: a private home, not ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="vdimport-chart-airflow-home-"))

DAG_SETTINGS_CONFIGMAP = "vdimport-dag-settings"
# A reference as `<registry>/<path>[:<tag>][@<digest>]`.
REFERENCE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[a-f0-9]{64}))?$")


def _settings_data(values: dict[str, Any]) -> dict[str, str]:
    return dict(configmap(manifests(render(values)), DAG_SETTINGS_CONFIGMAP)["data"])


def _image(r: Render) -> str:
    return str(r.values["airflow"]["xcomSidecarImage"])


def normalized(reference: str) -> str:
    """A reference as the container runtime resolves it: ``alpine:1`` is ``docker.io/library/alpine:1``."""
    found = REFERENCE.match(reference)
    assert found, reference
    name = found.group("name")
    first, _, rest = name.partition("/")
    if not rest or not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name if rest else 'library/' + name}"
    return name + (f":{found.group('tag')}" if found.group("tag") else "") + (f"@{found.group('digest')}" if found.group("digest") else "")


def _step_pod_containers(settings: DagSettings) -> dict[str, str]:
    """The containers (name -> image) of a step pod the DAG's operator builds in this environment."""
    from vdimport_dag.pods import kubernetes_step_task

    task = kubernetes_step_task("inspect_object", settings, 600, arguments=["inspect_object"])
    pod = task.build_pod_request_obj(None, dry_run=True)
    return {container.name: container.image for container in pod.spec.containers}


def test_the_variable_is_the_one_airflow_reads_for_the_dags_connection() -> None:
    """The DAG's KubernetesPodOperator uses ``kubernetes_default``; Airflow looks it up as AIRFLOW_CONN_<ID>."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from airflow.secrets.environment_variables import CONN_ENV_PREFIX

    conn_id = DagSettings().pod_kubernetes_conn_id
    assert conn_id == KubernetesHook.default_conn_name == "kubernetes_default"
    assert CONN_ENV_PREFIX + conn_id.upper() == KUBERNETES_CONN_ENV
    for name in VALUES_FILES:
        assert load_settings(env=_settings_data(user_values(name)), variable=dict).pod_kubernetes_conn_id == conn_id, name


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_the_connection_parses_as_airflow_parses_it_and_names_the_image(
    renders: dict[str, Render], values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Airflow's own ``Connection.from_json`` and its environment variables backend (the first
    backend a task's worker asks) read a kubernetes connection with exactly two extra fields."""
    from airflow.models.connection import Connection
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    r = renders[values]
    raw = configmap(r.objects, DAG_SETTINGS_CONFIGMAP)["data"][KUBERNETES_CONN_ENV]
    expected = {"in_cluster": True, "xcom_sidecar_container_image": _image(r)}
    connection = Connection.from_json(raw, conn_id=KubernetesHook.default_conn_name)
    assert connection.conn_type == KubernetesHook.conn_type
    assert connection.extra_dejson == expected
    assert (connection.host, connection.login, connection.password, connection.schema, connection.port) == (None,) * 5
    monkeypatch.setenv(KUBERNETES_CONN_ENV, raw)
    from_env = EnvironmentVariablesBackend().get_connection(KubernetesHook.default_conn_name)
    assert from_env is not None and (from_env.conn_type, from_env.extra_dejson) == ("kubernetes", expected)


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_the_providers_hook_reads_the_image_and_nothing_else_changes(
    renders: dict[str, Render], values: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook, given the ConfigMap's environment, returns the image for the field it reads; the
    other fields it takes from a connection stay unset (no namespace, kubeconfig or context),
    and it uses the in-cluster credentials, which is also what it did without any connection."""
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    r = renders[values]
    data = configmap(r.objects, DAG_SETTINGS_CONFIGMAP)["data"]
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    hook = KubernetesHook(conn_id=load_settings(env=data, variable=dict).pod_kubernetes_conn_id)
    assert hook.get_xcom_sidecar_container_image() == _image(r)
    # The field the chart writes is the one the hook's method reads (a rename fails here too).
    assert '"xcom_sidecar_container_image"' in inspect.getsource(KubernetesHook.get_xcom_sidecar_container_image)
    assert "xcom_sidecar_container_image" in KubernetesHook.get_connection_form_widgets()
    assert hook._get_field("in_cluster") is True
    for field in ("namespace", "kube_config", "kube_config_path", "cluster_context", "disable_verify_ssl", "disable_tcp_keepalive"):
        assert hook._get_field(field) is None, field
    assert hook.get_xcom_sidecar_container_resources() is None
    assert hook.get_xcom_sidecar_container_security_context() is None
    # Without a connection the hook takes the in-cluster configuration first; in_cluster keeps that.
    assert "load_incluster_config" in inspect.getsource(KubernetesHook._get_default_client)


@pytest.mark.parametrize("values", list(VALUES_FILES))
def test_the_step_pods_sidecar_runs_the_pinned_image(renders: dict[str, Render], values: str, monkeypatch: pytest.MonkeyPatch) -> None:
    r = renders[values]
    data = configmap(r.objects, DAG_SETTINGS_CONFIGMAP)["data"]
    for name, value in data.items():
        monkeypatch.setenv(name, value)
    containers = _step_pod_containers(load_settings(env=data, variable=dict))
    assert containers["airflow-xcom-sidecar"] == _image(r)


def test_empty_sets_no_connection_and_the_provider_default_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults

    data = _settings_data(deep_merge(user_values("example"), {"airflow": {"xcomSidecarImage": ""}}))
    assert KUBERNETES_CONN_ENV not in data
    monkeypatch.delenv(KUBERNETES_CONN_ENV, raising=False)
    containers = _step_pod_containers(load_settings(env=data, variable=dict))
    assert containers["airflow-xcom-sidecar"] == PodDefaults.SIDECAR_CONTAINER.image


def test_the_default_is_the_providers_image_at_a_fixed_tag() -> None:
    """Today's default image, spelt out in full and pinned: a provider upgrade no longer moves it
    (this test then says that the provider's default changed, so the pin is reviewed)."""
    from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import PodDefaults

    default = yaml.safe_load((CHART / "values.yaml").read_text())["airflow"]["xcomSidecarImage"]
    found = REFERENCE.match(default)
    assert found and found.group("tag") and found.group("tag") != "latest", default
    assert default == normalized(default), "fully qualified: skopeo and CRI-O need no short-name lookup"
    assert normalized(PodDefaults.SIDECAR_CONTAINER.image) == default.split("@")[0]


def test_normalized_follows_the_short_name_rules() -> None:
    assert normalized("alpine:3") == "docker.io/library/alpine:3"
    assert normalized("apache/airflow:3.3.2") == "docker.io/apache/airflow:3.3.2"
    assert normalized("registry.k8s.io/git-sync/git-sync:v4.4.2") == "registry.k8s.io/git-sync/git-sync:v4.4.2"
    assert normalized("localhost:5000/x@sha256:" + "a" * 64) == "localhost:5000/x@sha256:" + "a" * 64
    assert normalized("iad.ocir.io/ns/p/mirror/xcom-sidecar:1") == "iad.ocir.io/ns/p/mirror/xcom-sidecar:1"
