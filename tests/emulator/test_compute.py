"""The emulated Compute service through the real SDK: instances, VNICs, devices, volume attachments."""

from __future__ import annotations

import base64
import uuid

import oci
import pytest
from emulator_helpers import FAST_WAIT, NO_RETRY, SUBNET, error_of, instance_home, launch_details, volume_details
from oci.core.models import (
    AttachParavirtualizedVolumeDetails,
    CreateVnicDetails,
    InstanceOptions,
    InstanceSourceViaImageDetails,
    LaunchInstanceShapeConfigDetails,
)


def new_volume(storage: oci.core.BlockstorageClient, compartment: str, ad: str, name: str = "vol") -> str:
    return str(storage.create_volume(volume_details(compartment, ad, display_name=name)).data.id)


def attach(compute: oci.core.ComputeClient, instance_id: str, volume_id: str, **kw: object) -> oci.core.models.VolumeAttachment:
    details = AttachParavirtualizedVolumeDetails(instance_id=instance_id, volume_id=volume_id, **kw)
    return compute.attach_volume(details).data


# --- instances -------------------------------------------------------------------------
def test_instance_and_attachment_lifecycles_through_waiters(emu, compute, storage, ads, compartment, image_id) -> None:
    emu.configure(lifecycle_seconds=0.3)
    launched = compute.launch_instance(launch_details(compartment, ads[1], image_id))
    assert launched.data.lifecycle_state == "PROVISIONING"
    assert launched.headers["opc-work-request-id"].startswith("ocid1.workrequest.")
    assert launched.headers["etag"]
    iid = launched.data.id
    vid = new_volume(storage, compartment, ads[1])
    err = error_of(attach, compute, iid, vid)  # the instance (and volume) are still PROVISIONING
    assert (err.status, err.code) == (409, "IncorrectState")

    running = oci.wait_until(compute, compute.get_instance(iid), "lifecycle_state", "RUNNING", **FAST_WAIT).data
    assert running.availability_domain == ads[1]
    assert running.shape == "VM.Standard.E4.Flex"
    assert (running.shape_config.ocpus, running.shape_config.memory_in_gbs, running.shape_config.vcpus) == (2.0, 32.0, 4)
    assert running.source_details.image_id == image_id
    assert running.image_id == image_id
    assert base64.b64decode(running.metadata["user_data"]).startswith(b"#cloud-config")
    assert [(p.name, p.desired_state) for p in running.agent_config.plugins_config] == [("Compute Instance Run Command", "ENABLED")]
    assert running.freeform_tags == {"vdimport-run": "abc123", "vdimport-role": "worker"}
    assert running.display_name == "vdimport-worker-test"
    assert instance_home(emu, iid).is_dir()
    oci.wait_until(storage, storage.get_volume(vid), "lifecycle_state", "AVAILABLE", **FAST_WAIT)

    composite = oci.core.ComputeClientCompositeOperations(compute)
    details = AttachParavirtualizedVolumeDetails(
        instance_id=iid, volume_id=vid, device="/dev/oracleoci/oraclevdb", is_read_only=False, display_name="vdimport-att"
    )
    att = composite.attach_volume_and_wait_for_state(details, ["ATTACHED"], waiter_kwargs=FAST_WAIT).data
    assert isinstance(att, oci.core.models.ParavirtualizedVolumeAttachment)
    assert att.lifecycle_state == "ATTACHED"
    assert (att.device, att.instance_id, att.volume_id, att.is_read_only) == ("/dev/oracleoci/oraclevdb", iid, vid, False)
    assert (att.attachment_type, att.availability_domain, att.compartment_id) == ("paravirtualized", ads[1], compartment)
    assert att.display_name == "vdimport-att"
    assert att.time_created is not None
    got = compute.get_volume_attachment(att.id)
    assert got.headers["etag"]
    assert got.data.lifecycle_state == "ATTACHED"

    assert compute.detach_volume(att.id).headers["opc-work-request-id"]
    assert compute.get_volume_attachment(att.id).data.lifecycle_state == "DETACHING"
    detached = oci.wait_until(compute, compute.get_volume_attachment(att.id), "lifecycle_state", "DETACHED", **FAST_WAIT).data
    assert detached.lifecycle_state == "DETACHED"
    states = [e["state"] for e in emu.history("volumeattachment") if e["id"] == att.id]
    assert states == ["ATTACHING", "ATTACHED", "DETACHING", "DETACHED"]

    assert compute.terminate_instance(iid).headers["opc-work-request-id"]
    assert compute.get_instance(iid).data.lifecycle_state == "TERMINATING"
    terminated = oci.wait_until(compute, compute.get_instance(iid), "lifecycle_state", "TERMINATED", succeed_on_not_found=True, **FAST_WAIT)
    assert terminated.data.lifecycle_state == "TERMINATED"
    # still visible, as OCI keeps terminated instances listed for a while
    assert [i.lifecycle_state for i in compute.list_instances(compartment).data] == ["TERMINATED"]

    events = [e for e in emu.history("instance") if e["id"] == iid]
    assert [e["state"] for e in events] == ["PROVISIONING", "RUNNING", "TERMINATING", "TERMINATED"]
    times = [e["time"] for e in events]
    assert times[1] - times[0] == pytest.approx(0.3, abs=0.05)
    assert times[3] - times[2] == pytest.approx(0.3, abs=0.05)


