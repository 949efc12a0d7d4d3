"""The OCI Function against a real Airflow 3 (api-server, scheduler, dag-processor on loopback).

The fake Airflow of ``fnkit`` answers the way we believe Airflow does; these tests check that
belief: real CloudEvents from the emulator go through ``Function.process`` and the outcome is
looked up in Airflow's own REST API. The login comes from an emulator Vault secret, as in OCI.

The DAG is paused right after start, so triggered runs stay *queued* and nothing is imported
(its step command is ``false`` besides, should a run ever start). One Airflow serves the
module; each test has its own bucket, so runs are told apart by their conf. Select with
``-m e2e``, skip with ``-m "not e2e"``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from oci.object_storage import ObjectStorageClient

from vdimport_function.airflow import AirflowAuthError, AirflowUnavailable
from vdimport_function.config import CREATE_EVENT, UPDATE_EVENT, load
from vdimport_function.handler import Function, dag_run_id
from vdimport_local.airflow import ApiError, LocalAirflow, free_port
from vdimport_local.emulator.client import EmulatorHandle

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

DAGS = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "virtual_disk_import"
DELETE_EVENT = "com.oraclecloud.objectstorage.deleteobject"
QCOW2 = b"QFI\xfb\x00\x00\x00\x03" + bytes(64 * 1024 - 8)  # the qcow2 magic and version 3, then zeros

Events = Callable[..., list[dict[str, Any]]]
Upload = Callable[..., dict[str, Any]]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    """A real Airflow with the DAG, paused so that runs are created but never executed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VDIMPORT_")}
    env |= {"VDIMPORT_STEP_RUNNER": "local", "VDIMPORT_LOCAL_STEP_COMMAND": "false"}
    instance = LocalAirflow.start(tmp_path_factory.mktemp("real-airflow"), dags_folder=DAGS, env=env, wait_for_dags=[DAG_ID])
    processes = instance.process_tree()
    try:
        # The DAG says is_paused_upon_creation=False, which beats [core] dags_are_paused_at_creation.
        assert instance.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})["is_paused"] is True
        yield instance
    finally:
        processes |= instance.process_tree()
        instance.stop()
        assert not _still_alive(processes), "Airflow processes left running"


