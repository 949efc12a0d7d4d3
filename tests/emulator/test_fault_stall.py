"""Lifecycle faults: an attach that fails, a detach that hangs, a Run Command held then run.

``stall`` answers the call but holds the attachment in ATTACHING/DETACHING (for ``seconds``, or
until its instance is terminated) and then moves it to ``state``; a ``RunCommand`` ``hang`` with
``seconds`` keeps the command IN_PROGRESS that long before running it. tests/faults/ uses them.
"""

from __future__ import annotations

import time
import urllib.error
import uuid

import oci
import pytest
from emulator_helpers import command_details, error_of, instance_home, volume_details, wait_for_execution
from oci.core.models import AttachParavirtualizedVolumeDetails

from vdimport_local.emulator.client import EmulatorHandle


def _volume(storage: oci.core.BlockstorageClient, compartment: str, ad: str) -> str:
    return str(storage.create_volume(volume_details(compartment, ad)).data.id)


def _attach(compute: oci.core.ComputeClient, instance_id: str, volume_id: str) -> str:
    details = AttachParavirtualizedVolumeDetails(instance_id=instance_id, volume_id=volume_id)
    return str(compute.attach_volume(details).data.id)


def _state(compute: oci.core.ComputeClient, attachment_id: str) -> str:
    return str(compute.get_volume_attachment(attachment_id).data.lifecycle_state)


def _settle(compute: oci.core.ComputeClient, attachment_id: str, wanted: str, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while _state(compute, attachment_id) != wanted:
        assert time.monotonic() < deadline, f"attachment still {_state(compute, attachment_id)}, not {wanted}"
        time.sleep(0.02)


def test_a_stalled_attach_ends_detached_and_the_next_attach_works(emu, compute, storage, ads, compartment, launch) -> None:
    instance = launch()
    volume = _volume(storage, compartment, ads[0])
    rule = emu.fault("AttachVolume", action="stall", seconds=0.3, state="DETACHED")
    failed = _attach(compute, instance, volume)
    assert _state(compute, failed) == "ATTACHING"
    _settle(compute, failed, "DETACHED")
    assert [e["state"] for e in emu.history("volumeattachment") if e["id"] == failed] == ["ATTACHING", "DETACHED"]
    assert [r["hits"] for r in emu.admin("GET", "faults") if r["id"] == rule] == [1]
    again = _attach(compute, instance, volume)  # the rule hit once: the volume is free again
    assert _state(compute, again) == "ATTACHED"


def test_a_stalled_detach_hangs_until_the_instance_is_terminated(emu, compute, storage, ads, compartment, launch) -> None:
    instance = launch()
    volume = _volume(storage, compartment, ads[0])
    attachment = _attach(compute, instance, volume)
    emu.fault("DetachVolume", action="stall")
    compute.detach_volume(attachment)
    time.sleep(0.3)
    assert _state(compute, attachment) == "DETACHING"
    assert error_of(storage.delete_volume, volume).status == 409  # still attached as far as OCI is concerned
    compute.terminate_instance(instance)
    _settle(compute, attachment, "DETACHED")
    storage.delete_volume(volume)


def test_a_detach_stalled_for_a_while_then_finishes(emu, compute, storage, ads, compartment, launch) -> None:
    attachment = _attach(compute, launch(), _volume(storage, compartment, ads[0]))
    emu.fault("DetachVolume", action="stall", seconds=0.3)
    compute.detach_volume(attachment)
    assert _state(compute, attachment) == "DETACHING"
    _settle(compute, attachment, "DETACHED")


@pytest.mark.parametrize(("operation", "spec"), [("LaunchInstance", {}), ("DetachVolume", {"state": "ATTACHED"})])
def test_stall_is_refused_where_it_means_nothing(emu: EmulatorHandle, operation: str, spec: dict[str, str]) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        emu.fault(operation, action="stall", **spec)
    assert err.value.code == 400


def test_run_command_hang_with_seconds_holds_then_runs(emu: EmulatorHandle, agent, compartment, launch) -> None:
    instance = launch()
    marker = f"ran-{uuid.uuid4().hex}"
    emu.fault("RunCommand", action="hang", seconds=1.0)
    started = time.monotonic()
    command = str(agent.create_instance_agent_command(command_details(compartment, instance, f"touch {marker}", 60)).data.id)
    wait_for_execution(agent, command, instance, ("IN_PROGRESS",))
    time.sleep(0.3)
    assert agent.get_instance_agent_command_execution(command, instance).data.lifecycle_state == "IN_PROGRESS"
    assert not (instance_home(emu, instance) / marker).exists()
    execution = wait_for_execution(agent, command, instance, seconds=10)
    assert execution.lifecycle_state == "SUCCEEDED"
    assert time.monotonic() - started >= 1.0
    assert (instance_home(emu, instance) / marker).exists()
