"""What one upload can cost: the operator's cap on the volume an import creates.

An image's header alone sets its volume's size, so a 1 MB upload can ask for a 60 GB (or a
32 TB) volume, written at the write performance level. ``VDIMPORT_MAX_VOLUME_GB`` (chart value
``maxVolumeGb``) refuses such an import at its first step, before any VM or volume exists.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from importkit import Bucket, assert_no_volume_made, new_run_id, run_resources
from stepkit import upload_request

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import run_import, run_step_in_process, step_environment
from vdimport_worker.cli import EXIT_REJECTED


def test_an_image_larger_than_the_deployments_volume_cap_is_refused_before_anything_exists(
    emu: EmulatorHandle, bucket: Bucket, tmp_path: Path
) -> None:
    """The header alone sets the volume's size: a 1 MB upload may ask for 60 GB. With
    VDIMPORT_MAX_VOLUME_GB=50 the run stops at inspect_object (exit 3), no VM, no volume."""
    image = tmp_path / "big.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "60G"], check=True)
    request = upload_request(bucket, image, "big-but-empty.qcow2")
    env = step_environment(emu, {"VDIMPORT_MAX_VOLUME_GB": "50"})
    outcome = run_import(emu, new_run_id("cap"), request, env=env, runner=run_step_in_process)
    assert outcome.failed_step == "inspect_object" and outcome.runs[-1].exit_code == EXIT_REJECTED
    assert outcome.error == "the image needs a 60 GB volume, more than this deployment allows (50 GB)"
    assert_no_volume_made(emu, outcome.run_id)
    assert not run_resources(emu, outcome.run_id, "instance")
