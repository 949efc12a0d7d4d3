"""The worker VM as launched: what an operator would check in the console.

The worker parses hostile images; instance metadata answering any process without a header
(IMDS v1) is the classic SSRF path to it, so legacy endpoints are off.
"""

from __future__ import annotations

from pathlib import Path

from importkit import Bucket, new_run_id
from stepkit import small_image, upload_request

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import run_import, run_step_in_process


def test_the_worker_answers_only_imds_v2_and_carries_the_runs_tags(emu: EmulatorHandle, bucket: Bucket, tmp_path: Path) -> None:
    request = upload_request(bucket, small_image(tmp_path).path, "imds.qcow2")
    outcome = run_import(emu, new_run_id("imds"), request, steps=["inspect_object", "launch_worker"], runner=run_step_in_process)
    assert outcome.succeeded, outcome.error
    instance_id = outcome.state["launch_worker"]["instance_id"]
    [instance] = [i for i in emu.resources("instance") if i["id"] == instance_id]
    assert instance["instanceOptions"] == {"areLegacyImdsEndpointsDisabled": True}
    assert instance["freeformTags"]["vdimport-role"] == "worker"
    cleanup = run_import(emu, outcome.run_id, request, steps=["terminate_worker"], state=outcome.state, runner=run_step_in_process)
    assert cleanup.succeeded, cleanup.error
