"""charts/airflow/values.yaml: the official chart's keys, and one definition of the DAG's names.

The values are validated against the official chart's own values.schema.json (vendored, see
schemas/README.md), then the settings that matter are checked one by one: executor, git-sync,
secrets by name, the API server's load balancer, and the contract with the vdimport chart
(the ConfigMap it renders is referenced, its names are not repeated, the pool is created
from its env vars).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploykit import (
    AIRFLOW_CHART_SCHEMA,
    AIRFLOW_CHART_SCHEMA_SHA256,
    AIRFLOW_README,
    AIRFLOW_RELEASE,
    AIRFLOW_VALUES,
    REPO,
    VDIMPORT_VALUES,
    dig,
    load_yaml,
    schema,
    schema_errors,
    sha256,
    unknown_keys,
)

sys.path.insert(0, str(REPO / "dags"))
from vdimport_dag.settings import load_settings


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    return load_yaml(AIRFLOW_VALUES)


@pytest.fixture(scope="module")
def vdimport() -> dict[str, Any]:
    return load_yaml(VDIMPORT_VALUES)


@pytest.fixture(scope="module")
def readme() -> str:
    """README.md with its line breaks folded, so phrases can be found across them."""
    return " ".join(AIRFLOW_README.read_text(encoding="utf-8").split())


def test_vendored_chart_schema_is_the_recorded_copy() -> None:
    """The schema everything below trusts is byte for byte the released chart's."""
    assert sha256(AIRFLOW_CHART_SCHEMA) == AIRFLOW_CHART_SCHEMA_SHA256


def test_values_validate_against_the_official_chart_schema(values: dict[str, Any]) -> None:
    """What `helm install` itself checks (types, enums, closed sections) before rendering."""
    assert schema_errors(values, AIRFLOW_CHART_SCHEMA) == []


def test_every_key_is_a_key_of_the_official_chart(values: dict[str, Any]) -> None:
    """A misspelt key where the schema stays open (the top level) would be silently ignored."""
    assert unknown_keys(values, schema(AIRFLOW_CHART_SCHEMA)) == []


def test_unknown_key_check_catches_a_typo(values: dict[str, Any]) -> None:
    """The check above is not vacuous: a typo of a top-level secret key is reported."""
    assert unknown_keys({**values, "fernetKeySecret": "x"}, schema(AIRFLOW_CHART_SCHEMA)) == ["fernetKeySecret"]


def test_executor_is_kubernetes_and_airflow_is_the_tested_version(values: dict[str, Any]) -> None:
    """One pod per task; and the cluster runs the Airflow the DAG is tested with here."""
    assert values["executor"] == "KubernetesExecutor"
    assert values["defaultAirflowTag"] == values["airflowVersion"] == version("apache-airflow")


def test_dags_come_from_git_sync_of_this_repositorys_dags_folder(values: dict[str, Any]) -> None:
    """git-sync's subPath must be the folder holding the DAG file and its helper package."""
    git = dig(values, "dags.gitSync")
    assert git["enabled"] is True
    assert re.match(r"^(https://|ssh://|git@)\S+$", git["repo"]), git["repo"]
    assert (REPO / git["subPath"] / "virtual_disk_import.py").is_file()
    assert (REPO / git["subPath"] / "vdimport_dag" / "settings.py").is_file()
    assert git["ref"] and git["depth"] == 1


def test_secrets_are_referenced_by_name_never_generated_or_inline(values: dict[str, Any], readme: str) -> None:
    """Named secrets survive `helm upgrade`; inline or generated ones would be replaced."""
    named = {
        "fernetKeySecretName": "fernet-key",
        "jwtSecretName": "jwt-secret",
        "apiSecretKeySecretName": "api-secret-key",
        "data.metadataSecretName": "connection",
        "postgresql.auth.existingSecret": "postgres-password",
    }
    for key, secret_key in named.items():
        name = dig(values, key)
        assert isinstance(name, str) and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), key
        # README gives the kubectl command that creates it, with the key the chart reads.
        assert re.search(rf"create secret generic {re.escape(name)} (\\ )?--from-literal={re.escape(secret_key)}=", readme), name
    for inline in ("fernetKey", "jwtSecret", "apiSecretKey", "webserverSecretKey", "webserverSecretKeySecretName"):
        assert values.get(inline) is None, inline
    assert "metadataConnection" not in values["data"]
    assert not {"postgresPassword", "password"} & set(values["postgresql"]["auth"])


