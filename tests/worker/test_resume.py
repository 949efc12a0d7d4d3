"""Resume, delivery and run identity at the step runner, against the emulator.

What the DAG's Clear relies on: a step whose earlier results no longer hold (the cleanup
terminated the worker and deleted the unfinished volume) makes them again first and finishes
the import with exactly one volume; a delivered volume is never attached, written, detached or
tuned again; a run's key is random per run instance and survives re-running inspect_object.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import oci
from importkit import Importer, assert_disks_delivered, assert_nothing_leaked, new_run_id, run_resources

from vdimport_local.diskimages import Partition, build_disk, make_producer_ova
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import STEP_ORDER, run_step_in_process, step_environment
from vdimport_worker.naming import DAG_RUN_TAG, RUN_TAG, is_run_key

DATA_PATH = STEP_ORDER[STEP_ORDER.index("launch_worker") : STEP_ORDER.index("detach_volume") + 1]


def _request(importer: Importer, data: Path, name: str) -> dict[str, Any]:
    etag = importer.bucket.put(name, data)
    return {
        "namespace": importer.bucket.namespace,
        "bucket": importer.bucket.name,
        "object": name,
        "etag": etag,
        "size": data.stat().st_size,
    }


def _request_of(outcome: Any) -> dict[str, Any]:
    """The request of an import that ran, for running its steps again (the object unchanged)."""
    obj = outcome.state["inspect_object"]["object"]
    return {"namespace": obj["namespace"], "bucket": obj["bucket"], "object": obj["name"], "etag": obj["etag"], "size": obj["size"]}


def _clear_from_write_image(emu: EmulatorHandle, failed: Any) -> dict[str, Any]:
    """As the DAG after Clear on a failed write_image: the setup (launch_worker) and write_image
    onwards run again on the failed run's state; returns the state they leave."""
    env, request = step_environment(emu), _request_of(failed)
    state = {step: result for step, result in failed.state.items() if step != "terminate_worker"}
    for step in ("launch_worker", *STEP_ORDER[STEP_ORDER.index("write_image") :]):
        run = run_step_in_process(step, failed.run_id, request, state, env)
        assert run.exit_code == 0, (step, run.output[-3000:])
        state[step] = run.result or {}
    return state


def test_a_cleared_write_after_cleanup_reprovisions_and_finishes(emu: EmulatorHandle, importer: Importer, small_disk: Path) -> None:
    """As the DAG after Clear on write_image: launch_worker (the setup) re-runs, the other earlier
    results are stale; write_image makes a download on the new worker, a new volume, an attachment."""
    run_id = new_run_id("resume-write")
    emu.fault("RunCommand", action="fail", nth=3)  # ready, download, write
    failed = importer.run(small_disk, "resume/write.raw", run_id=run_id)
    assert failed.failed_step == "write_image"
    emu.clear_faults()
    assert not [i for i in run_resources(emu, run_id, "instance") if i["lifecycleState"] != "TERMINATED"]
    state = _clear_from_write_image(emu, failed)
    refreshed = state["write_image"]["refreshed"]
    assert set(refreshed) >= {"wait_worker_ready", "download_image", "create_volume", "attach_volume"}, sorted(refreshed)
    assert refreshed["download_image"]["instance_id"] == state["launch_worker"]["instance_id"]
    volumes = run_resources(emu, run_id, "volume")
    assert sorted(v["lifecycleState"] for v in volumes) == ["AVAILABLE", "TERMINATED"], "exactly one volume results"
    live = next(v for v in volumes if v["lifecycleState"] == "AVAILABLE")
    assert state["report"]["volume_id"] == live["id"] == refreshed["create_volume"]["volume_id"]
    with open(emu.admin("GET", f"volumes/{live['id']}")["path"], "rb") as f:
        assert f.read(small_disk.stat().st_size) == small_disk.read_bytes()


