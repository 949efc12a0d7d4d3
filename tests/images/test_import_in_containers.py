"""One whole import with every step in the step-runner image and the trigger in the function image.

``vdimport-local up --runner container``: Airflow's local operator starts each step with
``podman run`` of the step-runner image (``dags/vdimport_dag/container_runner.py``), and the
function host serves the function image's own fdk. The upload goes through the event as
always; the volume must hold the disk's bytes, and no step ran outside a container.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import podman
from stackkit import cli

from vdimport_local.airflow import free_port
from vdimport_local.diskimages import Partition, build_disk, convert, sample_files
from vdimport_local.pipeline import STEP_ORDER

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def test_an_import_with_every_step_and_the_trigger_in_the_images(step_image: str, function_image: str, tmp_path: Path) -> None:
    home = tmp_path / "home"
    raw = build_disk(tmp_path / "disk.raw", [Partition("ext4", 24, sample_files(seed=11, size=2 << 20))], table="gpt")
    image = convert(raw, "qcow2", tmp_path / "in containers.qcow2")
    up = cli(home, "up", "--runner", "container", "--image", step_image, "--lifecycle-seconds", "0.2", "--airflow-port", str(free_port()))
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert f"containers of {step_image}" in up.stdout
        status = json.loads(cli(home, "status", "--json").stdout)
        assert status["runner"] == {"steps": "container", "image": step_image, "function_image": function_image}
        done = cli(home, "import", str(image), "--wait", "--json", timeout=900)
        result = json.loads(done.stdout)
        assert done.returncode == 0 and result["state"] == "success", result
        assert [s["name"] for s in result["steps"]] == list(STEP_ORDER)
        expected = raw.read_bytes()
        with open(result["volume_path"], "rb") as f:
            assert f.read(len(expected)) == expected
        # every step's task log says it ran in a container of the image; none as a subprocess
        for step in STEP_ORDER:
            log = cli(home, "logs", step, "--run", result["dag_run_id"]).stdout
            assert f"of image {step_image}" in log and "as a local subprocess" not in log, step
        # the trigger ran in the function image (its container is up, its fdk answered)
        names = podman("ps", "--format", "{{.Image}} {{.Names}}").stdout
        assert any(line.startswith(function_image) for line in names.splitlines()), names
    finally:
        cli(home, "down")
    leftover = subprocess.run(["podman", "ps", "--all", "--format", "{{.Names}}"], capture_output=True, text=True, check=False).stdout
    assert not [n for n in leftover.split() if n.startswith("vdimport-")], leftover
