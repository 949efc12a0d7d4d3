"""OCI SDK clients (Object Storage, Vault Secrets): resource principal in OCI, a config file in local mode."""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from dataclasses import dataclass
from typing import Any

import oci

from .config import Settings

OPC_META = "opc-meta-"
SECRET_TTL_SECONDS = 300.0


class SecretError(RuntimeError):
    """The Airflow credentials secret cannot be read or is malformed (its content is never in the message)."""


@dataclass(frozen=True)
class ObjectInfo:
    etag: str
    size: int
    metadata: dict[str, str]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def __repr__(self) -> str:  # never print the password, even by accident
        return f"Credentials(username={self.username!r}, password=***)"


class OciAccess:
    """The SDK clients this function needs, built once per container (a warm function reuses them)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        kwargs: dict[str, Any] = {}
        if settings.oci_endpoint:
            kwargs["service_endpoint"] = settings.oci_endpoint
        if settings.oci_auth == "config_file":
            config = oci.config.from_file(str(settings.oci_config), settings.oci_profile)
            self.object_storage = oci.object_storage.ObjectStorageClient(config, **kwargs)
            self.secrets = oci.secrets.SecretsClient(config, **kwargs)
        else:
            signer = oci.auth.signers.get_resource_principals_signer()
            self.object_storage = oci.object_storage.ObjectStorageClient({}, signer=signer, **kwargs)
            self.secrets = oci.secrets.SecretsClient({}, signer=signer, **kwargs)
        self._secret_lock = threading.Lock()
        self._secret: tuple[float, Credentials] | None = None

    # --- Object Storage ---------------------------------------------------------------
    def head(self, namespace: str, bucket: str, name: str) -> ObjectInfo | None:
        """The object's current etag, size and ``opc-meta-*`` metadata; None if it no longer exists."""
        try:
            response = self.object_storage.head_object(namespace, bucket, name, retry_strategy=oci.retry.DEFAULT_RETRY_STRATEGY)
        except oci.exceptions.ServiceError as exc:
            if exc.status == 404:
                return None
            raise
        headers = response.headers
        metadata = {key[len(OPC_META) :]: str(value) for key, value in headers.items() if key.lower().startswith(OPC_META)}
        return ObjectInfo(str(headers.get("etag", "")), int(headers.get("content-length", 0)), metadata)

    def read_range(self, namespace: str, bucket: str, name: str, etag: str, byte_range: str) -> bytes | None:
        """Bytes ``byte_range`` (an HTTP Range value) of exactly version ``etag``; None if it changed or vanished."""
        try:
            response = self.object_storage.get_object(
                namespace, bucket, name, range=byte_range, if_match=etag, retry_strategy=oci.retry.DEFAULT_RETRY_STRATEGY
            )
        except oci.exceptions.ServiceError as exc:
            if exc.status in (404, 412):
                return None
            raise
        return bytes(response.data.content)

    # --- Vault Secrets ----------------------------------------------------------------------
    def credentials(self, refresh: bool = False) -> Credentials:
        """The Airflow login from the Vault secret (JSON ``{"username", "password"}``), cached a few minutes."""
        settings = self.settings
        if settings.local_username and settings.local_password:
            return Credentials(settings.local_username, settings.local_password)
        with self._secret_lock:
            if not refresh and self._secret and time.monotonic() - self._secret[0] < SECRET_TTL_SECONDS:
                return self._secret[1]
            secret_id = str(settings.secret_id)
            try:
                bundle = self.secrets.get_secret_bundle(secret_id, retry_strategy=oci.retry.DEFAULT_RETRY_STRATEGY).data
            except oci.exceptions.ServiceError as exc:
                raise SecretError(f"cannot read the Airflow credentials secret {secret_id}: HTTP {exc.status} {exc.code}") from None
            try:
                content = json.loads(base64.b64decode(bundle.secret_bundle_content.content, validate=True))
                username, password = content["username"], content["password"]
                if not isinstance(username, str) or not isinstance(password, str) or not username or not password:
                    raise TypeError
            except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
                raise SecretError(
                    f"the Airflow credentials secret {secret_id} (version {getattr(bundle, 'version_number', '?')}) "
                    'is not JSON {"username": "...", "password": "..."}'
                ) from None
            creds = Credentials(username, password)
            self._secret = (time.monotonic(), creds)
            return creds
