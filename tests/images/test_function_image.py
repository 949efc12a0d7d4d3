"""The function image, served through its own fdk entry point as OCI Functions serves it.

The local function host starts the image with podman (its entry point, its user, a read-only
root file system, the configuration as environment, ``/tmp/iofs`` from the host) and speaks
to the fdk on the socket it creates there, the way the Fn agent does.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import podman

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.fnhost import SOCKET, FdkContainer


def test_the_image_is_configured_as_oci_functions_expects(function_image: str) -> None:
    config = json.loads(podman("image", "inspect", function_image).stdout)[0]["Config"]
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["/opt/function/bin/fdk", "/function/func.py", "handler"]


def test_the_fdk_in_the_image_answers_a_probe_on_its_socket(function_image: str, emulator: EmulatorHandle, tmp_path: Path) -> None:
    """A probe through the container's fdk: it reads its Vault secret from the emulator (API key
    mounted read-only), finds no Airflow at the configured URL, and says so in a 200 answer."""
    secret = emulator.admin("POST", "secrets", {"name": "image-test-login", "content": json.dumps({"username": "u", "password": "p" * 12})})
    config = {
        "VDIMPORT_AIRFLOW_URL": "http://127.0.0.1:9",
        "VDIMPORT_AIRFLOW_SECRET_ID": secret["id"],
        "VDIMPORT_BUCKETS": "images",
        "VDIMPORT_OCI_AUTH": "config_file",
        "VDIMPORT_OCI_CONFIG": str(emulator.config_path),
        "VDIMPORT_OCI_ENDPOINT": emulator.endpoint,
    }
    fdk = FdkContainer(tmp_path, config, image=function_image)
    try:
        status, body = fdk.invoke(b'{"vdimport": "preflight"}', "call-1")
        answer = json.loads(body)
        assert status == 200 and answer["decision"] == "preflight" and answer["ok"] is False, answer
        login = next(c for c in answer["checks"] if c["name"] == "login")
        assert "unavailable" in login["detail"] and "p" * 12 not in body.decode()
        status, body = fdk.invoke(b'{"not": "an event"}', "call-2")
        assert status == 200 and json.loads(body)["decision"] == "rejected"
        assert (tmp_path / "iofs" / SOCKET).is_symlink()  # the fdk's link to its phony socket, made in the container
    finally:
        fdk.stop()
    assert podman("ps", "--all", "--filter", f"name={fdk.name}", "--format", "{{.Names}}").stdout.strip() == ""
