"""notify.publish_outcome against the emulator's Notifications API, read back over its admin API."""

from __future__ import annotations

import logging
import unicodedata
import uuid

import oci
import pytest
from oci.ons import NotificationControlPlaneClient
from oci.ons.models import CreateTopicDetails

from vdimport_local.emulator.client import EmulatorHandle
from vdimport_local.pipeline import step_environment
from vdimport_worker.clients import Clients
from vdimport_worker.config import ConfigError, WorkerConfig
from vdimport_worker.notify import Outcome, publish_outcome, run_link, shown

VOLUME = "ocid1.volume.oc1.iad.aexamplevolume"


@pytest.fixture
def topic(emu: EmulatorHandle) -> str:
    client = emu.client(NotificationControlPlaneClient, retry_strategy=oci.retry.NoneRetryStrategy())
    made = client.create_topic(CreateTopicDetails(name=f"vdimport-test-{uuid.uuid4().hex[:8]}", compartment_id=emu.tenancy))
    return str(made.data.topic_id)


def setup(emu: EmulatorHandle, **env: str) -> tuple[Clients, WorkerConfig]:
    config = WorkerConfig.from_env(step_environment(emu, {f"VDIMPORT_{k}": v for k, v in env.items()}))
    return Clients(config, retry_base_seconds=config.retry_base_seconds), config


def succeeded(**overrides: object) -> Outcome:
    values: dict[str, object] = {
        "state": "succeeded",
        "object_name": "web01.qcow2",
        "bucket": "images",
        "dag_run_id": "manual__2025-01-02T03:04:05+00:00",
        "volume_id": VOLUME,
        "volume_name": "web01",
    }
    values.update(overrides)
    return Outcome(**values)  # type: ignore[arg-type]


def test_success_names_the_volume_and_links_the_run(emu: EmulatorHandle, topic: str) -> None:
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=topic, AIRFLOW_UI_URL="https://airflow.example/")
    assert config.airflow_ui_url == "https://airflow.example"
    assert publish_outcome(clients, config, succeeded()) is True
    [message] = emu.messages(topic)
    assert message["title"] == "vdimport: web01.qcow2 imported"
    body = message["body"]
    assert "Object:  web01.qcow2\n" in body and "Bucket:  images\n" in body
    assert f"OCID:    {VOLUME}\n" in body and "Volume:  web01\n" in body
    assert "Run:     manual__2025-01-02T03:04:05+00:00\n" in body
    assert "Link:    https://airflow.example/dags/virtual_disk_import/runs/manual__2025-01-02T03%3A04%3A05%2B00%3A00\n" in body


def test_a_multi_disk_success_names_every_volume(emu: EmulatorHandle, topic: str) -> None:
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=topic)
    second = VOLUME + "2"
    assert publish_outcome(clients, config, succeeded(volumes=(("vm-disk1", VOLUME), ("vm-disk2", second)))) is True
    [message] = emu.messages(topic)
    body = message["body"]
    assert body.startswith("The disk images were imported into 2 block volumes, one per disk.\n")
    assert f"Volume:  vm-disk1\nOCID:    {VOLUME}\nVolume:  vm-disk2\nOCID:    {second}\n" in body


def test_failure_names_the_step_and_the_cause_without_secrets(emu: EmulatorHandle, topic: str) -> None:
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=topic)
    cause = (
        "download failed: https://objectstorage.us-ashburn-1.oraclecloud.com/p/S3cr3tT0ken/n/ns/b/images/o/web01.qcow2 "
        "returned 404;\nproxy https://bob:hunter2@proxy.example:3128 refused"
    )
    outcome = Outcome(
        state="failed", object_name="web01.qcow2", bucket="images", dag_run_id="run-1", failed_step="write_image", cause=cause
    )
    assert publish_outcome(clients, config, outcome) is True
    [message] = emu.messages(topic)
    assert message["title"] == "vdimport: web01.qcow2 failed at write_image"
    body = message["body"]
    assert "Step:    write_image\n" in body
    assert "S3cr3tT0ken" not in body and "hunter2" not in body
    assert "/p/***/n/ns/b/images/o/web01.qcow2 returned 404; proxy https://***@proxy.example:3128 refused" in body
    assert "Link:" not in body  # no VDIMPORT_AIRFLOW_UI_URL, no run_url
    assert "OCID:" not in body


def test_an_explicit_run_url_wins(emu: EmulatorHandle, topic: str) -> None:
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=topic, AIRFLOW_UI_URL="https://airflow.example")
    assert publish_outcome(clients, config, succeeded(run_url="https://elsewhere.example/run/1"))
    assert "Link:    https://elsewhere.example/run/1\n" in emu.messages(topic)[0]["body"]


