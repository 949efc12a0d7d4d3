"""Every step converges: killed mid-way then run again, or run again after it finished.

This is what clearing a task in the Airflow UI, a pod eviction or a node loss does to an
import. For each of the 14 steps, one test kills the step's process while the emulator holds
the step's main API call (its create, or its last call when it creates nothing) and lets the
call land after the process died, then runs the step again and the rest of the import; a
second test runs each step twice with the same state. Both must end with one worker VM
(terminated), one AVAILABLE volume holding exactly the image's bytes, no PAR and no live
attachment; a finished step run again must make no change and return the same result.

One small image serves the module; steps other than the killed one run in-process
(``run_step_in_process``) to keep the suite fast, the killed one as a real subprocess.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest
from importkit import Bucket, assert_nothing_leaked, new_run_id, run_pars, run_resources
from stepkit import calls_since, created_since, final_state, kill_step_during, small_image, upload_request

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import STEP_ORDER, ImportOutcome, StepRun, run_import, run_step_in_process, step_environment

# The call each step is killed in. For a step that creates something it is that create (the
# resource appears after the process died); otherwise the step's last or most telling call.
KILL_POINTS = {
    "inspect_object": "ListAvailabilityDomains",
    "launch_worker": "LaunchInstance",
    "wait_worker_ready": "CreateInstanceAgentCommand",
    "download_image": "CreateInstanceAgentCommand",  # its PAR exists already
    "create_volume": "CreateVolume",
    "attach_volume": "AttachVolume",
    "write_image": "CreateInstanceAgentCommand",
    "verify_image": "CreateInstanceAgentCommand",
    "fsck_volume": "CreateInstanceAgentCommand",
    "detach_volume": "DetachVolume",
    "terminate_worker": "TerminateInstance",
    "tune_volume": "UpdateVolume",
    "assign_backup_policy": "CreateVolumeBackupPolicyAssignment",
    "report": "GetVolume",
}
# Calls that change something. A finished step run again makes none of them, except that
# download_image never reuses a command that carried a PAR URL: it downloads again through
# a fresh PAR (the script finds the image already there) and deletes that PAR; and the scripts
# whose output goes to the work bucket (download, fsck: remote.LARGE_RESULTS) find it deleted
# once read, so they run again (read-only for fsck) through a fresh output PAR, then delete
# the output object and that PAR.
MUTATING = {
    "LaunchInstance",
    "TerminateInstance",
    "InstanceAction",
    "CreateVolume",
    "UpdateVolume",
    "DeleteVolume",
    "AttachVolume",
    "DetachVolume",
    "CreatePreauthenticatedRequest",
    "DeletePreauthenticatedRequest",
    "CreateInstanceAgentCommand",
    "CancelInstanceAgentCommand",
    "CreateVolumeBackupPolicyAssignment",
    "DeleteVolumeBackupPolicyAssignment",
    "PutObject",
    "DeleteObject",
}
_RUN_AGAIN = {"CreatePreauthenticatedRequest", "CreateInstanceAgentCommand", "DeletePreauthenticatedRequest", "DeleteObject"}
RERUN_MAY_CALL = {"download_image": _RUN_AGAIN, "fsck_volume": _RUN_AGAIN}


@dataclass(frozen=True)
class Source:
    request: dict[str, Any]
    expected: bytes  # what qemu-img convert -O raw makes of the image


@pytest.fixture(scope="module")
def source(bucket: Bucket, tmp_path_factory: pytest.TempPathFactory) -> Source:
    image = small_image(tmp_path_factory.mktemp("idempotency"))
    # backup_policy, so that assign_backup_policy has work to do
    request = upload_request(bucket, image.path, "idempotency/disk.qcow2", {"backup_policy": "bronze"})
    return Source(request, image.expected)


def _steps(emu: EmulatorHandle, run_id: str, request: dict[str, Any], steps: tuple[str, ...], state: dict[str, Any]) -> ImportOutcome:
    outcome = run_import(emu, run_id, request, steps=steps, state=state, runner=run_step_in_process)
    assert outcome.succeeded, f"{outcome.failed_step} failed: {outcome.error}\n{outcome.runs[-1].output}"
    return outcome


def _once(emu: EmulatorHandle, step: str, run_id: str, request: dict[str, Any], state: dict[str, Any]) -> StepRun:
    run = run_step_in_process(step, run_id, request, state, step_environment(emu))
    assert run.exit_code == 0, f"{step} run again failed: {run.cause}\n{run.output}"
    assert run.result is not None
    return run


def _comparable(result: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (result or {}).items() if k != "seconds"}


def _assert_converged(emu: EmulatorHandle, outcome: ImportOutcome, source: Source, since: float) -> None:
    """One worker (terminated), one volume with the image's bytes, one attachment (detached), no PAR."""
    assert outcome.succeeded, f"{outcome.failed_step}: {outcome.error}"
    volume = assert_nothing_leaked(emu, outcome, source.expected)
    assert volume is not None
    state = outcome.state
    instance_id = state["launch_worker"]["instance_id"]
    volume_id = state["create_volume"]["volume_id"]

    assert created_since(emu, "instance", since) == [instance_id], "not exactly one worker VM was created"
    assert [i["id"] for i in run_resources(emu, outcome.run_id, "instance")] == [instance_id]
    assert final_state(emu, "instance", instance_id) == "TERMINATED"
    assert created_since(emu, "volume", since) == [volume_id], "not exactly one volume was created"
    assert volume["id"] == volume_id and volume["lifecycleState"] == "AVAILABLE"
    attachments = created_since(emu, "volumeattachment", since)
    assert attachments == [state["attach_volume"]["attachment_id"]], "not exactly one volume attachment was made"
    assert final_state(emu, "volumeattachment", attachments[0]) == "DETACHED"
    assert not run_pars(emu, outcome.run_id)
    assert not [p for p in emu.resources("par") if p["id"] in created_since(emu, "par", since)], "a PAR of the run is left"
    assignments = [a for a in emu.resources("volumebackuppolicyassignment") if a.get("assetId") == volume_id]
    assert len(assignments) == 1, f"backup policy assigned {len(assignments)} times"

    report = outcome.report or {}
    assert report["volume_id"] == volume_id
    assert report["volume_state"] == "AVAILABLE"
    assert report["checks"]["verify"] == "identical"
    assert [p["status"] for p in report["checks"]["fsck"]] == ["clean", "clean"]
    assert state["terminate_worker"]["terminated"] == [instance_id]
    assert state["detach_volume"]["detached"] == [state["attach_volume"]["attachment_id"]]


