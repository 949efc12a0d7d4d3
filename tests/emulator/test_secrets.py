"""Vault Secrets through the real SDK: bundles by id, by name, by version and stage."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid

import oci
import pytest

from vdimport_local.emulator.client import EmulatorHandle

NO_RETRY = oci.retry.NoneRetryStrategy()


@pytest.fixture
def secrets(emu: EmulatorHandle) -> oci.secrets.SecretsClient:
    return emu.client(oci.secrets.SecretsClient, retry_strategy=NO_RETRY)


def put(emu: EmulatorHandle, name: str, content: str, **extra: str) -> dict[str, object]:
    return dict(emu.admin("POST", "secrets", {"name": name, "content": content, **extra}))


def decoded(bundle: oci.secrets.models.SecretBundle) -> str:
    assert bundle.secret_bundle_content.content_type == "BASE64"
    return base64.b64decode(bundle.secret_bundle_content.content).decode()


def test_secret_by_id_and_by_name(emu: EmulatorHandle, secrets: oci.secrets.SecretsClient) -> None:
    name = f"airflow-{uuid.uuid4().hex[:8]}"
    made = put(emu, name, "s3cr3t-password")
    assert str(made["id"]).startswith("ocid1.vaultsecret.")
    assert made["versionNumber"] == 1
    bundle = secrets.get_secret_bundle(made["id"]).data
    assert (bundle.secret_id, bundle.version_number, bundle.stages) == (made["id"], 1, ["CURRENT", "LATEST"])
    assert decoded(bundle) == "s3cr3t-password"
    by_name = secrets.get_secret_bundle_by_name(name, made["vaultId"]).data
    assert (by_name.secret_id, decoded(by_name)) == (made["id"], "s3cr3t-password")


def test_posting_the_same_name_rotates_the_secret(emu: EmulatorHandle, secrets: oci.secrets.SecretsClient) -> None:
    name = f"rotated-{uuid.uuid4().hex[:8]}"
    first = put(emu, name, "one")
    second = put(emu, name, "two")
    third = put(emu, name, "three")
    assert first["id"] == second["id"] == third["id"]
    assert (second["versionNumber"], third["versionNumber"]) == (2, 3)
    sid = str(first["id"])
    assert decoded(secrets.get_secret_bundle(sid).data) == "three"
    assert decoded(secrets.get_secret_bundle(sid, stage="PREVIOUS").data) == "two"
    old = secrets.get_secret_bundle(sid, version_number=1).data
    assert (decoded(old), old.stages) == ("one", ["DEPRECATED"])
    by_name = secrets.get_secret_bundle_by_name(name, first["vaultId"], version_number=2).data
    assert (decoded(by_name), by_name.stages) == ("two", ["PREVIOUS"])
    versions = secrets.list_secret_bundle_versions(sid).data
    assert [(v.version_number, v.stages) for v in versions] == [(3, ["CURRENT", "LATEST"]), (2, ["PREVIOUS"]), (1, ["DEPRECATED"])]
    assert [v.version_number for v in secrets.list_secret_bundle_versions(sid, sort_order="ASC").data] == [1, 2, 3]


def test_same_name_in_another_vault_is_another_secret(emu: EmulatorHandle, secrets: oci.secrets.SecretsClient) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    vault = "ocid1.vault.oc1.iad.aothervault"
    default = put(emu, name, "default vault")
    other = put(emu, name, "other vault", vaultId=vault)
    assert default["id"] != other["id"]
    assert other["vaultId"] == vault
    assert decoded(secrets.get_secret_bundle_by_name(name, vault).data) == "other vault"
    assert decoded(secrets.get_secret_bundle_by_name(name, default["vaultId"]).data) == "default vault"


def test_binary_content(emu: EmulatorHandle, secrets: oci.secrets.SecretsClient) -> None:
    raw = bytes(range(256))
    made = emu.admin("POST", "secrets", {"name": f"bin-{uuid.uuid4().hex[:8]}", "contentBase64": base64.b64encode(raw).decode()})
    assert base64.b64decode(secrets.get_secret_bundle(made["id"]).data.secret_bundle_content.content) == raw


def test_unknown_secrets_and_versions_are_404(emu: EmulatorHandle, secrets: oci.secrets.SecretsClient) -> None:
    made = put(emu, f"lonely-{uuid.uuid4().hex[:8]}", "x")
    for call, args, kwargs in [
        (secrets.get_secret_bundle, ("ocid1.vaultsecret.oc1.iad.anothere",), {}),
        (secrets.get_secret_bundle_by_name, ("no-such-secret", made["vaultId"]), {}),
        (secrets.get_secret_bundle_by_name, (f"lonely-{uuid.uuid4().hex[:8]}", "ocid1.vault.oc1.iad.anope"), {}),
        (secrets.get_secret_bundle, (made["id"],), {"version_number": 2}),
        (secrets.get_secret_bundle, (made["id"],), {"stage": "PREVIOUS"}),
        (secrets.get_secret_bundle, (made["id"],), {"stage": "PENDING"}),
    ]:
        with pytest.raises(oci.exceptions.ServiceError) as err:
            call(*args, **kwargs)
        assert (err.value.status, err.value.code) == (404, "NotAuthorizedOrNotFound"), (call, args, kwargs)


def test_requests_must_be_signed_and_complete(emu: EmulatorHandle, secrets: oci.secrets.SecretsClient) -> None:
    made = put(emu, f"signed-{uuid.uuid4().hex[:8]}", "x")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{emu.endpoint}/20190301/secretbundles/{made['id']}")
    assert err.value.code == 401
    with pytest.raises(oci.exceptions.ServiceError) as missing:
        secrets.base_client.call_api(
            resource_path="/secretbundles/actions/getByName", method="POST", query_params={"secretName": "x"}, response_type="SecretBundle"
        )
    assert (missing.value.status, missing.value.code) == (400, "MissingParameter")


def test_admin_listing_never_shows_content(emu: EmulatorHandle) -> None:
    name = f"listed-{uuid.uuid4().hex[:8]}"
    put(emu, name, "do-not-show-me")
    put(emu, name, "nor-me")
    listed = [s for s in emu.admin("GET", "secrets") if s["name"] == name]
    assert [s["versions"] for s in listed] == [[1, 2]]
    everything = json.dumps(emu.admin("GET", "resources"))
    assert "do-not-show-me" not in everything
    assert base64.b64encode(b"do-not-show-me").decode() not in everything