def test_launch_composite_waits_for_its_work_request(emu, compute, ads, compartment, image_id) -> None:
    emu.configure(lifecycle_seconds=0.3)
    composite = oci.core.ComputeClientCompositeOperations(compute)
    done = composite.launch_instance_and_wait_for_work_request(launch_details(compartment, ads[0], image_id), waiter_kwargs=FAST_WAIT)
    wr = done.data
    assert (wr.status, wr.operation_type, wr.percent_complete) == ("SUCCEEDED", "LaunchInstance", 100.0)
    iid = wr.resources[0].identifier
    assert compute.get_instance(iid).data.lifecycle_state == "RUNNING"
    assert wr.time_finished >= wr.time_accepted
    emu.configure(lifecycle_seconds=0)
    terminated = composite.terminate_instance_and_wait_for_work_request(iid, waiter_kwargs=FAST_WAIT).data
    assert (terminated.status, terminated.operation_type) == ("SUCCEEDED", "TerminateInstance")
    wrs = oci.work_requests.WorkRequestClient(emu.config, service_endpoint=emu.endpoint)
    listed = wrs.list_work_requests(compartment, resource_id=iid).data
    assert sorted(w.operation_type for w in listed) == ["LaunchInstance", "TerminateInstance"]
    assert wrs.list_work_request_errors(wr.id).data == []


def test_launch_retry_token_replays_and_rejects_a_different_body(compute, ads, compartment, image_id) -> None:
    token = uuid.uuid4().hex
    first = compute.launch_instance(launch_details(compartment, ads[0], image_id), opc_retry_token=token)
    again = compute.launch_instance(launch_details(compartment, ads[0], image_id), opc_retry_token=token)
    assert again.data.id == first.data.id
    assert again.headers["opc-work-request-id"] == first.headers["opc-work-request-id"]
    assert len(compute.list_instances(compartment).data) == 1
    err = error_of(compute.launch_instance, launch_details(compartment, ads[0], image_id, display_name="other"), opc_retry_token=token)
    assert err.status == 409
    assert len(compute.list_instances(compartment).data) == 1


def test_list_instances_filters_sorts_and_pages(compute, ads, compartment, image_id) -> None:
    for n, ad in enumerate([ads[0], ads[1], ads[1]]):
        compute.launch_instance(launch_details(compartment, ad, image_id, display_name=f"w{n}"))
    first = compute.list_instances(compartment, limit=2)
    assert len(first.data) == 2
    assert first.has_next_page
    rest = compute.list_instances(compartment, limit=2, page=first.next_page)
    assert len(rest.data) == 1
    assert not rest.has_next_page
    everything = oci.pagination.list_call_get_all_results(compute.list_instances, compartment, limit=1).data
    assert [i.display_name for i in everything] == ["w2", "w1", "w0"]  # newest first by default
    by_name = compute.list_instances(compartment, sort_by="DISPLAYNAME", sort_order="ASC").data
    assert [i.display_name for i in by_name] == ["w0", "w1", "w2"]
    assert {i.display_name for i in compute.list_instances(compartment, availability_domain=ads[1]).data} == {"w1", "w2"}
    assert [i.display_name for i in compute.list_instances(compartment, display_name="w1").data] == ["w1"]
    assert len(compute.list_instances(compartment, lifecycle_state="RUNNING").data) == 3
    assert compute.list_instances(compartment, lifecycle_state="STOPPED").data == []
    err = error_of(compute.base_client.call_api, resource_path="/instances", method="GET", response_type="list[Instance]")
    assert (err.status, err.code) == (400, "MissingParameter")


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"availability_domain": "Emul:US-ASHBURN-AD-9"}, 400, "InvalidParameter"),
        ({"availability_domain": None}, 400, "MissingParameter"),
        ({"compartment_id": "not-a-compartment"}, 400, "InvalidParameter"),
        ({"shape_config": None}, 400, "InvalidParameter"),
        ({"shape_config": LaunchInstanceShapeConfigDetails(ocpus=65, memory_in_gbs=64)}, 400, "InvalidParameter"),
        ({"shape_config": LaunchInstanceShapeConfigDetails(ocpus=1, memory_in_gbs=100)}, 400, "InvalidParameter"),
        ({"shape": "VM.Standard2.1"}, 400, "InvalidParameter"),  # fixed shape with a shapeConfig
        ({"shape": "VM.Nonexistent.Flex"}, 400, "InvalidParameter"),
        ({"shape": "VM.Standard.A1.Flex"}, 400, "InvalidParameter"),  # x86 image on Ampere
        ({"create_vnic_details": CreateVnicDetails(assign_public_ip=False)}, 400, "MissingParameter"),
        ({"source_details": None}, 400, "MissingParameter"),
        ({"source_details": InstanceSourceViaImageDetails(image_id="ocid1.image.oc1.iad.aaaaaaaanope")}, 404, "NotAuthorizedOrNotFound"),
        ({"metadata": {"user_data": "not base64!"}}, 400, "InvalidParameter"),
    ],
)
def test_launch_validation(compute, ads, compartment, image_id, overrides, status, code) -> None:
    err = error_of(compute.launch_instance, launch_details(compartment, ads[0], image_id, **overrides))
    assert (err.status, err.code) == (status, code), err.message
    assert compute.list_instances(compartment).data == []