def _kill_and_run_again(emu: EmulatorHandle, source: Source, step: str, label: str) -> None:
    since = time.time()
    run_id = new_run_id(f"{label}-{step}")
    index = STEP_ORDER.index(step)
    before = _steps(emu, run_id, source.request, STEP_ORDER[:index], {})

    killed = kill_step_during(emu, step, run_id, source.request, before.state, KILL_POINTS[step])
    assert f"Step {step} of run {run_id}" in killed.output

    rerun = _once(emu, step, run_id, source.request, before.state)
    if index >= STEP_ORDER.index("download_image"):
        names = [p.get("name") for p in run_pars(emu, run_id)]
        assert not names, f"{step} run again left the PAR(s) {names}"
    after = _steps(emu, run_id, source.request, STEP_ORDER[index + 1 :], {**before.state, step: rerun.result})
    _assert_converged(emu, ImportOutcome(run_id, after.state, [*before.runs, rerun, *after.runs]), source, since)


@pytest.mark.parametrize("step", STEP_ORDER)
def test_step_killed_midway_then_run_again_converges(emu: EmulatorHandle, source: Source, step: str) -> None:
    _kill_and_run_again(emu, source, step, "kill")


@pytest.mark.parametrize("step", ["launch_worker", "create_volume", "attach_volume", "detach_volume", "terminate_worker", "tune_volume"])
def test_step_killed_midway_converges_with_slow_lifecycles(emu: EmulatorHandle, source: Source, step: str) -> None:
    """As above, but OCI-like transitions take time: the step run again meets PROVISIONING, ATTACHING, DETACHING..."""
    emu.configure(lifecycle_seconds=0.3)
    _kill_and_run_again(emu, source, step, "kill-slow")


@pytest.mark.parametrize("step", STEP_ORDER)
def test_finished_step_run_again_is_a_no_op(emu: EmulatorHandle, source: Source, step: str) -> None:
    since = time.time()
    run_id = new_run_id(f"again-{step}")
    index = STEP_ORDER.index(step)
    upto = _steps(emu, run_id, source.request, STEP_ORDER[: index + 1], {})
    first = upto.state[step]
    prior = {name: upto.state[name] for name in STEP_ORDER[:index]}
    if index == 0:  # as the DAG passes it: the run instance's key from its later steps' results
        prior = {"launch_worker": {"run_key": first["run_key"]}}

    mark = time.time()
    again = _once(emu, step, run_id, source.request, prior)
    if step == "detach_volume":  # from here on the volume is delivered: a re-run says so and touches nothing
        first = {"delivered": True, "volume_id": first["volume_id"], "run_key": first["run_key"], "step": step}
    if step == "report":
        assert again.result is not None and again.result.pop("already_delivered") is True
        assert [volume.pop("already_delivered") for volume in again.result["volumes"]] == [True]
        first = {k: v for k, v in first.items() if k != "already_delivered"}
        first["volumes"] = [{k: v for k, v in volume.items() if k != "already_delivered"} for volume in first["volumes"]]
    assert _comparable(again.result) == _comparable(first), f"{step} returned another result when run again"
    changes = sorted({c["operation"] for c in calls_since(emu, mark) if c["operation"] in MUTATING})
    assert set(changes) <= RERUN_MAY_CALL.get(step, set()), f"{step} run again changed something: {changes}"
    assert not run_pars(emu, run_id), f"{step} run again left a PAR"

    after = _steps(emu, run_id, source.request, STEP_ORDER[index + 1 :], upto.state)
    _assert_converged(emu, ImportOutcome(run_id, after.state, [*upto.runs, again, *after.runs]), source, since)
