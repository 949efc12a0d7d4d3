"""The step-runner image's contract, checked on the image `make images` built from images/worker/Dockerfile.

What only the image can get wrong: its user, its entry point, what it can write, where its
result lands for the XCom sidecar, its CA certificates for HTTPS, and that no credential is in
any layer. A step runs exactly as the DAG's container runner starts it (the same command line).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

from conftest import podman
from vdimport_dag.containers import step_command

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment

# A real key: the PEM header followed by its base64 body (code that only names the header, as the
# SDK's and Python's own do, is not a key); an OCI config file's key_file/fingerprint lines.
SECRET_PATTERNS = (
    re.compile(rb"-----BEGIN (?:RSA |EC |OPENSSH |ENCRYPTED )?PRIVATE KEY-----\r?\n[A-Za-z0-9+/=]{40,}"),
    re.compile(rb"^\s*key_file\s*=\s*\S+\s*$", re.MULTILINE),
    re.compile(rb"^\s*fingerprint\s*=\s*[0-9a-f]{2}(?::[0-9a-f]{2}){15}\s*$", re.MULTILINE),
)
CODE = (".py", ".pyc", ".pyi", ".so")


def _run(
    image: str, arguments: list[str], env: dict[str, str], workdir: Path, extra: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    command, podman_env = step_command(image, f"vdimport-test-{os.getpid()}-{workdir.name}", arguments, env, workdir)
    if extra:
        at = command.index(image)
        command[at:at] = extra
    return subprocess.run(command, env=podman_env, capture_output=True, text=True, timeout=300, check=False)


def test_the_image_is_configured_as_the_pod_expects(step_image: str) -> None:
    config = json.loads(podman("image", "inspect", step_image).stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["vdimport-step"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["VDIMPORT_AUTH"] == "workload_identity" and env["VDIMPORT_REFUSE_ROOT"] == "1"
    assert not [k for k in env if re.search(r"KEY|SECRET|TOKEN|PASSWORD|FINGERPRINT", k)]


def test_it_refuses_to_run_as_root(step_image: str, tmp_path: Path) -> None:
    done = _run(step_image, ["reap_scan"], {}, tmp_path, extra=["--user", "0"])
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refuses to run as root" in done.stdout


def test_a_step_writes_its_result_where_the_xcom_sidecar_reads_it(step_image: str, emulator: EmulatorHandle, tmp_path: Path) -> None:
    """reap_scan against the emulator, with config-file auth: its result is /airflow/xcom/return.json,
    written by the image's user, and the step's log is on stdout (what `kubectl logs` shows)."""
    env = {k: v for k, v in step_environment(emulator).items() if k.startswith(("VDIMPORT_", "OCI_"))}
    done = _run(step_image, ["reap_scan", "--state", "{}"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = tmp_path / "xcom" / "return.json"
    assert isinstance(json.loads(result.read_text()), dict)
    assert result.stat().st_uid == 10001
    assert "reap_scan" in done.stdout


def test_it_can_write_only_its_result_and_temp_dirs(step_image: str, tmp_path: Path) -> None:
    probe = (
        "import os\n"
        "for d in ('/', '/opt/vdimport', '/etc', '/airflow', '/airflow/xcom', '/tmp', os.path.expanduser('~')):\n"
        "    try:\n"
        "        open(os.path.join(d, 'probe'), 'w').close(); print('writable', d)\n"
        "    except OSError as e:\n"
        "        print('refused', d, e.errno)\n"
    )
    done = _run(step_image, ["-c", probe], {}, tmp_path, extra=["--entrypoint", "python3"])
    writable = sorted(line.split()[1] for line in done.stdout.splitlines() if line.startswith("writable"))
    assert writable == ["/airflow/xcom", "/tmp"], done.stdout + done.stderr


def test_https_to_oci_needs_no_certificate_from_outside(step_image: str, tmp_path: Path) -> None:
    """The image carries a CA bundle that Python's ssl loads (OCI's endpoints are public-CA HTTPS)."""
    done = _run(
        step_image,
        [
            "-c",
            "import ssl; print(len(ssl.create_default_context().get_ca_certs(binary_form=True)) or ssl.get_default_verify_paths().cafile)",
        ],
        {},
        tmp_path,
        extra=["--entrypoint", "python3"],
    )
    assert done.returncode == 0, done.stderr
    paths = _run(
        step_image,
        [
            "-c",
            "import ssl, os; p = ssl.get_default_verify_paths(); print(os.path.exists(p.cafile or '') or os.path.isdir(p.capath or ''))",
        ],
        {},
        tmp_path,
        extra=["--entrypoint", "python3"],
    )
    assert paths.stdout.strip() == "True"


def test_no_layer_holds_a_credential(step_image: str, tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    saved = podman("save", "--format", "docker-archive", "-o", str(archive), step_image, timeout=600)
    assert saved.returncode == 0, saved.stderr
    found: list[str] = []
    with tarfile.open(archive) as outer:
        layers = [m for m in outer.getmembers() if m.name.endswith(".tar")]
        assert layers
        for layer in layers:
            with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
                for member in inner:
                    name = member.name
                    if re.search(r"(^|/)(\.oci/|\.ssh/|id_rsa|id_ed25519|oci_api_key)", name):
                        found.append(f"{layer.name}: {name}")
                        continue
                    if not member.isfile() or member.size > 1 << 20 or ("/site-packages/" in name and "/tests/" in name):
                        continue
                    data = inner.extractfile(member).read()  # type: ignore[union-attr]
                    patterns = SECRET_PATTERNS[:1] if name.endswith(CODE) else SECRET_PATTERNS
                    if any(p.search(data) for p in patterns):
                        found.append(f"{layer.name}: {name}")
    assert found == []