def test_a_delivered_volume_is_final(emu: EmulatorHandle, importer: Importer, small_disk: Path) -> None:
    """Every data-path step re-run after delivery says so and makes no call that changes anything."""
    outcome = importer.run(small_disk, "resume/delivered.raw")
    assert outcome.succeeded, outcome.error
    assert_nothing_leaked(emu, outcome, small_disk.read_bytes())
    volume_id = outcome.report["volume_id"]
    env = step_environment(emu)
    since = len(emu.calls())
    request = _request_of(outcome)
    for step in (*DATA_PATH, "tune_volume", "assign_backup_policy", "report"):
        run = run_step_in_process(step, outcome.run_id, request, outcome.state, env)
        assert run.exit_code == 0, (step, run.output[-2000:])
        if step in DATA_PATH:
            assert run.result == {
                "delivered": True,
                "volume_id": volume_id,
                "run_key": outcome.state["inspect_object"]["run_key"],
                "step": step,
                "seconds": run.result["seconds"],
            }
    changing = [c["operation"] for c in emu.calls()[since:] if not c["operation"].startswith(("Get", "List", "Head"))]
    assert changing == [], f"a re-run of a delivered import changed things: {changing}"


def test_a_users_attachment_of_the_delivered_volume_is_never_detached(emu: EmulatorHandle, importer: Importer, small_disk: Path) -> None:
    """The user attaches the delivered volume to their own instance; a re-run of detach_volume or
    of the cleanup (a Clear) leaves that attachment alone and deletes nothing."""
    outcome = importer.run(small_disk, "resume/users-attachment.raw")
    assert outcome.succeeded, outcome.error
    compute = emu.client(oci.core.ComputeClient)
    volume_id = outcome.report["volume_id"]
    worker = compute.get_instance(outcome.state["launch_worker"]["instance_id"]).data
    theirs = compute.launch_instance(
        oci.core.models.LaunchInstanceDetails(
            availability_domain=worker.availability_domain,
            compartment_id=worker.compartment_id,
            shape=worker.shape,
            shape_config=oci.core.models.LaunchInstanceShapeConfigDetails(ocpus=1, memory_in_gbs=8),
            source_details=oci.core.models.InstanceSourceViaImageDetails(image_id=worker.image_id),
            create_vnic_details=oci.core.models.CreateVnicDetails(subnet_id="ocid1.subnet.oc1.iad.aaaavdimportlocal"),
            display_name="users-own-app-server",
        )
    ).data
    waiting = {"max_wait_seconds": 60, "max_interval_seconds": 0.2}
    oci.wait_until(compute, compute.get_instance(theirs.id), "lifecycle_state", "RUNNING", **waiting)
    details = oci.core.models.AttachParavirtualizedVolumeDetails(instance_id=theirs.id, volume_id=volume_id)
    attachment = compute.attach_volume(details).data
    oci.wait_until(compute, compute.get_volume_attachment(attachment.id), "lifecycle_state", "ATTACHED", **waiting)
    env = step_environment(emu)
    for step in ("detach_volume", "terminate_worker"):
        run = run_step_in_process(step, outcome.run_id, _request_of(outcome), outcome.state, env)
        assert run.exit_code == 0, (step, run.output[-2000:])
    assert compute.get_volume_attachment(attachment.id).data.lifecycle_state == "ATTACHED", "the user's attachment was detached"
    assert [v["lifecycleState"] for v in run_resources(emu, outcome.run_id, "volume")] == ["AVAILABLE"]
    compute.detach_volume(attachment.id)
    compute.terminate_instance(theirs.id)


def test_run_keys_are_random_per_run_instance_and_survive_a_rerun_of_inspect(
    emu: EmulatorHandle, importer: Importer, small_disk: Path
) -> None:
    run_id = new_run_id("keys")
    request = _request(importer, small_disk, "resume/keys.raw")
    env = step_environment(emu)
    first = run_step_in_process("inspect_object", run_id, request, {}, env).result or {}
    second = run_step_in_process("inspect_object", run_id, request, {}, env).result or {}
    assert is_run_key(first["run_key"]) and is_run_key(second["run_key"])
    assert first["run_key"] != second["run_key"], "the same run id gave the same key: a re-used id would adopt resources"
    later = {"launch_worker": {"run_key": first["run_key"]}}
    again = run_step_in_process("inspect_object", run_id, request, later, env).result or {}
    assert again["run_key"] == first["run_key"], "re-running inspect_object in the same run instance changed its key"


def test_resources_carry_the_key_and_the_dag_run_id(emu: EmulatorHandle, importer: Importer, small_disk: Path) -> None:
    outcome = importer.run(small_disk, "resume/tags.raw")
    assert outcome.succeeded, outcome.error
    key = outcome.state["inspect_object"]["run_key"]
    for kind in ("instance", "volume"):
        [resource] = run_resources(emu, outcome.run_id, kind)
        assert resource["freeformTags"][RUN_TAG] == key and resource["freeformTags"][DAG_RUN_TAG] == outcome.run_id
        assert resource["displayName"].startswith(f"vdimport-{key}") or kind == "volume"