def test_legacy_imds_endpoints_are_kept_as_asked(compute, ads, compartment, image_id) -> None:
    default = compute.launch_instance(launch_details(compartment, ads[0], image_id)).data
    assert default.instance_options.are_legacy_imds_endpoints_disabled is False
    v2_only = InstanceOptions(are_legacy_imds_endpoints_disabled=True)
    hardened = compute.launch_instance(launch_details(compartment, ads[0], image_id, instance_options=v2_only)).data
    assert compute.get_instance(hardened.id).data.instance_options.are_legacy_imds_endpoints_disabled is True


def test_fixed_and_default_memory_shapes_launch(compute, ads, compartment, image_id) -> None:
    fixed = compute.launch_instance(launch_details(compartment, ads[0], image_id, shape="VM.Standard2.1", shape_config=None)).data
    assert (fixed.shape_config.ocpus, fixed.shape_config.memory_in_gbs) == (1.0, 15.0)
    flex = compute.launch_instance(
        launch_details(compartment, ads[0], image_id, shape_config=LaunchInstanceShapeConfigDetails(ocpus=4))
    ).data
    assert (flex.shape_config.ocpus, flex.shape_config.memory_in_gbs) == (4.0, 64.0)
    shapes = {s.shape: s for s in compute.list_shapes(compartment, image_id=image_id).data}
    assert shapes["VM.Standard.E4.Flex"].is_flexible
    assert shapes["VM.Standard.E4.Flex"].memory_options.max_per_ocpu_in_gbs == 64.0
    assert "VM.Standard.A1.Flex" not in shapes


def test_capacity_fault_in_one_ad_only(emu, compute, ads, compartment, image_id) -> None:
    emu.fault("LaunchInstance", status=500, message="Out of host capacity.", times=10, match={"availabilityDomain": ads[0]})
    err = error_of(compute.launch_instance, launch_details(compartment, ads[0], image_id))
    assert (err.status, err.code, err.message) == (500, "InternalError", "Out of host capacity.")
    ok = compute.launch_instance(launch_details(compartment, ads[1], image_id)).data
    assert ok.availability_domain == ads[1]
    assert [i.id for i in compute.list_instances(compartment).data] == [ok.id]


def test_instance_actions(compute, launch) -> None:
    iid = launch()
    assert compute.instance_action(iid, "STOP").data.lifecycle_state == "STOPPED"
    assert compute.instance_action(iid, "STOP").data.lifecycle_state == "STOPPED"  # already there: no-op
    assert compute.instance_action(iid, "START").data.lifecycle_state == "RUNNING"
    assert compute.instance_action(iid, "SOFTRESET").data.lifecycle_state == "RUNNING"
    assert compute.instance_action(iid, "RESET").data.lifecycle_state == "RUNNING"
    err = error_of(compute.instance_action, iid, "EXPLODE")
    assert (err.status, err.code) == (400, "InvalidParameter")
    compute.terminate_instance(iid)
    err = error_of(compute.instance_action, iid, "START")
    assert (err.status, err.code) == (409, "IncorrectState")


