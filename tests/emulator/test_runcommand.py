"""Run Command through the real SDK: commands, executions, output targets, timeouts, faults, restarts."""

from __future__ import annotations

import hashlib
import time
import uuid

import oci
import pytest
from emulator_helpers import (
    HEARTBEAT,
    NO_RETRY,
    assert_stopped,
    command_details,
    error_of,
    instance_home,
    launch_details,
    launch_instance,
    make_par,
    run_command_plugin,
    wait_for_beat,
    wait_for_execution,
)
from oci.compute_instance_agent.models import (
    InstanceAgentCommandOutputViaObjectStorageTupleDetails,
    InstanceAgentCommandOutputViaObjectStorageUriDetails,
    InstanceAgentCommandSourceViaObjectStorageTupleDetails,
    InstanceAgentCommandSourceViaObjectStorageUriDetails,
    InstanceAgentCommandSourceViaTextDetails,
)

from vdimport_local.emulator.client import EmulatorHandle


@pytest.fixture
def instance(launch) -> str:  # type: ignore[no-untyped-def]
    return str(launch())


def run(agent, compartment: str, instance_id: str, script: str | None, timeout: int = 60, **kw: object) -> str:  # type: ignore[no-untyped-def]
    return str(agent.create_instance_agent_command(command_details(compartment, instance_id, script, timeout, **kw)).data.id)


# --- the basics ----------------------------------------------------------------------------
def test_command_runs_and_reports_text_output(emu, agent, compartment, instance) -> None:
    created = agent.create_instance_agent_command(command_details(compartment, instance, "echo hello\necho oops >&2\n", name="greet"))
    command = created.data
    assert command.id.startswith("ocid1.instanceagentcommand.")
    assert (command.compartment_id, command.display_name, command.is_canceled) == (compartment, "greet", False)
    assert command.execution_time_out_in_seconds == 60
    assert command.target.instance_id == instance
    assert command.content.source.text == "echo hello\necho oops >&2\n"
    assert command.content.output.output_type == "TEXT"

    execution = wait_for_execution(agent, command.id, instance)
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
        wait_for_execution(agent, cid, instance)
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
    execution = wait_for_execution(agent, cid, instance)
    expected = "".join(f"{i:09d}\n" for i in range(500))
    assert len(expected) == 5000
    assert execution.lifecycle_state == "SUCCEEDED"
    assert execution.content.text == expected[-1024:]
    assert execution.content.text_sha256 == hashlib.sha256(expected[-1024:].encode()).hexdigest()


def test_non_zero_exit_fails_with_the_exit_code(agent, compartment, instance) -> None:
    execution = wait_for_execution(agent, run(agent, compartment, instance, "echo about to fail\nexit 3"), instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 3)
    assert execution.content.text == "about to fail\n"
    assert "3" in execution.content.message


def test_shebang_picks_the_interpreter(agent, compartment, instance) -> None:
    execution = wait_for_execution(
        agent, run(agent, compartment, instance, "#!/usr/bin/env python3\nprint('six times seven is', 6 * 7)\n"), instance
    )
    assert (execution.lifecycle_state, execution.content.text) == ("SUCCEEDED", "six times seven is 42\n")


def test_commands_on_one_instance_run_one_at_a_time(emu, agent, compartment, instance) -> None:
    log = "runs.log"
    script = f"echo start $1 >> {log}; sleep 0.1; echo end >> {log}"
    ids = [run(agent, compartment, instance, script.replace("$1", str(n))) for n in range(3)]
    for cid in ids:
        assert wait_for_execution(agent, cid, instance).lifecycle_state == "SUCCEEDED"
    assert (instance_home(emu, instance) / log).read_text() == "start 0\nend\nstart 1\nend\nstart 2\nend\n"