def _two_disk_ova(small_disk: Path, where: Path) -> tuple[Path, list[bytes]]:
    """A VM with a data disk as ovftool exports it, and what each disk's volume must hold."""
    data_disk = build_disk(where / "data.raw", [Partition("vfat", 40, {"DATA.TXT": b"the data disk\r\n"})], table="dos")
    raws = [small_disk, data_disk]
    return make_producer_ova(raws, where / "vm.ova", "ovftool"), [raw.read_bytes() for raw in raws]


def test_a_multi_disk_import_survives_a_failure_on_its_second_disk(
    emu: EmulatorHandle, importer: Importer, small_disk: Path, tmp_path: Path
) -> None:
    """The write of disk 2 fails and the cleanup removes the worker and both unfinished volumes;
    a Clear from launch_worker makes one new volume per disk and delivers both, byte-exact."""
    ova, expected = _two_disk_ova(small_disk, tmp_path)
    run_id = new_run_id("resume-disks")
    emu.fault("RunCommand", action="fail", nth=5)  # ready, download disk 1 and 2, write disk 1 and 2
    failed = importer.run(ova, "resume/vm.ova", run_id=run_id)
    assert (failed.failed_step, len(failed.state["inspect_object"]["disks"])) == ("write_image", 2), failed.error
    emu.clear_faults()
    assert_disks_delivered(emu, failed, expected)  # nothing left: no worker, no PAR, no volume
    state = _clear_from_write_image(emu, failed)
    refreshed = state["write_image"]["refreshed"]
    assert set(refreshed["create_volume"]["disks"]) == {"1", "2"}
    volumes = run_resources(emu, run_id, "volume")
    assert sorted(v["lifecycleState"] for v in volumes) == ["AVAILABLE", "AVAILABLE", "TERMINATED", "TERMINATED"]
    delivered = [v["volume_id"] for v in state["report"]["volumes"]]
    for volume_id, content in zip(delivered, expected, strict=True):
        with open(emu.admin("GET", f"volumes/{volume_id}")["path"], "rb") as f:
            assert f.read(len(content)) == content
    assert [v["volume_name"] for v in state["report"]["volumes"]] == ["vm-disk1", "vm-disk2"]


def test_a_delivered_multi_disk_import_is_final(emu: EmulatorHandle, importer: Importer, small_disk: Path, tmp_path: Path) -> None:
    """Every disk's volume is final once delivered: a re-run of any step changes nothing."""
    ova, expected = _two_disk_ova(small_disk, tmp_path)
    user_tags = {f"team{i}": "migration" for i in range(5)}  # as many as a volume takes beside vdimport's 5
    outcome = importer.run(ova, "resume/delivered-vm.ova", metadata=user_tags)
    assert outcome.succeeded, outcome.error
    volumes = assert_disks_delivered(emu, outcome, expected)
    for disk, volume in enumerate(volumes, 1):
        assert volume["freeformTags"] == {**user_tags, **volume["freeformTags"]} and len(volume["freeformTags"]) == 10
        assert (volume["freeformTags"]["vdimport-disk"], volume["freeformTags"]["vdimport-state"]) == (str(disk), "delivered")
    env = step_environment(emu)
    since = len(emu.calls())
    for step in (*DATA_PATH, "tune_volume", "assign_backup_policy", "report"):
        run = run_step_in_process(step, outcome.run_id, _request_of(outcome), outcome.state, env)
        assert run.exit_code == 0, (step, run.output[-2000:])
        result = run.result or {}
        if step in ("launch_worker", "wait_worker_ready"):
            assert result["delivered"] is True
        elif step in DATA_PATH:
            assert {disk: part["volume_id"] for disk, part in result["disks"].items() if part["delivered"]} == {
                "1": volumes[0]["id"],
                "2": volumes[1]["id"],
            }
    changing = [c["operation"] for c in emu.calls()[since:] if not c["operation"].startswith(("Get", "List", "Head"))]
    assert changing == [], f"a re-run of a delivered import changed things: {changing}"
