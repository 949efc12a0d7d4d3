"""The Airflow + emulator stack of the end-to-end DAG tests, driven as the function and the UI do.

One Airflow 3 (api-server, scheduler with the LocalExecutor, dag-processor; the DAGs with the
local step runner, no task retries so failures show at once; the reaper on demand with no grace
period; outcome notifications to an emulated topic) and one OCI emulator per test module that
uses the ``stack`` fixture; ``e2e`` is the same stack with the emulator's faults cleared around
each test. Used by ``tests/dags/test_airflow_e2e.py`` and the browser tests in ``tests/ui``.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oci
import pytest
from dagkit import DAG_ID, DAGS, REAPER_DAG_ID
from runkit import run_pars, run_resources

from vdimport_local.airflow import LocalAirflow
from vdimport_local.diskimages import Partition, build_disk, convert, sample_files
from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment

BUCKET = "vdimport-airflow-e2e"
MAX_VMS = 2


def run_path(run_id: str) -> str:
    """The run's REST path (``PATCH`` to mark it, ``DELETE`` to delete it, as the UI's buttons do)."""
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run_id, safe='')}"


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
        return run_resources(self.emu, run_id, kind)

    def pars(self, run_id: str) -> list[dict[str, Any]]:
        return run_pars(self.emu, run_id)

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
        """The task's log of its latest try (what the UI shows first)."""
        tries = int(self.airflow.task_instances(DAG_ID, run_id)[task_id].get("try_number") or 1)
        return self.airflow.task_log(DAG_ID, run_id, task_id, max(tries, 1))

    def messages(self, run_id: str) -> list[dict[str, Any]]:
        """The outcome notifications published for the run, oldest first."""
        return [m for m in self.emu.messages() if run_id in m["body"]]

    def reap(self) -> dict[str, Any]:
        """Run the reaper DAG once (as its schedule would) and return what it removed and kept."""
        run_id = str(self.airflow.trigger(REAPER_DAG_ID, {})["dag_run_id"])
        run = self.airflow.wait_for_run(REAPER_DAG_ID, run_id, 120)
        assert run["state"] == "success", self.airflow.task_instances(REAPER_DAG_ID, run_id)
        return dict(self.airflow.xcom(REAPER_DAG_ID, run_id, "reap"))

    def wait_task(self, run_id: str, task_id: str, state: str = "running", timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.airflow.task_instances(DAG_ID, run_id).get(task_id, {}).get("state") != state:
            assert time.monotonic() < deadline, f"{task_id} never {state}: {self.airflow.task_instances(DAG_ID, run_id)}"
            time.sleep(0.2)

    def assert_volume_holds_the_image(self, volume_id: str) -> None:
        path = Path(self.emu.admin("GET", f"volumes/{volume_id}")["path"])
        with open(path, "rb") as f:
            assert f.read(len(self.raw)) == self.raw, "the volume does not hold the image's content"

    def assert_nothing_left(self, run_id: str) -> None:
        """No live worker, no PAR, no unverified volume: what a run that ended without a volume leaves."""
        alive = [(i["id"], i["lifecycleState"]) for i in self.resources(run_id, "instance") if i["lifecycleState"] != "TERMINATED"]
        assert not alive, f"worker VMs left: {alive}"
        assert not self.pars(run_id), "pre-authenticated requests left"
        live = [v["id"] for v in self.resources(run_id, "volume") if v["lifecycleState"] not in ("TERMINATING", "TERMINATED")]
        assert not live, f"unfinished volumes left: {live}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("airflow-e2e")
    raw_path = build_disk(workdir / "disk.raw", [Partition("ext4", 24, sample_files(seed=44, size=2 << 20))], table="gpt")
    image = convert(raw_path, "qcow2", workdir / "disk.qcow2")
    emu = EmulatorHandle.start(workdir / "emulator")
    airflow = None
    try:
        topics = emu.client(oci.ons.NotificationControlPlaneClient)
        topic = topics.create_topic(oci.ons.models.CreateTopicDetails(name="vdimport-e2e", compartment_id=emu.tenancy)).data
        env = step_environment(
            emu,
            {
                "VDIMPORT_STEP_RUNNER": "local",
                "VDIMPORT_STEP_RETRIES": "0",
                "VDIMPORT_CLEANUP_RETRIES": "0",
                "VDIMPORT_MAX_WORKER_VMS": str(MAX_VMS),
                "VDIMPORT_REAPER_SCHEDULE": "none",  # the tests trigger it
                "VDIMPORT_REAPER_GRACE_SECONDS": "0",
                "VDIMPORT_REAPER_BUCKETS": BUCKET,
                "VDIMPORT_NOTIFICATION_TOPIC_ID": topic.topic_id,
                "VDIMPORT_AIRFLOW_UI_URL": "http://airflow.example",
            },
        )
        airflow = LocalAirflow.start(
            workdir / "airflow",
            dags_folder=DAGS,
            env=env,
            config={"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"},
            wait_for_dags=[DAG_ID, REAPER_DAG_ID],
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
