"""The checks, in the order an operator would fix them; each says what it found and how to fix it.

Every check reads what is deployed (the charts' ConfigMaps, the bucket, the Events rule, the
function's configuration, the policies) and compares it with what an import needs: what
``terraform/`` creates, written here as requirements so that a stack made by hand or by
another tool is held to the same grants. A check whose input an earlier check could not find
is skipped, naming that check, so one root cause gives one failure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .cloud import Cloud
from .cluster import Cluster, Deployment, cluster_id_from_kubeconfig, registry_hosts
from .policy import Grant, holds, missing

CREATE_EVENT = "com.oraclecloud.objectstorage.createobject"
PROBE = {"vdimport": "preflight"}
OCIR_HOST = re.compile(r"^(?:[a-z0-9-]+\.ocir\.io|ocir\.[a-z0-9-]+\.oci\.oraclecloud\.com)$")


@dataclass(frozen=True)
class Result:
    name: str
    status: str  # ok, warn (works, but look), fail, skip
    detail: str
    fix: str = ""


@dataclass
class Target:
    """Where the deployment is: an OCI config profile and a kubeconfig context, and the names the charts use."""

    oci_config: str
    oci_profile: str = "DEFAULT"
    oci_endpoint: str | None = None
    kubeconfig: str | None = None
    kube_context: str | None = None
    namespace: str = "vdimport"
    airflow_namespace: str = "airflow"
    step_configmap: str = "vdimport-step-runner"
    dag_configmap: str = "vdimport-dag-settings"
    cluster_id: str | None = None
    function_id: str | None = None
    network_compartment: str | None = None  # the worker subnet's compartment (default: the bucket's)


class Skip(Exception):
    """Raised by a check whose input is missing: the check is skipped with this reason."""


@dataclass
class Run:
    """One preflight: the target, the clients, and what earlier checks found for later ones."""

    target: Target
    cloud: Cloud
    cluster: Cluster
    found: dict[str, Any] = field(default_factory=dict)

    def need(self, key: str, check: str) -> Any:
        if self.found.get(key) is None:
            raise Skip(f"needs {check}")
        return self.found[key]


Check = Callable[[Run], Result]
CHECKS: list[tuple[str, Check]] = []


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS.append((name, fn))
        return fn

    return register


def ok(name: str, detail: str) -> Result:
    return Result(name, "ok", detail)


def fail(name: str, detail: str, fix: str) -> Result:
    return Result(name, "fail", detail, fix)


# --- Kubernetes -------------------------------------------------------------------------------
@check("settings")
def settings(run: Run) -> Result:
    t = run.target
    step = run.cluster.config_map(t.namespace, t.step_configmap)
    dag = run.cluster.config_map(t.airflow_namespace, t.dag_configmap)
    absent = [
        f"{ns}/{name}"
        for ns, name, cm in ((t.namespace, t.step_configmap, step), (t.airflow_namespace, t.dag_configmap, dag))
        if cm is None
    ]
    if absent:
        return fail(
            "settings",
            f"ConfigMap {', '.join(absent)} not found",
            "install the vdimport chart first: helm upgrade --install vdimport charts/vdimport -n vdimport ...",
        )
    deployment = Deployment(step or {}, dag or {})
    empty = [k for k in ("VDIMPORT_COMPARTMENT_ID", "VDIMPORT_SUBNET_ID", "VDIMPORT_REGION") if not deployment.step_env.get(k)]
    if not deployment.bucket:
        empty.append("VDIMPORT_REAPER_BUCKETS (oci.bucketName)")
    if empty:
        return fail(
            "settings",
            f"{t.namespace}/{t.step_configmap} has no {', '.join(empty)}",
            "set oci.compartmentId, oci.subnetId, oci.region and oci.bucketName in the vdimport chart's values",
        )
    run.found["deployment"] = deployment
    return ok("settings", f"bucket {deployment.bucket}, import compartment {deployment.import_compartment}, image {deployment.image}")


@check("service-account")
def service_account(run: Run) -> Result:
    deployment: Deployment = run.need("deployment", "settings")
    namespace = deployment.dag_env.get("VDIMPORT_POD_NAMESPACE", run.target.namespace)
    name = deployment.dag_env.get("VDIMPORT_POD_SERVICE_ACCOUNT", "vdimport-step-runner")
    run.found["workload"] = (namespace, name)
    if run.cluster.service_account(namespace, name) is None:
        return fail(
            "service-account",
            f"ServiceAccount {namespace}/{name} of the step pods not found",
            "install the vdimport chart with stepRunner.serviceAccount.create=true",
        )
    return ok("service-account", f"step pods run as {namespace}/{name} (the workload identity the policies name)")


def split_image(image: str) -> tuple[str, str, str | None, str | None]:
    """``host/path:tag@digest`` as (host, path, tag, digest); a reference without a registry is Docker Hub's."""
    ref, _, digest = image.partition("@")
    first, _, rest = ref.partition("/")
    host, path = (first, rest) if rest and ("." in first or ":" in first or first == "localhost") else ("docker.io", ref)
    name, _, tag = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "")
    return host, name, tag or None, digest or None


