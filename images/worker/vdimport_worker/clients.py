"""OCI SDK clients for the configured auth mode, with retries on throttling and 5xx.

One place builds every client, so auth, endpoint override (local mode) and the retry
policy are decided once: 429 and transient 5xx are retried with exponential backoff and
jitter by the SDK; launches use a policy that does not retry "Out of host capacity",
so the step can move to another availability domain instead.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import oci

from .config import WorkerConfig

log = logging.getLogger(__name__)

TRANSIENT_5XX = (500, 502, 503, 504)


def retry_strategy(base_seconds: float = 1.0, include_500: bool = True) -> Any:
    """Retry 429 and transient 5xx (optionally not 500) for up to ~10 minutes."""
    statuses: dict[int, list[str]] = {429: [], 502: [], 503: [], 504: []}
    if include_500:
        statuses[500] = []
    return oci.retry.RetryStrategyBuilder(
        max_attempts_check=True,
        max_attempts=10,
        total_elapsed_time_check=True,
        total_elapsed_time_seconds=600,
        retry_max_wait_between_calls_seconds=30,
        retry_base_sleep_time_seconds=base_seconds,
        # The SDK adds up to ``decorrelated_jitter`` seconds (default 1) to every wait;
        # scale it with the base so a short base (local mode, tests) means short waits.
        decorrelated_jitter=base_seconds,
        service_error_check=True,
        service_error_retry_on_any_5xx=False,
        service_error_retry_config=statuses,
        backoff_type=oci.retry.BACKOFF_DECORRELATED_JITTER_VALUE,
    ).get_retry_strategy()


class Clients:
    """Lazily built SDK clients sharing one signer."""

    def __init__(self, config: WorkerConfig, retry_base_seconds: float = 1.0):
        self.config = config
        self.retry_base_seconds = retry_base_seconds
        self._sdk_config, self._signer = self._auth()

    def _auth(self) -> tuple[dict[str, Any], Any]:
        cfg = self.config
        if cfg.auth == "config_file":
            assert cfg.oci_config_file
            sdk_config = oci.config.from_file(cfg.oci_config_file, cfg.oci_profile)
            if cfg.region:
                sdk_config["region"] = cfg.region
            return sdk_config, None
        if cfg.auth == "instance_principal":
            signer = oci.auth.signers.InstancePrincipalsSecurityTokenSigner()
        elif cfg.auth == "resource_principal":
            signer = oci.auth.signers.get_resource_principals_signer()
        else:
            signer = oci.auth.signers.get_oke_workload_identity_resource_principal_signer()
        region = cfg.region or getattr(signer, "region", None)
        return {"region": region} if region else {}, signer

    def _make(self, cls: type, include_500: bool = True) -> Any:
        kwargs: dict[str, Any] = {"retry_strategy": retry_strategy(self.retry_base_seconds, include_500)}
        if self._signer is not None:
            kwargs["signer"] = self._signer
        if self.config.endpoint:
            kwargs["service_endpoint"] = self.config.endpoint
        return cls(self._sdk_config, **kwargs)

    @functools.cached_property
    def compute(self) -> oci.core.ComputeClient:
        return self._make(oci.core.ComputeClient)

    @functools.cached_property
    def compute_launch(self) -> oci.core.ComputeClient:
        """For LaunchInstance only: a 500 is usually "Out of host capacity", handled by the caller."""
        return self._make(oci.core.ComputeClient, include_500=False)

    @functools.cached_property
    def blockstorage(self) -> oci.core.BlockstorageClient:
        return self._make(oci.core.BlockstorageClient)

    @functools.cached_property
    def network(self) -> oci.core.VirtualNetworkClient:
        return self._make(oci.core.VirtualNetworkClient)

    @functools.cached_property
    def object_storage(self) -> oci.object_storage.ObjectStorageClient:
        return self._make(oci.object_storage.ObjectStorageClient)

    @functools.cached_property
    def namespace(self) -> str:
        """The tenancy's Object Storage namespace: where the deployment's own buckets are (the work bucket)."""
        return str(self.object_storage.get_namespace().data)

    @functools.cached_property
    def agent(self) -> oci.compute_instance_agent.ComputeInstanceAgentClient:
        return self._make(oci.compute_instance_agent.ComputeInstanceAgentClient)

    @functools.cached_property
    def identity(self) -> oci.identity.IdentityClient:
        return self._make(oci.identity.IdentityClient)

    @functools.cached_property
    def notifications(self) -> oci.ons.NotificationDataPlaneClient:
        """PublishMessage (notify.py). The region's endpoint serves every topic of the region."""
        return self._make(oci.ons.NotificationDataPlaneClient)

    @property
    def tenancy(self) -> str | None:
        return self._sdk_config.get("tenancy") or getattr(self._signer, "tenancy_id", None)


def list_all(method: Any, *args: Any, **kwargs: Any) -> list[Any]:
    """Every item of a paginated OCI list call."""
    return list(oci.pagination.list_call_get_all_results(method, *args, **kwargs).data)