# --- validation -----------------------------------------------------------------------------
def test_script_text_is_limited_to_4_kb(agent, compartment, instance) -> None:
    at_limit = "#" * 4094 + "\n:"  # 4096 bytes
    assert wait_for_execution(agent, run(agent, compartment, instance, at_limit), instance).lifecycle_state == "SUCCEEDED"
    err = error_of(agent.create_instance_agent_command, command_details(compartment, instance, at_limit + "\n"))
    assert (err.status, err.code) == (400, "InvalidParameter")
    assert "4096" in err.message


def test_text_sha256_is_checked(agent, compartment, instance) -> None:
    text = "echo checked"
    good = InstanceAgentCommandSourceViaTextDetails(source_type="TEXT", text=text, text_sha256=hashlib.sha256(text.encode()).hexdigest())
    assert wait_for_execution(agent, run(agent, compartment, instance, text, source=good), instance).content.text == "checked\n"
    bad = InstanceAgentCommandSourceViaTextDetails(source_type="TEXT", text=text, text_sha256=hashlib.sha256(b"other").hexdigest())
    assert error_of(agent.create_instance_agent_command, command_details(compartment, instance, source=bad)).status == 400


@pytest.mark.parametrize("timeout", [-1, 86401])
def test_timeout_must_be_within_24_hours(agent, compartment, instance, timeout) -> None:
    err = error_of(agent.create_instance_agent_command, command_details(compartment, instance, "true", timeout=timeout))
    assert (err.status, err.code) == (400, "InvalidParameter")


def test_target_must_exist_and_not_be_terminated(agent, compute, compartment, instance) -> None:
    missing = "ocid1.instance.oc1.iad.anotthere"
    assert error_of(agent.create_instance_agent_command, command_details(compartment, missing, "true")).status == 404
    compute.terminate_instance(instance)
    err = error_of(agent.create_instance_agent_command, command_details(compartment, instance, "true"))
    assert (err.status, err.code) == (409, "IncorrectState")


def test_unknown_command_and_wrong_instance_are_404(agent, compartment, instance) -> None:
    assert error_of(agent.get_instance_agent_command, "ocid1.instanceagentcommand.oc1.iad.anope").status == 404
    cid = run(agent, compartment, instance, "true")
    assert error_of(agent.get_instance_agent_command_execution, cid, "ocid1.instance.oc1.iad.aother").status == 404
    assert error_of(agent.cancel_instance_agent_command, "ocid1.instanceagentcommand.oc1.iad.anope").status == 404


def test_retry_token_creates_one_command(agent, compartment, instance) -> None:
    token = uuid.uuid4().hex
    first = agent.create_instance_agent_command(command_details(compartment, instance, "echo once >> once.log"), opc_retry_token=token).data
    again = agent.create_instance_agent_command(command_details(compartment, instance, "echo once >> once.log"), opc_retry_token=token).data
    assert again.id == first.id
    wait_for_execution(agent, first.id, instance)
    assert len(agent.list_instance_agent_commands(compartment).data) == 1


# --- timeouts, cancel, plugin, termination ---------------------------------------------------
# These scripts beat (HEARTBEAT) until killed: assert_stopped proves the kill without waiting for a
# script's natural end.
def test_timeout_kills_the_script(emu, agent, compartment, instance) -> None:
    started = time.monotonic()
    cid = run(agent, compartment, instance, "echo started\n" + HEARTBEAT, timeout=1)
    execution = wait_for_execution(agent, cid, instance)
    assert execution.lifecycle_state == "TIMED_OUT"
    assert time.monotonic() - started < 1.9
    assert execution.content.text == "started\n"
    assert_stopped(instance_home(emu, instance) / "beat")


def test_cancel_kills_a_running_script(emu, agent, compartment, instance) -> None:
    cid = run(agent, compartment, instance, "echo started\n" + HEARTBEAT)
    wait_for_beat(instance_home(emu, instance) / "beat")
    agent.cancel_instance_agent_command(cid)
    execution = wait_for_execution(agent, cid, instance, seconds=1.5)
    assert (execution.lifecycle_state, execution.delivery_state) == ("CANCELED", "ACKED_CANCELED")
    assert agent.get_instance_agent_command(cid).data.is_canceled is True
    assert_stopped(instance_home(emu, instance) / "beat")
    agent.cancel_instance_agent_command(cid)  # again: a no-op, as for any finished command
    assert wait_for_execution(agent, cid, instance).lifecycle_state == "CANCELED"


