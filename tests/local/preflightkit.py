"""A deployment for ``vdimport-local preflight`` to check, made from the files we ship.

The OCI side is the local stack's emulator, given what ``terraform/`` would create there: the
IAM policies and dynamic groups of ``terraform/iam.tf`` (read with tfkit, every reference
replaced by the local stack's values, so preflight is held to the grants Terraform really
makes), an enhanced cluster, and the step runner image in OCIR. The Kubernetes side is the
vdimport chart rendered with Helm's own code (chartkit) and served read-only over the
Kubernetes REST paths the official client reads: there is no Kubernetes on these machines, so
the objects are the chart's real output but the API server is this stand-in.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

TESTS = Path(__file__).resolve().parents[1]
for sub in ("terraform", "charts"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))

import chartkit  # noqa: E402
import tfkit  # noqa: E402

PREFIX = "vdimport"  # terraform's var.name_prefix default
REGISTRY = "iad.ocir.io"
PULL_SECRET = f"{PREFIX}-ocir-pull"
DIGEST = "sha256:" + "ab" * 32
_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<plural>[^/]+)/(?P<name>[^/?]+)$")


class KubeStandIn:
    """Kubernetes objects by (plural, namespace, name), answered as ``GET /api/v1/...`` does."""

    def __init__(self, objects: list[dict[str, Any]]):
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        for obj in objects:
            self.put(obj)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                found = _PATH.match(self.path.split("?")[0])
                obj = stand_in.objects.get((found["plural"], found["ns"], found["name"])) if found else None
                body = json.dumps(obj or {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})
                self.send_response(200 if obj else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def put(self, obj: dict[str, Any]) -> None:
        plural = obj["kind"].lower() + "s"
        self.objects[(plural, obj["metadata"]["namespace"], obj["metadata"]["name"])] = obj

    def drop(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self.objects.pop((kind.lower() + "s", namespace, name))

    def kubeconfig(self, path: Path) -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "oke", "cluster": {"server": self.url}}],
            "users": [{"name": "operator", "user": {"token": "stand-in"}}],
            "contexts": [{"name": "vdimport-oke", "context": {"cluster": "oke", "user": "operator"}}],
            "current-context": "vdimport-oke",
        }
        path.write_text(yaml.safe_dump(config))
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def chart_objects(namespace: str, tenancy: str, subnet: str, bucket: str, work_bucket: str, topic: str) -> list[dict[str, Any]]:
    """The vdimport chart as Terraform's helm_release installs it (helm.tf's values), plus its pull Secret."""
    values = {
        "oci": {
            "region": "us-ashburn-1",
            "compartmentId": tenancy,
            "subnetId": subnet,
            "bucketName": bucket,
            "workBucketName": work_bucket,
        },
        "stepRunner": {
            "image": {
                "repository": f"{REGISTRY}/{namespace}/{PREFIX}/vdimport-worker",
                "tag": "0.1.0",
                "digest": DIGEST,
                "pullSecrets": [PULL_SECRET],
            }
        },
        "notifications": {"topicId": topic},
    }
    objects = chartkit.manifests(chartkit.render(values))
    for obj in objects:
        obj["metadata"].setdefault("namespace", chartkit.NAMESPACE)
    auth = {
        "auths": {REGISTRY: {"username": f"{namespace}/{PREFIX}-ocir-pull", "password": "token", "auth": base64.b64encode(b"u:p").decode()}}
    }
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"name": PULL_SECRET, "namespace": chartkit.NAMESPACE},
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(auth).encode()).decode()},
        }
    )
    return objects


@dataclass
class TerraformIam:
    """terraform/iam.tf's dynamic groups and policies, with this deployment's values filled in."""

    dynamic_groups: dict[str, str] = field(default_factory=dict)  # name -> matching rule
    policies: dict[str, list[str]] = field(default_factory=dict)  # terraform address -> statements


def terraform_iam(values: dict[str, str]) -> TerraformIam:
    """``values`` maps each ``${reference}`` of iam.tf to its value; statements that keep a reference
    (the optional DevOps, pull-user and task-log policies, whose resources the local stack has not) are left out."""
    module = tfkit.load_module(tfkit.TERRAFORM)

    def fill(text: str) -> str:
        return re.sub(r"\$\{([^}]*)\}", lambda m: values.get(m.group(1).strip(), m.group(0)), tfkit.expand_text(module, text))

    iam = TerraformIam()
    for group in module.resources_of("oci_identity_dynamic_group"):
        name, rule = fill(group.body["name"]), fill(group.body["matching_rule"])
        if "${" not in name + rule:
            iam.dynamic_groups[name] = rule
    statements, _ = tfkit.policy_statements(module)
    for policy, statement in statements:
        text = fill(statement)
        if "${" not in text:
            iam.policies.setdefault(policy.address, []).append(text)
    return iam


@contextmanager
def serving(objects: list[dict[str, Any]]) -> Iterator[KubeStandIn]:
    stand_in = KubeStandIn(objects)
    try:
        yield stand_in
    finally:
        stand_in.close()
