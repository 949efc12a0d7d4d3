"""Injected faults end in success after retries, or in a clean failure with nothing leaked.

Faults come from the emulator's fault rules: throttling (429) and transient 5xx on the calls
every step makes, "Out of host capacity" on launch, the worker terminated out of band during
the write, Run Command scripts that fail, time out or hang, and a launch that fails halfway.
A clean failure is a one-line cause naming what went wrong, and afterwards: every worker
VM of the run terminated, no PAR, no live attachment, no volume (unless the request said
``keep_on_failure``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from importkit import Bucket, assert_nothing_leaked, new_run_id, run_pars, run_resources
from stepkit import SmallImage, calls_since, created_since, fault_hits, final_state, kill_step_during, small_image, upload_request, wait_for

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import STEP_ORDER, ImportOutcome, run_import, run_step_in_process, step_environment

CAPACITY = "Out of host capacity."
BEFORE_WRITE = STEP_ORDER[: STEP_ORDER.index("write_image")]
FROM_WRITE = STEP_ORDER[STEP_ORDER.index("write_image") :]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> SmallImage:
    return small_image(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def request_(bucket: Bucket, image: SmallImage) -> dict[str, Any]:
    return upload_request(bucket, image.path, "faults/disk.qcow2")


def _run(
    emu: EmulatorHandle,
    run_id: str,
    request: dict[str, Any],
    steps: tuple[str, ...] = STEP_ORDER,
    state: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> ImportOutcome:
    return run_import(emu, run_id, request, steps=steps, state=state, env=env or step_environment(emu), runner=run_step_in_process)


def _ok(outcome: ImportOutcome) -> ImportOutcome:
    assert outcome.succeeded, f"{outcome.failed_step} failed: {outcome.error}\n{outcome.runs[-1].output}"
    return outcome


def _cleanup_result(outcome: ImportOutcome) -> dict[str, Any]:
    """The result of the terminate_worker the pipeline ran after the failure."""
    cleanup = outcome.runs[-1]
    assert cleanup.name == "terminate_worker" and outcome.failed_step != "terminate_worker", [r.name for r in outcome.runs]
    assert cleanup.exit_code == 0, f"cleanup failed: {cleanup.cause}\n{cleanup.output}"
    assert cleanup.result is not None
    return cleanup.result


def _one_line(cause: str | None) -> str:
    assert cause and "\n" not in cause and "Traceback" not in cause, cause
    assert "internal error" not in cause, cause
    return cause


def _when_hit(emu: EmulatorHandle, rule_id: int, action: Callable[[], None]) -> Callable[[], None]:
    """Run ``action`` in the background once the fault rule has hit; returns a join that re-raises."""
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            wait_for(lambda: fault_hits(emu, rule_id) >= 1, f"fault {rule_id} to hit", timeout=120, interval=0.05)
            action()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def join() -> None:
        thread.join(130)
        assert not thread.is_alive(), "the fault watcher did not finish"
        if errors:
            raise errors[0]

    return join


# --- throttling and transient errors: retried, the import succeeds ----------------------
BURSTS = {
    "throttling": [
        ("HeadObject", 429, 3),
        ("ListAvailabilityDomains", 429, 2),
        ("ListInstances", 429, 2),
        ("LaunchInstance", 429, 2),
        ("GetInstance", 429, 4),
        ("CreatePreauthenticatedRequest", 429, 2),
        ("CreateInstanceAgentCommand", 429, 3),
        ("GetInstanceAgentCommandExecution", 429, 3),
        ("CreateVolume", 429, 3),
        ("GetVolume", 429, 3),
        ("AttachVolume", 429, 2),
        ("GetVolumeAttachment", 429, 2),
        ("DetachVolume", 429, 2),
        ("TerminateInstance", 429, 2),
        ("UpdateVolume", 429, 2),
        ("CreateVolumeBackupPolicyAssignment", 429, 2),
    ],
    "server-errors": [
        ("HeadObject", 500, 1),
        ("GetObject", 503, 2),
        ("ListInstances", 503, 1),
        ("LaunchInstance", 503, 2),  # launches retry 503, not 500 (see the capacity tests)
        ("GetInstance", 500, 3),
        ("CreatePreauthenticatedRequest", 502, 1),
        ("ListInstanceAgentCommandExecutions", 504, 1),
        ("CreateInstanceAgentCommand", 503, 2),
        ("GetObjectWithPAR", 503, 1),  # the worker's curl retries the range
        ("DeletePreauthenticatedRequest", 500, 1),
        ("CreateVolume", 500, 2),
        ("GetVolume", 503, 2),
        ("AttachVolume", 500, 2),
        ("ListVolumeAttachments", 502, 1),
        ("DetachVolume", 500, 1),
        ("TerminateInstance", 503, 2),
        ("UpdateVolume", 500, 1),
        ("CreateVolumeBackupPolicyAssignment", 503, 1),
    ],
}


@pytest.mark.parametrize("kind", sorted(BURSTS))
def test_bursts_of_throttling_and_server_errors_are_retried(
    emu: EmulatorHandle, request_: dict[str, Any], image: SmallImage, kind: str
) -> None:
    since = time.time()
    for operation, status, times in BURSTS[kind]:
        emu.fault(operation, status=status, times=times)
    request = {**request_, "metadata": {"backup_policy": "silver"}}
    env = step_environment(emu, {"VDIMPORT_RETRY_BASE_SECONDS": "0.02"})  # the SDK's back-off, shortened
    outcome = _ok(_run(emu, new_run_id(f"burst-{kind}"), request, env=env))
    assert_nothing_leaked(emu, outcome, image.expected)

    for operation, status, times in BURSTS[kind]:
        statuses = [c["status"] for c in calls_since(emu, since, operation)]
        assert statuses[:times] == [status] * times, f"{operation}: expected {times} x {status} first, got {statuses}"
        assert len(statuses) > times and 200 <= statuses[times] < 300, f"{operation} was not retried to success: {statuses}"
    for rule in emu.admin("GET", "faults"):
        assert rule["hits"] == rule["times"], f"fault on {rule['operation']} hit {rule['hits']} of {rule['times']} times"
    assert len(created_since(emu, "instance", since)) == 1
    assert len(created_since(emu, "volume", since)) == 1


# --- out of host capacity on launch ---------------------------------------------------
def test_out_of_host_capacity_moves_to_another_availability_domain(
    emu: EmulatorHandle, request_: dict[str, Any], image: SmallImage
) -> None:
    since = time.time()
    run_id = new_run_id("capacity")
    inspected = _ok(_run(emu, run_id, request_, steps=STEP_ORDER[:1]))
    planned = inspected.state["inspect_object"]["plan"]["availability_domain"]
    emu.fault("LaunchInstance", status=500, code="InternalError", message=CAPACITY, times=100, match={"availabilityDomain": planned})

    outcome = _ok(_run(emu, run_id, request_, steps=STEP_ORDER[1:], state=inspected.state))
    volume = assert_nothing_leaked(emu, outcome, image.expected)
    assert volume is not None

    launches = [(c["status"], c["retryToken"]) for c in calls_since(emu, since, "LaunchInstance")]
    assert [s for s, _ in launches] == [500, 200], f"expected one refusal in {planned} then a launch elsewhere: {launches}"
    assert launches[0][1] != launches[1][1], "the launch in another AD reused the retry token of the refused one"
    worker_ad = outcome.state["launch_worker"]["availability_domain"]
    assert worker_ad != planned
    assert volume["availabilityDomain"] == worker_ad, "the volume must be where the worker is"
    assert (outcome.report or {})["availability_domain"] == worker_ad
    launch_log = outcome.runs[0].output
    assert "Out of host capacity" in launch_log and planned in launch_log


def test_out_of_host_capacity_in_a_pinned_availability_domain_fails_cleanly(emu: EmulatorHandle, bucket: Bucket, image: SmallImage) -> None:
    since = time.time()
    request = upload_request(bucket, image.path, "faults/pinned.qcow2", {"ad_number": "2"})
    emu.fault("LaunchInstance", status=500, message=CAPACITY, times=100)

    outcome = _run(emu, new_run_id("capacity-pinned"), request)
    assert outcome.failed_step == "launch_worker"
    cause = _one_line(outcome.error)
    assert "out of host capacity" in cause and "pinned by ad_number" in cause, cause
    plan = outcome.state["inspect_object"]["plan"]
    assert plan["ad_pinned"] and plan["availability_domain"] == plan["availability_domains"][1]
    launches = calls_since(emu, since, "LaunchInstance")
    assert [c["status"] for c in launches] == [500], "a pinned launch must not move to, or retry in, another AD"
    assert created_since(emu, "instance", since) == []
    assert_nothing_leaked(emu, outcome)
    # As in the DAG, the teardown does not run after its setup failed: nothing was launched to clean up.
    assert [r.name for r in outcome.runs] == ["inspect_object", "launch_worker"]


# --- the worker terminated out of band during the write --------------------------------
@pytest.mark.parametrize("keep", [False, True], ids=["delete", "keep_on_failure"])
def test_worker_terminated_during_write_fails_cleanly(emu: EmulatorHandle, bucket: Bucket, image: SmallImage, keep: bool) -> None:
    since = time.time()
    metadata = {"keep_on_failure": "true"} if keep else {}
    request = upload_request(bucket, image.path, f"faults/terminated-{keep}.qcow2", metadata)
    run_id = new_run_id("terminated")
    before = _ok(_run(emu, run_id, request, steps=BEFORE_WRITE))
    instance_id = before.state["launch_worker"]["instance_id"]
    volume_id = before.state["create_volume"]["volume_id"]

    rule = emu.fault("RunCommand", action="hang")  # the write stays IN_PROGRESS...
    join = _when_hit(emu, rule, lambda: emu.admin("POST", f"instances/{instance_id}/terminate"))  # ...until the VM goes
    env = step_environment(emu, {"VDIMPORT_COMMAND_TIMEOUT_SECONDS": "60"})
    started = time.monotonic()
    outcome = _run(emu, run_id, request, steps=FROM_WRITE, state=before.state, env=env)
    join()
    assert time.monotonic() - started < 30, "the step noticed the terminated worker only through the command's timeout"

    assert outcome.failed_step == "write_image"
    cause = _one_line(outcome.error)
    assert instance_id in cause and "TERMINAT" in cause and "while write ran" in cause, cause
    cleanup = _cleanup_result(outcome)
    assert cleanup["terminated"] == [instance_id]
    assert final_state(emu, "instance", instance_id) == "TERMINATED"
    assert not run_pars(emu, run_id)
    if not keep:
        assert cleanup["volumes_deleted"] == [volume_id] and cleanup["volumes_kept"] == []
        assert final_state(emu, "volume", volume_id) in ("TERMINATING", "TERMINATED")
        assert_nothing_leaked(emu, outcome)
    else:
        assert cleanup["volumes_kept"] == [volume_id] and cleanup["volumes_deleted"] == []
        assert volume_id in outcome.runs[-1].output and "keep_on_failure" in outcome.runs[-1].output
        kept = [(v["id"], v["lifecycleState"]) for v in run_resources(emu, run_id, "volume")]
        assert kept == [(volume_id, "AVAILABLE")]
        attachment = before.state["attach_volume"]["attachment_id"]
        assert final_state(emu, "volumeattachment", attachment) == "DETACHED"
    assert created_since(emu, "instance", since) == [instance_id]


# --- Run Command failing on the worker: the half-written volume goes ------------------
@pytest.mark.parametrize(
    ("step", "action", "expected"),
    [
        ("write_image", "fail", "write on the worker failed"),
        ("write_image", "timeout", "write on the worker timed out"),
        ("write_image", "hang", "write on the worker timed out after 3 s"),
        ("verify_image", "fail", "verify on the worker failed"),  # the volume is fully written, never verified
    ],
)
def test_run_command_failure_deletes_the_unfinished_volume(
    emu: EmulatorHandle, request_: dict[str, Any], step: str, action: str, expected: str
) -> None:
    since = time.time()
    run_id = new_run_id(f"runcommand-{action}")
    before = _ok(_run(emu, run_id, request_, steps=STEP_ORDER[: STEP_ORDER.index(step)]))
    volume_id = before.state["create_volume"]["volume_id"]
    emu.fault("RunCommand", action=action)
    # A short Run Command timeout, so that a hung script ends in seconds.
    env = step_environment(emu, {"VDIMPORT_COMMAND_TIMEOUT_SECONDS": "3"})
    started = time.monotonic()
    outcome = _run(emu, run_id, request_, steps=STEP_ORDER[STEP_ORDER.index(step) :], state=before.state, env=env)
    assert time.monotonic() - started < 60

    assert outcome.failed_step == step
    cause = _one_line(outcome.error)
    assert expected in cause, cause
    cleanup = _cleanup_result(outcome)
    assert cleanup["volumes_deleted"] == [volume_id], cleanup
    assert created_since(emu, "volume", since) == [volume_id]
    assert final_state(emu, "volume", volume_id) in ("TERMINATING", "TERMINATED")
    assert_nothing_leaked(emu, outcome)
    assert len(created_since(emu, "instance", since)) == 1


# --- a launch that fails halfway: terminate_worker cleans up ---------------------------
def test_worker_state_unreadable_after_launch_is_cleaned_up(emu: EmulatorHandle, request_: dict[str, Any]) -> None:
    since = time.time()
    run_id = new_run_id("getinstance-500")
    launched = _ok(_run(emu, run_id, request_, steps=STEP_ORDER[:2]))
    instance_id = launched.state["launch_worker"]["instance_id"]
    emu.fault("GetInstance", status=500, times=1000)
    env = step_environment(emu, {"VDIMPORT_RETRY_BASE_SECONDS": "0.005"})
    failed = _run(emu, run_id, request_, steps=("wait_worker_ready",), state=launched.state, env=env)
    assert failed.failed_step == "wait_worker_ready"
    cause = _one_line(failed.error)
    assert "get_instance" in cause and "500" in cause, cause
    assert len(calls_since(emu, since, "GetInstance")) > 3, "GetInstance was not retried"

    emu.clear_faults()
    cleanup = _ok(_run(emu, run_id, request_, steps=("terminate_worker",), state=launched.state))
    assert cleanup.state["terminate_worker"]["terminated"] == [instance_id]
    assert final_state(emu, "instance", instance_id) == "TERMINATED"
    assert_nothing_leaked(emu, ImportOutcome(run_id, launched.state, launched.runs, "wait_worker_ready", cause))


def test_launch_killed_after_the_instance_exists_is_cleaned_up(emu: EmulatorHandle, request_: dict[str, Any]) -> None:
    """launch_worker dies after OCI accepted the launch: terminate_worker finds the VM without its result."""
    since = time.time()
    run_id = new_run_id("launch-killed")
    inspected = _ok(_run(emu, run_id, request_, steps=STEP_ORDER[:1]))
    kill_step_during(emu, "launch_worker", run_id, request_, inspected.state, "LaunchInstance")
    created = created_since(emu, "instance", since)
    assert len(created) == 1, "the held launch did not create the instance"

    cleanup = _ok(_run(emu, run_id, request_, steps=("terminate_worker",), state=inspected.state))
    assert cleanup.state["terminate_worker"]["terminated"] == created
    assert final_state(emu, "instance", created[0]) == "TERMINATED"
    outcome = ImportOutcome(run_id, inspected.state, inspected.runs, "launch_worker", "killed")
    assert_nothing_leaked(emu, outcome)
