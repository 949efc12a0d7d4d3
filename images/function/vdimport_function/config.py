"""The function's settings, from its OCI Functions configuration (environment variables), validated.

| variable | meaning |
|---|---|
| ``VDIMPORT_AIRFLOW_URL`` | base URL of the Airflow 3 API server (required) |
| ``VDIMPORT_AIRFLOW_SECRET_ID`` | OCID of the Vault secret holding ``{"username", "password"}`` (required unless local override) |
| ``VDIMPORT_BUCKETS`` | comma-separated bucket names whose events are accepted (required) |
| ``VDIMPORT_DAG_ID`` | DAG to trigger (default ``virtual_disk_import``) |
| ``VDIMPORT_EVENT_TYPES`` | accepted event types (default ``...createobject``: every upload; ``updateobject`` re-imports old bytes) |
| ``VDIMPORT_OCI_AUTH`` | ``resource_principal`` (default, in OCI) or ``config_file`` (local mode) |
| ``VDIMPORT_OCI_CONFIG`` / ``VDIMPORT_OCI_PROFILE`` | OCI config file and profile for ``config_file`` |
| ``VDIMPORT_OCI_ENDPOINT`` | service endpoint override (the local emulator) |
| ``VDIMPORT_AIRFLOW_RETRIES`` | attempts per Airflow call on connection errors and 5xx (default 5) |
| ``VDIMPORT_AIRFLOW_BACKOFF_SECONDS`` | first back-off, doubled each attempt (default 1) |
| ``VDIMPORT_AIRFLOW_TIMEOUT_SECONDS`` | per-request timeout (default 15) |
| ``VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME`` / ``..._PASSWORD`` | local mode only: login without a Vault secret |
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

CREATE_EVENT = "com.oraclecloud.objectstorage.createobject"
UPDATE_EVENT = "com.oraclecloud.objectstorage.updateobject"
DEFAULT_EVENT_TYPES = (CREATE_EVENT,)
DEFAULT_DAG_ID = "virtual_disk_import"
AUTH_MODES = ("resource_principal", "config_file")


class ConfigError(ValueError):
    """The function is misconfigured; the message names the variable and what is wrong."""


@dataclass(frozen=True)
class Settings:
    airflow_url: str
    secret_id: str | None
    buckets: tuple[str, ...]
    dag_id: str = DEFAULT_DAG_ID
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES
    oci_auth: str = "resource_principal"
    oci_config: str | None = None
    oci_profile: str = "DEFAULT"
    oci_endpoint: str | None = None
    retries: int = 5
    backoff_seconds: float = 1.0
    timeout_seconds: float = 15.0
    local_username: str | None = None
    local_password: str | None = None

    @property
    def local(self) -> bool:
        return self.oci_auth == "config_file"

    def describe(self) -> str:
        """A one-line summary for the logs (never the credentials)."""
        return (
            f"airflow={self.airflow_url} dag={self.dag_id} buckets={','.join(self.buckets)} auth={self.oci_auth}"
            f"{' endpoint=' + self.oci_endpoint if self.oci_endpoint else ''}"
            f" credentials={'local override' if self.local_username else 'vault secret ' + str(self.secret_id)}"
        )


def _text(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    return value.strip() if value and value.strip() else None


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum:g}, got {raw!r}")
    return value


def load(env: Mapping[str, str]) -> Settings:
    """Settings from ``env`` (the Fn config, i.e. ``ctx.Config()`` or ``os.environ``); :class:`ConfigError` if invalid."""
    url = _text(env, "VDIMPORT_AIRFLOW_URL")
    if not url:
        raise ConfigError("VDIMPORT_AIRFLOW_URL is not set (the Airflow API server's base URL)")
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.query or parsed.fragment:
        raise ConfigError(f"VDIMPORT_AIRFLOW_URL must be an http(s) base URL, got {url!r}")
    url = url.rstrip("/")

    buckets = tuple(b.strip() for b in (_text(env, "VDIMPORT_BUCKETS") or "").split(",") if b.strip())
    if not buckets:
        raise ConfigError("VDIMPORT_BUCKETS is not set (the bucket(s) whose uploads are imported)")

    auth = _text(env, "VDIMPORT_OCI_AUTH") or "resource_principal"
    if auth not in AUTH_MODES:
        raise ConfigError(f"VDIMPORT_OCI_AUTH must be one of {', '.join(AUTH_MODES)}, got {auth!r}")
    oci_config = _text(env, "VDIMPORT_OCI_CONFIG")
    if auth == "config_file" and not oci_config:
        raise ConfigError("VDIMPORT_OCI_CONFIG is required with VDIMPORT_OCI_AUTH=config_file")
    endpoint = _text(env, "VDIMPORT_OCI_ENDPOINT")
    if endpoint and urllib.parse.urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"VDIMPORT_OCI_ENDPOINT must be an http(s) URL, got {endpoint!r}")

    local_user = _text(env, "VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME")
    local_password = env.get("VDIMPORT_LOCAL_INSECURE_AIRFLOW_PASSWORD") or None
    if (local_user or local_password) and auth != "config_file":
        raise ConfigError(
            "VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME/PASSWORD are for local mode only (VDIMPORT_OCI_AUTH=config_file); "
            "in OCI the credentials come from the Vault secret VDIMPORT_AIRFLOW_SECRET_ID"
        )
    if bool(local_user) != bool(local_password):
        raise ConfigError("set both VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME and VDIMPORT_LOCAL_INSECURE_AIRFLOW_PASSWORD, or neither")
    secret_id = _text(env, "VDIMPORT_AIRFLOW_SECRET_ID")
    if not secret_id and not local_user:
        raise ConfigError("VDIMPORT_AIRFLOW_SECRET_ID is not set (OCID of the Vault secret with the Airflow login)")
    if secret_id and not secret_id.startswith("ocid1."):
        raise ConfigError(f"VDIMPORT_AIRFLOW_SECRET_ID must be a secret OCID (ocid1.vaultsecret...), got {secret_id!r}")

    types = tuple(t.strip() for t in (_text(env, "VDIMPORT_EVENT_TYPES") or "").split(",") if t.strip()) or DEFAULT_EVENT_TYPES
    return Settings(
        airflow_url=url,
        secret_id=secret_id,
        buckets=buckets,
        dag_id=_text(env, "VDIMPORT_DAG_ID") or DEFAULT_DAG_ID,
        event_types=types,
        oci_auth=auth,
        oci_config=oci_config,
        oci_profile=_text(env, "VDIMPORT_OCI_PROFILE") or "DEFAULT",
        oci_endpoint=endpoint,
        retries=int(_number(env, "VDIMPORT_AIRFLOW_RETRIES", 5, 1)),
        backoff_seconds=_number(env, "VDIMPORT_AIRFLOW_BACKOFF_SECONDS", 1.0, 0),
        timeout_seconds=_number(env, "VDIMPORT_AIRFLOW_TIMEOUT_SECONDS", 15.0, 0.1),
        local_username=local_user,
        local_password=local_password,
    )