def test_no_secret_value_is_written_into_the_values(values: dict[str, Any]) -> None:
    """Keys that hold credentials may only name a secret or an env var, never carry a value."""

    def walk(node: Any, path: str) -> list[str]:
        if isinstance(node, dict):
            return [hit for key, value in node.items() for hit in walk(value, f"{path}.{key}".lstrip("."))]
        if isinstance(node, list):
            return [hit for i, value in enumerate(node) for hit in walk(value, f"{path}[{i}]")]
        leaf = path.rsplit(".", 1)[-1].lower()
        names_a_secret = re.search(r"name$|^existing", leaf)
        if re.search(r"pass(word)?$|secret$|token$|fernetkey$|sshkey$", leaf) and not names_a_secret and node not in (None, ""):
            return [path]
        if isinstance(node, str) and re.search(r"(-p|--password)\s+['\"]?(?!\$)\w", node):
            return [path]
        return []

    assert walk(values, "") == []


def test_api_server_is_an_internal_oci_load_balancer_for_the_function_subnet(values: dict[str, Any]) -> None:
    """Private IP only, and the NSG the cloud controller makes admits only the given CIDRs."""
    service = dig(values, "apiServer.service")
    notes = service["annotations"]
    assert service["type"] == "LoadBalancer"
    assert notes["oci.oraclecloud.com/load-balancer-type"] == "lb"
    assert notes["service.beta.kubernetes.io/oci-load-balancer-internal"] == "true"
    assert notes["service.beta.kubernetes.io/oci-load-balancer-shape"] == "flexible"
    low = int(notes["service.beta.kubernetes.io/oci-load-balancer-shape-flex-min"])
    high = int(notes["service.beta.kubernetes.io/oci-load-balancer-shape-flex-max"])
    assert 10 <= low <= high
    # Mode None: the stack's own NSG (Terraform, network.tf) is attached by annotation; in NSG
    # mode the cloud controller's identity needs IAM grants for NSGs that nothing gives it,
    # and the load balancer stayed pending (issue 16, item 4).
    assert notes["oci.oraclecloud.com/security-rule-management-mode"] == "None"
    assert "oci.oraclecloud.com/oci-network-security-groups" not in notes, "the NSG's OCID comes from Terraform"
    ranges = [ipaddress.ip_network(cidr) for cidr in service["loadBalancerSourceRanges"]]
    assert ranges and all(r.prefixlen > 0 and r.is_private for r in ranges), ranges


def test_dag_settings_come_only_from_the_vdimport_configmap(values: dict[str, Any], vdimport: dict[str, Any]) -> None:
    """Every Airflow container loads the ConfigMap the vdimport chart renders, by that name."""
    refs = yaml.safe_load(values["extraEnvFrom"])
    name = dig(vdimport, "dag.settingsConfigMap.name")
    assert refs[0] == {"configMapRef": {"name": name}}  # not optional: missing means wait, not defaults
    # ... and only the optional Secret of the remote task logs besides (Terraform's tasklogs.tf)
    assert refs[1:] == [{"secretRef": {"name": "airflow-remote-logs", "optional": True}}]
    assert not any(str(e.get("name", "")).startswith("VDIMPORT_") for e in values.get("env", []))


def test_values_repeat_none_of_the_names_the_vdimport_chart_defines(vdimport: dict[str, Any]) -> None:
    """Pool, ServiceAccount and step ConfigMap have one definition: charts/vdimport/values.yaml."""
    text = AIRFLOW_VALUES.read_text(encoding="utf-8")
    for key in ("dag.stepPool.name", "stepRunner.serviceAccount.name", "stepRunner.configMap.name"):
        name = dig(vdimport, key)
        assert name and name != "default_pool"
        assert not re.search(rf"(?<![-\w]){re.escape(name)}(?![-\w])", text), f"{key} ({name}) repeated in {AIRFLOW_VALUES.name}"


def _fake_airflow(tmp_path: Path) -> Path:
    """A stand-in `airflow` on PATH that records its argv, one call per line."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "airflow"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\t" "$a"; done >> "$CALLS"\necho >> "$CALLS"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return bin_dir


def _run_dag_processor(
    values: dict[str, Any], tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    """The dag-processor container's args, run with bash and a recording `airflow`."""
    args = dig(values, "dagProcessor.args")
    assert args[:2] == ["bash", "-c"] and len(args) == 3
    assert "{{" not in args[2]  # the chart runs args through `tpl`
    calls = tmp_path / "calls"
    run_env = {"PATH": f"{_fake_airflow(tmp_path)}{os.pathsep}{os.environ['PATH']}", "CALLS": str(calls), **env}
    done = subprocess.run(args, env=run_env, capture_output=True, text=True, timeout=30)
    recorded = [line.rstrip("\t").split("\t") for line in calls.read_text().splitlines()] if calls.exists() else []
    return done, recorded


