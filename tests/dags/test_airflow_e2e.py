"""The DAG in a real Airflow 3 (api-server, scheduler, dag-processor, LocalExecutor, local step
runner) against the OCI emulator, driven only through the REST API as the function and the UI do.

One Airflow and one emulator serve the module (``airflowstack.py``: ``VDIMPORT_MAX_WORKER_VMS=2``,
no task retries, so failures show at once). Each test uploads a small real disk image and checks what
a user would: the run's state and its tasks', the task logs, and in the emulator the
volume's bytes, that every worker VM is terminated and that no PAR is left.
Select with ``-m e2e``, skip with ``-m "not e2e"``.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import oci
import pytest
from airflowstack import MAX_VMS, Stack, e2e, run_path, stack  # noqa: F401 - the module's fixtures
from dagkit import DAG_ID
from runkit import of_run

from vdimport_local.airflow import AirflowError, ApiError, LocalAirflow
from vdimport_local.pipeline import LOCAL_SUBNET

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

AFTER_CLEANUP = ("tune_volume", "assign_backup_policy", "report")


def test_an_upload_becomes_a_checked_volume(e2e: Stack) -> None:
    conf = e2e.upload("e2e/happy.qcow2", {"tags": '{"project": "e2e"}', "fsck": "strict"})
    conf["vpus_per_gb"] = 20  # a param as the UI's trigger form sends it
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "success", tasks
    assert set(tasks.values()) == {"success"} and len(tasks) == 16  # the 14 steps, begin and outcome
    e2e.assert_clean(run_id, succeeded=True)
    [volume] = [v for v in e2e.resources(run_id, "volume") if v["lifecycleState"] == "AVAILABLE"]
    assert volume["freeformTags"]["project"] == "e2e" and volume["vpusPerGB"] == 20
    # The step's own output is in the task log, and its result is the task's XCom.
    assert "Step write_image of run" in e2e.log(run_id, "write_image")
    assert e2e.airflow.xcom(DAG_ID, run_id, "launch_worker")["instance_id"] == e2e.resources(run_id, "instance")[0]["id"]


def test_a_second_airflow_in_the_same_home_is_refused(e2e: Stack) -> None:
    with pytest.raises(AirflowError, match="still running"):
        LocalAirflow.start(e2e.airflow.home)
    assert all(e2e.airflow.running().values())


def test_a_bad_request_fails_the_run_before_anything_is_made(e2e: Stack) -> None:
    conf = e2e.upload("e2e/bad-request.qcow2", {"ad_number": "7"})
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "failed"
    assert tasks["inspect_object"] == "failed"
    steps = {t: state for t, state in tasks.items() if t not in ("inspect_object", "begin", "outcome")}
    assert set(steps.values()) == {"upstream_failed"}, "cleanup only runs once something may exist"
    assert (tasks["begin"], tasks["outcome"]) == ("success", "failed"), "the outcome tells the rejection"
    [message] = e2e.messages(run_id)
    assert message["title"].endswith("failed at inspect_object") and "ad_number" in message["body"], message
    assert "ad_number: must be 1, 2 or 3" in e2e.log(run_id, "inspect_object")
    assert not e2e.resources(run_id, "instance") and not e2e.resources(run_id, "volume")


def _kill_step(step: str, run_id: str) -> int:
    """SIGKILL the ``vdimport-step <step> --run-id <run_id>`` process (as a node or OOM kill would)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if step.encode() in argv and run_id.encode() in argv and b"--run-id" in argv:
            os.kill(int(entry.name), signal.SIGKILL)
            return int(entry.name)
    raise AssertionError(f"no {step} process of {run_id}")


