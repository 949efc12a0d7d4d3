"""``charts/vdimport`` rendered and linted offline by Helm's own code, checked against its consumers.

The chart is the one definition of the names the DAG, the step pods and Airflow share, so
besides lint, strict Kubernetes 1.31-1.34 validation and the schema's refusals, these tests
read the consumers themselves: the step runner's configuration (``vdimport_worker.config``),
the DAG's settings (``dags/vdimport_dag/settings.py``) and its pod labels (``templating.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tomllib
from typing import Any

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import oci.auth.signers.resource_principals_signer as rp_signer
import pytest
import yaml
from chartkit import (
    CHART,
    KUBERNETES_CONN_ENV,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    NOTES,
    REPO,
    VALUES_FILES,
    Render,
    configmap,
    deep_merge,
    lint,
    manifests,
    one,
    render,
    user_values,
)
from vdimport_dag.settings import DagSettings, load_settings
from vdimport_dag.steps import STEP_ORDER
from vdimport_dag.templating import step_labels

import vdimport_worker.config as worker_config

VALUES = list(VALUES_FILES)
EXAMPLES = [name for name in VALUES if name != "default"]
DAG_SETTINGS_CONFIGMAP = "vdimport-dag-settings"  # what charts/airflow/values.yaml loads with extraEnvFrom
POOL_SLOTS = "VDIMPORT_STEP_POOL_SLOTS"  # for Airflow's pool job, not a DAG setting
# Read by the OCI SDK's OKE workload identity signer, not by the step runner's own config.
SDK_ENV = {"OCI_RESOURCE_PRINCIPAL_VERSION", "OCI_RESOURCE_PRINCIPAL_REGION"}
# What the KubernetesPodOperator does with step pods (see templates/role.yaml for why each).
KPO_RULES = {
    "pods": {"create", "get", "list", "patch", "delete"},
    "pods/log": {"get"},
    "pods/exec": {"create", "get"},
    "events": {"list", "watch"},
}


def worker_env_names() -> set[str]:
    """Every env var ``WorkerConfig.from_env`` looks up, recorded while it runs (not copied from its source)."""
    seen: set[str] = set()

    class Recorder(dict):
        def get(self, key: Any, default: Any = None) -> Any:
            seen.add(key)
            return super().get(key, default)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker_config, "dict", Recorder, raising=False)  # from_env copies its env with dict(...)
        with contextlib.suppress(worker_config.ConfigError):
            worker_config.WorkerConfig.from_env({})
    assert {"VDIMPORT_COMPARTMENT_ID", "VDIMPORT_WORKER_SHAPE", "VDIMPORT_COMMAND_TIMEOUT_SECONDS"} <= seen
    return seen


def dag_env_names() -> set[str]:
    """The env var of every DAG setting: ``VDIMPORT_`` + field name upper-cased."""
    return {f"VDIMPORT_{field.name.upper()}" for field in dataclasses.fields(DagSettings)}


def env_text(value: Any) -> str:
    """A value as the chart writes it into a ConfigMap: objects as compact JSON, booleans lower case."""
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True)
    return str(value).lower() if isinstance(value, bool) else str(value)


def step_configmap(r: Render) -> dict[str, str]:
    return configmap(r.objects, r.values["stepRunner"]["configMap"]["name"])["data"]


def dag_configmap(r: Render) -> dict[str, Any]:
    return configmap(r.objects, r.values["dag"]["settingsConfigMap"]["name"])


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


# --- chart, lint, Kubernetes validity ------------------------------------------------------


def test_chart_metadata_matches_the_step_runner_it_deploys() -> None:
    """apiVersion v2 application for Kubernetes 1.31+, appVersion = the step runner's version (the default image tag)."""
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    worker = tomllib.loads((REPO / "images" / "worker" / "pyproject.toml").read_text())
    assert (chart["apiVersion"], chart["type"], chart["kubeVersion"]) == ("v2", "application", ">=1.31.0-0")
    assert chart["appVersion"] == worker["project"]["version"]
    assert schema()["$schema"] == "http://json-schema.org/draft-07/schema#"


def test_kubernetes_versions_are_available_offline() -> None:
    available = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(KUBERNETES_VERSIONS) <= available


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUES)
def test_lint_is_clean(values: str, version: str) -> None:
    """`helm lint --strict` finds no error and no warning (infos such as "icon is recommended" are fine)."""
    report = lint(user_values(values), version)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], problems or report["errors"]


