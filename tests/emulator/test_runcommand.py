"""Run Command through the real SDK: commands, executions, output targets, timeouts, faults, restarts."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import oci
import pytest
from oci.compute_instance_agent.models import (
    CreateInstanceAgentCommandDetails,
    InstanceAgentCommandContent,
    InstanceAgentCommandOutputViaObjectStorageTupleDetails,
    InstanceAgentCommandOutputViaObjectStorageUriDetails,
    InstanceAgentCommandSourceViaObjectStorageTupleDetails,
    InstanceAgentCommandSourceViaObjectStorageUriDetails,
    InstanceAgentCommandSourceViaTextDetails,
    InstanceAgentCommandTarget,
)
from oci.core.models import (
    CreateVnicDetails,
    InstanceAgentPluginConfigDetails,
    InstanceSourceViaImageDetails,
    LaunchInstanceAgentConfigDetails,
    LaunchInstanceDetails,
    LaunchInstanceShapeConfigDetails,
)

from vdimport_local.emulator.client import EmulatorHandle

NO_RETRY = oci.retry.NoneRetryStrategy()
SUBNET = "ocid1.subnet.oc1.iad.aaaaaaaaemulatortestsubnet"
PLUGIN = "Compute Instance Run Command"
TERMINAL = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELED")


# --- helpers ---------------------------------------------------------------------------
@pytest.fixture
def compartment() -> str:
    return f"ocid1.compartment.oc1..test{uuid.uuid4().hex}"


@pytest.fixture
def agent(emu: EmulatorHandle) -> oci.compute_instance_agent.ComputeInstanceAgentClient:
    return emu.client(oci.compute_instance_agent.ComputeInstanceAgentClient, retry_strategy=NO_RETRY)


@pytest.fixture
def compute(emu: EmulatorHandle) -> oci.core.ComputeClient:
    return emu.client(oci.core.ComputeClient, retry_strategy=NO_RETRY)


def launch(emu: EmulatorHandle, compute: oci.core.ComputeClient, compartment: str, plugin_state: str = "ENABLED") -> str:
    ad = emu.client(oci.identity.IdentityClient).list_availability_domains(emu.tenancy).data[0].name
    image = compute.list_images(emu.tenancy, operating_system="Oracle Linux", shape="VM.Standard.E4.Flex").data[0].id
    details = LaunchInstanceDetails(
        availability_domain=ad,
        compartment_id=compartment,
        shape="VM.Standard.E4.Flex",
        shape_config=LaunchInstanceShapeConfigDetails(ocpus=1, memory_in_gbs=16),
        source_details=InstanceSourceViaImageDetails(image_id=image),
        create_vnic_details=CreateVnicDetails(subnet_id=SUBNET, assign_public_ip=False),
        agent_config=LaunchInstanceAgentConfigDetails(
            plugins_config=[InstanceAgentPluginConfigDetails(name=PLUGIN, desired_state=plugin_state)]
        ),
        display_name="runcommand-test",
    )
    iid = str(compute.launch_instance(details).data.id)
    oci.wait_until(compute, compute.get_instance(iid), "lifecycle_state", "RUNNING", max_interval_seconds=0.1, max_wait_seconds=20)
    return iid


@pytest.fixture
def instance(emu: EmulatorHandle, compute: oci.core.ComputeClient, compartment: str) -> Iterator[str]:
    iid = launch(emu, compute, compartment)
    yield iid
    if compute.get_instance(iid).data.lifecycle_state not in ("TERMINATING", "TERMINATED"):
        compute.terminate_instance(iid)


def details(
    compartment: str,
    instance_id: str,
    script: str | None = None,
    timeout: int = 60,
    source: object = None,
    output: object = None,
    name: str = "test command",
) -> CreateInstanceAgentCommandDetails:
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


def run(agent, compartment: str, instance_id: str, script: str, timeout: int = 60, **kw: object) -> str:  # type: ignore[no-untyped-def]
    return str(agent.create_instance_agent_command(details(compartment, instance_id, script, timeout, **kw)).data.id)


def wait(agent, command_id: str, instance_id: str, states: tuple[str, ...] = TERMINAL, seconds: float = 30):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        execution = agent.get_instance_agent_command_execution(command_id, instance_id).data
        if execution.lifecycle_state in states:
            return execution
        assert time.monotonic() < deadline, f"execution still {execution.lifecycle_state}"
        time.sleep(0.05)


def error_of(call, *args, **kwargs) -> oci.exceptions.ServiceError:  # type: ignore[no-untyped-def]
    with pytest.raises(oci.exceptions.ServiceError) as err:
        call(*args, **kwargs)
    return err.value


def home(emu: EmulatorHandle, instance_id: str) -> Path:
    return emu.data_dir / "instances" / instance_id / "home"


# --- the basics ----------------------------------------------------------------------------
def test_command_runs_and_reports_text_output(emu, agent, compartment, instance) -> None:
    created = agent.create_instance_agent_command(details(compartment, instance, "echo hello\necho oops >&2\n", name="greet"))
    command = created.data
    assert command.id.startswith("ocid1.instanceagentcommand.")
    assert (command.compartment_id, command.display_name, command.is_canceled) == (compartment, "greet", False)
    assert command.execution_time_out_in_seconds == 60
    assert command.target.instance_id == instance
    assert command.content.source.text == "echo hello\necho oops >&2\n"
    assert command.content.output.output_type == "TEXT"

    execution = wait(agent, command.id, instance)
    assert (execution.lifecycle_state, execution.delivery_state) == ("SUCCEEDED", "ACKED")
    assert (execution.instance_agent_command_id, execution.instance_id, execution.display_name) == (command.id, instance, "greet")
    assert execution.content.output_type == "TEXT"
    assert execution.content.exit_code == 0
    assert execution.content.text == "hello\noops\n"
    assert execution.content.text_sha256 == hashlib.sha256(b"hello\noops\n").hexdigest()
    assert execution.time_updated >= execution.time_created

    fetched = agent.get_instance_agent_command(command.id).data
    assert (fetched.id, fetched.content.source.text) == (command.id, command.content.source.text)
    states = [e["state"] for e in emu.history("instanceAgentCommandExecution") if e["id"] == command.id]
    assert states == ["ACCEPTED", "IN_PROGRESS", "SUCCEEDED"]


def test_list_commands_and_executions_filter_sort_and_page(agent, compartment, instance) -> None:
    ids = [run(agent, compartment, instance, f"exit {code}", name=f"c{n}") for n, code in enumerate((0, 1, 0))]
    for cid in ids:
        wait(agent, cid, instance)
    listed = agent.list_instance_agent_commands(compartment).data
    assert [c.instance_agent_command_id for c in listed] == ids[::-1]  # newest first
    assert [c.display_name for c in agent.list_instance_agent_commands(compartment, sort_by="DISPLAYNAME").data] == ["c0", "c1", "c2"]
    first = agent.list_instance_agent_commands(compartment, limit=2)
    assert len(first.data) == 2
    assert first.has_next_page
    rest = agent.list_instance_agent_commands(compartment, limit=2, page=first.next_page)
    assert [c.instance_agent_command_id for c in rest.data] == [ids[0]]

    executions = oci.pagination.list_call_get_all_results(agent.list_instance_agent_command_executions, compartment, instance, limit=1).data
    assert [e.instance_agent_command_id for e in executions] == ids[::-1]
    failed = agent.list_instance_agent_command_executions(compartment, instance, lifecycle_state="FAILED").data
    assert [(e.instance_agent_command_id, e.content.exit_code) for e in failed] == [(ids[1], 1)]
    assert agent.list_instance_agent_command_executions(f"{compartment}x", instance).data == []
    err = error_of(
        agent.base_client.call_api, resource_path="/instanceAgentCommands", method="GET", response_type="list[InstanceAgentCommandSummary]"
    )
    assert (err.status, err.code) == (400, "MissingParameter")


def test_text_output_keeps_the_last_1024_bytes(agent, compartment, instance) -> None:
    # 500 lines of 10 bytes: 5000 bytes in all, each line telling where it is
    cid = run(agent, compartment, instance, "for i in $(seq 0 499); do printf '%09d\\n' $i; done")
    execution = wait(agent, cid, instance)
    expected = "".join(f"{i:09d}\n" for i in range(500))
    assert len(expected) == 5000
    assert execution.lifecycle_state == "SUCCEEDED"
    assert execution.content.text == expected[-1024:]
    assert execution.content.text_sha256 == hashlib.sha256(expected[-1024:].encode()).hexdigest()


def test_non_zero_exit_fails_with_the_exit_code(agent, compartment, instance) -> None:
    execution = wait(agent, run(agent, compartment, instance, "echo about to fail\nexit 3"), instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 3)
    assert execution.content.text == "about to fail\n"
    assert "3" in execution.content.message


def test_shebang_picks_the_interpreter(agent, compartment, instance) -> None:
    execution = wait(agent, run(agent, compartment, instance, "#!/usr/bin/env python3\nprint('six times seven is', 6 * 7)\n"), instance)
    assert (execution.lifecycle_state, execution.content.text) == ("SUCCEEDED", "six times seven is 42\n")


def test_commands_on_one_instance_run_one_at_a_time(emu, agent, compartment, instance) -> None:
    log = "runs.log"
    script = f"echo start $1 >> {log}; sleep 0.3; echo end >> {log}"
    ids = [run(agent, compartment, instance, script.replace("$1", str(n))) for n in range(3)]
    for cid in ids:
        assert wait(agent, cid, instance).lifecycle_state == "SUCCEEDED"
    assert (home(emu, instance) / log).read_text() == "start 0\nend\nstart 1\nend\nstart 2\nend\n"


# --- validation -----------------------------------------------------------------------------
def test_script_text_is_limited_to_4_kb(agent, compartment, instance) -> None:
    at_limit = "#" * 4094 + "\n:"  # 4096 bytes
    assert wait(agent, run(agent, compartment, instance, at_limit), instance).lifecycle_state == "SUCCEEDED"
    err = error_of(agent.create_instance_agent_command, details(compartment, instance, at_limit + "\n"))
    assert (err.status, err.code) == (400, "InvalidParameter")
    assert "4096" in err.message


def test_text_sha256_is_checked(agent, compartment, instance) -> None:
    text = "echo checked"
    good = InstanceAgentCommandSourceViaTextDetails(source_type="TEXT", text=text, text_sha256=hashlib.sha256(text.encode()).hexdigest())
    assert wait(agent, run(agent, compartment, instance, text, source=good), instance).content.text == "checked\n"
    bad = InstanceAgentCommandSourceViaTextDetails(source_type="TEXT", text=text, text_sha256=hashlib.sha256(b"other").hexdigest())
    assert error_of(agent.create_instance_agent_command, details(compartment, instance, source=bad)).status == 400


@pytest.mark.parametrize("timeout", [-1, 86401])
def test_timeout_must_be_within_24_hours(agent, compartment, instance, timeout) -> None:
    err = error_of(agent.create_instance_agent_command, details(compartment, instance, "true", timeout=timeout))
    assert (err.status, err.code) == (400, "InvalidParameter")


def test_target_must_exist_and_not_be_terminated(agent, compute, compartment, instance) -> None:
    missing = "ocid1.instance.oc1.iad.anotthere"
    assert error_of(agent.create_instance_agent_command, details(compartment, missing, "true")).status == 404
    compute.terminate_instance(instance)
    err = error_of(agent.create_instance_agent_command, details(compartment, instance, "true"))
    assert (err.status, err.code) == (409, "IncorrectState")


def test_unknown_command_and_wrong_instance_are_404(agent, compartment, instance) -> None:
    assert error_of(agent.get_instance_agent_command, "ocid1.instanceagentcommand.oc1.iad.anope").status == 404
    cid = run(agent, compartment, instance, "true")
    assert error_of(agent.get_instance_agent_command_execution, cid, "ocid1.instance.oc1.iad.aother").status == 404
    assert error_of(agent.cancel_instance_agent_command, "ocid1.instanceagentcommand.oc1.iad.anope").status == 404


def test_retry_token_creates_one_command(agent, compartment, instance) -> None:
    token = uuid.uuid4().hex
    first = agent.create_instance_agent_command(details(compartment, instance, "echo once >> once.log"), opc_retry_token=token).data
    again = agent.create_instance_agent_command(details(compartment, instance, "echo once >> once.log"), opc_retry_token=token).data
    assert again.id == first.id
    wait(agent, first.id, instance)
    assert len(agent.list_instance_agent_commands(compartment).data) == 1


# --- timeouts, cancel, plugin, termination ---------------------------------------------------
def test_timeout_kills_the_script(emu, agent, compartment, instance) -> None:
    marker = f"finished-{uuid.uuid4().hex}"
    started = time.monotonic()
    cid = run(agent, compartment, instance, f"echo started\nsleep 2\ntouch {marker}\n", timeout=1)
    execution = wait(agent, cid, instance)
    assert execution.lifecycle_state == "TIMED_OUT"
    assert time.monotonic() - started < 1.9
    assert execution.content.text == "started\n"
    time.sleep(1.5)
    assert not (home(emu, instance) / marker).exists()


def test_cancel_kills_a_running_script(emu, agent, compartment, instance) -> None:
    marker = f"finished-{uuid.uuid4().hex}"
    cid = run(agent, compartment, instance, f"echo started\nsleep 2\ntouch {marker}\n")
    wait(agent, cid, instance, ("IN_PROGRESS",))
    time.sleep(0.2)
    agent.cancel_instance_agent_command(cid)
    execution = wait(agent, cid, instance, seconds=1.5)
    assert (execution.lifecycle_state, execution.delivery_state) == ("CANCELED", "ACKED_CANCELED")
    assert agent.get_instance_agent_command(cid).data.is_canceled is True
    time.sleep(2)
    assert not (home(emu, instance) / marker).exists()
    agent.cancel_instance_agent_command(cid)  # again: a no-op, as for any finished command
    assert wait(agent, cid, instance).lifecycle_state == "CANCELED"


def test_disabled_plugin_leaves_the_command_undelivered_until_it_times_out(emu, agent, compute, compartment) -> None:
    iid = launch(emu, compute, compartment, plugin_state="DISABLED")
    cid = run(agent, compartment, iid, "echo never", timeout=1)
    time.sleep(0.5)
    pending = agent.get_instance_agent_command_execution(cid, iid).data
    assert (pending.lifecycle_state, pending.delivery_state) == ("ACCEPTED", "VISIBLE")
    execution = wait(agent, cid, iid, seconds=5)
    assert (execution.lifecycle_state, execution.delivery_state) == ("TIMED_OUT", "EXPIRED")

    waiting = run(agent, compartment, iid, "echo never", timeout=60)
    agent.cancel_instance_agent_command(waiting)
    assert wait(agent, waiting, iid, seconds=2).lifecycle_state == "CANCELED"
    compute.terminate_instance(iid)


def test_command_waits_for_the_instance_to_run(emu, agent, compute, compartment) -> None:
    emu.configure(lifecycle_seconds=1.0)
    ad = emu.client(oci.identity.IdentityClient).list_availability_domains(emu.tenancy).data[0].name
    image = compute.list_images(emu.tenancy, operating_system="Oracle Linux", shape="VM.Standard.E4.Flex").data[0].id
    iid = compute.launch_instance(
        LaunchInstanceDetails(
            availability_domain=ad,
            compartment_id=compartment,
            shape="VM.Standard.E4.Flex",
            shape_config=LaunchInstanceShapeConfigDetails(ocpus=1, memory_in_gbs=16),
            source_details=InstanceSourceViaImageDetails(image_id=image),
            create_vnic_details=CreateVnicDetails(subnet_id=SUBNET),
        )
    ).data.id
    cid = run(agent, compartment, iid, "echo up")
    assert agent.get_instance_agent_command_execution(cid, iid).data.lifecycle_state == "ACCEPTED"
    execution = wait(agent, cid, iid, seconds=10)
    assert (execution.lifecycle_state, execution.content.text) == ("SUCCEEDED", "up\n")
    running_at = next(e["time"] for e in emu.history("instance") if e["id"] == iid and e["state"] == "RUNNING")
    started_at = next(e["time"] for e in emu.history("instanceAgentCommandExecution") if e["id"] == cid and e["state"] == "IN_PROGRESS")
    assert started_at >= running_at
    emu.configure(lifecycle_seconds=0)
    compute.terminate_instance(iid)


def test_terminating_the_instance_kills_its_script(emu, agent, compute, compartment, instance) -> None:
    marker = f"finished-{uuid.uuid4().hex}"
    cid = run(agent, compartment, instance, f"echo started\nsleep 1.5\ntouch {marker}\n", timeout=3)
    wait(agent, cid, instance, ("IN_PROGRESS",))
    time.sleep(0.3)
    emu.admin("POST", f"instances/{instance}/terminate")
    time.sleep(2)
    assert not (home(emu, instance) / marker).exists()
    # the agent is gone with the VM: nobody reports, the execution times out
    assert agent.get_instance_agent_command_execution(cid, instance).data.lifecycle_state == "IN_PROGRESS"
    execution = wait(agent, cid, instance, seconds=5)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("TIMED_OUT", None)


def test_stopping_the_instance_fails_its_script(emu, agent, compute, compartment, instance) -> None:
    marker = f"finished-{uuid.uuid4().hex}"
    cid = run(agent, compartment, instance, f"echo started\nsleep 1.5\ntouch {marker}\n")
    wait(agent, cid, instance, ("IN_PROGRESS",))
    time.sleep(0.3)
    compute.instance_action(instance, "STOP")
    execution = wait(agent, cid, instance, seconds=2)
    assert (execution.lifecycle_state, execution.content.text) == ("FAILED", "started\n")
    assert "stopped" in execution.content.message
    time.sleep(1.5)
    assert not (home(emu, instance) / marker).exists()


# --- faults ------------------------------------------------------------------------------------
def test_fault_fail_reports_its_exit_code_without_running(emu, agent, compartment, instance) -> None:
    emu.fault("RunCommand", action="fail", exit_code=7, message="disk on fire")
    marker = f"ran-{uuid.uuid4().hex}"
    execution = wait(agent, run(agent, compartment, instance, f"touch {marker}"), instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 7)
    assert "disk on fire" in execution.content.message
    assert not (home(emu, instance) / marker).exists()
    # the rule hit once: the next command runs
    assert wait(agent, run(agent, compartment, instance, f"touch {marker}"), instance).lifecycle_state == "SUCCEEDED"
    assert (home(emu, instance) / marker).exists()


def test_fault_hang_stays_in_progress_until_canceled(emu, agent, compartment, instance) -> None:
    emu.fault("RunCommand", action="hang")
    cid = run(agent, compartment, instance, "echo never")
    wait(agent, cid, instance, ("IN_PROGRESS",))
    time.sleep(1)
    assert agent.get_instance_agent_command_execution(cid, instance).data.lifecycle_state == "IN_PROGRESS"
    agent.cancel_instance_agent_command(cid)
    assert wait(agent, cid, instance, seconds=2).lifecycle_state == "CANCELED"


def test_fault_hang_ends_at_the_timeout(emu, agent, compartment, instance) -> None:
    emu.fault("RunCommand", action="hang")
    execution = wait(agent, run(agent, compartment, instance, "echo never", timeout=1), instance, seconds=5)
    assert (execution.lifecycle_state, execution.content.text) == ("TIMED_OUT", "")


def test_fault_timeout_and_match_on_instance(emu, agent, compute, compartment, instance) -> None:
    other = launch(emu, compute, compartment)
    emu.fault("RunCommand", action="timeout", match={"instanceId": instance})
    assert wait(agent, run(agent, compartment, other, "true"), other).lifecycle_state == "SUCCEEDED"
    assert wait(agent, run(agent, compartment, instance, "true", timeout=3600), instance, seconds=5).lifecycle_state == "TIMED_OUT"
    compute.terminate_instance(other)


# --- Object Storage sources and targets -----------------------------------------------------------
@pytest.fixture
def bucket(emu: EmulatorHandle, compartment: str) -> Iterator[tuple[oci.object_storage.ObjectStorageClient, str, str]]:
    osc = emu.client(oci.object_storage.ObjectStorageClient, retry_strategy=NO_RETRY)
    ns = osc.get_namespace().data
    name = f"runcommand-{uuid.uuid4().hex[:12]}"
    osc.create_bucket(ns, oci.object_storage.models.CreateBucketDetails(name=name, compartment_id=compartment))
    yield osc, ns, name
    for obj in osc.list_objects(ns, name).data.objects:
        osc.delete_object(ns, name, obj.name)
    for par in osc.list_preauthenticated_requests(ns, name).data:
        osc.delete_preauthenticated_request(ns, name, par.id)
    osc.delete_bucket(ns, name)


def par_url(osc, ns: str, bucket: str, obj: str, access: str) -> str:  # type: ignore[no-untyped-def]
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    details = oci.object_storage.models.CreatePreauthenticatedRequestDetails(
        name="rc", object_name=obj, access_type=access, time_expires=expires
    )
    return str(osc.create_preauthenticated_request(ns, bucket, details).data.full_path)


def test_output_to_a_write_par_holds_the_whole_output(agent, compartment, instance, bucket) -> None:
    osc, ns, name = bucket
    uri = par_url(osc, ns, name, "out/run.log", "ObjectWrite")
    output = InstanceAgentCommandOutputViaObjectStorageUriDetails(output_type="OBJECT_STORAGE_URI", output_uri=uri)
    cid = run(agent, compartment, instance, "for i in $(seq 0 499); do printf '%09d\\n' $i; done; exit 4", output=output)
    execution = wait(agent, cid, instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 4)
    assert execution.content.output_type == "OBJECT_STORAGE_URI"
    assert execution.content.output_uri == uri
    assert osc.get_object(ns, name, "out/run.log").data.content == "".join(f"{i:09d}\n" for i in range(500)).encode()


def test_output_to_a_bucket_tuple(agent, compartment, instance, bucket) -> None:
    osc, ns, name = bucket
    output = InstanceAgentCommandOutputViaObjectStorageTupleDetails(
        output_type="OBJECT_STORAGE_TUPLE", namespace_name=ns, bucket_name=name, object_name="tuple.log"
    )
    execution = wait(agent, run(agent, compartment, instance, "echo to the bucket", output=output), instance)
    assert execution.lifecycle_state == "SUCCEEDED"
    assert (execution.content.output_type, execution.content.bucket_name, execution.content.object_name) == (
        "OBJECT_STORAGE_TUPLE",
        name,
        "tuple.log",
    )
    assert osc.get_object(ns, name, "tuple.log").data.content == b"to the bucket\n"


def test_output_target_that_refuses_fails_the_execution(agent, compartment, instance, bucket) -> None:
    osc, ns, name = bucket
    read_only = par_url(osc, ns, name, "nope.log", "ObjectRead")
    output = InstanceAgentCommandOutputViaObjectStorageUriDetails(output_type="OBJECT_STORAGE_URI", output_uri=read_only)
    execution = wait(agent, run(agent, compartment, instance, "echo fine", output=output), instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 0)
    assert "output could not be written" in execution.content.message


def test_script_from_a_read_par_and_from_a_tuple(agent, compartment, instance, bucket) -> None:
    osc, ns, name = bucket
    big = "#" * 6000 + "\necho from object storage\n"  # more than the 4 KB a TEXT source may hold
    osc.put_object(ns, name, "script.sh", big.encode())
    source = InstanceAgentCommandSourceViaObjectStorageUriDetails(
        source_type="OBJECT_STORAGE_URI", source_uri=par_url(osc, ns, name, "script.sh", "ObjectRead")
    )
    assert wait(agent, run(agent, compartment, instance, None, source=source), instance).content.text == "from object storage\n"
    tuple_source = InstanceAgentCommandSourceViaObjectStorageTupleDetails(
        source_type="OBJECT_STORAGE_TUPLE", namespace_name=ns, bucket_name=name, object_name="script.sh"
    )
    assert wait(agent, run(agent, compartment, instance, None, source=tuple_source), instance).content.text == "from object storage\n"
    gone = InstanceAgentCommandSourceViaObjectStorageTupleDetails(
        source_type="OBJECT_STORAGE_TUPLE", namespace_name=ns, bucket_name=name, object_name="missing.sh"
    )
    failed = wait(agent, run(agent, compartment, instance, None, source=gone), instance)
    assert failed.lifecycle_state == "FAILED"
    assert "404" in failed.content.message


def test_file_urls_are_refused(agent, compartment, instance) -> None:
    source = InstanceAgentCommandSourceViaObjectStorageUriDetails(source_type="OBJECT_STORAGE_URI", source_uri="file:///etc/hostname")
    assert error_of(agent.create_instance_agent_command, details(compartment, instance, source=source)).status == 400


# --- restarts --------------------------------------------------------------------------------------
def test_restart_fails_running_commands_and_delivers_waiting_ones(fresh_emulator: EmulatorHandle, compartment) -> None:
    emu = fresh_emulator
    agent = emu.client(oci.compute_instance_agent.ComputeInstanceAgentClient, retry_strategy=NO_RETRY)
    compute = emu.client(oci.core.ComputeClient, retry_strategy=NO_RETRY)
    iid = launch(emu, compute, compartment)
    marker = f"finished-{uuid.uuid4().hex}"
    running = run(agent, compartment, iid, f"echo started\nsleep 3\ntouch {marker}\n")
    waiting = run(agent, compartment, iid, "echo second")
    wait(agent, running, iid, ("IN_PROGRESS",))
    emu.stop()
    restarted = EmulatorHandle.start(emu.data_dir)
    try:
        agent = restarted.client(oci.compute_instance_agent.ComputeInstanceAgentClient, retry_strategy=NO_RETRY)
        failed = wait(agent, running, iid)
        assert failed.lifecycle_state == "FAILED"
        assert "restarted" in failed.content.message
        assert failed.content.text == "started\n"
        assert wait(agent, waiting, iid).content.text == "second\n"
        time.sleep(3)
        assert not (home(restarted, iid) / marker).exists()
    finally:
        restarted.stop()
