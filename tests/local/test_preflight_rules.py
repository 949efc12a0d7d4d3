"""The parts of ``vdimport-local preflight`` that read text: IAM statements, kubeconfigs, image references.

The statements are terraform/iam.tf's own (every one must parse, and each grant preflight asks
of the step runner must be covered by exactly the statement Terraform writes for it); the
kubeconfig is the shape ``oci ce cluster create-kubeconfig`` writes.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from preflightkit import terraform_iam

from vdimport_local.preflight.checks import split_image
from vdimport_local.preflight.cluster import cluster_id_from_kubeconfig
from vdimport_local.preflight.policy import Grant, covers, holds, missing, parse

C = "ocid1.compartment.oc1..aaaac"
T = "ocid1.tenancy.oc1..aaaat"
WHO = {
    "request.principal.type": "workload",
    "request.principal.namespace": "vdimport",
    "request.principal.service_account": "vdimport-step-runner",
    "request.principal.cluster_id": "ocid1.cluster.oc1.iad.k",
}


def _iam() -> dict[str, list[str]]:
    values = {"var.compartment_ocid": C, "local.import_compartment_id": C, "var.name_prefix": "vd", "var.region": "us-ashburn-1"}
    values |= {"oci_containerengine_cluster.this.id": WHO["request.principal.cluster_id"], "oci_objectstorage_bucket.images.name": "images"}
    values |= {"oci_objectstorage_bucket.work.name": "work", "oci_vault_secret.airflow_api.id": "ocid1.vaultsecret.oc1..s"}
    values |= {"oci_identity_dynamic_group.function.name": "vd-function", "oci_identity_dynamic_group.worker_vms.name": "vd-worker-vms"}
    return terraform_iam(values).policies


def test_every_statement_terraform_writes_parses() -> None:
    statements = [s for group in _iam().values() for s in group]
    assert len(statements) >= 20
    unread = [s for s in statements if parse(s) is None]
    assert unread == []
    subjects = {p.subject.lower() for p in map(parse, statements) if p}
    assert subjects >= {"any-user", "dynamic-group vd-function", "service faas", "service cloudevents"}


def test_each_step_runner_grant_is_covered_by_its_own_terraform_statement() -> None:
    """Removing any one step-runner statement of iam.tf leaves exactly one grant uncovered: no two
    statements stand in for each other, and none is dead weight the requirements do not know."""
    statements = _iam()["oci_identity_policy.step_runner"]
    bucket, work = {**WHO, "target.bucket.name": "images"}, {**WHO, "target.bucket.name": "work"}
    grants = [Grant("any-user", "manage", f, C, WHO) for f in ("instance-family", "volume-family", "instance-agent-command-family")]
    grants += [Grant("any-user", "use", k, C, WHO) for k in ("subnets", "vnics", "private-ips")]
    grants += [Grant("any-user", "read", "objects", C, bucket), Grant("any-user", "read", "buckets", C, bucket)]
    grants += [Grant("any-user", "manage", "buckets", C, {**bucket, "request.permission": "PAR_MANAGE"})]
    grants += [
        Grant("any-user", "manage", "objects", C, work),
        Grant("any-user", "manage", "buckets", C, {**work, "request.permission": "PAR_MANAGE"}),
    ]
    grants += [Grant("any-user", "use", "ons-topics", C, {**WHO, "request.permission": "ONS_TOPIC_PUBLISH"})]  # import_notifications
    assert missing(grants, statements, T) == []
    # "use vnics" appears twice in iam.tf (the worker subnet's compartment and the import compartment),
    # which are the same compartment here, so only the other statements are each load-bearing
    unique = [s for s in statements if statements.count(s) == 1]
    for dropped in unique:
        if "use vnics" in dropped:
            continue
        assert len(missing(grants, [s for s in statements if s != dropped], T)) == 1, dropped


@pytest.mark.parametrize(
    ("statement", "grant", "covered"),
    [
        ("Allow any-user to manage buckets in tenancy", Grant("any-user", "read", "buckets", C), True),
        ("Allow any-user to read buckets in compartment id " + C, Grant("any-user", "use", "buckets", C), False),
        ("Allow any-user to manage all-resources in compartment id " + C, Grant("any-user", "use", "vnics", C), True),
        ("Allow any-user to use vnics in compartment id ocid1.compartment.oc1..other", Grant("any-user", "use", "vnics", C), False),
        ("Allow any-user to use vnics in compartment Imports", Grant("any-user", "use", "vnics", C), False),
        (
            "Allow dynamic-group 'Default'/'vd-function' to read objects in compartment id " + C,
            Grant("dynamic-group vd-function", "read", "objects", C),
            True,
        ),
        # a condition on something the request does not carry: the statement may not apply
        (
            "Allow any-user to read objects in compartment id " + C + " where request.principal.type = 'workload'",
            Grant("any-user", "read", "objects", C),
            False,
        ),
        # another cluster's workload identity grants nothing to ours
        (
            "Allow any-user to read objects in compartment id "
            + C
            + " where all {request.principal.type = 'workload', request.principal.cluster_id = 'other'}",
            Grant("any-user", "read", "objects", C, WHO),
            False,
        ),
        (
            "Allow any-user to read objects in compartment id " + C + " where any {target.bucket.name = 'a', target.bucket.name = 'b'}",
            Grant("any-user", "read", "objects", C, {"target.bucket.name": "b"}),
            True,
        ),
        (
            "Allow any-user to read objects in compartment id " + C + " where target.bucket.name != 'b'",
            Grant("any-user", "read", "objects", C, {"target.bucket.name": "b"}),
            False,
        ),
        ("Allow group Admins to read objects in compartment id " + C, Grant("any-user", "read", "objects", C), False),
    ],
)
def test_statement_coverage(statement: str, grant: Grant, covered: bool) -> None:
    parsed = parse(statement)
    assert parsed is not None
    assert covers(parsed, grant, T) is covered


def test_dynamic_group_matching_rules_as_terraform_writes_them() -> None:
    rule = "ALL {resource.type = 'fnfunc', resource.compartment.id = '" + C + "'}"
    assert holds(rule, {"resource.type": "fnfunc", "resource.compartment.id": C})
    assert not holds(rule, {"resource.type": "fnfunc", "resource.compartment.id": "elsewhere"})
    assert holds("Any {instance.compartment.id = 'x', instance.id = 'y'}", {"instance.compartment.id": "x"})
    assert not holds("tag.vdimport.role.value = 'worker'", {"instance.compartment.id": "x"})


def test_the_cluster_id_is_read_from_an_oke_kubeconfig(tmp_path: Path) -> None:
    """The layout ``oci ce cluster create-kubeconfig`` writes: the exec credential names the cluster."""
    cluster = "ocid1.cluster.oc1.iad.aaaaaaaaexample"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "context-c1",
        "clusters": [{"name": "cluster-c1", "cluster": {"server": "https://10.0.0.3:6443", "certificate-authority-data": "LS0t"}}],
        "contexts": [{"name": "context-c1", "context": {"cluster": "cluster-c1", "user": "user-c1"}}],
        "users": [
            {
                "name": "user-c1",
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "oci",
                        "args": ["ce", "cluster", "generate-token", "--cluster-id", cluster, "--region", "us-ashburn-1"],
                        "env": [],
                    }
                },
            }
        ],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    assert cluster_id_from_kubeconfig(str(path), None) == cluster
    assert cluster_id_from_kubeconfig(str(path), "no-such-context") is None
    assert cluster_id_from_kubeconfig(str(tmp_path / "absent"), None) is None


@pytest.mark.parametrize(
    ("image", "parts"),
    [
        ("iad.ocir.io/ns/vdimport/vdimport-worker:0.1.0", ("iad.ocir.io", "ns/vdimport/vdimport-worker", "0.1.0", None)),
        ("iad.ocir.io/ns/vd/w@sha256:" + "a" * 64, ("iad.ocir.io", "ns/vd/w", None, "sha256:" + "a" * 64)),
        ("localhost:5000/w:1@sha256:" + "b" * 64, ("localhost:5000", "w", "1", "sha256:" + "b" * 64)),
        ("apache/airflow:3.3.2", ("docker.io", "apache/airflow", "3.3.2", None)),
        ("alpine", ("docker.io", "alpine", None, None)),
    ],
)
def test_image_references(image: str, parts: tuple[str, str, str | None, str | None]) -> None:
    assert split_image(image) == parts
    assert re.match(r"^[\w.:-]+$", parts[0])