@pytest.mark.parametrize("values", VALUES)
def test_every_manifest_validates_strictly_for_each_kubernetes_version(renders: dict[str, Render], values: str) -> None:
    objects = renders[values].objects
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Role", "RoleBinding", "ConfigMap", "NetworkPolicy"}
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{obj['kind']} {obj['metadata']['name']} invalid for Kubernetes {version}: {where}: {exc.message}")


@pytest.mark.parametrize("values", VALUES)
def test_objects_carry_the_standard_labels_and_an_explicit_namespace(renders: dict[str, Render], values: str) -> None:
    """`kubectl get -l app.kubernetes.io/instance=...` finds them, and none lands in whatever namespace kubectl defaults to."""
    for obj in renders[values].objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "vdimport"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "vdimport-0.1.0"
        assert {"app.kubernetes.io/name", "app.kubernetes.io/version", "app.kubernetes.io/part-of"} <= set(labels)
        assert obj["metadata"]["namespace"]


# --- ServiceAccount and RBAC ------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_service_account_is_the_one_the_workload_identity_policy_names(renders: dict[str, Render], values: str) -> None:
    r = renders[values]
    sa = one(r.objects, "ServiceAccount")
    assert sa["metadata"]["name"] == r.values["stepRunner"]["serviceAccount"]["name"] == "vdimport-step-runner"
    assert sa["metadata"]["namespace"] == NAMESPACE
    assert sa["metadata"].get("annotations", {}) == r.values["stepRunner"]["serviceAccount"]["annotations"]
    # The step pods opt in to the token themselves (their own setting wins); no other pod gets it by default.
    assert sa["automountServiceAccountToken"] is False


@pytest.mark.parametrize("values", VALUES)
def test_role_grants_exactly_what_the_pod_operator_needs_and_nothing_cluster_wide(renders: dict[str, Render], values: str) -> None:
    objects = renders[values].objects
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""] and "resourceNames" not in rule
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert granted == KPO_RULES
    assert "*" not in json.dumps(role["rules"])


@pytest.mark.parametrize("values", VALUES)
def test_role_binding_binds_the_airflow_task_pods_service_accounts(renders: dict[str, Render], values: str) -> None:
    r = renders[values]
    binding = one(r.objects, "RoleBinding")
    assert binding["metadata"]["namespace"] == NAMESPACE
    role = one(r.objects, "Role")["metadata"]["name"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role}
    airflow_ns = r.values["airflow"]["namespace"]
    expected = [
        {"kind": "ServiceAccount", "name": s["name"], "namespace": s.get("namespace") or airflow_ns} for s in r.values["rbac"]["subjects"]
    ]
    assert binding["subjects"] == expected
    if values == "default":
        assert expected == [{"kind": "ServiceAccount", "name": "airflow-worker", "namespace": "airflow"}]


# --- the step pods' ConfigMap against the step runner -----------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_step_configmap_holds_only_names_the_step_runner_or_the_oci_sdk_reads(renders: dict[str, Render], values: str) -> None:
    data = step_configmap(renders[values])
    for name in SDK_ENV:
        assert getattr(rp_signer, name) == name  # the SDK's own constant: the signer reads this variable
    unknown = set(data) - worker_env_names() - SDK_ENV
    assert not unknown, f"the step runner reads none of {sorted(unknown)}"
    assert all(isinstance(value, str) for value in data.values())


@pytest.mark.parametrize("values", EXAMPLES)
def test_step_runner_accepts_the_example_configmap_as_the_values_say(renders: dict[str, Render], values: str) -> None:
    """The rendered env parses with the step runner's own config into exactly the chart's values."""
    r = renders[values]
    data = step_configmap(r)
    config = worker_config.WorkerConfig.from_env(data)
    oci_values, vm = r.values["oci"], r.values["workerVm"]
    assert config.auth == oci_values["auth"] and oci_values["auth"] in worker_config.AUTH_MODES
    assert config.region == oci_values["region"]
    assert (config.compartment_id, config.subnet_id) == (oci_values["compartmentId"], oci_values["subnetId"])
    assert config.work_bucket == (oci_values["workBucketName"] or None) and config.work_bucket != oci_values["bucketName"]
    assert config.worker_image_id == (vm["imageId"] or None)
    assert (config.worker_shape, config.worker_ocpus, config.worker_memory_gb) == (vm["shape"], vm["ocpus"], vm["memoryGb"])
    assert (config.write_vpus_per_gb, config.download_streams) == (vm["writeVpusPerGb"], vm["downloadStreams"])
    assert config.max_volume_gb == r.values["maxVolumeGb"]
    defaults = worker_config.Deadlines()
    for name in worker_config.DEADLINE_NAMES:
        assert getattr(config.deadlines, name) == r.values["deadlineSeconds"].get(name, getattr(defaults, name))
    for name, value in r.values["extraEnv"].items():
        assert data[name] == env_text(value)
    if oci_values["auth"] == "workload_identity":
        assert data["OCI_RESOURCE_PRINCIPAL_VERSION"] == "2.2" and data["OCI_RESOURCE_PRINCIPAL_REGION"] == oci_values["region"]


