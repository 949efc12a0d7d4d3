"""The emulated Block Storage service through the real SDK: volumes, backing files, backup policies."""

from __future__ import annotations

import uuid
from pathlib import Path

import oci
from emulator_helpers import FAST_WAIT, backing_file, error_of, volume_details
from oci.core.models import CreateVolumeBackupPolicyAssignmentDetails, CreateVolumeDetails, UpdateVolumeDetails

GiB = 1 << 30


def read(path: Path, offset: int, length: int = 4096) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_create_volume_waits_and_gets_a_sparse_file_that_is_not_zero(emu, storage, ads, compartment) -> None:
    emu.configure(lifecycle_seconds=0.3)
    composite = oci.core.BlockstorageClientCompositeOperations(storage)
    kms = "ocid1.key.oc1.iad.aaaaaaaaexamplekey"
    volume = composite.create_volume_and_wait_for_state(
        volume_details(compartment, ads[2], kms_key_id=kms), ["AVAILABLE"], waiter_kwargs=FAST_WAIT
    ).data
    assert (volume.lifecycle_state, volume.size_in_gbs, volume.size_in_mbs, volume.vpus_per_gb) == ("AVAILABLE", 50, 51200, 10)
    assert (volume.availability_domain, volume.compartment_id, volume.display_name) == (ads[2], compartment, "disk.qcow2")
    assert volume.freeform_tags == {"vdimport-run": "abc123", "vdimport-role": "volume"}
    assert volume.kms_key_id == kms
    assert storage.get_volume(volume.id).headers["etag"]
    states = [e["state"] for e in emu.history("volume") if e["id"] == volume.id]
    assert states == ["PROVISIONING", "AVAILABLE"]

    info = emu.admin("GET", f"volumes/{volume.id}")
    assert (info["id"], info["sizeInGBs"], info["lifecycleState"]) == (volume.id, 50, "AVAILABLE")
    path = Path(info["path"])
    assert (path.parent.name, path.name) == ("volumes", f"{volume.id}.img")
    st = path.stat()
    assert st.st_size == 50 * GiB
    assert st.st_blocks * 512 < 4 * (1 << 20)  # sparse: only the junk blocks take space
    zero = bytes(4096)
    for offset in (0, 1 << 20, 4 << 20, 64 << 20, GiB, 25 * GiB, 50 * GiB - 4096):
        assert read(path, offset) != zero, f"offset {offset} reads as zeros"
    assert read(path, 2 * GiB + 12345, 4096) == zero  # most of it is still holes


def test_volume_sizes_and_performance_are_validated(storage, ads, compartment) -> None:
    cases = [
        ({"size_in_gbs": 49}, "InvalidParameter"),
        ({"size_in_gbs": 32769}, "InvalidParameter"),
        ({"vpus_per_gb": 15}, "InvalidParameter"),
        ({"vpus_per_gb": 130}, "InvalidParameter"),
        ({"vpus_per_gb": -10}, "InvalidParameter"),
        ({"availability_domain": "Emul:US-ASHBURN-AD-4"}, "InvalidParameter"),
        ({"availability_domain": None}, "MissingParameter"),
        ({"compartment_id": None}, "MissingParameter"),
        ({"kms_key_id": "not-a-key"}, "InvalidParameter"),
    ]
    for overrides, code in cases:
        err = error_of(storage.create_volume, volume_details(compartment, ads[0], **overrides))
        assert (err.status, err.code) == (400, code), overrides
    assert storage.list_volumes(compartment_id=compartment).data == []
    for size, vpus in ((50, 0), (100, 120)):
        volume = storage.create_volume(volume_details(compartment, ads[0], size_in_gbs=size, vpus_per_gb=vpus)).data
        assert (volume.size_in_gbs, volume.vpus_per_gb) == (size, vpus)


def test_default_size_and_performance(storage, ads, compartment) -> None:
    volume = storage.create_volume(CreateVolumeDetails(availability_domain=ads[0], compartment_id=compartment)).data
    assert (volume.size_in_gbs, volume.vpus_per_gb) == (1024, 10)
    assert volume.display_name


