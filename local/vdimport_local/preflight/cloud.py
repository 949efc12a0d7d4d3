"""The OCI side of a deployment, read with the ``oci`` SDK (read-only calls, one invocation).

One :class:`Cloud` holds the clients of one OCI config profile; ``endpoint`` points every
client at one URL (the local emulator) instead of the region's service endpoints.
"""

from __future__ import annotations

import json
from typing import Any

import oci


def _or_none(get: Any, *args: Any) -> Any | None:
    """``get(*args).data``, or None when OCI answers 404 (absent, or not visible to this user)."""
    try:
        return get(*args).data
    except oci.exceptions.ServiceError as exc:
        if exc.status == 404:
            return None
        raise


class Cloud:
    def __init__(self, config_file: str, profile: str, endpoint: str | None = None):
        self.config = oci.config.from_file(config_file, profile)
        self.endpoint = endpoint
        self.tenancy = str(self.config["tenancy"])
        self.storage = self._client(oci.object_storage.ObjectStorageClient)
        self.identity = self._client(oci.identity.IdentityClient)
        self.events = self._client(oci.events.EventsClient)
        self.functions = self._client(oci.functions.FunctionsManagementClient)
        self.artifacts = self._client(oci.artifacts.ArtifactsClient)
        self.containers = self._client(oci.container_engine.ContainerEngineClient)
        self._namespace: str | None = None

    def _client(self, cls: Any, endpoint: str | None = None) -> Any:
        extra = {"service_endpoint": endpoint or self.endpoint} if (endpoint or self.endpoint) else {}
        return cls(self.config, retry_strategy=oci.retry.DEFAULT_RETRY_STRATEGY, **extra)

    @property
    def namespace(self) -> str:
        if self._namespace is None:
            self._namespace = str(self.storage.get_namespace().data)
        return self._namespace

    def bucket(self, name: str) -> Any | None:
        return _or_none(self.storage.get_bucket, self.namespace, name)

    def rules(self, compartment: str) -> list[Any]:
        """Every ACTIVE Events rule of ``compartment``, with its actions."""
        summaries = oci.pagination.list_call_get_all_results(self.events.list_rules, compartment, lifecycle_state="ACTIVE").data
        return [self.events.get_rule(s.id).data for s in summaries]

    def function(self, function_id: str) -> Any | None:
        return _or_none(self.functions.get_function, function_id)

    def invoke(self, function: Any, body: dict[str, Any]) -> tuple[int, str]:
        """Invoke ``function`` synchronously with ``body``: (HTTP status, the function's answer or OCI's error)."""
        client = self._client(oci.functions.FunctionsInvokeClient, endpoint=function.invoke_endpoint)
        try:
            answer = client.invoke_function(function.id, invoke_function_body=json.dumps(body))
        except oci.exceptions.ServiceError as exc:
            return exc.status, f"{exc.code}: {exc.message}"
        return answer.status, answer.data.text

    def policies(self, compartments: list[str]) -> list[str]:
        statements: list[str] = []
        for compartment in dict.fromkeys(compartments):
            for policy in oci.pagination.list_call_get_all_results(self.identity.list_policies, compartment).data:
                if policy.lifecycle_state == "ACTIVE":
                    statements.extend(policy.statements)
        return statements

    def dynamic_groups(self) -> list[Any]:
        groups = oci.pagination.list_call_get_all_results(self.identity.list_dynamic_groups, self.tenancy).data
        return [g for g in groups if g.lifecycle_state == "ACTIVE"]

    def cluster(self, cluster_id: str) -> Any | None:
        return _or_none(self.containers.get_cluster, cluster_id)

    def images(self, repository: str, **filters: str) -> list[Any]:
        found = self.artifacts.list_container_images(self.tenancy, compartment_id_in_subtree=True, repository_name=repository, **filters)
        return list(found.data.items)
