"""The emulator's common behaviour: signatures, errors, retry tokens, faults, restarts."""

from __future__ import annotations

import copy
import shutil
import subprocess

import oci
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vdimport_local.emulator.client import EmulatorHandle


def test_sdk_lists_three_availability_domains(emu: EmulatorHandle) -> None:
    identity = emu.client(oci.identity.IdentityClient)
    names = [ad.name for ad in identity.list_availability_domains(emu.tenancy).data]
    assert len(names) == 3
    assert [n.rsplit("-", 1)[-1] for n in names] == ["1", "2", "3"]


def test_request_signed_with_another_key_is_rejected(emu: EmulatorHandle, tmp_path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = tmp_path / "other.pem"
    other.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    config = dict(emu.config, key_file=str(other))
    identity = oci.identity.IdentityClient(config, service_endpoint=emu.endpoint)
    with pytest.raises(oci.exceptions.ServiceError) as err:
        identity.list_availability_domains(emu.tenancy)
    assert err.value.status == 401
    assert err.value.code == "NotAuthenticated"


def test_unsigned_request_is_rejected(emu: EmulatorHandle) -> None:
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{emu.endpoint}/20160918/availabilityDomains?compartmentId={emu.tenancy}")
    assert err.value.code == 401
    assert b'"NotAuthenticated"' in err.value.read()
    assert err.value.headers["opc-request-id"]


def test_missing_parameter_is_a_400(emu: EmulatorHandle) -> None:
    identity = emu.client(oci.identity.IdentityClient)
    with pytest.raises(oci.exceptions.ServiceError) as err:
        identity.base_client.call_api(resource_path="/availabilityDomains", method="GET", response_type="list[AvailabilityDomain]")
    assert (err.value.status, err.value.code) == (400, "MissingParameter")


def test_fault_fails_the_nth_call_only(emu: EmulatorHandle) -> None:
    identity = emu.client(oci.identity.IdentityClient, retry_strategy=oci.retry.NoneRetryStrategy())
    emu.fault("ListAvailabilityDomains", nth=2, status=500, message="Out of host capacity.")
    identity.list_availability_domains(emu.tenancy)
    with pytest.raises(oci.exceptions.ServiceError) as err:
        identity.list_availability_domains(emu.tenancy)
    assert (err.value.status, err.value.code, err.value.message) == (500, "InternalError", "Out of host capacity.")
    identity.list_availability_domains(emu.tenancy)


def test_throttling_is_retried_by_the_sdk_retry_strategy(emu: EmulatorHandle) -> None:
    before = len(emu.calls("ListAvailabilityDomains"))
    emu.fault("ListAvailabilityDomains", status=429, times=3)
    # The SDK's default strategy decides what is retried; only its back-off (seconds) is cut short.
    strategy = copy.copy(oci.retry.DEFAULT_RETRY_STRATEGY)
    strategy.max_wait_between_calls_seconds = 0.05
    identity = emu.client(oci.identity.IdentityClient, retry_strategy=strategy)
    assert len(identity.list_availability_domains(emu.tenancy).data) == 3
    statuses = [c["status"] for c in emu.calls("ListAvailabilityDomains")[before:]]
    assert statuses == [429, 429, 429, 200]


@pytest.mark.skipif(not shutil.which("oci"), reason="oci CLI not installed")
def test_oci_cli_reaches_the_emulator(emu: EmulatorHandle) -> None:
    out = subprocess.run(
        [
            "oci",
            "--config-file",
            str(emu.config_path),
            "--endpoint",
            emu.endpoint,
            "iam",
            "availability-domain",
            "list",
            "--compartment-id",
            emu.tenancy,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "AD-3" in out.stdout