def test_update_volume(emu, storage, ads, compartment) -> None:
    vid = storage.create_volume(volume_details(compartment, ads[0])).data.id
    path = backing_file(emu, vid)
    renamed = storage.update_volume(vid, UpdateVolumeDetails(display_name="renamed", freeform_tags={"a": "b"})).data
    assert (renamed.display_name, renamed.freeform_tags, renamed.lifecycle_state) == ("renamed", {"a": "b"}, "AVAILABLE")

    emu.configure(lifecycle_seconds=0.2)
    tuned = storage.update_volume(vid, UpdateVolumeDetails(vpus_per_gb=20, size_in_gbs=60)).data
    assert (tuned.vpus_per_gb, tuned.size_in_gbs, tuned.lifecycle_state) == (20, 60, "PROVISIONING")
    assert path.stat().st_size == 60 * GiB
    assert read(path, 60 * GiB - 4096) != bytes(4096)  # the new space is not zero either
    err = error_of(storage.update_volume, vid, UpdateVolumeDetails(vpus_per_gb=30))  # still PROVISIONING
    assert (err.status, err.code) == (409, "IncorrectState")
    emu.configure(lifecycle_seconds=0)
    oci.wait_until(storage, storage.get_volume(vid), "lifecycle_state", "AVAILABLE", **FAST_WAIT)

    for change, code in (({"size_in_gbs": 55}, "InvalidParameter"), ({"vpus_per_gb": 25}, "InvalidParameter")):
        err = error_of(storage.update_volume, vid, UpdateVolumeDetails(**change))
        assert (err.status, err.code) == (400, code)
    assert path.stat().st_size == 60 * GiB
    assert error_of(storage.update_volume, vid, UpdateVolumeDetails(display_name="x"), if_match="stale").status == 412
    assert storage.get_volume(vid).data.display_name == "renamed"


def test_delete_volume_removes_the_backing_file(emu, storage, ads, compartment) -> None:
    vid = storage.create_volume(volume_details(compartment, ads[0])).data.id
    path = backing_file(emu, vid)
    assert path.exists()
    composite = oci.core.BlockstorageClientCompositeOperations(storage)
    gone = composite.delete_volume_and_wait_for_state(vid, ["TERMINATED"], waiter_kwargs=dict(FAST_WAIT))
    assert gone is oci.util.WAIT_RESOURCE_NOT_FOUND or gone.data.lifecycle_state == "TERMINATED"
    assert storage.get_volume(vid).data.lifecycle_state == "TERMINATED"
    assert not path.exists()
    assert [e["state"] for e in emu.history("volume") if e["id"] == vid] == ["PROVISIONING", "AVAILABLE", "TERMINATING", "TERMINATED"]
    assert error_of(storage.get_volume, "ocid1.volume.oc1.iad.nope").status == 404


def test_list_volumes_filters_and_pages(storage, ads, compartment) -> None:
    made = [
        storage.create_volume(volume_details(compartment, ad, display_name=f"v{n}")).data.id
        for n, ad in enumerate([ads[0], ads[1], ads[1]])
    ]
    page1 = storage.list_volumes(compartment_id=compartment, limit=2)
    assert len(page1.data) == 2 and page1.has_next_page
    everything = oci.pagination.list_call_get_all_results(storage.list_volumes, compartment_id=compartment, limit=2).data
    assert [v.id for v in everything] == list(reversed(made))
    assert {v.display_name for v in storage.list_volumes(compartment_id=compartment, availability_domain=ads[1]).data} == {"v1", "v2"}
    assert [v.id for v in storage.list_volumes(compartment_id=compartment, display_name="v0").data] == [made[0]]
    storage.delete_volume(made[0])
    assert len(storage.list_volumes(compartment_id=compartment, lifecycle_state="AVAILABLE").data) == 2
    assert [v.id for v in storage.list_volumes(compartment_id=compartment, lifecycle_state="TERMINATED").data] == [made[0]]
    err = error_of(storage.list_volumes)
    assert (err.status, err.code) == (400, "MissingParameter")


def test_display_name_sort_is_case_sensitive(storage, ads, compartment) -> None:
    for name in ("b", "B", "a"):
        storage.create_volume(volume_details(compartment, ads[0], display_name=name))
    by_name = storage.list_volumes(compartment_id=compartment, sort_by="DISPLAYNAME").data
    assert [v.display_name for v in by_name] == ["B", "a", "b"]  # as OCI documents: uppercase first