def test_default_values_leave_exactly_the_required_ocids_unset(renders: dict[str, Render]) -> None:
    """With the defaults the step runner refuses to start, naming what NOTES.txt asks for."""
    with pytest.raises(worker_config.ConfigError) as refused:
        worker_config.WorkerConfig.from_env(step_configmap(renders["default"]))
    assert str(refused.value) == "VDIMPORT_COMPARTMENT_ID is not set (an OCID); VDIMPORT_SUBNET_ID is not set (an OCID)"
    assert "NOT READY" in renders["default"].text[NOTES]
    assert "oci.compartmentId, oci.subnetId, oci.region" in renders["default"].text[NOTES]


def test_schema_allows_only_auth_modes_a_step_pod_can_use() -> None:
    """config_file needs a mounted OCI config the DAG's pods do not have; resource_principal is for Functions."""
    modes = schema()["properties"]["oci"]["properties"]["auth"]["enum"]
    assert set(modes) <= set(worker_config.AUTH_MODES)
    assert modes == ["workload_identity", "instance_principal"]


# --- the DAG's settings ConfigMap against the DAG ---------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_dag_settings_configmap_holds_only_dag_setting_names(renders: dict[str, Render], values: str) -> None:
    cm = dag_configmap(renders[values])
    assert cm["metadata"]["name"] == DAG_SETTINGS_CONFIGMAP
    assert cm["metadata"]["namespace"] == renders[values].values["airflow"]["namespace"]
    unknown = set(cm["data"]) - dag_env_names() - {POOL_SLOTS, KUBERNETES_CONN_ENV}
    assert not unknown, f"not DAG settings: {sorted(unknown)}"
    assert not {name for name in cm["data"] if name.startswith("VDIMPORT_LOCAL_")}


@pytest.mark.parametrize("values", VALUES)
def test_dag_reads_the_names_the_chart_creates(renders: dict[str, Render], values: str) -> None:
    """One definition: the DAG's settings name the very ServiceAccount, ConfigMap and namespace the chart renders."""
    r = renders[values]
    data = dag_configmap(r)["data"]
    settings = load_settings(env=data, variable=dict)
    image = r.values["stepRunner"]["image"]
    assert settings.step_runner == "kubernetes"
    assert settings.pod_namespace == NAMESPACE
    assert settings.pod_service_account == one(r.objects, "ServiceAccount")["metadata"]["name"]
    assert settings.pod_configmap == r.values["stepRunner"]["configMap"]["name"]
    assert configmap(r.objects, settings.pod_configmap)["metadata"]["namespace"] == settings.pod_namespace
    tag = image["tag"] or yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    expected_image = f"{image['repository']}@{image['digest']}" if image["digest"] else f"{image['repository']}:{tag}"
    assert settings.pod_image == expected_image
    assert settings.pod_image_pull_policy == image["pullPolicy"]
    assert settings.pod_image_pull_secrets == tuple(image["pullSecrets"])
    assert settings.step_pool == r.values["dag"]["stepPool"]["name"]
    assert int(data[POOL_SLOTS]) == r.values["dag"]["stepPool"]["slots"]
    assert settings.max_worker_vms == r.values["dag"]["maxWorkerVms"]
    if r.values["stepRunner"]["resources"]:
        assert settings.pod_resources == r.values["stepRunner"]["resources"]
    else:
        assert settings.pod_resources == DagSettings().pod_resources
    for name, value in r.values["dag"]["extraSettings"].items():
        assert data[name] == env_text(value)


def test_dag_settings_follow_the_release_namespace() -> None:
    """Installed elsewhere, the step pods' namespace in the DAG's settings moves with the release."""
    objects = manifests(render(user_values("example"), namespace="disk-imports"))
    assert configmap(objects, DAG_SETTINGS_CONFIGMAP)["data"]["VDIMPORT_POD_NAMESPACE"] == "disk-imports"
    assert {o["metadata"]["namespace"] for o in objects if o["metadata"]["name"] != DAG_SETTINGS_CONFIGMAP} == {"disk-imports"}