def test_disabled_plugin_leaves_the_command_undelivered_until_it_times_out(agent, compartment, launch) -> None:
    iid = launch(agent_config=run_command_plugin("DISABLED"))
    cid = run(agent, compartment, iid, "echo never", timeout=1)
    time.sleep(0.5)
    pending = agent.get_instance_agent_command_execution(cid, iid).data
    assert (pending.lifecycle_state, pending.delivery_state) == ("ACCEPTED", "VISIBLE")
    execution = wait_for_execution(agent, cid, iid, seconds=5)
    assert (execution.lifecycle_state, execution.delivery_state) == ("TIMED_OUT", "EXPIRED")

    waiting = run(agent, compartment, iid, "echo never", timeout=60)
    agent.cancel_instance_agent_command(waiting)
    assert wait_for_execution(agent, waiting, iid, seconds=2).lifecycle_state == "CANCELED"


def test_command_waits_for_the_instance_to_run(emu, agent, compartment, launch) -> None:
    emu.configure(lifecycle_seconds=0.5)
    iid = launch(wait=False)
    cid = run(agent, compartment, iid, "echo up")
    assert agent.get_instance_agent_command_execution(cid, iid).data.lifecycle_state == "ACCEPTED"
    execution = wait_for_execution(agent, cid, iid, seconds=10)
    assert (execution.lifecycle_state, execution.content.text) == ("SUCCEEDED", "up\n")
    running_at = next(e["time"] for e in emu.history("instance") if e["id"] == iid and e["state"] == "RUNNING")
    started_at = next(e["time"] for e in emu.history("instanceAgentCommandExecution") if e["id"] == cid and e["state"] == "IN_PROGRESS")
    assert started_at >= running_at


def test_terminating_the_instance_kills_its_script(emu, agent, compartment, instance) -> None:
    cid = run(agent, compartment, instance, "echo started\n" + HEARTBEAT, timeout=2)
    wait_for_beat(instance_home(emu, instance) / "beat")
    emu.admin("POST", f"instances/{instance}/terminate")
    assert_stopped(instance_home(emu, instance) / "beat")
    # the agent is gone with the VM: nobody reports, the execution times out
    assert agent.get_instance_agent_command_execution(cid, instance).data.lifecycle_state == "IN_PROGRESS"
    execution = wait_for_execution(agent, cid, instance, seconds=5)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("TIMED_OUT", None)


def test_stopping_the_instance_fails_its_script(emu, agent, compute, compartment, instance) -> None:
    cid = run(agent, compartment, instance, "echo started\n" + HEARTBEAT)
    wait_for_beat(instance_home(emu, instance) / "beat")
    compute.instance_action(instance, "STOP")
    execution = wait_for_execution(agent, cid, instance, seconds=2)
    assert (execution.lifecycle_state, execution.content.text) == ("FAILED", "started\n")
    assert "stopped" in execution.content.message
    assert_stopped(instance_home(emu, instance) / "beat")


# --- faults ------------------------------------------------------------------------------------
def test_fault_fail_reports_its_exit_code_without_running(emu, agent, compartment, instance) -> None:
    emu.fault("RunCommand", action="fail", exit_code=7, message="disk on fire")
    marker = f"ran-{uuid.uuid4().hex}"
    execution = wait_for_execution(agent, run(agent, compartment, instance, f"touch {marker}"), instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 7)
    assert "disk on fire" in execution.content.message
    assert not (instance_home(emu, instance) / marker).exists()
    # the rule hit once: the next command runs
    assert wait_for_execution(agent, run(agent, compartment, instance, f"touch {marker}"), instance).lifecycle_state == "SUCCEEDED"
    assert (instance_home(emu, instance) / marker).exists()


