"""Object events: OCI CloudEvents posted to rule URLs, at least once, with retries and duplicates."""

from __future__ import annotations

import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from oci.object_storage import ObjectStorageClient, UploadManager
from oci.object_storage.models import UpdateBucketDetails

from vdimport_local.emulator.client import EmulatorHandle

CREATE = "com.oraclecloud.objectstorage.createobject"
UPDATE = "com.oraclecloud.objectstorage.updateobject"
DELETE = "com.oraclecloud.objectstorage.deleteobject"


class Receiver:
    """A tiny HTTP endpoint on loopback that records every POST and answers ``statuses`` in turn, then 200."""

    def __init__(self, statuses: tuple[int, ...] = ()):
        self.statuses = list(statuses)
        self.received: list[tuple[int, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.received.append((status, body))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/event"

    def accepted(self) -> list[dict[str, Any]]:
        with self.lock:
            return [body for status, body in self.received if status == 200]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.accepted()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} events, got {self.received}")
            time.sleep(0.02)
        return self.accepted()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def rules(emu: EmulatorHandle) -> Iterator[Any]:
    """Add event rules for one test; they are removed afterwards."""
    added: list[str] = []

    def add(url: str, bucket: str | None = None, types: list[str] | None = None) -> str:
        rule = emu.admin("POST", "events/rules", {"url": url, "eventTypes": types if types is not None else [CREATE], "bucketName": bucket})
        added.append(rule["id"])
        return str(rule["id"])

    yield add
    for rule_id in added:
        emu.admin("DELETE", f"events/rules/{rule_id}")


def deliveries(emu: EmulatorHandle, event_id: str, count: int = 0, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The logged delivery attempts of an event, once there are ``count`` of them: an attempt is
    logged only after the receiver has answered, so right after ``wait_for`` the last may be missing."""
    deadline = time.monotonic() + timeout
    while True:
        found = list(emu.admin("GET", f"events/deliveries?eventID={event_id}"))
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def test_put_delivers_the_oci_cloud_event(
    emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket_factory, rules, receiver: Receiver
) -> None:
    bucket = bucket_factory(events=True)
    rules(receiver.url, bucket)
    put = osc.put_object(ns, bucket, "disks/my disk.qcow2", b"qcow", opc_meta={"ad_number": "2"})
    [event] = receiver.wait_for(1)
    bucket_id = osc.get_bucket(ns, bucket).data.id
    assert event["eventType"] == CREATE
    assert (event["cloudEventsVersion"], event["eventTypeVersion"], event["source"], event["contentType"]) == (
        "0.1",
        "2.0",
        "ObjectStorage",
        "application/json",
    )
    uuid.UUID(event["eventID"])
    assert event["eventTime"].endswith("Z")
    assert event["extensions"] == {"compartmentId": emu.tenancy}
    data = event["data"]
    assert data["compartmentId"] == emu.tenancy and data["compartmentName"]
    assert data["resourceName"] == "disks/my disk.qcow2"
    assert data["resourceId"] == f"/n/{ns}/b/{bucket}/o/disks/my disk.qcow2"
    assert data["availabilityDomain"]
    details = data["additionalDetails"]
    assert details["bucketName"] == bucket and details["bucketId"] == bucket_id and details["namespace"] == ns
    assert details["eTag"] == put.headers["etag"]
    assert details["archivalState"] == "Available"
    [attempt] = deliveries(emu, event["eventID"], 1)
    assert (attempt["status"], attempt["attempt"], attempt["url"], attempt["willRetry"]) == (200, 1, receiver.url, False)


def test_update_and_delete_events(
    emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket_factory, rules, receiver: Receiver
) -> None:
    bucket = bucket_factory(events=True)
    rules(receiver.url, bucket, [CREATE, UPDATE, DELETE])
    first = osc.put_object(ns, bucket, "o", b"1")
    receiver.wait_for(1)
    second = osc.put_object(ns, bucket, "o", b"2")
    receiver.wait_for(2)
    osc.delete_object(ns, bucket, "o")
    events = receiver.wait_for(3)
    assert [e["eventType"] for e in events] == [CREATE, CREATE, DELETE]  # an overwrite is a new object
    assert [e["data"]["additionalDetails"]["eTag"] for e in events] == [
        first.headers["etag"],
        second.headers["etag"],
        second.headers["etag"],
    ]


def test_no_event_without_object_events_enabled(
    emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket_factory, rules, receiver: Receiver
) -> None:
    quiet, loud = bucket_factory(), bucket_factory(events=True)
    rules(receiver.url, quiet)
    rules(receiver.url, loud)
    osc.put_object(ns, quiet, "silent", b"x")
    osc.put_object(ns, loud, "heard", b"x")
    assert [e["data"]["resourceName"] for e in receiver.wait_for(1)] == ["heard"]
    assert not [e for e in emu.admin("GET", "events") if e["data"]["additionalDetails"]["bucketName"] == quiet]
    osc.update_bucket(ns, quiet, UpdateBucketDetails(object_events_enabled=True))
    osc.put_object(ns, quiet, "now-heard", b"x")
    events = receiver.wait_for(2)
    assert [e["data"]["resourceName"] for e in events] == ["heard", "now-heard"]


def test_rule_filters_by_bucket_and_event_type(osc: ObjectStorageClient, ns: str, bucket_factory, rules, receiver: Receiver) -> None:
    mine, other = bucket_factory(events=True), bucket_factory(events=True)
    rules(receiver.url, mine)  # createobject only
    osc.put_object(ns, other, "elsewhere", b"x")
    osc.put_object(ns, mine, "o", b"x")
    osc.delete_object(ns, mine, "o")
    osc.put_object(ns, mine, "last", b"x")
    events = receiver.wait_for(2)
    time.sleep(0.2)
    assert [(e["eventType"], e["data"]["resourceName"]) for e in receiver.accepted()] == [(CREATE, "o"), (CREATE, "last")]
    assert len(events) == 2


def test_multipart_commit_emits_createobject(
    osc: ObjectStorageClient, ns: str, bucket_factory, rules, receiver: Receiver, tmp_path: Path
) -> None:
    bucket = bucket_factory(events=True)
    rules(receiver.url, bucket)
    source = tmp_path / "big.raw"
    source.write_bytes(os.urandom(2 * 1024 * 1024 + 1))
    response = UploadManager(osc).upload_file(ns, bucket, "big.raw", str(source), part_size=1024 * 1024)
    assert "opc-multipart-md5" in response.headers
    [event] = receiver.wait_for(1)
    assert event["data"]["resourceName"] == "big.raw"
    assert event["data"]["additionalDetails"]["eTag"] == response.headers["etag"]


def test_duplicate_delivery_setting(
    emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket_factory, rules, receiver: Receiver
) -> None:
    bucket = bucket_factory(events=True)
    rules(receiver.url, bucket)
    emu.configure(duplicate_events_every=1)
    osc.put_object(ns, bucket, "dup", b"x")
    first, second = receiver.wait_for(2)
    assert first == second  # the same event, eventID included, twice
    assert sorted(d["duplicate"] for d in deliveries(emu, first["eventID"], 2)) == [False, True]

    emu.configure(duplicate_events_every=2)
    names = ["one", "two", "three", "four"]
    for name in names:
        osc.put_object(ns, bucket, name, b"x")
    receiver.wait_for(2 + 6)
    time.sleep(0.2)
    counts = {n: [e["data"]["resourceName"] for e in receiver.accepted()].count(n) for n in names}
    assert sorted(counts.values()) == [1, 1, 2, 2]
    assert counts["one"] == counts["three"] and counts["two"] == counts["four"]  # every second event


def test_failed_delivery_is_retried_with_backoff(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket_factory, rules) -> None:
    flaky = Receiver(statuses=(500, 503))
    before = emu.admin("GET", "config")["event_retry_seconds"]
    emu.configure(event_retry_seconds=0.1)
    try:
        bucket = bucket_factory(events=True)
        rules(flaky.url, bucket)
        osc.put_object(ns, bucket, "retried", b"x")
        [event] = flaky.wait_for(1)
        attempts = deliveries(emu, event["eventID"], 3)
        assert [(a["attempt"], a["status"], a["willRetry"]) for a in attempts] == [(1, 500, True), (2, 503, True), (3, 200, False)]
        gaps = [b["time"] - a["time"] for a, b in itertools.pairwise(attempts)]
        assert gaps[0] >= 0.09 and gaps[1] >= 0.19  # exponential back-off from event_retry_seconds
        assert [status for status, _ in flaky.received] == [500, 503, 200]
    finally:
        emu.configure(event_retry_seconds=before)
        flaky.close()


def test_unreachable_receiver_is_retried(emu: EmulatorHandle, osc: ObjectStorageClient, ns: str, bucket_factory, rules) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once closed
    bucket = bucket_factory(events=True)
    rules(f"http://127.0.0.1:{port}/nobody", bucket)
    osc.put_object(ns, bucket, "lost", b"x")
    deadline = time.monotonic() + 10
    while True:
        [event] = [e for e in emu.admin("GET", "events") if e["data"]["additionalDetails"]["bucketName"] == bucket]
        attempts = deliveries(emu, event["eventID"])
        if attempts or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert attempts[0]["status"] is None and attempts[0]["error"]
    assert attempts[0]["willRetry"] is True


def test_rule_admin_api(emu: EmulatorHandle) -> None:
    import urllib.error

    rule = emu.admin("POST", "events/rules", {"url": "http://127.0.0.1:9/x", "eventTypes": [CREATE], "bucketName": "b"})
    try:
        assert rule in emu.admin("GET", "events/rules")
        for bad in ({"url": "file:///etc/passwd"}, {"url": "http://x", "eventTypes": "notalist"}, {"url": "http://x", "bogus": 1}):
            with pytest.raises(urllib.error.HTTPError) as err:
                emu.admin("POST", "events/rules", bad)
            assert err.value.code == 400
    finally:
        emu.admin("DELETE", f"events/rules/{rule['id']}")
    assert rule not in emu.admin("GET", "events/rules")
    with pytest.raises(urllib.error.HTTPError) as err:
        emu.admin("DELETE", f"events/rules/{rule['id']}")
    assert err.value.code == 404


def test_rules_survive_a_restart(fresh_emulator: EmulatorHandle) -> None:
    rule = fresh_emulator.admin("POST", "events/rules", {"url": "http://127.0.0.1:9/x"})
    fresh_emulator.stop()
    again = EmulatorHandle.start(fresh_emulator.data_dir)
    try:
        assert [r["id"] for r in again.admin("GET", "events/rules")] == [rule["id"]]
    finally:
        again.stop()