def test_vnic_and_instance_devices(emu, compute, storage, ads, compartment, launch) -> None:
    iid = launch()
    vnic_atts = compute.list_vnic_attachments(compartment, instance_id=iid).data
    assert len(vnic_atts) == 1
    assert (vnic_atts[0].lifecycle_state, vnic_atts[0].subnet_id) == ("ATTACHED", SUBNET)
    network = emu.client(oci.core.VirtualNetworkClient, retry_strategy=NO_RETRY)
    vnic = network.get_vnic(vnic_atts[0].vnic_id).data
    assert vnic.private_ip.startswith("10.0.")
    assert vnic.public_ip is None
    assert vnic.is_primary

    devices = compute.list_instance_devices(iid).data
    assert len(devices) == 25
    assert devices[0].name == "/dev/oracleoci/oraclevdb"
    assert devices[-1].name == "/dev/oracleoci/oraclevdz"
    assert all(d.is_available for d in devices)
    attach(compute, iid, new_volume(storage, compartment, ads[0]), device="/dev/oracleoci/oraclevdb")
    assert [d.name for d in compute.list_instance_devices(iid, is_available=False).data] == ["/dev/oracleoci/oraclevdb"]
    assert compute.list_instance_devices(iid, is_available=True).data[0].name == "/dev/oracleoci/oraclevdc"
    assert len(oci.pagination.list_call_get_all_results(compute.list_instance_devices, iid, limit=10).data) == 25


def test_images(compute, emu, image_id) -> None:
    image = compute.get_image(image_id).data
    assert (image.operating_system, image.operating_system_version) == ("Oracle Linux", "9")
    arm = compute.list_images(emu.tenancy, shape="VM.Standard.A1.Flex", operating_system="Oracle Linux").data
    assert arm and image_id not in [i.id for i in arm]
    assert error_of(compute.get_image, "ocid1.image.oc1.iad.aaaaaaaanope").status == 404


# --- volume attachments ----------------------------------------------------------------
def test_attach_detach_work_request_composites(compute, storage, ads, compartment, launch) -> None:
    composite = oci.core.ComputeClientCompositeOperations(compute)
    iid = launch()
    vid = new_volume(storage, compartment, ads[0])
    details = AttachParavirtualizedVolumeDetails(instance_id=iid, volume_id=vid)
    wr = composite.attach_volume_and_wait_for_work_request(details, waiter_kwargs=FAST_WAIT).data
    assert (wr.status, wr.operation_type) == ("SUCCEEDED", "AttachVolume")
    att_id = wr.resources[0].identifier
    assert compute.get_volume_attachment(att_id).data.device == "/dev/oracleoci/oraclevdb"  # first free one when not asked
    wr = composite.detach_volume_and_wait_for_work_request(att_id, waiter_kwargs=FAST_WAIT).data
    assert (wr.status, wr.operation_type) == ("SUCCEEDED", "DetachVolume")
    assert compute.get_volume_attachment(att_id).data.lifecycle_state == "DETACHED"


def test_attach_conflicts(compute, storage, ads, compartment, launch) -> None:
    first = launch()
    second = launch()
    elsewhere = launch(ads[1])
    vol_a = new_volume(storage, compartment, ads[0], "a")
    vol_b = new_volume(storage, compartment, ads[0], "b")

    att = attach(compute, first, vol_a)
    assert att.device == "/dev/oracleoci/oraclevdb"
    # the same volume again, on the same or another instance
    assert (error_of(attach, compute, first, vol_a).status, error_of(attach, compute, second, vol_a).status) == (409, 409)
    # a device already in use on the instance
    err = error_of(attach, compute, first, vol_b, device="/dev/oracleoci/oraclevdb")
    assert (err.status, err.code) == (409, "Conflict")
    # not a consistent device path
    assert error_of(attach, compute, first, vol_b, device="/dev/sdb").code == "InvalidParameter"
    # another availability domain
    assert error_of(attach, compute, elsewhere, vol_b).status == 400
    # unknown ids
    assert error_of(attach, compute, first, "ocid1.volume.oc1.iad.nope").status == 404
    assert error_of(attach, compute, "ocid1.instance.oc1.iad.nope", vol_b).status == 404
    # the next free device when none is asked for
    assert attach(compute, first, vol_b, is_read_only=True).device == "/dev/oracleoci/oraclevdc"
    # an attached volume cannot be deleted
    err = error_of(storage.delete_volume, vol_a)
    assert (err.status, err.code) == (409, "Conflict")

    compute.detach_volume(att.id)
    assert (error_of(compute.detach_volume, att.id).status, error_of(compute.detach_volume, att.id).code) == (409, "IncorrectState")
    assert attach(compute, second, vol_a).device == "/dev/oracleoci/oraclevdb"