def test_hostile_object_names_are_escaped_and_titles_stay_short(emu: EmulatorHandle, topic: str) -> None:
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=topic)
    hostile = "evil\nSubject: forged\x1b[31m\u202egpj.exe\\x.qcow2"
    assert publish_outcome(clients, config, succeeded(object_name=hostile, volume_name="vol\r\nX"))
    long_name = "d/" * 400 + "disk.vmdk"
    assert publish_outcome(clients, config, succeeded(object_name=long_name, state="failed", volume_id=None, failed_step="inspect_object"))
    first, second = emu.messages(topic)
    assert first["title"] == "vdimport: evil\\nSubject: forged\\x1b[31m\\u202egpj.exe\\\\x.qcow2 imported"
    for text in (first["title"], first["body"], second["title"]):
        assert not [c for c in text if c != "\n" and unicodedata.category(c)[0] == "C"], text
    assert "Volume:  vol\\r\\nX\n" in first["body"]
    assert len(second["title"]) == 255 and second["title"].endswith("\u2026 failed at inspect_object")
    assert f"Object:  {long_name}\n" in second["body"]  # bodies keep names of any length OCI allows
    assert "Cause:   (not recorded; see the step log)" in second["body"]


def test_publish_error_only_warns(emu: EmulatorHandle, caplog: pytest.LogCaptureFixture) -> None:
    unknown = "ocid1.onstopic.oc1.iad.anotopicwiththisid"
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=unknown)
    with caplog.at_level(logging.WARNING, logger="vdimport"):
        assert publish_outcome(clients, config, succeeded()) is False
    [record] = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert unknown in text and "404 NotAuthorizedOrNotFound" in text and "opc-request-id" in text
    assert emu.messages(unknown) == []


def test_transient_errors_are_retried(emu: EmulatorHandle, topic: str) -> None:
    clients, config = setup(emu, NOTIFICATION_TOPIC_ID=topic)
    emu.fault("PublishMessage", status=503, message="Service Unavailable")
    assert publish_outcome(clients, config, succeeded()) is True
    assert [c["status"] for c in emu.calls("PublishMessage")][-2:] == [503, 200]
    assert len(emu.messages(topic)) == 1


def test_off_when_no_topic_is_configured(emu: EmulatorHandle) -> None:
    clients, config = setup(emu)
    assert config.notification_topic_id is None and config.airflow_ui_url is None
    before = len(emu.calls("PublishMessage"))
    assert publish_outcome(clients, config, succeeded()) is False
    assert len(emu.calls("PublishMessage")) == before


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"VDIMPORT_NOTIFICATION_TOPIC_ID": "my-topic"}, "VDIMPORT_NOTIFICATION_TOPIC_ID is not an OCID"),
        ({"VDIMPORT_NOTIFICATION_TOPIC_ID": VOLUME}, "VDIMPORT_NOTIFICATION_TOPIC_ID is not a Notifications topic OCID"),
        ({"VDIMPORT_AIRFLOW_UI_URL": "airflow.example"}, "VDIMPORT_AIRFLOW_UI_URL must be an http(s) base URL"),
        ({"VDIMPORT_AIRFLOW_UI_URL": "https://airflow.example/?x=1"}, "VDIMPORT_AIRFLOW_UI_URL must be an http(s) base URL"),
    ],
)
def test_bad_settings_are_refused(env: dict[str, str], problem: str) -> None:
    base = {"VDIMPORT_COMPARTMENT_ID": "ocid1.compartment.oc1..a", "VDIMPORT_SUBNET_ID": "ocid1.subnet.oc1.iad.a"}
    with pytest.raises(ConfigError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        WorkerConfig.from_env({**base, **env})


def test_credentials_in_the_ui_url_are_refused_and_not_echoed() -> None:
    base = {"VDIMPORT_COMPARTMENT_ID": "ocid1.compartment.oc1..a", "VDIMPORT_SUBNET_ID": "ocid1.subnet.oc1.iad.a"}
    with pytest.raises(ConfigError) as refused:
        WorkerConfig.from_env({**base, "VDIMPORT_AIRFLOW_UI_URL": "https://admin:hunter2@airflow.example"})
    assert "without credentials" in str(refused.value) and "hunter2" not in str(refused.value)


def test_helpers() -> None:
    assert run_link(None, "x") is None
    assert run_link("http://localhost:8080/airflow/", "a b/c") == "http://localhost:8080/airflow/dags/virtual_disk_import/runs/a%20b%2Fc"
    assert shown("caf\u00e9 \t\x00") == "caf\u00e9 \\t\\x00"
    assert shown("abcdef", 4) == "abc\u2026" and shown("abcd", 4) == "abcd"
    with pytest.raises(ValueError, match="state"):
        succeeded(state="done")