def test_extra_dag_settings_accept_every_other_dag_setting_and_nothing_the_chart_sets() -> None:
    """A DAG setting added later must be either set by the chart or allowed in dag.extraSettings."""
    allowed = set(schema()["properties"]["dag"]["properties"]["extraSettings"]["propertyNames"]["enum"])
    private = user_values("private-registry")
    rendered = set(dag_configmap_of(private)["data"])
    set_by_chart = rendered - set(private["dag"]["extraSettings"]) - {POOL_SLOTS, KUBERNETES_CONN_ENV}
    local_only = {name for name in dag_env_names() if name.startswith("VDIMPORT_LOCAL_")}
    assert not allowed & set_by_chart
    assert allowed | set_by_chart == dag_env_names() - local_only


def dag_configmap_of(values: dict[str, Any]) -> dict[str, Any]:
    return configmap(manifests(render(values)), DAG_SETTINGS_CONFIGMAP)


# --- NetworkPolicy --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_network_policy_selects_every_step_pod_and_admits_no_ingress(renders: dict[str, Render], values: str) -> None:
    r = renders[values]
    policy = one(r.objects, "NetworkPolicy")
    selector = policy["spec"]["podSelector"]
    assert set(selector) == {"matchLabels"}
    for step in STEP_ORDER:
        labels = step_labels(step)
        assert selector["matchLabels"].items() <= labels.items(), step
    # Everything the DAG's labels fix for all steps and runs, so nothing else in the namespace is caught.
    static = {k: v for k, v in step_labels(STEP_ORDER[0]).items() if "{{" not in v and k != "vdimport/step"}
    assert selector["matchLabels"] == static
    assert sorted(policy["spec"]["policyTypes"]) == ["Egress", "Ingress"]
    assert not policy["spec"].get("ingress")


@pytest.mark.parametrize("values", VALUES)
def test_network_policy_egress_is_dns_https_and_the_auth_endpoint_only(renders: dict[str, Render], values: str) -> None:
    r = renders[values]
    egress = one(r.objects, "NetworkPolicy")["spec"]["egress"]
    by_port = {tuple(sorted((p["protocol"], p["port"]) for p in rule["ports"])): rule["to"] for rule in egress}
    dns_values = r.values["networkPolicy"]["dns"]
    assert by_port.pop((("TCP", 53), ("UDP", 53))) == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns_values["namespace"]}},
            "podSelector": {"matchLabels": dns_values["podLabels"]},
        }
    ]
    assert by_port.pop((("TCP", 443),)) == [{"ipBlock": {"cidr": c}} for c in r.values["networkPolicy"]["egressCidrs"]]
    assert r.values["oci"]["auth"] == "workload_identity"
    assert by_port == {(("TCP", 12250),): [{"ipBlock": {"cidr": c}} for c in r.values["networkPolicy"]["kubernetesApiCidrs"]]}


def test_network_policy_for_instance_principals_allows_the_metadata_service_instead() -> None:
    objects = manifests(render(deep_merge(user_values("example"), {"oci": {"auth": "instance_principal"}})))
    ports = {(p["protocol"], p["port"]): rule["to"] for rule in one(objects, "NetworkPolicy")["spec"]["egress"] for p in rule["ports"]}
    assert ports[("TCP", 80)] == [{"ipBlock": {"cidr": "169.254.169.254/32"}}]
    assert ("TCP", 12250) not in ports
    assert not {k for k in configmap(objects, "vdimport-step-runner")["data"] if k.startswith("OCI_RESOURCE_PRINCIPAL")}


def test_switches_leave_out_what_they_turn_off() -> None:
    values = {
        "networkPolicy": {"enabled": False},
        "rbac": {"create": False},
        "dag": {"settingsConfigMap": {"create": False}},
        "stepRunner": {"serviceAccount": {"create": False}},
    }
    objects = manifests(render(deep_merge(user_values("example"), values)))
    assert [(o["kind"], o["metadata"]["name"]) for o in objects] == [("ConfigMap", "vdimport-step-runner")]


# --- values.schema.json and the template's own checks -----------------------------------------