def test_a_launch_that_fails_halfway_is_cleaned_up(e2e: Stack) -> None:
    """launch_worker is SIGKILLed while OCI carries out its launch (no chance to clean up after
    itself): the run fails, the teardown does not run (its setup failed), and the reaper finds the VM."""
    rule = e2e.emu.fault("LaunchInstance", action="hang", seconds=2.0)  # held, then carried out
    conf = e2e.upload("e2e/launch-halfway.qcow2")
    run_id = e2e.trigger(conf)
    deadline = time.monotonic() + 60
    while not any(r["id"] == rule and r["hits"] for r in e2e.emu.admin("GET", "faults")):
        assert time.monotonic() < deadline, "launch_worker never reached LaunchInstance"
        time.sleep(0.02)
    # Cleanup's look for the run's VMs is answered only after the held launch has landed
    # (launch_worker made its ListInstances call before LaunchInstance).
    e2e.emu.fault("ListInstances", action="hang", seconds=3.0)
    _kill_step("launch_worker", run_id)
    state, tasks = e2e.finish(run_id)
    assert state == "failed"
    assert (tasks["inspect_object"], tasks["launch_worker"], tasks["terminate_worker"]) == ("success", "failed", "upstream_failed"), tasks
    assert {tasks[t] for t in AFTER_CLEANUP} == {"upstream_failed"}
    e2e.emu.clear_faults()
    [instance] = e2e.resources(run_id, "instance")  # the launch landed after the step died...
    reaped = e2e.reap()
    assert f"worker {instance['id']}" in reaped["removed"], reaped  # ...and the reaper collected it
    e2e.assert_clean(run_id, succeeded=False)


def test_a_failed_write_fails_the_run_and_leaves_nothing(e2e: Stack) -> None:
    conf = e2e.upload("e2e/write-fails.qcow2")
    e2e.emu.fault("RunCommand", action="fail", nth=3)  # the run's scripts: ready, download, write
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "failed"
    assert tasks["write_image"] == "failed" and tasks["terminate_worker"] == "success", tasks
    assert {tasks[t] for t in ("verify_image", "fsck_volume", "detach_volume", *AFTER_CLEANUP)} == {"upstream_failed"}
    assert "write on the worker failed" in e2e.log(run_id, "write_image")
    cleanup = e2e.airflow.xcom(DAG_ID, run_id, "terminate_worker")
    assert len(cleanup["terminated"]) == 1 and len(cleanup["volumes_deleted"]) == 1
    e2e.assert_clean(run_id, succeeded=False)


def test_clearing_a_failed_step_in_the_api_finishes_the_run(e2e: Stack) -> None:
    """The "Airflow UI retry": cleanup fails (OCI refuses the terminate), the run fails and shows
    the VM still up; clearing the failed task through the REST API, as the UI's Clear does,
    finishes the run with exactly one VM made and terminated and one volume."""
    since = time.time()
    conf = e2e.upload("e2e/clear.qcow2")
    e2e.emu.fault("TerminateInstance", status=400, code="InvalidParameter", message="injected", times=1)
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "failed" and tasks["terminate_worker"] == "failed", tasks
    assert {tasks[t] for t in AFTER_CLEANUP} == {"upstream_failed"}, "a failed cleanup fails the run"
    [instance] = e2e.resources(run_id, "instance")
    assert instance["lifecycleState"] == "RUNNING"

    cleared = e2e.airflow.clear(DAG_ID, run_id, ["terminate_worker"], include_downstream=True)
    assert sorted(ti["task_id"] for ti in cleared["task_instances"]) == sorted(["terminate_worker", *AFTER_CLEANUP, "begin", "outcome"])
    state, tasks = e2e.finish(run_id)
    assert state == "success" and set(tasks.values()) == {"success"}, tasks
    e2e.assert_clean(run_id, succeeded=True)
    made = [e["id"] for e in e2e.emu.history("instance") if e["event"] == "created" and e["time"] >= since]
    assert made == [instance["id"]], "exactly one worker VM made"
    assert len(e2e.resources(run_id, "volume")) == 1, "exactly one volume made"


