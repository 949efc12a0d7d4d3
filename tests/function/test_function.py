"""The OCI Function against the emulator (Object Storage, Vault Secrets, Events) and a fake Airflow 3 API."""

from __future__ import annotations

import io
import json
import logging
import struct
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fdk.context import InvokeContext
from fnkit import PASSWORD, USERNAME, FakeAirflow, free_port
from oci.object_storage import ObjectStorageClient

from vdimport_function.airflow import AirflowAuthError, AirflowNotFound, AirflowUnavailable
from vdimport_function.config import ConfigError, load
from vdimport_function.detect import detect
from vdimport_function.handler import Function, dag_run_id
from vdimport_local.emulator.client import EmulatorHandle

FUNCTION_DIR = Path(__file__).resolve().parents[2] / "images" / "function"
CREATE = "com.oraclecloud.objectstorage.createobject"
DELETE = "com.oraclecloud.objectstorage.deleteobject"
MiB = 1024 * 1024


# --- sample objects (headers as the real formats have them) -----------------------------
def mbr_disk(size: int = MiB) -> bytes:
    data = bytearray(size)
    data[446:462] = bytes([0x80, 0, 2, 0, 0x83, 0, 0, 0]) + struct.pack("<II", 2048, size // 512 - 2048)
    data[510:512] = b"\x55\xaa"
    return bytes(data)


def gpt_disk(size: int = MiB) -> bytes:
    data = bytearray(size)
    data[512:520] = b"EFI PART"  # no protective MBR signature: GPT header alone
    return bytes(data)


def with_magic(offset: int, magic: bytes, size: int = 64 * 1024) -> bytes:
    data = bytearray(size)
    data[offset : offset + len(magic)] = magic
    return bytes(data)


def fixed_vhd(size: int = MiB) -> bytes:
    footer = bytearray(512)
    footer[0:8] = b"conectix"
    return bytes(bytearray(size)) + bytes(footer)


def ova() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in (("disk.ovf", b"<Envelope/>"), ("disk1.vmdk", with_magic(0, b"KDMV", 4096))):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return out.getvalue()


IMAGES = {
    "qcow2": ("disk.qcow2", with_magic(0, b"QFI\xfb\x00\x00\x00\x03")),
    "vmdk": ("disk.vmdk", with_magic(0, b"KDMV\x01\x00\x00\x00")),
    "vhdx": ("disk.vhdx", with_magic(0, b"vhdxfile")),
    "vdi": ("disk.vdi", with_magic(0x40, bytes.fromhex("7f10dabe"))),
    "vhd-dynamic": ("disk.vhd", with_magic(0, b"conectix")),
    "vhd-fixed": ("fixed.vhd", fixed_vhd()),
    "ova": ("appliance.ova", ova()),
    "raw-mbr": ("disk.img", mbr_disk()),
    "raw-gpt": ("disk.raw", gpt_disk()),
}
EXPECTED_FORMAT = {"vhd-dynamic": "vhd", "vhd-fixed": "vhd", "raw-mbr": "raw", "raw-gpt": "raw"}

NOT_IMAGES = {
    "text named like an image": ("notes.qcow2", b"just some text, not a disk\n" * 100),
    "vmdk descriptor": ("disk.vmdk", b'# Disk DescriptorFile\nversion=1\nRW 2048 SPARSE "disk-s001.vmdk"\n'),
    "empty": ("empty.img", b""),
    "tiny": ("tiny.raw", b"\x55\xaa"),
    "zeros": ("zeros.img", bytes(64 * 1024)),
}


def put(osc: ObjectStorageClient, ns: str, bucket: str, name: str, data: bytes, metadata: dict[str, str] | None = None) -> str:
    return str(osc.put_object(ns, bucket, name, data, opc_meta=metadata or {}).headers["etag"])


@pytest.fixture
def upload(osc: ObjectStorageClient, ns: str, bucket: str, events: Callable[..., list[dict[str, Any]]]) -> Callable[..., dict[str, Any]]:
    """Upload an object and return the event the emulator emitted for it (the latest for that name)."""

    def go(name: str, data: bytes, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        before = len(events(bucket, name, count=0, timeout=0))
        etag = put(osc, ns, bucket, name, data, metadata)
        found = events(bucket, name, count=before + 1)
        assert len(found) == before + 1, found
        event = found[-1]
        assert event["data"]["additionalDetails"]["eTag"] == etag
        return event

    return go


# --- the happy path ---------------------------------------------------------------------------
def test_upload_triggers_one_run_with_the_request(
    function: Function,
    fake_airflow: FakeAirflow,
    upload: Callable[..., dict[str, Any]],
    ns: str,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    event = upload("images/My Disk (1).qcow2", IMAGES["qcow2"][1], {"ad_number": "2", "volume_name": "restored"})
    assert event["eventType"] == CREATE
    etag = event["data"]["additionalDetails"]["eTag"]
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(json.dumps(event).encode())

    assert outcome.decision == "triggered", outcome
    run_id = dag_run_id(ns, bucket, "images/My Disk (1).qcow2", etag)
    assert outcome.dag_run_id == run_id
    assert run_id.startswith("upload__My_Disk_1_.qcow2__")
    assert list(fake_airflow.runs) == [run_id]
    body = fake_airflow.runs[run_id]
    assert body["logical_date"] is None
    assert body["conf"] == {
        "namespace": ns,
        "bucket": bucket,
        "object": "images/My Disk (1).qcow2",
        "etag": etag,
        "size": len(IMAGES["qcow2"][1]),
        "metadata": {"ad_number": "2", "volume_name": "restored"},
    }
    logs = caplog.text
    assert f"received createobject event {event['eventID']!r}" in logs
    assert "looks like qcow2" in logs
    assert f"triggered: DAG virtual_disk_import run {run_id}" in logs
    assert PASSWORD not in logs
    assert "access_token" not in logs and "eyJ" not in logs


@pytest.mark.parametrize("kind", sorted(IMAGES))
def test_disk_images_are_recognised_by_their_header(
    kind: str, function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    name, data = IMAGES[kind]
    event = upload(f"{uuid.uuid4().hex[:6]}-{name}", data)
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(json.dumps(event))
    assert outcome.decision == "triggered", outcome
    assert f"looks like {EXPECTED_FORMAT.get(kind, kind)} " in caplog.text
    assert len(fake_airflow.runs) == 1


@pytest.mark.parametrize("case", sorted(NOT_IMAGES))
def test_non_images_are_skipped_with_a_reason(
    case: str, function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    name, data = NOT_IMAGES[case]
    event = upload(name, data)
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(json.dumps(event))
    assert outcome.decision == "skipped", outcome
    assert "is not a disk image" in outcome.reason
    assert "nothing triggered" in caplog.text
    assert fake_airflow.posts == [] and fake_airflow.logins == 0


def test_vmdk_descriptor_reason_says_why() -> None:
    assert "descriptor" in detect(NOT_IMAGES["vmdk descriptor"][1], None, 100).reason


# --- idempotency -----------------------------------------------------------------------------
def test_duplicated_and_redelivered_events_give_one_run(
    function: Function, env: dict[str, str], fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]
) -> None:
    event = upload("disk.img", IMAGES["raw-mbr"][1])
    first = function.process(json.dumps(event))
    again = function.process(json.dumps(event))  # the same delivery twice
    redelivered = dict(event, eventID=str(uuid.uuid4()))  # another delivery of the same change
    later = Function(load(env)).process(json.dumps(redelivered))  # e.g. another function container
    assert first.decision == "triggered"
    assert again.decision == later.decision == "duplicate"
    assert first.dag_run_id == again.dag_run_id == later.dag_run_id
    assert len(fake_airflow.runs) == 1 and len(fake_airflow.posts) == 3


def test_new_object_version_gives_a_new_run(
    function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    first = upload("disk.qcow2", IMAGES["qcow2"][1])
    one = function.process(json.dumps(first))
    second = upload("disk.qcow2", IMAGES["qcow2"][1] + b"\x01")  # overwritten: a new etag
    assert second["data"]["additionalDetails"]["eTag"] != first["data"]["additionalDetails"]["eTag"]
    two = function.process(json.dumps(second))
    assert one.decision == two.decision == "triggered"
    assert one.dag_run_id != two.dag_run_id
    assert len(fake_airflow.runs) == 2
    # the old event arriving late: that version is gone, the new one has its own run
    with caplog.at_level(logging.INFO, logger="vdimport"):
        stale = function.process(json.dumps(first))
    assert stale.decision == "skipped" and "changed since the event" in stale.reason
    assert len(fake_airflow.runs) == 2


def test_deleted_object_is_skipped(
    function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]], osc: ObjectStorageClient, ns: str, bucket: str
) -> None:
    event = upload("gone.img", IMAGES["raw-mbr"][1])
    osc.delete_object(ns, bucket, "gone.img")
    outcome = function.process(json.dumps(event))
    assert outcome.decision == "skipped" and "no longer exists" in outcome.reason
    assert fake_airflow.posts == []


# --- what is not for us ------------------------------------------------------------------------
def test_foreign_event_type_triggers_nothing(
    function: Function,
    fake_airflow: FakeAirflow,
    upload: Callable[..., dict[str, Any]],
    osc: ObjectStorageClient,
    ns: str,
    bucket: str,
    events: Callable[..., list[dict[str, Any]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    upload("disk.img", IMAGES["raw-mbr"][1])
    osc.delete_object(ns, bucket, "disk.img")
    [delete] = [e for e in events(bucket, "disk.img", count=2) if e["eventType"] == DELETE]
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(json.dumps(delete))
    assert outcome.decision == "rejected"
    assert f"event type {DELETE} is not handled" in caplog.text
    assert fake_airflow.posts == [] and fake_airflow.logins == 0


def test_update_event_is_not_an_upload(
    function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """updateobject (a property change) would re-import unchanged content: rejected unless configured."""
    event = upload("disk.qcow2", IMAGES["qcow2"][1]) | {"eventType": "com.oraclecloud.objectstorage.updateobject"}
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(json.dumps(event))
    assert outcome.decision == "rejected" and "updateobject is not handled" in outcome.reason
    assert fake_airflow.posts == []


def _valid_event(ns: str = "ns", bucket: str = "b") -> dict[str, Any]:
    return {
        "eventType": CREATE,
        "cloudEventsVersion": "0.1",
        "eventID": "e1",
        "data": {
            "resourceName": "x.img",
            "resourceId": f"/n/{ns}/b/{bucket}/o/x.img",
            "additionalDetails": {"namespace": ns, "bucketName": bucket, "eTag": "abc"},
        },
    }


def _without(path: tuple[str, ...]) -> bytes:
    event = _valid_event()
    target: Any = event
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(event).encode()


MALFORMED: dict[str, tuple[bytes, str]] = {
    "not json": (b"{not json", "not JSON"),
    "empty": (b"", "empty payload"),
    "not utf-8": (b"\xff\xfe\x00", "not UTF-8"),
    "a list": (b"[1, 2]", "JSON list"),
    "no eventType": (_without(("eventType",)), "no eventType"),
    "no data": (_without(("data",)), "missing field data"),
    "no bucketName": (_without(("data", "additionalDetails", "bucketName")), "data.additionalDetails.bucketName"),
    "no eTag": (_without(("data", "additionalDetails", "eTag")), "data.additionalDetails.eTag"),
    "no resourceName": (_without(("data", "resourceName")), "data.resourceName"),
    "resourceId mismatch": (
        json.dumps(_valid_event() | {"data": _valid_event()["data"] | {"resourceId": "/n/ns/b/other/o/x.img"}}).encode(),
        "resourceId",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_payload_triggers_nothing(
    case: str, function: Function, fake_airflow: FakeAirflow, caplog: pytest.LogCaptureFixture
) -> None:
    payload, reason = MALFORMED[case]
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(payload)
    assert outcome.decision == "rejected"
    assert reason in outcome.reason
    assert f"rejected: {outcome.reason}; nothing triggered" in caplog.text
    assert fake_airflow.posts == [] and fake_airflow.logins == 0


def test_event_from_another_bucket_is_rejected(function: Function, fake_airflow: FakeAirflow, ns: str) -> None:
    outcome = function.process(json.dumps(_valid_event(ns, "someone-elses-bucket")))
    assert outcome.decision == "rejected" and "someone-elses-bucket" in outcome.reason
    assert fake_airflow.posts == []


# --- Airflow trouble ----------------------------------------------------------------------------
def test_airflow_down_is_retried_then_a_clear_error(
    env: dict[str, str], upload: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    function = Function(load(env | {"VDIMPORT_AIRFLOW_URL": down}))
    event = upload("disk.img", IMAGES["raw-mbr"][1])
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="vdimport"), pytest.raises(AirflowUnavailable) as info:
        function.process(json.dumps(event))
    assert f"Airflow at {down} is unavailable" in str(info.value)
    assert "failed 3 times" in str(info.value)
    assert caplog.text.count("retrying in") == 2
    assert time.monotonic() - started < 10
    assert PASSWORD not in caplog.text and PASSWORD not in str(info.value)


def test_5xx_is_retried_then_succeeds(function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]) -> None:
    event = upload("disk.img", IMAGES["raw-mbr"][1])
    fake_airflow.fail_with = [503, 502]
    outcome = function.process(json.dumps(event))
    assert outcome.decision == "triggered"
    assert len(fake_airflow.runs) == 1


def test_wrong_credentials_give_a_clear_error(
    emu: EmulatorHandle,
    env: dict[str, str],
    fake_airflow: FakeAirflow,
    upload: Callable[..., dict[str, Any]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = emu.admin(
        "POST",
        "secrets",
        {"name": f"wrong-{uuid.uuid4().hex[:6]}", "content": json.dumps({"username": USERNAME, "password": "nope-Wr0ng"})},
    )
    function = Function(load(env | {"VDIMPORT_AIRFLOW_SECRET_ID": wrong["id"]}))
    event = upload("disk.img", IMAGES["raw-mbr"][1])
    with caplog.at_level(logging.INFO, logger="vdimport"), pytest.raises(AirflowAuthError) as info:
        function.process(json.dumps(event))
    assert f"refused the login of user {USERNAME!r} (HTTP 401)" in str(info.value)
    assert "nope-Wr0ng" not in str(info.value) and "nope-Wr0ng" not in caplog.text
    assert fake_airflow.runs == {}


def test_malformed_secret_gives_a_clear_error(emu: EmulatorHandle, env: dict[str, str], upload: Callable[..., dict[str, Any]]) -> None:
    bad = emu.admin("POST", "secrets", {"name": f"bad-{uuid.uuid4().hex[:6]}", "content": "password=hunter2"})
    function = Function(load(env | {"VDIMPORT_AIRFLOW_SECRET_ID": bad["id"]}))
    event = upload("disk.img", IMAGES["raw-mbr"][1])
    with pytest.raises(RuntimeError, match="is not JSON") as info:
        function.process(json.dumps(event))
    assert "hunter2" not in str(info.value)


def test_missing_dag_gives_a_clear_error(function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]) -> None:
    fake_airflow.dags.clear()
    event = upload("disk.img", IMAGES["raw-mbr"][1])
    with pytest.raises(AirflowNotFound, match="has no DAG virtual_disk_import"):
        function.process(json.dumps(event))


def test_token_is_cached_until_it_expires(env: dict[str, str], fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]) -> None:
    function = Function(load(env))
    for i in range(3):
        assert function.process(json.dumps(upload(f"d{i}.img", IMAGES["raw-mbr"][1]))).decision == "triggered"
    assert fake_airflow.logins == 1
    fake_airflow.tokens.clear()  # revoked (e.g. Airflow restarted with a new secret key): log in again once
    assert function.process(json.dumps(upload("d3.img", IMAGES["raw-mbr"][1]))).decision == "triggered"
    assert fake_airflow.logins == 2
    fake_airflow.token_seconds = 30  # shorter than the renewal margin: every call logs in
    function.airflow._forget()
    for i in range(2):
        function.process(json.dumps(upload(f"e{i}.img", IMAGES["raw-mbr"][1])))
    assert fake_airflow.logins == 4


# --- configuration ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"VDIMPORT_AIRFLOW_URL": ""}, "VDIMPORT_AIRFLOW_URL is not set"),
        ({"VDIMPORT_AIRFLOW_URL": "ftp://x"}, "http(s) base URL"),
        ({"VDIMPORT_BUCKETS": " , "}, "VDIMPORT_BUCKETS is not set"),
        ({"VDIMPORT_AIRFLOW_SECRET_ID": ""}, "VDIMPORT_AIRFLOW_SECRET_ID is not set"),
        ({"VDIMPORT_AIRFLOW_SECRET_ID": "my-secret"}, "must be a secret OCID"),
        ({"VDIMPORT_OCI_AUTH": "api_key"}, "VDIMPORT_OCI_AUTH must be one of"),
        ({"VDIMPORT_AIRFLOW_RETRIES": "many"}, "must be a number"),
        (
            {
                "VDIMPORT_OCI_AUTH": "resource_principal",
                "VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME": "a",
                "VDIMPORT_LOCAL_INSECURE_AIRFLOW_PASSWORD": "b",
            },
            "local mode only",
        ),
    ],
)
def test_configuration_is_validated(env: dict[str, str], change: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load(env | change)


def test_a_token_is_not_reused_for_another_password(
    env: dict[str, str], fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]
) -> None:
    """Two functions (or one after a rotation) with different passwords for one user share no token."""
    base = {k: v for k, v in env.items() if k != "VDIMPORT_AIRFLOW_SECRET_ID"}
    good = base | {"VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME": USERNAME, "VDIMPORT_LOCAL_INSECURE_AIRFLOW_PASSWORD": PASSWORD}
    assert Function(load(good)).process(json.dumps(upload("a.img", IMAGES["raw-mbr"][1]))).decision == "triggered"
    wrong = good | {"VDIMPORT_LOCAL_INSECURE_AIRFLOW_PASSWORD": "not-the-password"}
    with pytest.raises(AirflowAuthError, match="refused the login"):
        Function(load(wrong)).process(json.dumps(upload("b.img", IMAGES["raw-mbr"][1])))
    assert fake_airflow.logins == 1


def test_local_credentials_override(env: dict[str, str], fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]) -> None:
    local = {k: v for k, v in env.items() if k != "VDIMPORT_AIRFLOW_SECRET_ID"}
    local |= {"VDIMPORT_LOCAL_INSECURE_AIRFLOW_USERNAME": USERNAME, "VDIMPORT_LOCAL_INSECURE_AIRFLOW_PASSWORD": PASSWORD}
    settings = load(local)
    assert PASSWORD not in settings.describe()
    assert Function(settings).process(json.dumps(upload("disk.img", IMAGES["raw-mbr"][1]))).decision == "triggered"


# --- the Fn entry point and delivery by the emulator's Events ----------------------------------------
def _context(env: dict[str, str]) -> InvokeContext:
    return InvokeContext("app", "vdimport", "fn", "vdimport-trigger", "call-1", content_type="application/json", config=env)


def test_func_py_entry_point(env: dict[str, str], fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]]) -> None:
    sys.path.insert(0, str(FUNCTION_DIR))
    try:
        import func  # the file Fn runs
    finally:
        sys.path.remove(str(FUNCTION_DIR))
    event = upload("disk.vhdx", IMAGES["vhdx"][1])
    answer = func.handler(_context(env), io.BytesIO(json.dumps(event).encode()))
    assert answer.status() == 200
    body = json.loads(answer.body())
    assert body["decision"] == "triggered" and body["dag_run_id"] in fake_airflow.runs
    rejected = func.handler(_context(env), io.BytesIO(b"garbage"))
    assert json.loads(rejected.body())["decision"] == "rejected"


class Listener:
    """A local stand-in for the Fn listener: every POSTed event goes to the function's handler."""

    def __init__(self, env: dict[str, str]):
        self.outcomes: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                from vdimport_function.handler import handler

                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                try:
                    answer = handler(_context(env), io.BytesIO(body))
                    status, raw = answer.status(), answer.body_bytes()
                except Exception as exc:
                    status, raw = 502, str(exc).encode()
                with listener.lock:
                    listener.outcomes.append(json.loads(raw) if status == 200 else {"error": raw.decode()})
                self.send_response(status)
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/invoke"

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if len(self.outcomes) >= count:
                    return list(self.outcomes)
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} invocations, got {self.outcomes}")
            time.sleep(0.02)


@pytest.fixture
def listener(emu: EmulatorHandle, env: dict[str, str], bucket: str) -> Iterator[Listener]:
    server = Listener(env)
    rule = emu.admin("POST", "events/rules", {"url": server.url, "bucketName": bucket})
    yield server
    emu.admin("DELETE", f"events/rules/{rule['id']}")
    server.server.shutdown()
    server.server.server_close()


def test_duplicate_deliveries_by_the_emulator_give_one_run(
    emu: EmulatorHandle, listener: Listener, fake_airflow: FakeAirflow, osc: ObjectStorageClient, ns: str, bucket: str
) -> None:
    emu.configure(duplicate_events_every=1)  # every event delivered twice
    put(osc, ns, bucket, "delivered.qcow2", IMAGES["qcow2"][1], {"ad_number": "2"})
    outcomes = listener.wait_for(2)
    assert sorted(o["decision"] for o in outcomes) == ["duplicate", "triggered"]
    assert len(fake_airflow.runs) == 1
    [body] = fake_airflow.runs.values()
    assert body["conf"]["metadata"] == {"ad_number": "2"}
    put(osc, ns, bucket, "notes.txt", b"hello\n" * 10)
    outcomes = listener.wait_for(4)
    assert [o["decision"] for o in outcomes[2:]] == ["skipped", "skipped"]
    assert len(fake_airflow.runs) == 1


@pytest.mark.parametrize("data", [IMAGES["qcow2"][1], NOT_IMAGES[sorted(NOT_IMAGES)[0]][1]], ids=["image", "not-image"])
def test_an_object_name_with_a_newline_stays_on_one_log_line(
    data: bytes, function: Function, fake_airflow: FakeAirflow, upload: Callable[..., dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    """An object name can hold a newline or an escape sequence; logged raw it would forge a log line."""
    name = f"{uuid.uuid4().hex[:6]}-disk\nvdimport INFO triggered: DAG virtual_disk_import\x1b[2J.qcow2"
    event = upload(name, data)
    with caplog.at_level(logging.INFO, logger="vdimport"):
        outcome = function.process(json.dumps(event))
    assert outcome.decision in ("skipped", "triggered"), outcome
    assert "\n" not in outcome.reason and "\x1b" not in outcome.reason
    assert [r.getMessage() for r in caplog.records if "\n" in r.getMessage() or "\x1b" in r.getMessage()] == []
    assert repr(name) in caplog.text  # the name is still there, escaped