def test_fault_hang_stays_in_progress_until_canceled(emu, agent, compartment, instance) -> None:
    emu.fault("RunCommand", action="hang")
    cid = run(agent, compartment, instance, "echo never")
    wait_for_execution(agent, cid, instance, ("IN_PROGRESS",))
    time.sleep(0.5)
    assert agent.get_instance_agent_command_execution(cid, instance).data.lifecycle_state == "IN_PROGRESS"
    agent.cancel_instance_agent_command(cid)
    assert wait_for_execution(agent, cid, instance, seconds=2).lifecycle_state == "CANCELED"


def test_fault_hang_ends_at_the_timeout(emu, agent, compartment, instance) -> None:
    emu.fault("RunCommand", action="hang")
    execution = wait_for_execution(agent, run(agent, compartment, instance, "echo never", timeout=1), instance, seconds=5)
    assert (execution.lifecycle_state, execution.content.text) == ("TIMED_OUT", "")


def test_fault_timeout_and_match_on_instance(emu, agent, compartment, instance, launch) -> None:
    other = launch()
    emu.fault("RunCommand", action="timeout", match={"instanceId": instance})
    assert wait_for_execution(agent, run(agent, compartment, other, "true"), other).lifecycle_state == "SUCCEEDED"
    timed_out = wait_for_execution(agent, run(agent, compartment, instance, "true", timeout=3600), instance, seconds=5)
    assert timed_out.lifecycle_state == "TIMED_OUT"


# --- Object Storage sources and targets -----------------------------------------------------------
def par_url(osc, ns: str, bucket: str, obj: str, access: str) -> str:  # type: ignore[no-untyped-def]
    return str(make_par(osc, ns, bucket, access, obj).full_path)


def test_output_to_a_write_par_holds_the_whole_output(agent, compartment, instance, osc, ns, bucket) -> None:
    uri = par_url(osc, ns, bucket, "out/run.log", "ObjectWrite")
    output = InstanceAgentCommandOutputViaObjectStorageUriDetails(output_type="OBJECT_STORAGE_URI", output_uri=uri)
    cid = run(agent, compartment, instance, "for i in $(seq 0 499); do printf '%09d\\n' $i; done; exit 4", output=output)
    execution = wait_for_execution(agent, cid, instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 4)
    assert execution.content.output_type == "OBJECT_STORAGE_URI"
    assert execution.content.output_uri == uri
    assert osc.get_object(ns, bucket, "out/run.log").data.content == "".join(f"{i:09d}\n" for i in range(500)).encode()


def test_throttled_output_upload_is_retried(emu, agent, compartment, instance, osc, ns, bucket) -> None:
    emu.fault("PutObjectWithPAR", status=429, times=2)
    uri = par_url(osc, ns, bucket, "out/throttled.log", "ObjectWrite")
    output = InstanceAgentCommandOutputViaObjectStorageUriDetails(output_type="OBJECT_STORAGE_URI", output_uri=uri)
    execution = wait_for_execution(agent, run(agent, compartment, instance, "echo after throttling", output=output), instance)
    assert execution.lifecycle_state == "SUCCEEDED", execution.content.message
    assert osc.get_object(ns, bucket, "out/throttled.log").data.content == b"after throttling\n"
    assert [c["status"] for c in emu.calls("PutObjectWithPAR")][-3:] == [429, 429, 200]


def test_output_to_a_bucket_tuple(agent, compartment, instance, osc, ns, bucket) -> None:
    output = InstanceAgentCommandOutputViaObjectStorageTupleDetails(
        output_type="OBJECT_STORAGE_TUPLE", namespace_name=ns, bucket_name=bucket, object_name="tuple.log"
    )
    execution = wait_for_execution(agent, run(agent, compartment, instance, "echo to the bucket", output=output), instance)
    assert execution.lifecycle_state == "SUCCEEDED"
    assert (execution.content.output_type, execution.content.bucket_name, execution.content.object_name) == (
        "OBJECT_STORAGE_TUPLE",
        bucket,
        "tuple.log",
    )
    assert osc.get_object(ns, bucket, "tuple.log").data.content == b"to the bucket\n"