def _still_alive(processes: dict[int, int], timeout: float = 10.0) -> list[int]:
    """Those of ``processes`` alive after ``timeout``: stop() may have just SIGKILLed them (SIGTERM
    took longer than its grace on a busy machine), and a kill takes a moment to land."""
    deadline = time.monotonic() + timeout
    while (alive := LocalAirflow.alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def _run(airflow: LocalAirflow, run_id: str) -> dict[str, Any] | None:
    """The run as Airflow's API shows it, None if it does not exist."""
    try:
        return airflow.dag_run(DAG_ID, run_id)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _runs(airflow: LocalAirflow, bucket: str | None = None) -> dict[str, dict[str, Any]]:
    """Every run of the DAG (of one bucket's objects), by run id."""
    reply = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1000")
    assert reply["total_entries"] == len(reply["dag_runs"])
    return {r["dag_run_id"]: r for r in reply["dag_runs"] if bucket is None or r["conf"].get("bucket") == bucket}


def _secret(emu: EmulatorHandle, username: str, password: str) -> str:
    content = json.dumps({"username": username, "password": password})
    return str(emu.admin("POST", "secrets", {"name": f"airflow-{uuid.uuid4().hex[:8]}", "content": content})["id"])


@pytest.fixture
def real_env(emu: EmulatorHandle, airflow: LocalAirflow, bucket: str) -> dict[str, str]:
    """The function's configuration in local mode against the real Airflow; its login in a Vault secret."""
    return {
        "VDIMPORT_AIRFLOW_URL": airflow.url,
        "VDIMPORT_AIRFLOW_SECRET_ID": _secret(emu, airflow.username, airflow.password),
        "VDIMPORT_BUCKETS": bucket,
        "VDIMPORT_OCI_AUTH": "config_file",
        "VDIMPORT_OCI_CONFIG": str(emu.config_path),
        "VDIMPORT_OCI_ENDPOINT": emu.endpoint,
        "VDIMPORT_AIRFLOW_RETRIES": "3",
        "VDIMPORT_AIRFLOW_BACKOFF_SECONDS": "0.01",
        "VDIMPORT_AIRFLOW_TIMEOUT_SECONDS": "30",
    }


@pytest.fixture
def upload(osc: ObjectStorageClient, ns: str, bucket: str, events: Events) -> Upload:
    """Upload an object; the event the emulator emitted for exactly that version (by etag)."""

    def go(name: str, data: bytes, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        before = len(events(bucket, name, count=0, timeout=0))
        etag = osc.put_object(ns, bucket, name, data, opc_meta=metadata or {}).headers["etag"]
        found = [e for e in events(bucket, name, count=before + 1) if e["data"]["additionalDetails"]["eTag"] == etag]
        assert len(found) == 1, found
        return found[0]

    return go


def _function(env: dict[str, str], event: dict[str, Any] | None = None) -> Function:
    """A function for ``env``; accepting updateobject too if ``event`` is one (overwrites may emit either)."""
    if event is not None and event["eventType"] == UPDATE_EVENT:
        env = env | {"VDIMPORT_EVENT_TYPES": f"{CREATE_EVENT},{UPDATE_EVENT}"}
    return Function(load(env))


def test_upload_event_creates_one_run_with_the_request(
    airflow: LocalAirflow, real_env: dict[str, str], upload: Upload, ns: str, bucket: str
) -> None:
    """The run id and conf Airflow stores are the ones the DAG and idempotency rely on."""
    name = "images/web server (1).qcow2"
    event = upload(name, QCOW2, {"ad_number": "2", "volume_name": "restored"})
    assert event["eventType"] == CREATE_EVENT
    etag = event["data"]["additionalDetails"]["eTag"]

    outcome = _function(real_env).process(json.dumps(event).encode())

    run_id = dag_run_id(ns, bucket, name, etag)
    assert (outcome.decision, outcome.dag_run_id) == ("triggered", run_id), outcome
    quoted = urllib.parse.quote(run_id, safe="")
    run = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}")
    assert run["conf"] == {
        "namespace": ns,
        "bucket": bucket,
        "object": name,
        "etag": etag,
        "size": len(QCOW2),
        "metadata": {"ad_number": "2", "volume_name": "restored"},
    }
    assert run["logical_date"] is None and run["run_type"] == "manual"
    assert run["triggered_by"] == "rest_api" and run["triggering_user_name"] == airflow.username  # the secret's user
    assert run["state"] == "queued", "the paused DAG must hold the run"
    assert list(_runs(airflow, bucket)) == [run_id]


def test_repeated_and_redelivered_events_give_one_run(airflow: LocalAirflow, real_env: dict[str, str], upload: Upload, bucket: str) -> None:
    """OCI Events delivers at least once: Airflow's 409 for a known run id makes repeats harmless."""
    event = upload("disk.qcow2", QCOW2)
    first = _function(real_env).process(json.dumps(event))
    again = _function(real_env).process(json.dumps(event))
    redelivered = dict(event, eventID=str(uuid.uuid4()))
    later = _function(real_env).process(json.dumps(redelivered))
    assert first.decision == "triggered", first
    assert again.decision == later.decision == "duplicate", (again, later)
    assert first.dag_run_id == again.dag_run_id == later.dag_run_id
    assert list(_runs(airflow, bucket)) == [first.dag_run_id]


def test_overwritten_object_gets_a_second_run(airflow: LocalAirflow, real_env: dict[str, str], upload: Upload, bucket: str) -> None:
    """A new etag is a new object version to import; the stale first event then imports nothing."""
    first = upload("disk.qcow2", QCOW2)
    one = _function(real_env, first).process(json.dumps(first))
    second = upload("disk.qcow2", QCOW2 + b"\x01")
    etags = [e["data"]["additionalDetails"]["eTag"] for e in (first, second)]
    assert etags[0] != etags[1]
    two = _function(real_env, second).process(json.dumps(second))
    assert one.decision == two.decision == "triggered", (one, two)
    assert one.dag_run_id != two.dag_run_id
    runs = _runs(airflow, bucket)
    assert {runs[one.dag_run_id]["conf"]["etag"], runs[two.dag_run_id]["conf"]["etag"]} == set(etags)
    assert len(runs) == 2
    stale = _function(real_env, first).process(json.dumps(first))
    assert stale.decision == "skipped" and "changed since the event" in stale.reason
    assert len(_runs(airflow, bucket)) == 2


@pytest.mark.parametrize(
    ("name", "data"),
    [("notes.txt", b"meeting notes, not a disk\n" * 200), ("noise.qcow2", random.Random(5).randbytes(256 * 1024))],
    ids=["text", "random-bytes"],
)
def test_non_image_uploads_create_no_run(airflow: LocalAirflow, real_env: dict[str, str], upload: Upload, name: str, data: bytes) -> None:
    """Only disk images are imported, whatever the object's name says."""
    before = _runs(airflow)
    outcome = _function(real_env).process(json.dumps(upload(name, data)))
    assert outcome.decision == "skipped" and "is not a disk image" in outcome.reason, outcome
    assert _runs(airflow) == before


def test_foreign_and_malformed_events_create_no_run(
    airflow: LocalAirflow, real_env: dict[str, str], upload: Upload, osc: ObjectStorageClient, ns: str, bucket: str, events: Events
) -> None:
    """A deleteobject event, or a payload that is no event, is rejected before Airflow is asked."""
    upload("gone.qcow2", QCOW2)
    osc.delete_object(ns, bucket, "gone.qcow2")
    [delete] = [e for e in events(bucket, "gone.qcow2", count=2) if e["eventType"] == DELETE_EVENT]
    before = _runs(airflow)
    function = _function(real_env)
    for payload in (json.dumps(delete).encode(), b'{"eventType": ', b"[]", b""):
        outcome = function.process(payload)
        assert outcome.decision == "rejected", (payload, outcome)
    assert _runs(airflow) == before


def test_airflow_down_is_retried_then_a_clear_error(
    airflow: LocalAirflow, real_env: dict[str, str], upload: Upload, ns: str, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listening: three attempts, then AirflowUnavailable, which fails the invocation so OCI redelivers."""
    down = f"http://127.0.0.1:{free_port()}"
    event = upload("disk.qcow2", QCOW2)
    function = _function(real_env | {"VDIMPORT_AIRFLOW_URL": down})
    with caplog.at_level(logging.INFO, logger="vdimport"), pytest.raises(AirflowUnavailable) as info:
        function.process(json.dumps(event))
    message = str(info.value)
    assert f"Airflow at {down} is unavailable" in message and "failed 3 times" in message, message
    assert "Connection refused" in message or "ConnectionRefusedError" in message, message
    assert caplog.text.count("retrying in") == 2
    run_id = dag_run_id(ns, bucket, "disk.qcow2", event["data"]["additionalDetails"]["eTag"])
    assert _run(airflow, run_id) is None


def test_wrong_password_in_the_secret_is_a_clear_error(
    airflow: LocalAirflow,
    emu: EmulatorHandle,
    real_env: dict[str, str],
    upload: Upload,
    ns: str,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Airflow's real 401 becomes AirflowAuthError naming the user and the secret, never the password."""
    password = f"wrong-{uuid.uuid4().hex}"
    event = upload("disk.qcow2", QCOW2)
    function = _function(real_env | {"VDIMPORT_AIRFLOW_SECRET_ID": _secret(emu, airflow.username, password)})
    with caplog.at_level(logging.DEBUG), pytest.raises(AirflowAuthError) as info:
        function.process(json.dumps(event))
    message = str(info.value)
    assert f"refused the login of user {airflow.username!r} (HTTP 401)" in message, message
    assert "credentials secret" in message
    assert password not in message and password not in caplog.text
    run_id = dag_run_id(ns, bucket, "disk.qcow2", event["data"]["additionalDetails"]["eTag"])
    assert _run(airflow, run_id) is None
