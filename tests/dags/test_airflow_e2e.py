"""The DAG in a real Airflow 3 (api-server, scheduler, dag-processor, LocalExecutor, local step
runner) against the OCI emulator, driven only through the REST API as the function and the UI do.

One Airflow and one emulator serve the module (``VDIMPORT_MAX_WORKER_VMS=2``, no task
retries, so failures show at once). Each test uploads a small real disk image and checks what
a user would: the run's state and its tasks', the task logs, and in the emulator the
volume's bytes, that every worker VM is terminated and that no PAR is left.
Select with ``-m e2e``, skip with ``-m "not e2e"``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oci
import pytest
from dagkit import DAG_ID, DAGS

from vdimport_local.airflow import AirflowError, LocalAirflow
from vdimport_local.diskimages import Partition, build_disk, convert, sample_files
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment
from vdimport_worker.naming import RUN_TAG, run_key

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BUCKET = "vdimport-airflow-e2e"
MAX_VMS = 2
AFTER_CLEANUP = ("tune_volume", "assign_backup_policy", "report")


@dataclass
class Stack:
    emu: EmulatorHandle
    airflow: LocalAirflow
    namespace: str
    storage: Any
    image: Path  # qcow2
    raw: bytes  # what the volume must hold

    def upload(self, name: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Upload the image as ``name``; the conf the OCI Function would send for it."""
        manager = oci.object_storage.UploadManager(self.storage, allow_parallel_uploads=False)
        reply = manager.upload_file(self.namespace, BUCKET, name, str(self.image), metadata=metadata or {})
        return {
            "namespace": self.namespace,
            "bucket": BUCKET,
            "object": name,
            "etag": reply.headers["etag"],
            "size": self.image.stat().st_size,
            "metadata": metadata or {},
        }

    def trigger(self, conf: dict[str, Any]) -> str:
        return str(self.airflow.trigger(DAG_ID, conf)["dag_run_id"])

    def finish(self, run_id: str, timeout: float = 180) -> tuple[str, dict[str, str]]:
        run = self.airflow.wait_for_run(DAG_ID, run_id, timeout)
        return run["state"], {t: ti["state"] for t, ti in self.airflow.task_instances(DAG_ID, run_id).items()}

    def resources(self, run_id: str, kind: str) -> list[dict[str, Any]]:
        key = run_key(run_id)
        return [r for r in self.emu.resources(kind) if (r.get("freeformTags") or {}).get(RUN_TAG) == key]

    def pars(self, run_id: str) -> list[dict[str, Any]]:
        prefix = f"vdimport-{run_key(run_id)}"
        return [p for p in self.emu.resources("par") if str(p.get("name", "")).startswith(prefix)]

    def assert_clean(self, run_id: str, succeeded: bool) -> None:
        """Every worker of the run TERMINATED, no PAR; one AVAILABLE volume holding the image on success, none on failure."""
        alive = [(i["id"], i["lifecycleState"]) for i in self.resources(run_id, "instance") if i["lifecycleState"] != "TERMINATED"]
        assert not alive, f"worker VMs left: {alive}"
        assert not self.pars(run_id), "pre-authenticated requests left"
        volumes = [v for v in self.resources(run_id, "volume") if v["lifecycleState"] not in ("TERMINATING", "TERMINATED")]
        if not succeeded:
            assert not volumes, f"a failed import left volumes: {volumes}"
            return
        assert len(volumes) == 1 and volumes[0]["lifecycleState"] == "AVAILABLE", volumes
        report = self.airflow.xcom(DAG_ID, run_id, "report")
        assert report["volume_id"] == volumes[0]["id"]
        path = Path(self.emu.admin("GET", f"volumes/{volumes[0]['id']}")["path"])
        with open(path, "rb") as f:
            assert f.read(len(self.raw)) == self.raw, "the volume does not hold the image's content"

    def log(self, run_id: str, task_id: str) -> str:
        return self.airflow.task_log(DAG_ID, run_id, task_id)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("airflow-e2e")
    raw_path = build_disk(workdir / "disk.raw", [Partition("ext4", 24, sample_files(seed=44, size=2 << 20))], table="gpt")
    image = convert(raw_path, "qcow2", workdir / "disk.qcow2")
    emu = EmulatorHandle.start(workdir / "emulator")
    airflow = None
    try:
        env = step_environment(
            emu,
            {
                "VDIMPORT_STEP_RUNNER": "local",
                "VDIMPORT_STEP_RETRIES": "0",
                "VDIMPORT_CLEANUP_RETRIES": "0",
                "VDIMPORT_MAX_WORKER_VMS": str(MAX_VMS),
            },
        )
        airflow = LocalAirflow.start(
            workdir / "airflow",
            dags_folder=DAGS,
            env=env,
            config={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"},
            wait_for_dags=[DAG_ID],
        )
        storage = emu.client(oci.object_storage.ObjectStorageClient)
        namespace = storage.get_namespace().data
        storage.create_bucket(namespace, oci.object_storage.models.CreateBucketDetails(name=BUCKET, compartment_id=emu.tenancy))
        yield Stack(emu, airflow, namespace, storage, image, raw_path.read_bytes())
    finally:
        if airflow is not None:
            processes = airflow.process_tree()
            LocalAirflow.attach(airflow.home).stop()  # by PID, as `vdimport-local down` will
            airflow.stop()  # reaps our children; nothing left to signal
            assert not LocalAirflow.alive(processes), "Airflow processes left running"
        emu.stop()


@pytest.fixture
def e2e(stack: Stack) -> Iterator[Stack]:
    stack.emu.clear_faults()
    yield stack
    stack.emu.clear_faults()


def test_an_upload_becomes_a_checked_volume(e2e: Stack) -> None:
    conf = e2e.upload("e2e/happy.qcow2", {"tags": '{"project": "e2e"}', "fsck": "strict"})
    conf["vpus_per_gb"] = 20  # a param as the UI's trigger form sends it
    run_id = e2e.trigger(conf)
    state, tasks = e2e.finish(run_id)
    assert state == "success", tasks
    assert set(tasks.values()) == {"success"} and len(tasks) == 14
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
    assert {tasks[t] for t in tasks if t != "inspect_object"} == {"upstream_failed"}, "cleanup only runs once something may exist"
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
    """launch_worker dies while OCI carries out its launch: the run fails, terminate_worker still finds the VM."""
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
    assert (tasks["inspect_object"], tasks["launch_worker"], tasks["terminate_worker"]) == ("success", "failed", "success"), tasks
    assert {tasks[t] for t in AFTER_CLEANUP} == {"upstream_failed"}
    [instance] = e2e.resources(run_id, "instance")  # the launch landed after the step died...
    assert e2e.airflow.xcom(DAG_ID, run_id, "terminate_worker")["terminated"] == [instance["id"]]  # ...and cleanup found it
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
    assert sorted(ti["task_id"] for ti in cleared["task_instances"]) == sorted(["terminate_worker", *AFTER_CLEANUP])
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
    keys = {run_key(r) for r in run_ids}
    mine = {i["id"] for i in e2e.emu.resources("instance") if (i.get("freeformTags") or {}).get(RUN_TAG) in keys}
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