@check("pull-secret")
def pull_secret(run: Run) -> Result:
    deployment: Deployment = run.need("deployment", "settings")
    host, _, _, _ = split_image(deployment.image)
    namespace = deployment.dag_env.get("VDIMPORT_POD_NAMESPACE", run.target.namespace)
    if not deployment.pull_secrets:
        if OCIR_HOST.match(host):
            return Result(
                "pull-secret",
                "warn",
                f"no image pull secret for {host}: the step pods can pull only if the repository is public",
                "create a docker-registry Secret and set stepRunner.image.pullSecrets (terraform/README.md, Two-stage alternative)",
            )
        return ok("pull-secret", f"no pull secret; {host} is not OCIR")
    for name in deployment.pull_secrets:
        secret = run.cluster.secret(namespace, name)
        if secret is None:
            return fail(
                "pull-secret",
                f"pull secret {namespace}/{name} not found: every step pod would end in ErrImagePull",
                f"kubectl -n {namespace} create secret docker-registry {name} --docker-server={host} ...",
            )
        if secret.type != "kubernetes.io/dockerconfigjson" or host not in registry_hosts(secret):
            return fail(
                "pull-secret", f"pull secret {namespace}/{name} holds no credentials for {host}", f"recreate it with --docker-server={host}"
            )
    return ok("pull-secret", f"{', '.join(deployment.pull_secrets)} in {namespace} holds credentials for {host}")


# --- Object Storage and the trigger --------------------------------------------------------------
@check("bucket")
def bucket(run: Run) -> Result:
    deployment: Deployment = run.need("deployment", "settings")
    found = run.cloud.bucket(deployment.bucket)
    if found is None:
        return fail(
            "bucket",
            f"bucket {deployment.bucket} not found in namespace {run.cloud.namespace}",
            "create it (terraform/objectstorage.tf) or fix oci.bucketName",
        )
    run.found["bucket"] = found
    if not found.object_events_enabled:
        return fail(
            "bucket",
            f"bucket {found.name} has object events off: an upload triggers nothing",
            f"oci os bucket update --bucket-name {found.name} --object-events-enabled true",
        )
    if found.public_access_type != "NoPublicAccess":
        return fail(
            "bucket",
            f"bucket {found.name} is public ({found.public_access_type}): uploaded disks are readable by anyone",
            f"oci os bucket update --bucket-name {found.name} --public-access-type NoPublicAccess",
        )
    return ok("bucket", f"{found.name}: private, object events on")