def test_dag_processor_sets_the_pool_from_the_configmaps_env_then_starts(values: dict[str, Any], tmp_path: Path) -> None:
    """The pool's name and slots are whatever the vdimport chart put into the ConfigMap, set
    each time the dag-processor starts (so a restart applies a changed setting), then the
    chart's own command runs in its place (exec)."""
    done, calls = _run_dag_processor(values, tmp_path, {"VDIMPORT_STEP_POOL": "pool from env", "VDIMPORT_STEP_POOL_SLOTS": "7"})
    assert done.returncode == 0, done.stderr
    assert calls == [["pools", "set", "pool from env", "7", "vdimport step pods"], ["dag-processor"]]
    assert dig(values, "dagProcessor.args")[2].splitlines()[-1] == "exec airflow dag-processor"  # the chart's default command


@pytest.mark.parametrize("missing", ["VDIMPORT_STEP_POOL", "VDIMPORT_STEP_POOL_SLOTS"])
def test_dag_processor_fails_before_touching_the_db_without_the_pool_settings(values: dict[str, Any], tmp_path: Path, missing: str) -> None:
    """A ConfigMap without the pool keys fails the dag-processor with a cause, not a pool named ''."""
    env = {"VDIMPORT_STEP_POOL": "p", "VDIMPORT_STEP_POOL_SLOTS": "3"}
    del env[missing]
    done, calls = _run_dag_processor(values, tmp_path, env)
    assert done.returncode != 0
    assert missing in done.stderr and "vdimport-dag-settings" in done.stderr
    assert calls == []


def test_pool_command_is_valid_airflow_cli_syntax(values: dict[str, Any]) -> None:
    """Airflow's own parser accepts the `pools set` call the dag-processor makes (positional NAME SLOTS DESCRIPTION)."""
    from airflow.cli.cli_parser import get_parser

    line = next(x for x in dig(values, "dagProcessor.args")[2].splitlines() if "pools set" in x)
    line = line.replace('"$VDIMPORT_STEP_POOL_SLOTS"', "8").replace('"$VDIMPORT_STEP_POOL"', "vdimport-steps")
    words = shlex.split(line)
    argv = words[words.index("airflow") + 1 :]
    parsed = get_parser().parse_args(argv)
    assert (parsed.pool, str(parsed.slots), parsed.description) == ("vdimport-steps", "8", "vdimport step pods")


def test_pool_env_vars_are_the_ones_the_dag_and_the_vdimport_chart_use() -> None:
    """The DAG reads VDIMPORT_STEP_POOL; the vdimport chart's ConfigMap sets both variables."""
    assert load_settings({"VDIMPORT_STEP_POOL": "from-env"}, variable=dict).step_pool == "from-env"
    template = "\n".join(p.read_text(encoding="utf-8") for p in sorted((REPO / "charts" / "vdimport" / "templates").iterdir()))
    for name in ("VDIMPORT_STEP_POOL", "VDIMPORT_STEP_POOL_SLOTS", "VDIMPORT_POD_SERVICE_ACCOUNT", "VDIMPORT_POD_CONFIGMAP"):
        assert re.search(rf"\b{name}\b", template), name


def worker_service_account(values: dict[str, Any], release: str) -> str:
    """The ServiceAccount of the KubernetesExecutor's task pods, as chart 1.22's helpers name it."""
    workers = values.get("workers", {})
    dedicated = workers.get("kubernetes", {}).get("serviceAccount", {})
    if dedicated.get("create") in (True, False):
        sa, suffix = dedicated, "worker-kubernetes"
    else:
        sa, suffix = workers.get("serviceAccount", {}), "worker"
    if not sa.get("create", True):
        return sa.get("name") or "default"
    if sa.get("name"):
        return sa["name"]
    prefix = values.get("fullnameOverride") or (release if "airflow" in release else f"{release}-airflow")
    return f"{prefix}-{suffix}"


def test_task_pods_service_account_is_the_vdimport_rolebindings_subject(values: dict[str, Any], vdimport: dict[str, Any]) -> None:
    """The step pods are created by Airflow's task pods: that ServiceAccount needs the RoleBinding."""
    name = worker_service_account(values, AIRFLOW_RELEASE)
    assert name == "airflow-worker"
    subjects = dig(vdimport, "rbac.subjects")
    assert any(s["name"] == name and s.get("namespace", dig(vdimport, "airflow.namespace")) == "airflow" for s in subjects), subjects
    assert worker_service_account(values, "prod") == "prod-airflow-worker"  # README's naming rule