def test_clearing_launch_after_a_failed_write_redoes_the_import(e2e: Stack) -> None:
    """The other "Airflow UI retry": the write failed and cleanup removed the worker and the
    half-written volume; clearing launch_worker with its downstream tasks redoes the data path
    with a fresh worker and ends with one checked volume, every worker terminated."""
    conf = e2e.upload("e2e/clear-launch.qcow2")
    e2e.emu.fault("RunCommand", action="fail", nth=3)  # ready, download, write: the write fails
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "failed" and tasks["write_image"] == "failed", tasks
    e2e.assert_clean(run_id, succeeded=False)

    e2e.airflow.clear(DAG_ID, run_id, ["launch_worker"], include_downstream=True)
    state, tasks = e2e.finish(run_id)
    assert state == "success" and set(tasks.values()) == {"success"}, tasks
    e2e.assert_clean(run_id, succeeded=True)
    workers = e2e.resources(run_id, "instance")
    assert len(workers) == 2, "one worker per attempt at the data path"
    volumes = e2e.resources(run_id, "volume")
    assert sorted(v["lifecycleState"] for v in volumes) == ["AVAILABLE", "TERMINATED"], "the half-written one deleted"


def test_concurrent_uploads_queue_for_worker_vms(e2e: Stack) -> None:
    """Five runs at once with a cap of two: all succeed, never more than two worker VMs alive."""
    since = time.time()
    run_ids = [e2e.trigger(e2e.upload(f"e2e/burst-{n}.qcow2")) for n in range(5)]
    for run_id in run_ids:
        state, tasks = e2e.finish(run_id, timeout=240)
        assert state == "success", (run_id, tasks)
        e2e.assert_clean(run_id, succeeded=True)
    mine = {i["id"] for run_id in run_ids for i in of_run(e2e.emu.resources("instance"), run_id)}
    assert len(mine) == 5
    events = sorted((e["time"], e) for e in e2e.emu.history("instance") if e["id"] in mine and e["time"] >= since)
    alive: set[str] = set()
    most = 0
    for _, event in events:
        if event["event"] == "created":
            alive.add(event["id"])
        elif event["state"] == "TERMINATED" or event["event"] == "removed":
            alive.discard(event["id"])
        most = max(most, len(alive))
    assert most <= MAX_VMS, f"{most} worker VMs alive at once (cap {MAX_VMS})"
    assert most == MAX_VMS, "the runs did not overlap at all"


# --- what Airflow users do to runs (issue: "Airflow UI retry that just works") -------------------
def _user_instance_with(e2e: Stack, volume_id: str) -> tuple[str, str]:
    """A user's own instance (no vdimport tags) with the delivered volume attached: (instance, attachment)."""
    compute = e2e.emu.client(oci.core.ComputeClient)
    volume = e2e.emu.client(oci.core.BlockstorageClient).get_volume(volume_id).data
    image = compute.list_images(e2e.emu.tenancy).data[0].id
    details = oci.core.models.LaunchInstanceDetails(
        availability_domain=volume.availability_domain,
        compartment_id=e2e.emu.tenancy,
        shape="VM.Standard.E4.Flex",
        shape_config=oci.core.models.LaunchInstanceShapeConfigDetails(ocpus=1, memory_in_gbs=8),
        source_details=oci.core.models.InstanceSourceViaImageDetails(image_id=image),
        create_vnic_details=oci.core.models.CreateVnicDetails(subnet_id=LOCAL_SUBNET),
        display_name="users-own-app-server",
    )
    instance = compute.launch_instance(details).data.id
    oci.wait_until(compute, compute.get_instance(instance), "lifecycle_state", "RUNNING", max_wait_seconds=60, max_interval_seconds=1)
    attach = oci.core.models.AttachParavirtualizedVolumeDetails(instance_id=instance, volume_id=volume_id, display_name="users-own")
    attachment = compute.attach_volume(attach).data.id
    oci.wait_until(
        compute, compute.get_volume_attachment(attachment), "lifecycle_state", "ATTACHED", max_wait_seconds=60, max_interval_seconds=1
    )
    return instance, attachment