@check("work-bucket")
def work_bucket(run: Run) -> Result:
    deployment: Deployment = run.need("deployment", "settings")
    name = deployment.step_env.get("VDIMPORT_WORK_BUCKET")
    if not name:
        return Result(
            "work-bucket",
            "warn",
            "no work bucket (oci.workBucketName): a download or fsck result over Run Command's 1 KB fails the step",
            "set oci.workBucketName to a private bucket without object events",
        )
    found = run.cloud.bucket(name)
    if found is None:
        return fail("work-bucket", f"work bucket {name} not found", "create it (terraform/objectstorage.tf) or fix oci.workBucketName")
    if found.object_events_enabled:
        return fail(
            "work-bucket",
            f"work bucket {name} has object events on: each command output would be an event",
            f"oci os bucket update --bucket-name {name} --object-events-enabled false",
        )
    return ok("work-bucket", f"{name}: object events off")


def _rule_matches(rule: Any, bucket_name: str) -> bool:
    try:
        condition = json.loads(rule.condition or "{}")
    except ValueError:
        return False
    types = condition.get("eventType") or []
    types = [types] if isinstance(types, str) else types
    buckets = ((condition.get("data") or {}).get("additionalDetails") or {}).get("bucketName")
    buckets = [buckets] if isinstance(buckets, str) else buckets
    return CREATE_EVENT in types and (buckets is None or bucket_name in buckets)


@check("events-rule")
def events_rule(run: Run) -> Result:
    found = run.need("bucket", "bucket")
    rules = [r for r in run.cloud.rules(found.compartment_id) if r.is_enabled and _rule_matches(r, found.name)]
    targets = [a.function_id for r in rules for a in (r.actions.actions if r.actions else []) if a.action_type == "FAAS" and a.is_enabled]
    if run.target.function_id:
        targets = [f for f in targets if f == run.target.function_id] or targets
    if not targets:
        what = "no enabled Events rule" if not rules else "no enabled FAAS action in the matching rules"
        return fail(
            "events-rule",
            f"{what} for {CREATE_EVENT} on bucket {found.name} in its compartment",
            "terraform apply with function_image_tag (terraform/events.tf), or create the rule in the console",
        )
    run.found["function_id"] = targets[0]
    return ok("events-rule", f"{len(rules)} rule(s) send {CREATE_EVENT} of {found.name} to function {targets[0]}")


@check("function")
def function(run: Run) -> Result:
    function_id = run.target.function_id or run.need("function_id", "events-rule")
    found = run.cloud.function(function_id)
    if found is None:
        return fail(
            "function",
            f"function {function_id} (the rule's action) not found",
            "deploy the function (terraform apply with function_image_tag)",
        )
    config = found.config or {}
    bucket_name = run.need("deployment", "settings").bucket
    problems = [k for k in ("VDIMPORT_AIRFLOW_URL", "VDIMPORT_AIRFLOW_SECRET_ID") if not config.get(k)]
    if bucket_name not in [b.strip() for b in config.get("VDIMPORT_BUCKETS", "").split(",")]:
        problems.append(f"VDIMPORT_BUCKETS without {bucket_name}")
    if found.lifecycle_state != "ACTIVE":
        problems.append(f"state {found.lifecycle_state}")
    if problems:
        return fail(
            "function",
            f"function {found.display_name}: {', '.join(problems)}",
            "terraform apply (airflow_api_url), or oci fn function update --config ...",
        )
    run.found["function"] = found
    return ok("function", f"{found.display_name}: Airflow {config['VDIMPORT_AIRFLOW_URL']}, buckets {config['VDIMPORT_BUCKETS']}")


@check("airflow-from-function")
def airflow_from_function(run: Run) -> Result:
    found = run.need("function", "function")
    status, body = run.cloud.invoke(found, PROBE)
    try:
        answer = json.loads(body)
    except ValueError:
        answer = None
    if status != 200 or not isinstance(answer, dict) or answer.get("decision") != "preflight":
        return fail(
            "airflow-from-function",
            f"the function did not answer the probe (HTTP {status}): {body[:300]}",
            "deploy a function image with the preflight probe (images/function) and read its log (<prefix>-function)",
        )
    failed = [f"{c.get('name')}: {c.get('detail')}" for c in answer.get("checks", []) if not c.get("ok")]
    if not answer.get("ok") or failed:
        return fail(
            "airflow-from-function",
            f"from the function, Airflow at {answer.get('airflow_url')}: {'; '.join(failed) or 'not ok'}",
            "check the API load balancer (its NSG admits the function subnet on 8080), the login secret, the DAG",
        )
    return ok(
        "airflow-from-function",
        f"the function reached {answer.get('airflow_url')}, logged in, DAG {answer.get('dag_id')} deployed and unpaused",
    )