def test_the_login_is_created_from_a_secret(values: dict[str, Any]) -> None:
    """The function's Airflow user comes from a pre-created secret, not the chart's admin/admin."""
    job = values["createUserJob"]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in job["env"]}
    assert {r["name"] for r in refs.values()} == {"airflow-api-user"}
    script = job["args"][2]
    for var, key in (("AIRFLOW_USER_USERNAME", "username"), ("AIRFLOW_USER_PASSWORD", "password")):
        assert refs[var]["key"] == key and f'os.environ["{var}"]' in script
    assert "{{" not in script  # the chart templates these args
    # The function only triggers runs: under the chart's FAB auth manager its login gets the
    # custom role vdimport-trigger, never a built-in role (User may delete runs and edit every
    # DAG; Admin/Op could edit the pods' connection). tests/function/test_fab_role.py runs this
    # script against a real Airflow with FAB and checks what the login may and may not do.
    assert 'ROLE, DAG = "vdimport-trigger", "virtual_disk_import"' in script
    assert "sm.add_user(" in script and "user.roles = [role]" in script
    for builtin in ("Admin", "Op", "User", "Viewer"):
        assert not re.search(rf"[\"']{builtin}[\"']|--role {builtin}\b", script), builtin
    assert "can_delete" not in script


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "": 1}
    number, unit = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * units[unit]


@pytest.mark.parametrize(
    "component",
    [
        "scheduler",
        "apiServer",
        "dagProcessor",
        "triggerer",
        "workers.kubernetes",
        "migrateDatabaseJob",
        "createUserJob",
        "dags.gitSync",
        "postgresql.primary",
    ],
)
def test_each_running_component_has_requests_and_a_memory_limit(values: dict[str, Any], component: str) -> None:
    """Sized for a small cluster: requested resources fit, and no component can eat a node."""
    resources = dig(values, f"{component}.resources")
    requests, limits = resources["requests"], resources["limits"]
    assert set(requests) == {"cpu", "memory"} and "memory" in limits
    assert _quantity(requests["cpu"]) <= 0.5 and _quantity(limits["memory"]) <= 2 * 2**30
    assert _quantity(requests["memory"]) <= _quantity(limits["memory"])


def test_readme_documents_the_alternatives_the_issue_asks_for(readme: str) -> None:
    """Baked-image DAGs, OCI Database with PostgreSQL, remote logs to Object Storage."""
    assert "images.airflow.repository" in readme and "dags.gitSync.enabled: false" in readme
    assert "OCI Database with PostgreSQL" in readme and "postgresql.enabled=false" in readme
    assert "AIRFLOW__LOGGING__REMOTE_LOGGING=True" in readme and "compat.objectstorage" in readme
    for key in ("AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER", "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID", "airflow-remote-logs"):
        assert key in readme
    assert re.search(r"`?airflow-worker`?", readme)


def test_no_job_is_a_helm_hook_so_wait_cannot_deadlock(values: dict[str, Any]) -> None:
    """Terraform's helm_release waits (wait = true), as does `helm install --wait`: the pods'
    wait-for-airflow-migrations init containers would wait for a post-install hook that Helm
    starts only after the wait. The chart's docs ("Installing the Chart with Argo CD, Flux,
    Rancher or Terraform"): `useHelmHooks: false` and `applyCustomEnv: false` on both jobs (an
    unchanged Job spec is never "field is immutable" on an upgrade)."""
    assert values["migrateDatabaseJob"]["useHelmHooks"] is False
    assert values["createUserJob"]["useHelmHooks"] is False
    assert values["createUserJob"]["applyCustomEnv"] is False
    assert "VDIMPORT" not in json.dumps(values["createUserJob"].get("env")), "the create-user job needs no vdimport setting"
    assert values["migrateDatabaseJob"]["applyCustomEnv"] is False
    assert "args" not in values["migrateDatabaseJob"], "the chart's own migration command"


def test_the_auth_manager_is_pinned_to_the_one_the_login_is_tested_with(values: dict[str, Any]) -> None:
    """The create-user job's script and the function's login are FAB's; test_fab_role.py runs
    them under local mode's "fab" auth manager, which must be the class the cluster runs."""
    from vdimport_local.airflow import AUTH_MANAGERS

    assert values["config"]["core"]["auth_manager"] == AUTH_MANAGERS["fab"]
    assert "from airflow.providers.fab." in "\n".join(values["createUserJob"]["args"])