def test_output_target_that_refuses_fails_the_execution(agent, compartment, instance, osc, ns, bucket) -> None:
    read_only = par_url(osc, ns, bucket, "nope.log", "ObjectRead")
    output = InstanceAgentCommandOutputViaObjectStorageUriDetails(output_type="OBJECT_STORAGE_URI", output_uri=read_only)
    execution = wait_for_execution(agent, run(agent, compartment, instance, "echo fine", output=output), instance)
    assert (execution.lifecycle_state, execution.content.exit_code) == ("FAILED", 0)
    assert "output could not be written" in execution.content.message
    token = read_only.split("/p/", 1)[1].split("/", 1)[0]
    assert token not in execution.content.message, "the message quotes the PAR's credential"


def test_script_from_a_read_par_and_from_a_tuple(agent, compartment, instance, osc, ns, bucket) -> None:
    big = "#" * 6000 + "\necho from object storage\n"  # more than the 4 KB a TEXT source may hold
    osc.put_object(ns, bucket, "script.sh", big.encode())
    source = InstanceAgentCommandSourceViaObjectStorageUriDetails(
        source_type="OBJECT_STORAGE_URI", source_uri=par_url(osc, ns, bucket, "script.sh", "ObjectRead")
    )
    from_uri = wait_for_execution(agent, run(agent, compartment, instance, None, source=source), instance)
    assert from_uri.content.text == "from object storage\n"
    tuple_source = InstanceAgentCommandSourceViaObjectStorageTupleDetails(
        source_type="OBJECT_STORAGE_TUPLE", namespace_name=ns, bucket_name=bucket, object_name="script.sh"
    )
    from_tuple = wait_for_execution(agent, run(agent, compartment, instance, None, source=tuple_source), instance)
    assert from_tuple.content.text == "from object storage\n"
    gone = InstanceAgentCommandSourceViaObjectStorageTupleDetails(
        source_type="OBJECT_STORAGE_TUPLE", namespace_name=ns, bucket_name=bucket, object_name="missing.sh"
    )
    failed = wait_for_execution(agent, run(agent, compartment, instance, None, source=gone), instance)
    assert failed.lifecycle_state == "FAILED"
    assert "404" in failed.content.message


def test_file_urls_are_refused(agent, compartment, instance) -> None:
    source = InstanceAgentCommandSourceViaObjectStorageUriDetails(source_type="OBJECT_STORAGE_URI", source_uri="file:///etc/hostname")
    assert error_of(agent.create_instance_agent_command, command_details(compartment, instance, source=source)).status == 400


# --- restarts --------------------------------------------------------------------------------------
def test_restart_fails_running_commands_and_delivers_waiting_ones(fresh_emulator: EmulatorHandle, compartment, ads, image_id) -> None:
    emu = fresh_emulator
    agent = emu.client(oci.compute_instance_agent.ComputeInstanceAgentClient, retry_strategy=NO_RETRY)
    compute = emu.client(oci.core.ComputeClient, retry_strategy=NO_RETRY)
    iid = launch_instance(compute, launch_details(compartment, ads[0], image_id))  # ADs and images are the same in every emulator
    running = run(agent, compartment, iid, "echo started\n" + HEARTBEAT)
    waiting = run(agent, compartment, iid, "echo second")
    wait_for_beat(instance_home(emu, iid) / "beat")
    emu.stop()
    restarted = EmulatorHandle.start(emu.data_dir)
    try:
        agent = restarted.client(oci.compute_instance_agent.ComputeInstanceAgentClient, retry_strategy=NO_RETRY)
        failed = wait_for_execution(agent, running, iid)
        assert failed.lifecycle_state == "FAILED"
        assert "restarted" in failed.content.message
        assert failed.content.text == "started\n"
        assert wait_for_execution(agent, waiting, iid).content.text == "second\n"
        assert_stopped(instance_home(restarted, iid) / "beat")
    finally:
        restarted.stop()
