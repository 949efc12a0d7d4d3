"""What the two charts put into the cluster, read with the Kubernetes API (``kubectl``'s view).

The step runner's settings come from its ConfigMap in the vdimport namespace, the DAG's (the
image, its pull secrets, the ServiceAccount) from ``vdimport-dag-settings`` in Airflow's;
together they say which bucket, compartments and image the deployment uses, so preflight
checks the cloud side against what is really deployed, not against what someone remembers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ClusterError(RuntimeError):
    """The cluster could not be asked (no kubeconfig, no such context, API unreachable)."""


@dataclass(frozen=True)
class Deployment:
    """The deployed settings preflight needs (names as the step runner's environment has them)."""

    step_env: dict[str, str]
    dag_env: dict[str, str]

    @property
    def bucket(self) -> str:
        return self.step_env.get("VDIMPORT_REAPER_BUCKETS", "").split(",")[0]

    @property
    def import_compartment(self) -> str:
        return self.step_env.get("VDIMPORT_COMPARTMENT_ID", "")

    @property
    def image(self) -> str:
        return self.dag_env.get("VDIMPORT_POD_IMAGE", "")

    @property
    def pull_secrets(self) -> list[str]:
        return [s for s in self.dag_env.get("VDIMPORT_POD_IMAGE_PULL_SECRETS", "").split(",") if s]


class Cluster:
    """A few reads through the official ``kubernetes`` client, with a kubeconfig context."""

    def __init__(self, kubeconfig: str | None, context: str | None):
        from kubernetes import client, config

        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
        except Exception as exc:  # noqa: BLE001 - kubeconfig errors come as several types
            raise ClusterError(f"cannot use kubeconfig {kubeconfig or '~/.kube/config'} context {context or '(current)'}: {exc}") from None
        self.core = client.CoreV1Api(api)
        self.kubeconfig = kubeconfig
        self.context = context

    def _read(self, method: Any, name: str, namespace: str) -> Any | None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return method(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise ClusterError(f"the Kubernetes API answered {exc.status} {exc.reason} for {namespace}/{name}") from None
        except HTTPError as exc:
            raise ClusterError(f"the Kubernetes API is unreachable: {exc}") from None

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self._read(self.core.read_namespaced_config_map, name, namespace)
        return None if found is None else dict(found.data or {})

    def service_account(self, namespace: str, name: str) -> Any | None:
        return self._read(self.core.read_namespaced_service_account, name, namespace)

    def secret(self, namespace: str, name: str) -> Any | None:
        return self._read(self.core.read_namespaced_secret, name, namespace)


def registry_hosts(secret: Any) -> set[str]:
    """The registries a ``kubernetes.io/dockerconfigjson`` Secret holds credentials for."""
    raw = (secret.data or {}).get(".dockerconfigjson")
    if not raw:
        return set()
    try:
        auths = json.loads(base64.b64decode(raw)).get("auths", {})
    except (ValueError, TypeError, AttributeError):
        return set()
    return {host.removeprefix("https://").removeprefix("http://").split("/")[0] for host in auths}


def cluster_id_from_kubeconfig(kubeconfig: str | None, context: str | None) -> str | None:
    """The OKE cluster OCID in the context's exec credential (``oci ce cluster generate-token --cluster-id``)."""
    path = Path(kubeconfig or Path.home() / ".kube" / "config")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    name = context or config.get("current-context")
    ctx: dict[str, Any] = next((c.get("context", {}) for c in config.get("contexts") or [] if c.get("name") == name), {})
    user: dict[str, Any] = next((u.get("user", {}) for u in config.get("users") or [] if u.get("name") == ctx.get("user")), {})
    args = [str(a) for a in (user.get("exec") or {}).get("args") or []]
    for i, arg in enumerate(args):
        if arg == "--cluster-id" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--cluster-id="):
            return arg.split("=", 1)[1]
    return None