def test_clear_of_a_failed_write_after_its_retries_resumes_the_import(e2e: Stack) -> None:
    """The obvious action: the write failed for good, cleanup terminated the worker and deleted
    the half-written volume; Clear on the red task (the UI's defaults: with downstream) re-provisions
    a worker, the download and a volume, and the run ends with exactly one volume holding the image."""
    conf = e2e.upload("e2e/clear-write.qcow2")
    e2e.emu.fault("RunCommand", action="fail", nth=3)  # ready, download, write: the write fails
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "failed" and tasks["write_image"] == "failed" and tasks["terminate_worker"] == "success", tasks
    e2e.assert_nothing_left(run_id)
    e2e.emu.clear_faults()  # the user fixed the cause

    cleared = e2e.airflow.clear(DAG_ID, run_id, ["write_image"], include_downstream=True)
    chosen = {ti["task_id"] for ti in cleared["task_instances"]}
    assert {"launch_worker", "write_image", "terminate_worker", "report"} <= chosen, "Airflow clears the setup and teardown too"
    state, tasks = e2e.finish(run_id)
    assert state == "success" and set(tasks.values()) == {"success"}, tasks
    e2e.assert_clean(run_id, succeeded=True)
    assert "Resuming: running download_image again first" in e2e.log(run_id, "write_image")
    failed, succeeded = e2e.messages(run_id)
    assert failed["title"] == "vdimport: e2e/clear-write.qcow2 failed at write_image", failed
    assert "write on the worker failed" in failed["body"]
    [volume] = [v for v in e2e.resources(run_id, "volume") if v["lifecycleState"] == "AVAILABLE"]
    assert volume["id"] in succeeded["body"] and "imported" in succeeded["title"], succeeded
    volumes = e2e.resources(run_id, "volume")
    assert sorted(v["lifecycleState"] for v in volumes) == ["AVAILABLE", "TERMINATED"], "one volume results"


def test_clear_on_a_finished_run_never_touches_the_delivered_volume(e2e: Stack) -> None:
    """Clear detach_volume, then launch_worker, on a finished run while the user's own instance has
    the volume attached: their attachment stays, the bytes stay, no worker is launched, no second volume."""
    run_id = e2e.trigger(e2e.upload("e2e/delivered.qcow2"))
    state, tasks = e2e.finish(run_id)
    assert state == "success", tasks
    [volume] = e2e.resources(run_id, "volume")
    assert volume["freeformTags"]["vdimport-state"] == "delivered"
    instance, attachment = _user_instance_with(e2e, volume["id"])
    workers = {i["id"] for i in e2e.resources(run_id, "instance")}
    attaches = len(e2e.emu.calls("AttachVolume"))
    for task in ("detach_volume", "launch_worker"):
        e2e.airflow.clear(DAG_ID, run_id, [task], include_downstream=True)
        state, tasks = e2e.finish(run_id)
        assert state == "success" and set(tasks.values()) == {"success"}, (task, tasks)
        assert "Already delivered" in e2e.log(run_id, task)
        assert e2e.airflow.xcom(DAG_ID, run_id, "report")["already_delivered"] is True
    compute = e2e.emu.client(oci.core.ComputeClient)
    assert compute.get_volume_attachment(attachment).data.lifecycle_state == "ATTACHED", "the user's attachment was detached"
    assert len(e2e.emu.calls("AttachVolume")) == attaches, "the delivered volume was attached again"
    assert {i["id"] for i in e2e.resources(run_id, "instance")} == workers, "a worker was launched for a delivered import"
    assert [v["id"] for v in e2e.resources(run_id, "volume")] == [volume["id"]], "a second volume"
    e2e.assert_volume_holds_the_image(volume["id"])
    compute.detach_volume(attachment)
    compute.terminate_instance(instance)


@pytest.mark.parametrize(("mark", "held"), [("failed", "write_image"), ("success", "download_image")])
def test_marking_a_running_run_runs_the_teardown_and_ends_failed(e2e: Stack, mark: str, held: str) -> None:
    """Mark failed (mid-write) or Mark success (mid-download) on a running run: Airflow stops the
    step and skips the rest but runs the teardown, so nothing is left; the outcome says no volume
    was delivered, so the run ends failed either way, and the user is told."""
    conf = e2e.upload(f"e2e/mark-{mark}.qcow2")
    scripts = {"download_image": 2, "write_image": 3}  # the run's scripts: ready, download, write
    e2e.emu.fault("RunCommand", action="hang", nth=scripts[held], seconds=120)  # held on the worker
    run_id = e2e.trigger(conf)
    e2e.wait_task(run_id, held)
    e2e.airflow.api("PATCH", run_path(run_id), {"state": mark})
    run = e2e.airflow.wait_for_run(DAG_ID, run_id, 120)
    tasks = {t: ti["state"] for t, ti in e2e.airflow.task_instances(DAG_ID, run_id).items()}
    assert tasks["terminate_worker"] == "success", tasks
    assert run["state"] == "failed" and tasks["outcome"] == "failed", "a run whose import stopped must end failed"
    e2e.assert_nothing_left(run_id)
    [message] = e2e.messages(run_id)
    assert " failed" in message["title"] and "Cause:" in message["body"], message


