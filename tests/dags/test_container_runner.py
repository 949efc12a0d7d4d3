"""The container runner's command lines, held to the pod's contract without needing podman.

tests/images runs them for real (make images-test); here, on every machine, the flags that make
a step run as its pod would: the image's own user and entry point, a read-only root file system,
no capabilities, the one writable mount at /airflow/xcom, only the ConfigMap's variables, no
value on the command line, and a key copy the container's user can read.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from vdimport_dag.containers import ARGS_DIR, OCI_DIR, XCOM_DIR, function_command, step_command
from vdimport_dag.settings import SettingsError, load_settings

SECRETISH = "s3cr3t-value-never-on-argv"


def _oci_config(tmp_path: Path) -> Path:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    key = private / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    config = private / "config"
    config.write_text(
        f"[DEFAULT]\nuser=ocid1.user.oc1..u\nfingerprint=aa:bb\nkey_file={key}\ntenancy=ocid1.tenancy.oc1..t\nregion=us-ashburn-1\n"
    )
    return config


def test_a_step_runs_as_its_pod_would(tmp_path: Path) -> None:
    workdir = tmp_path / "step"
    workdir.mkdir()
    (workdir / "state.json").write_text("{}")
    env = {
        "PATH": "/usr/bin",
        "AIRFLOW__CORE__FERNET_KEY": SECRETISH,
        "HOME": "/root",
        "VDIMPORT_COMPARTMENT_ID": "ocid1.compartment.oc1..c",
        "VDIMPORT_RESULT_PATH": "/tmp/elsewhere.json",
        "VDIMPORT_OCI_CONFIG": str(_oci_config(tmp_path)),
        "OCI_RESOURCE_PRINCIPAL_VERSION": "2.2",
        "VDIMPORT_NOTIFICATION_TOPIC_ID": SECRETISH,
    }
    args = ["write_image", "--run-id", "r", "--request", "{}", "--state", f"@{workdir / 'state.json'}"]
    command, podman_env = step_command("localhost/vdimport-worker:dev", "vdimport-write-image-1", args, env, workdir)
    image_at = command.index("localhost/vdimport-worker:dev")
    flags, argv = command[:image_at], command[image_at + 1 :]
    assert flags[:5] == ["podman", "--runtime", "runc", "run", "--rm"]
    for required in ("--read-only", "no-new-privileges"):
        assert required in flags
    assert flags[flags.index("--cap-drop") + 1] == "ALL"
    assert "--user" not in flags and "--entrypoint" not in flags and "--privileged" not in flags  # the image's own
    assert argv[:-1] == args[:-1] and argv[-1] == f"@{ARGS_DIR}/state.json"  # @file arguments are read from the mount
    mounts = [flags[i + 1] for i, f in enumerate(flags) if f == "--volume"]
    assert f"{workdir / 'xcom'}:{XCOM_DIR}:rw" in mounts
    assert all(m.endswith(":ro") for m in mounts if XCOM_DIR not in m)
    # only the ConfigMap's variables, by name; their values only in podman's environment
    names = sorted(flags[i + 1] for i, f in enumerate(flags) if f == "--env")
    assert names == ["OCI_RESOURCE_PRINCIPAL_VERSION", "VDIMPORT_COMPARTMENT_ID", "VDIMPORT_NOTIFICATION_TOPIC_ID", "VDIMPORT_OCI_CONFIG"]
    assert SECRETISH not in " ".join(command) and "AIRFLOW__CORE__FERNET_KEY" not in podman_env
    # the API key: a copy the container's user can read, and the config pointing at it in the container
    assert podman_env["VDIMPORT_OCI_CONFIG"] == f"{OCI_DIR}/config"
    copied = (workdir / "oci" / "config").read_text()
    assert f"key_file = {OCI_DIR}/key-DEFAULT.pem" in copied
    assert stat.S_IMODE((workdir / "oci" / "key-DEFAULT.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((workdir / "xcom").stat().st_mode) == 0o777


def test_the_function_gets_its_socket_directory_and_config(tmp_path: Path) -> None:
    env = {"FN_LISTENER": f"unix:{tmp_path / 'iofs' / 'fn.sock'}", "FN_FORMAT": "http-stream", "VDIMPORT_BUCKETS": "b", "PATH": "/bin"}
    command, podman_env, iofs = function_command("localhost/vdimport-function:dev", "fn-1", env, tmp_path)
    assert command[-1] == "localhost/vdimport-function:dev"  # its own entry point: fdk func.py handler
    assert podman_env["FN_LISTENER"] == "unix:/tmp/iofs/fn.sock" and iofs == tmp_path / "iofs"
    assert f"{iofs}:/tmp/iofs:rw" in command and "--read-only" in command


def test_the_local_runner_setting_is_checked() -> None:
    assert load_settings({}, variable=dict).local_runner == "subprocess"
    assert load_settings({"VDIMPORT_LOCAL_RUNNER": "Container"}, variable=dict).local_runner == "container"
    with pytest.raises(SettingsError, match="VDIMPORT_LOCAL_RUNNER must be one of subprocess, container"):
        load_settings({"VDIMPORT_LOCAL_RUNNER": "docker"}, variable=dict)