def test_create_volume_retry_token_and_faults(emu, storage, ads, compartment) -> None:
    token = uuid.uuid4().hex
    first = storage.create_volume(volume_details(compartment, ads[0]), opc_retry_token=token).data
    assert storage.create_volume(volume_details(compartment, ads[0]), opc_retry_token=token).data.id == first.id
    assert error_of(storage.create_volume, volume_details(compartment, ads[0], size_in_gbs=51), opc_retry_token=token).status == 409
    emu.fault("CreateVolume", status=503)
    err = error_of(storage.create_volume, volume_details(compartment, ads[0]))
    assert (err.status, err.code) == (503, "ServiceUnavailable")
    storage.create_volume(volume_details(compartment, ads[0]))
    assert len(storage.list_volumes(compartment_id=compartment).data) == 2
    files = [
        p
        for p in (Path(emu.data_dir) / "volumes").iterdir()
        if any(v.id in p.name for v in storage.list_volumes(compartment_id=compartment).data)
    ]
    assert len(files) == 2  # the replayed create made no second file


def test_oracle_backup_policies(storage) -> None:
    policies = storage.list_volume_backup_policies().data
    assert sorted(p.display_name for p in policies) == ["bronze", "gold", "silver"]
    by_name = {p.display_name: p for p in policies}
    periods = {name: sorted(s.period for s in p.schedules) for name, p in by_name.items()}
    assert periods["gold"] == ["ONE_DAY", "ONE_MONTH", "ONE_WEEK", "ONE_YEAR"]
    assert periods["silver"] == ["ONE_MONTH", "ONE_WEEK", "ONE_YEAR"]
    assert periods["bronze"] == ["ONE_MONTH", "ONE_YEAR"]
    assert all(s.retention_seconds > 0 and s.backup_type in ("FULL", "INCREMENTAL") for p in policies for s in p.schedules)
    assert storage.get_volume_backup_policy(by_name["gold"].id).data.display_name == "gold"
    assert storage.list_volume_backup_policies(compartment_id=f"ocid1.compartment.oc1..x{uuid.uuid4().hex}").data == []
    assert error_of(storage.get_volume_backup_policy, "ocid1.volumebackuppolicy.oc1..nope").status == 404


def test_backup_policy_assignment(storage, ads, compartment) -> None:
    policies = {p.display_name: p.id for p in storage.list_volume_backup_policies().data}
    vid = storage.create_volume(volume_details(compartment, ads[0])).data.id
    assert storage.get_volume_backup_policy_asset_assignment(vid).data == []

    assignment = storage.create_volume_backup_policy_assignment(
        CreateVolumeBackupPolicyAssignmentDetails(asset_id=vid, policy_id=policies["silver"])
    ).data
    assert (assignment.asset_id, assignment.policy_id) == (vid, policies["silver"])
    assert storage.get_volume_backup_policy_assignment(assignment.id).data.policy_id == policies["silver"]
    assert [a.id for a in storage.get_volume_backup_policy_asset_assignment(vid).data] == [assignment.id]

    # one policy per volume: a new assignment replaces the old one (OCI unassigns it silently)
    gold = storage.create_volume_backup_policy_assignment(
        CreateVolumeBackupPolicyAssignmentDetails(asset_id=vid, policy_id=policies["gold"])
    ).data
    assert [(a.id, a.policy_id) for a in storage.get_volume_backup_policy_asset_assignment(vid).data] == [(gold.id, policies["gold"])]
    assert error_of(storage.get_volume_backup_policy_assignment, assignment.id).status == 404

    storage.delete_volume_backup_policy_assignment(gold.id)
    assert storage.get_volume_backup_policy_asset_assignment(vid).data == []

    unknown_policy = CreateVolumeBackupPolicyAssignmentDetails(asset_id=vid, policy_id="ocid1.volumebackuppolicy.oc1..nope")
    assert error_of(storage.create_volume_backup_policy_assignment, unknown_policy).status == 404
    unknown_asset = CreateVolumeBackupPolicyAssignmentDetails(asset_id="ocid1.volume.oc1.iad.nope", policy_id=policies["gold"])
    assert error_of(storage.create_volume_backup_policy_assignment, unknown_asset).status == 404
    no_asset = CreateVolumeBackupPolicyAssignmentDetails(policy_id=policies["gold"])
    assert error_of(storage.create_volume_backup_policy_assignment, no_asset).code == "MissingParameter"
    assert error_of(storage.base_client.call_api, resource_path="/volumeBackupPolicyAssignments", method="GET").code == "MissingParameter"

    # deleting the volume drops its assignment
    storage.create_volume_backup_policy_assignment(CreateVolumeBackupPolicyAssignmentDetails(asset_id=vid, policy_id=policies["bronze"]))
    storage.delete_volume(vid)
    assert storage.get_volume_backup_policy_asset_assignment(vid).data == []