def test_a_deleted_run_whose_cleanup_ran_out_of_retries_leaves_nothing_after_the_reaper(e2e: Stack) -> None:
    """Cleanup retries run out (OCI keeps refusing the terminate), the user deletes the failed run
    (Airflow refuses to delete a *running* one: HTTP 409); the reaper collects the worker and the
    unverified volume, and leaves every delivered volume of other runs alone."""
    delivered = [v["id"] for v in e2e.emu.resources("volume") if (v.get("freeformTags") or {}).get("vdimport-state") == "delivered"]
    conf = e2e.upload("e2e/deleted.qcow2")
    e2e.emu.fault("RunCommand", action="hang", nth=3, seconds=120)  # mid-write, with a volume attached
    run_id = e2e.trigger(conf)
    e2e.wait_task(run_id, "write_image")
    with pytest.raises(ApiError) as refused:
        e2e.airflow.api("DELETE", run_path(run_id))
    assert refused.value.status == 409, "Airflow deleted a running run"
    e2e.emu.fault("TerminateInstance", status=500, code="InternalError", message="injected", times=1000)
    e2e.airflow.api("PATCH", run_path(run_id), {"state": "failed"})
    e2e.airflow.wait_for_run(DAG_ID, run_id, 120)
    assert e2e.airflow.task_instances(DAG_ID, run_id)["terminate_worker"]["state"] == "failed"
    [worker] = e2e.resources(run_id, "instance")
    assert worker["lifecycleState"] == "RUNNING", "the fault did not hold the worker"
    e2e.airflow.api("DELETE", run_path(run_id))
    e2e.emu.clear_faults()
    reaped = e2e.reap()
    assert f"worker {worker['id']}" in reaped["removed"], reaped
    e2e.assert_nothing_left(run_id)
    after = {v["id"]: v["lifecycleState"] for v in e2e.emu.resources("volume")}
    assert all(after[v] == "AVAILABLE" for v in delivered), "the reaper touched a delivered volume"


def test_a_reused_run_id_gets_a_new_key_and_never_adopts_the_earlier_volume(e2e: Stack) -> None:
    run_id = f"e2e-reused-{os.getpid()}"
    first = e2e.upload("e2e/reused-first.qcow2")
    assert e2e.airflow.trigger(DAG_ID, first, run_id=run_id)["dag_run_id"] == run_id
    state, tasks = e2e.finish(run_id)
    assert state == "success", tasks
    [delivered] = e2e.resources(run_id, "volume")
    e2e.airflow.api("DELETE", run_path(run_id))  # e.g. the function's old login, or an operator
    attaches = [c for c in e2e.emu.calls("AttachVolume")]
    e2e.airflow.trigger(DAG_ID, e2e.upload("e2e/reused-second.qcow2"), run_id=run_id)
    state, tasks = e2e.finish(run_id)
    assert state == "success", tasks
    volumes = {v["id"]: v for v in e2e.resources(run_id, "volume")}
    assert len(volumes) == 2, "the second run made its own volume"
    second = next(v for i, v in volumes.items() if i != delivered["id"])
    assert second["freeformTags"]["vdimport-run"] != delivered["freeformTags"]["vdimport-run"], "the same key twice"
    assert volumes[delivered["id"]]["freeformTags"]["vdimport-state"] == "delivered"
    new_attaches = [c for c in e2e.emu.calls("AttachVolume") if c not in attaches]
    assert new_attaches and all(delivered["id"] not in json.dumps(c) for c in new_attaches), "the earlier volume was attached"
    e2e.assert_volume_holds_the_image(delivered["id"])
