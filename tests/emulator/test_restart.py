"""A restarted emulator keeps its state, its key and its config: clients just carry on."""

from __future__ import annotations

import oci

from vdimport_local.emulator.client import EmulatorHandle


def test_state_survives_a_restart(fresh_emulator: EmulatorHandle) -> None:
    emu = fresh_emulator
    storage = emu.client(oci.object_storage.ObjectStorageClient)
    namespace = storage.get_namespace().data
    storage.create_bucket(namespace, oci.object_storage.models.CreateBucketDetails(name="keep", compartment_id=emu.tenancy))
    storage.put_object(namespace, "keep", "disk.img", b"\x01" * 4096, opc_meta={"ad_number": "3"})
    blockstorage = emu.client(oci.core.BlockstorageClient)
    ad = emu.client(oci.identity.IdentityClient).list_availability_domains(emu.tenancy).data[0].name
    volume = blockstorage.create_volume(
        oci.core.models.CreateVolumeDetails(availability_domain=ad, compartment_id=emu.tenancy, size_in_gbs=50, display_name="kept")
    ).data
    config_before = emu.config_path.read_text()
    emu.stop()

    again = EmulatorHandle.start(emu.data_dir)
    try:
        assert again.config_path.read_text() == config_before  # same key, same tenancy
        storage = again.client(oci.object_storage.ObjectStorageClient)
        got = storage.get_object(namespace, "keep", "disk.img")
        assert got.data.content == b"\x01" * 4096
        assert got.headers["opc-meta-ad_number"] == "3"
        kept = again.client(oci.core.BlockstorageClient).get_volume(volume.id).data
        assert (kept.display_name, kept.lifecycle_state) == ("kept", "AVAILABLE")
    finally:
        again.stop()
