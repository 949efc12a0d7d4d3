"""Building blocks the emulator tests share: request details in the SDK's models, and small waits.

Fixtures built on these live in ``conftest.py`` beside this file. (Named apart from any other
``helpers`` module, since pytest puts each test folder on ``sys.path`` under its bare name.)
"""

from __future__ import annotations

import base64
import datetime as dt
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import oci
import pytest
from oci.compute_instance_agent.models import (
    CreateInstanceAgentCommandDetails,
    InstanceAgentCommandContent,
    InstanceAgentCommandSourceViaTextDetails,
    InstanceAgentCommandTarget,
)
from oci.core.models import (
    CreateVnicDetails,
    CreateVolumeDetails,
    InstanceAgentPluginConfigDetails,
    InstanceSourceViaImageDetails,
    LaunchInstanceAgentConfigDetails,
    LaunchInstanceDetails,
    LaunchInstanceShapeConfigDetails,
)
from oci.object_storage.models import CreatePreauthenticatedRequestDetails

from vdimport_local.emulator.client import EmulatorHandle

NO_RETRY = oci.retry.NoneRetryStrategy()
SUBNET = "ocid1.subnet.oc1.iad.aaaaaaaaemulatortestsubnet"
PLUGIN = "Compute Instance Run Command"
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED")
FAST_WAIT = {"max_interval_seconds": 0.1, "max_wait_seconds": 20}

# A script that proves it is alive: it bumps a counter in the file ``beat`` (in the instance's
# home) every 50 ms until something kills it. See :func:`wait_for_beat` and :func:`assert_stopped`.
HEARTBEAT = "i=0; while :; do i=$((i + 1)); echo $i > beat; sleep 0.05; done\n"


def error_of(call: Callable[..., Any], *args: Any, **kwargs: Any) -> oci.exceptions.ServiceError:
    """The ServiceError ``call(*args, **kwargs)`` must raise."""
    with pytest.raises(oci.exceptions.ServiceError) as err:
        call(*args, **kwargs)
    return err.value


def new_compartment() -> str:
    """A compartment of the caller's own, so listings only see what it made."""
    return f"ocid1.compartment.oc1..test{uuid.uuid4().hex}"


# --- compute and block storage ------------------------------------------------------------------
def launch_details(compartment: str, ad: str, image_id: str, **overrides: object) -> LaunchInstanceDetails:
    """A worker VM as vdimport launches it: flexible shape, Run Command plugin on; ``overrides`` by SDK field name."""
    values: dict[str, object] = {
        "availability_domain": ad,
        "compartment_id": compartment,
        "shape": "VM.Standard.E4.Flex",
        "shape_config": LaunchInstanceShapeConfigDetails(ocpus=2, memory_in_gbs=32),
        "source_details": InstanceSourceViaImageDetails(image_id=image_id, boot_volume_size_in_gbs=60),
        "create_vnic_details": CreateVnicDetails(subnet_id=SUBNET, assign_public_ip=False),
        "metadata": {"user_data": base64.b64encode(b"#cloud-config\npackages: [qemu-img]\n").decode()},
        "agent_config": run_command_plugin("ENABLED"),
        "display_name": "vdimport-worker-test",
        "freeform_tags": {"vdimport-run": "abc123", "vdimport-role": "worker"},
    }
    values.update(overrides)
    return LaunchInstanceDetails(**values)


def run_command_plugin(state: str) -> LaunchInstanceAgentConfigDetails:
    return LaunchInstanceAgentConfigDetails(plugins_config=[InstanceAgentPluginConfigDetails(name=PLUGIN, desired_state=state)])


def launch_instance(compute: oci.core.ComputeClient, details: LaunchInstanceDetails, wait: bool = True) -> str:
    """Launch; with ``wait``, return once the instance is RUNNING."""
    iid = str(compute.launch_instance(details).data.id)
    if wait:
        oci.wait_until(compute, compute.get_instance(iid), "lifecycle_state", "RUNNING", **FAST_WAIT)
    return iid


def volume_details(compartment: str, ad: str, **overrides: object) -> CreateVolumeDetails:
    values: dict[str, object] = {
        "availability_domain": ad,
        "compartment_id": compartment,
        "size_in_gbs": 50,
        "vpus_per_gb": 10,
        "display_name": "disk.qcow2",
        "freeform_tags": {"vdimport-run": "abc123", "vdimport-role": "volume"},
    }
    values.update(overrides)
    return CreateVolumeDetails(**values)


def backing_file(emu: EmulatorHandle, volume_id: str) -> Path:
    """The sparse file behind a volume, as the emulator's admin API tells it."""
    return Path(emu.admin("GET", f"volumes/{volume_id}")["path"])


def instance_home(emu: EmulatorHandle, instance_id: str) -> Path:
    """Where the worker VM runs an instance's scripts (cwd and HOME)."""
    return emu.data_dir / "instances" / instance_id / "home"


# --- run command ----------------------------------------------------------------------------------
def command_details(
    compartment: str,
    instance_id: str,
    script: str | None = None,
    timeout: int = 60,
    source: object = None,
    output: object = None,
    name: str = "test command",
) -> CreateInstanceAgentCommandDetails:
    """A Run Command for one instance: ``script`` as TEXT unless another ``source`` is given."""
    return CreateInstanceAgentCommandDetails(
        compartment_id=compartment,
        execution_time_out_in_seconds=timeout,
        display_name=name,
        target=InstanceAgentCommandTarget(instance_id=instance_id),
        content=InstanceAgentCommandContent(
            source=source or InstanceAgentCommandSourceViaTextDetails(source_type="TEXT", text=script),
            output=output,
        ),
    )


def wait_for_execution(agent: Any, command_id: str, instance_id: str, states: tuple[str, ...] = TERMINAL, seconds: float = 30) -> Any:
    """Poll the command's execution (every 50 ms) until it is in one of ``states``; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        execution = agent.get_instance_agent_command_execution(command_id, instance_id).data
        if execution.lifecycle_state in states:
            return execution
        assert time.monotonic() < deadline, f"execution still {execution.lifecycle_state}"
        time.sleep(0.05)


def wait_for_beat(beat: Path, seconds: float = 10) -> None:
    """Until a :data:`HEARTBEAT` script has started beating in ``beat``."""
    deadline = time.monotonic() + seconds
    while not (beat.exists() and beat.read_text().strip()):
        assert time.monotonic() < deadline, f"no heartbeat in {beat}"
        time.sleep(0.02)


def assert_stopped(*beats: Path, quiet: float = 0.5) -> None:
    """The :data:`HEARTBEAT` loops writing ``beats`` are dead: ten beats' time passes without one."""
    assert all(beat.exists() for beat in beats), f"not all of {beats} were written"
    before = [beat.read_text() for beat in beats]
    time.sleep(quiet)
    assert [beat.read_text() for beat in beats] == before, "a heartbeat is still going"


# --- object storage -------------------------------------------------------------------------------
def make_par(osc: Any, ns: str, bucket: str, access: str, object_name: str | None = None, seconds: float = 3600, **kw: Any) -> Any:
    """A pre-authenticated request expiring in ``seconds``; its ``full_path`` is the URL to use."""
    details = CreatePreauthenticatedRequestDetails(
        name=f"par-{uuid.uuid4().hex[:6]}",
        access_type=access,
        object_name=object_name,
        time_expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds),
        **kw,
    )
    return osc.create_preauthenticated_request(ns, bucket, details).data