BAD_VALUES = [
    ("compartment-ocid-of-another-kind", {"oci": {"compartmentId": "ocid1.subnet.oc1.iad.aaaa"}}, "/oci/compartmentId"),
    ("subnet-ocid-of-another-kind", {"oci": {"subnetId": "ocid1.vcn.oc1.iad.aaaa"}}, "/oci/subnetId"),
    ("worker-image-not-an-ocid", {"workerVm": {"imageId": "Oracle-Linux-9"}}, "/workerVm/imageId"),
    ("region-display-name", {"oci": {"region": "US East (Ashburn)"}}, "/oci/region"),
    ("auth-mode-pods-cannot-use", {"oci": {"auth": "config_file"}}, "/oci/auth"),
    ("top-level-typo", {"networkPolicies": {"enabled": False}}, "networkPolicies"),
    ("nested-typo", {"stepRunner": {"image": {"pullpolicy": "Always"}}}, "pullpolicy"),
    ("negative-max-worker-vms", {"dag": {"maxWorkerVms": -1}}, "/dag/maxWorkerVms"),
    ("fractional-max-worker-vms", {"dag": {"maxWorkerVms": 2.5}}, "/dag/maxWorkerVms"),
    ("bad-image-pull-policy", {"stepRunner": {"image": {"pullPolicy": "Sometimes"}}}, "/stepRunner/image/pullPolicy"),
    ("digest-that-is-a-tag", {"stepRunner": {"image": {"digest": "latest"}}}, "/stepRunner/image/digest"),
    ("service-account-not-a-dns-name", {"stepRunner": {"serviceAccount": {"name": "Step_Runner"}}}, "/stepRunner/serviceAccount/name"),
    ("vpus-off-the-10-grid", {"workerVm": {"writeVpusPerGb": 35}}, "/workerVm/writeVpusPerGb"),
    ("too-few-ocpus", {"workerVm": {"ocpus": 0.5}}, "/workerVm/ocpus"),
    ("unknown-deadline", {"deadlineSeconds": {"download": 600}}, "download"),
    ("zero-deadline", {"deadlineSeconds": {"launch": 0}}, "/deadlineSeconds/launch"),
    ("extra-setting-the-chart-owns", {"dag": {"extraSettings": {"VDIMPORT_STEP_RUNNER": "local"}}}, "VDIMPORT_STEP_RUNNER"),
    ("extra-env-not-a-variable-name", {"extraEnv": {"poll-max": "5"}}, "poll-max"),
    ("cidr-without-prefix", {"networkPolicy": {"egressCidrs": ["0.0.0.0"]}}, "/networkPolicy/egressCidrs/0"),
    ("no-rbac-subjects", {"rbac": {"subjects": []}}, "/rbac/subjects"),
    ("pool-slots-zero", {"dag": {"stepPool": {"slots": 0}}}, "/dag/stepPool/slots"),
    ("volume-cap-below-oci-minimum", {"maxVolumeGb": 10}, "/maxVolumeGb"),
    ("work-bucket-not-a-bucket-name", {"oci": {"workBucketName": "work bucket"}}, "/oci/workBucketName"),
    ("xcom-sidecar-image-without-tag-or-digest", {"airflow": {"xcomSidecarImage": "alpine"}}, "/airflow/xcomSidecarImage"),
    ("xcom-sidecar-image-with-a-space", {"airflow": {"xcomSidecarImage": "alpine:3.24.2 "}}, "/airflow/xcomSidecarImage"),
]


@pytest.mark.parametrize(("override", "field"), [case[1:] for case in BAD_VALUES], ids=[case[0] for case in BAD_VALUES])
def test_schema_rejects_bad_values_naming_the_field(override: dict[str, Any], field: str) -> None:
    """`helm template` and `helm lint` both refuse the values, and the message says which one is wrong."""
    values = deep_merge(user_values("example"), override)
    with pytest.raises(helm.HelmValuesError) as refused:
        render(values)
    assert "schema" in str(refused.value) and field in str(refused.value)
    report = lint(values)
    assert any(field in error for error in report["errors"]), report["errors"]