# --- identity ---------------------------------------------------------------------------------
@check("cluster")
def cluster(run: Run) -> Result:
    cluster_id = run.target.cluster_id or cluster_id_from_kubeconfig(run.target.kubeconfig, run.target.kube_context)
    if not cluster_id:
        raise Skip("no cluster OCID: pass --cluster-id (an OKE kubeconfig names it in its exec credential)")
    found = run.cloud.cluster(cluster_id)
    if found is None:
        return fail("cluster", f"cluster {cluster_id} not found", "pass the OCID of the cluster the kube context points at")
    if found.type != "ENHANCED_CLUSTER":  # no workload identity: the grants naming it are moot
        return fail(
            "cluster",
            f"cluster {found.name} is {found.type}: OKE workload identity needs an enhanced cluster",
            "oci ce cluster update --cluster-id ... --type ENHANCED_CLUSTER",
        )
    run.found["cluster_id"] = cluster_id
    return ok("cluster", f"{found.name}: enhanced (workload identity available)")


def step_runner_grants(run: Run) -> list[Grant]:
    deployment: Deployment = run.need("deployment", "settings")
    namespace, account = run.need("workload", "service-account")
    cluster_id = run.need("cluster_id", "cluster")
    found = run.need("bucket", "bucket")
    imports, data = deployment.import_compartment, found.compartment_id
    network = run.target.network_compartment or data
    who = {
        "request.principal.type": "workload",
        "request.principal.namespace": namespace,
        "request.principal.service_account": account,
        "request.principal.cluster_id": cluster_id,
    }
    grants = [
        Grant("any-user", "manage", family, imports, who)
        for family in ("instance-family", "volume-family", "instance-agent-command-family")
    ]
    grants += [Grant("any-user", "use", kind, network, who) for kind in ("subnets", "vnics", "private-ips")]
    grants.append(Grant("any-user", "use", "vnics", imports, who))
    in_bucket = {**who, "target.bucket.name": found.name}
    grants += [Grant("any-user", "read", "objects", data, in_bucket), Grant("any-user", "read", "buckets", data, in_bucket)]
    grants.append(Grant("any-user", "manage", "buckets", data, {**in_bucket, "request.permission": "PAR_MANAGE"}))
    work = deployment.step_env.get("VDIMPORT_WORK_BUCKET")
    if work:
        in_work = {**who, "target.bucket.name": work}
        grants += [
            Grant("any-user", "manage", "objects", data, in_work),
            Grant("any-user", "manage", "buckets", data, {**in_work, "request.permission": "PAR_MANAGE"}),
        ]
    if deployment.step_env.get("VDIMPORT_NOTIFICATION_TOPIC_ID"):
        grants.append(Grant("any-user", "use", "ons-topics", data, {**who, "request.permission": "ONS_TOPIC_PUBLISH"}))
    return grants


def _statements(run: Run) -> list[str]:
    if "statements" not in run.found:
        deployment: Deployment = run.need("deployment", "settings")
        compartments = [run.need("bucket", "bucket").compartment_id, deployment.import_compartment, run.cloud.tenancy]
        if run.target.network_compartment:
            compartments.append(run.target.network_compartment)
        run.found["statements"] = run.cloud.policies(compartments)
    return list(run.found["statements"])


