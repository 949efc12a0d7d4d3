"""Vault Secrets (retrieval API, ``/20190301``): secret bundles by id and by name.

OCI's secret *management* API (KMS vaults, ``CreateSecret``) is not emulated. Secrets are
made over the admin API instead: ``POST /_ocisim/secrets {"name", "vaultId"?, "content"}``
(``content`` is text; ``contentBase64`` gives raw bytes). Posting an existing name in the
same vault adds a version that becomes CURRENT, as rotating a secret does on OCI; the one
before becomes PREVIOUS and older ones DEPRECATED.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from .. import ids
from ..errors import invalid, missing, not_found
from ..routing import Request, Response, Service
from ..store import Resource, Store
from ._common import paged, required

service = Service("secrets")

KIND = "secret"
STAGES = ("CURRENT", "PENDING", "LATEST", "PREVIOUS", "DEPRECATED")


def default_vault(store: Store) -> str:
    """The vault secrets land in when the admin call names none; one per data directory."""
    with store.lock:
        vault = store.extra.get("default_vault_id")
        if not vault:
            vault = ids.ocid("vault")
            store.extra["default_vault_id"] = vault
            store.touch()
        return str(vault)


def _stages(secret: Resource, number: int) -> list[str]:
    latest = len(secret["_versions"])
    if number == latest:
        return ["CURRENT", "LATEST"]
    if number == latest - 1:
        return ["PREVIOUS"]
    return ["DEPRECATED"]


def _pick(secret: Resource, query: dict[str, str]) -> dict[str, Any]:
    """The version a GetSecretBundle query names: versionNumber, secretVersionName or stage (CURRENT by default)."""
    versions: list[dict[str, Any]] = secret["_versions"]
    if query.get("versionNumber"):
        try:
            number = int(query["versionNumber"])
        except ValueError:
            raise invalid("versionNumber must be an integer") from None
        if 1 <= number <= len(versions):
            return versions[number - 1]
        raise not_found("secret version")
    if query.get("secretVersionName"):
        for version in versions:
            if version.get("versionName") == query["secretVersionName"]:
                return version
        raise not_found("secret version")
    stage = (query.get("stage") or "CURRENT").upper()
    if stage not in STAGES:
        raise invalid(f"stage must be one of {', '.join(STAGES)}")
    for version in reversed(versions):
        if stage in _stages(secret, version["versionNumber"]):
            return version
    raise not_found(f"secret version in stage {stage}")


def _bundle(secret: Resource, version: dict[str, Any]) -> dict[str, Any]:
    return {
        "secretId": secret["id"],
        "timeCreated": version["timeCreated"],
        "versionNumber": version["versionNumber"],
        "versionName": version.get("versionName"),
        "secretBundleContent": {"contentType": "BASE64", "content": version["content"]},
        "timeOfDeletion": None,
        "timeOfExpiry": None,
        "stages": _stages(secret, version["versionNumber"]),
        "metadata": None,
    }


def _bundle_response(secret: Resource, request: Request) -> Response:
    version = _pick(secret, request.query)
    return Response.json(_bundle(secret, version), headers={"etag": version["etag"]})


@service.route("GET", "/20190301/secretbundles/{secretId}", "GetSecretBundle")
def get_secret_bundle(request: Request) -> Response:
    return _bundle_response(request.emulator.store.get(KIND, request.params["secretId"], "secret"), request)


@service.route("POST", "/20190301/secretbundles/actions/getByName", "GetSecretBundleByName")
def get_secret_bundle_by_name(request: Request) -> Response:
    name = required(request.query, "secretName")
    vault = required(request.query, "vaultId")
    secret = _by_name(request.emulator.store, name, vault)
    if secret is None:
        raise not_found("secret")
    return _bundle_response(secret, request)


@service.route("GET", "/20190301/secretbundles/{secretId}/versions", "ListSecretBundleVersions")
def list_secret_bundle_versions(request: Request) -> Response:
    secret = request.emulator.store.get(KIND, request.params["secretId"], "secret")
    if request.query.get("sortBy", "VERSION_NUMBER") != "VERSION_NUMBER":
        raise invalid("sortBy must be VERSION_NUMBER")
    descending = request.query.get("sortOrder", "DESC").upper() != "ASC"
    summaries = [
        {k: v for k, v in _bundle(secret, version).items() if k not in ("secretBundleContent", "metadata")}
        for version in secret["_versions"]
    ]
    summaries.sort(key=lambda s: s["versionNumber"], reverse=descending)
    return paged(request, summaries)


def _by_name(store: Store, name: str, vault: str) -> Resource | None:
    for secret in store.all(KIND):
        if secret["secretName"] == name and secret["vaultId"] == vault:
            return secret
    return None


# --- admin: how secrets come to exist in the emulator ------------------------------
def _content_b64(body: dict[str, Any]) -> str:
    """The secret's bytes as OCI hands them out (base64), from ``contentBase64`` or text ``content``."""
    if "contentBase64" in body:
        try:
            return base64.b64encode(base64.b64decode(str(body["contentBase64"]), validate=True)).decode()
        except (binascii.Error, ValueError):
            raise invalid("contentBase64 is not base64") from None
    if isinstance(body.get("content"), str):
        return base64.b64encode(body["content"].encode()).decode()
    raise missing("content")


@service.route("POST", "/_ocisim/secrets", "AdminPutSecret", authenticated=False)
def admin_put_secret(request: Request) -> Response:
    """Create a secret, or add a version to the one with this name in this vault."""
    body = request.json()
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise missing("name")
    content = _content_b64(body)
    store = request.emulator.store
    vault = str(body.get("vaultId") or default_vault(store))
    now = ids.now_iso()
    secret = _by_name(store, name, vault)
    if secret is None:
        secret = store.add(
            KIND,
            {
                "id": ids.ocid("vaultsecret"),
                "secretName": name,
                "vaultId": vault,
                "compartmentId": body.get("compartmentId") or request.emulator.tenancy,
                "lifecycleState": "ACTIVE",
                "timeCreated": now,
                "_versions": [],
            },
        )
    version = {
        "versionNumber": len(secret["_versions"]) + 1,
        "versionName": body.get("versionName"),
        "content": content,
        "timeCreated": now,
        "etag": ids.etag(),
    }
    secret["_versions"].append(version)
    store.touch()
    return Response.json({"id": secret["id"], "vaultId": vault, "versionNumber": version["versionNumber"]}, status=201)


@service.route("GET", "/_ocisim/secrets", "AdminListSecrets", authenticated=False)
def admin_list_secrets(request: Request) -> Response:
    """Secrets with their version numbers, never their content."""
    stored = request.emulator.store.all(KIND)
    return Response.json(
        [
            {"id": s["id"], "name": s["secretName"], "vaultId": s["vaultId"], "versions": [v["versionNumber"] for v in s["_versions"]]}
            for s in stored
        ]
    )