TEMPLATE_CHECKS = [
    (
        "pool-smaller-than-the-vm-cap",
        {"dag": {"maxWorkerVms": 6, "stepPool": {"slots": 4}}},
        "dag.stepPool.slots (4) is below dag.maxWorkerVms (6)",
    ),
    ("extra-env-shadowing-a-value", {"extraEnv": {"VDIMPORT_SUBNET_ID": "ocid1.subnet.oc1.iad.b"}}, "extraEnv.VDIMPORT_SUBNET_ID"),
    ("work-bucket-is-the-upload-bucket", {"oci": {"workBucketName": "vdimport-images"}}, 'both "vdimport-images"'),
    (
        "pinned-sidecar-with-another-connection",
        {"dag": {"extraSettings": {"VDIMPORT_POD_KUBERNETES_CONN_ID": "my_cluster"}}},
        'VDIMPORT_POD_KUBERNETES_CONN_ID is "my_cluster"',
    ),
    (
        "both-configmaps-one-name",
        {"airflow": {"namespace": "vdimport"}, "dag": {"settingsConfigMap": {"name": "vdimport-step-runner"}}},
        'both "vdimport-step-runner"',
    ),
]


@pytest.mark.parametrize(("override", "message"), [case[1:] for case in TEMPLATE_CHECKS], ids=[case[0] for case in TEMPLATE_CHECKS])
def test_combinations_the_schema_cannot_express_fail_the_render(override: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(deep_merge(user_values("example"), override))


def test_the_schema_accepts_its_bounds() -> None:
    """The extremes the schema allows are ones the step runner and the DAG accept too."""
    values = deep_merge(
        user_values("example"),
        {
            "workerVm": {"ocpus": 64, "memoryGb": 1024, "writeVpusPerGb": 120, "downloadStreams": 64},
            "deadlineSeconds": dict.fromkeys(worker_config.DEADLINE_NAMES, 86400),
            "dag": {"maxWorkerVms": 1000, "stepPool": {"slots": 1000}},
        },
    )
    objects = manifests(render(values))
    worker_config.WorkerConfig.from_env(configmap(objects, "vdimport-step-runner")["data"])
    assert load_settings(env=configmap(objects, DAG_SETTINGS_CONFIGMAP)["data"], variable=dict).max_worker_vms == 1000


# --- NOTES.txt and documentation ------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES)
def test_notes_say_how_to_upload_where_to_look_and_how_to_retry(renders: dict[str, Render], values: str) -> None:
    r = renders[values]
    notes = r.text[NOTES]
    bucket = r.values["oci"]["bucketName"] or "<bucket>"
    assert f'oci os object put --bucket-name {bucket} --file disk.qcow2 --metadata \'{{"ad_number":"2"}}\'' in notes
    selector = ",".join(f"{k}={v}" for k, v in one(r.objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"].items() if "name" in k)
    assert f"kubectl logs -n {NAMESPACE} -l {selector},vdimport/step=write_image" in notes
    assert step_labels("write_image")["vdimport/step"] == "write_image"
    assert "virtual_disk_import" in notes and "Clear" in notes
    assert f"configMapRef {DAG_SETTINGS_CONFIGMAP}" in notes
    assert ("NOT READY" in notes) == (values == "default")


def _leaf_paths(values: dict[str, Any], node_schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of the values a user sets (free-form maps and lists count as one value)."""
    paths = []
    for key, value in values.items():
        sub = node_schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and value and "properties" in sub:
            paths += _leaf_paths(value, sub, f"{prefix}{key}.")
        else:
            paths.append(f"{prefix}{key}")
    return paths


def test_every_value_is_commented_in_values_yaml_and_listed_in_the_readme() -> None:
    text = (CHART / "values.yaml").read_text()
    leaves = set(_leaf_paths(yaml.safe_load(text), schema()))
    commented: set[str] = set()
    stack: list[tuple[int, str]] = []
    previous = ""
    for line in text.splitlines():
        match = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if match:
            indent = len(match.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, match.group(2)))
            if previous.lstrip().startswith("#"):
                commented.add(".".join(key for _, key in stack))
        if line.strip():
            previous = line
    assert leaves - commented == set()
    readme = (CHART / "README.md").read_text()
    table = set(re.findall(r"^\| `([\w.-]+)` \|", readme, re.MULTILINE))
    assert table == leaves


def test_numbers_reach_the_configmaps_as_written() -> None:
    """YAML numbers arrive in templates as floats; 2000000 must not become "2e+06" nor 0.5 "0"."""
    values = deep_merge(user_values("example"), {"extraEnv": {"VDIMPORT_POLL_MAX_SECONDS": 0.5, "OCI_SDK_BIG_NUMBER": 2000000}})
    data = configmap(manifests(render(values)), "vdimport-step-runner")["data"]
    assert (data["VDIMPORT_POLL_MAX_SECONDS"], data["OCI_SDK_BIG_NUMBER"], data["VDIMPORT_WORKER_OCPUS"]) == ("0.5", "2000000", "2")