def _missing_result(name: str, run: Run, grants: list[Grant], who: str) -> Result:
    absent = missing(grants, _statements(run), run.cloud.tenancy)
    if absent:
        return fail(
            name,
            f"{len(absent)} of {len(grants)} grants for {who} missing, first: {absent[0].describe()}",
            "terraform apply (terraform/iam.tf), or add: " + " | ".join(g.describe() for g in absent),
        )
    return ok(name, f"{len(grants)} of {len(grants)} grants for {who} present")


@check("policies-step-runner")
def policies_step_runner(run: Run) -> Result:
    return _missing_result("policies-step-runner", run, step_runner_grants(run), "the step pods' workload identity")


def _groups_matching(run: Run, facts: dict[str, str]) -> list[str]:
    return [g.name for g in run.cloud.dynamic_groups() if holds(g.matching_rule, facts)]


def _group_result(name: str, run: Run, facts: dict[str, str], grants: Callable[[str], list[Grant]], who: str) -> Result:
    groups = _groups_matching(run, facts)
    if not groups:
        return fail(name, f"no dynamic group matches {who}", "terraform apply (terraform/iam.tf: oci_identity_dynamic_group)")
    results = [_missing_result(name, run, grants(g), f"{who} (dynamic group {g})") for g in groups]
    return next((r for r in results if r.status == "ok"), results[0])


@check("policies-function")
def policies_function(run: Run) -> Result:
    found = run.need("function", "function")
    data = run.need("bucket", "bucket")
    secret = (found.config or {}).get("VDIMPORT_AIRFLOW_SECRET_ID", "")
    facts = {"resource.type": "fnfunc", "resource.id": found.id, "resource.compartment.id": found.compartment_id}

    def grants(group: str) -> list[Grant]:
        subject = f"dynamic-group {group}"
        return [
            Grant(subject, "read", "objects", data.compartment_id, {"target.bucket.name": data.name}),
            Grant(subject, "read", "secret-bundles", found.compartment_id, {"target.secret.id": secret}),
        ]

    return _group_result("policies-function", run, facts, grants, f"function {found.display_name}")


@check("policies-worker-vms")
def policies_worker_vms(run: Run) -> Result:
    imports = run.need("deployment", "settings").import_compartment
    facts = {"instance.compartment.id": imports, "resource.type": "instance", "resource.compartment.id": imports}

    def grants(group: str) -> list[Grant]:
        own = {"request.instance.id": "self", "target.instance.id": "self"}
        return [Grant(f"dynamic-group {group}", "use", "instance-agent-command-execution-family", imports, own)]

    return _group_result("policies-worker-vms", run, facts, grants, "the worker VMs (instances of the import compartment)")


@check("policies-services")
def policies_services(run: Run) -> Result:
    found = run.need("function", "function")
    c = found.compartment_id
    grants = [
        Grant("service faas", "use", "virtual-network-family", c, why="the function's VNIC"),
        Grant("service faas", "read", "repos", c, why="the function's image"),
        Grant("service cloudevents", "use", "functions-family", c, why="Events invokes the function"),
    ]
    return _missing_result("policies-services", run, grants, "OCI Functions and Events")


# --- the image ---------------------------------------------------------------------------------
@check("image")
def image(run: Run) -> Result:
    deployment: Deployment = run.need("deployment", "settings")
    host, path, tag, digest = split_image(deployment.image)
    if not OCIR_HOST.match(host):
        raise Skip(f"{host} is not OCIR; its images are not listed by the Artifacts API")
    repository = path.split("/", 1)[1] if "/" in path else path  # <namespace>/<repository>
    filters = {"image_digest": digest} if digest else {"version": tag or "latest"}
    found = run.cloud.images(repository, **filters)
    wanted = digest or f"tag {tag or 'latest'}"
    if not found:
        return fail(
            "image",
            f"{wanted} not in repository {repository}: the step pods would end in ErrImagePull",
            "push the step runner image (terraform/README.md, Images) and apply again to pin its digest",
        )
    pushed = f"{repository}@{digest}" if digest else f"{repository}:{tag or 'latest'} ({found[0].digest})"
    return ok("image", f"{pushed} is pushed")