def test_shareable_volumes_attach_to_several_instances(compute, storage, ads, compartment, launch) -> None:
    first = launch()
    second = launch()
    vid = new_volume(storage, compartment, ads[0])
    attach(compute, first, vid, is_shareable=True)
    assert error_of(attach, compute, second, vid).status == 409  # the new one must be shareable too
    assert attach(compute, second, vid, is_shareable=True).lifecycle_state == "ATTACHED"


def test_list_volume_attachments(compute, storage, ads, compartment, launch) -> None:
    iid = launch()
    vols = [new_volume(storage, compartment, ads[0], f"v{n}") for n in range(3)]
    atts = [attach(compute, iid, v) for v in vols]
    listed = oci.pagination.list_call_get_all_results(compute.list_volume_attachments, compartment, limit=2).data
    assert [a.id for a in listed] == [a.id for a in atts]
    assert all(isinstance(a, oci.core.models.ParavirtualizedVolumeAttachment) for a in listed)
    assert [a.id for a in compute.list_volume_attachments(compartment, volume_id=vols[1]).data] == [atts[1].id]
    assert len(compute.list_volume_attachments(compartment, instance_id=iid, availability_domain=ads[0]).data) == 3
    assert compute.list_volume_attachments(compartment, availability_domain=ads[1]).data == []
    err = error_of(compute.base_client.call_api, resource_path="/volumeAttachments", method="GET", response_type="list[VolumeAttachment]")
    assert (err.status, err.code) == (400, "MissingParameter")


def test_iscsi_attachment(compute, storage, ads, compartment, launch) -> None:
    iid = launch()
    details = oci.core.models.AttachIScsiVolumeDetails(instance_id=iid, volume_id=new_volume(storage, compartment, ads[0]))
    att = compute.attach_volume(details).data
    assert isinstance(att, oci.core.models.IScsiVolumeAttachment)
    assert (att.attachment_type, att.port, att.device) == ("iscsi", 3260, "/dev/oracleoci/oraclevdb")
    assert att.iqn.startswith("iqn.")


def test_terminate_detaches_volumes(emu, compute, storage, ads, compartment, launch) -> None:
    iid = launch()
    vid = new_volume(storage, compartment, ads[0])
    att = attach(compute, iid, vid)
    compute.terminate_instance(iid)
    assert compute.get_instance(iid).data.lifecycle_state == "TERMINATED"
    assert compute.get_volume_attachment(att.id).data.lifecycle_state == "DETACHED"
    states = [e["state"] for e in emu.history("volumeattachment") if e["id"] == att.id]
    assert states == ["ATTACHING", "ATTACHED", "DETACHING", "DETACHED"]
    vnic_att = compute.list_vnic_attachments(compartment, instance_id=iid).data[0]
    assert vnic_att.lifecycle_state == "DETACHED"
    compute.terminate_instance(iid)  # terminating again is harmless
    storage.delete_volume(vid)  # free again
    assert storage.get_volume(vid).data.lifecycle_state == "TERMINATED"


def test_out_of_band_terminate(emu, compute, storage, ads, compartment, launch) -> None:
    iid = launch()
    att = attach(compute, iid, new_volume(storage, compartment, ads[0]))
    seen = emu.admin("POST", f"instances/{iid}/terminate")
    assert seen["id"] == iid
    assert compute.get_instance(iid).data.lifecycle_state == "TERMINATED"
    assert compute.get_volume_attachment(att.id).data.lifecycle_state == "DETACHED"
    assert not [c for c in emu.calls("TerminateInstance") if iid in c["path"]]


def test_if_match_guards_terminate(compute, launch) -> None:
    iid = launch()
    err = error_of(compute.terminate_instance, iid, if_match="stale")
    assert (err.status, err.code) == (412, "NoEtagMatch")
    compute.terminate_instance(iid, if_match=compute.get_instance(iid).headers["etag"])
    assert compute.get_instance(iid).data.lifecycle_state == "TERMINATED"


def test_unknown_instance_is_404(compute) -> None:
    err = error_of(compute.get_instance, "ocid1.instance.oc1.iad.nope")
    assert (err.status, err.code) == (404, "NotAuthorizedOrNotFound")
    assert error_of(compute.terminate_instance, "ocid1.instance.oc1.iad.nope").status == 404


def test_home_directory_is_inside_the_data_dir(emu, launch) -> None:
    iid = launch()
    (instance,) = [r for r in emu.resources("instance") if r["id"] == iid]
    assert "_home" not in instance  # private keys never leave the emulator
    assert instance_home(emu, iid).is_dir()
