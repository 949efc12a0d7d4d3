"""Notifications (ONS) through the real SDK: topics, PublishMessage, and the admin record of messages."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path

import oci
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from emulator_helpers import error_of, new_compartment
from oci.ons import NotificationControlPlaneClient, NotificationDataPlaneClient
from oci.ons.models import CreateTopicDetails, MessageDetails

from vdimport_local.emulator.client import EmulatorHandle

NO_RETRY = oci.retry.NoneRetryStrategy()


@pytest.fixture(scope="module")
def topics(emulator: EmulatorHandle) -> NotificationControlPlaneClient:
    return emulator.client(NotificationControlPlaneClient, retry_strategy=NO_RETRY)


@pytest.fixture(scope="module")
def publisher(emulator: EmulatorHandle) -> NotificationDataPlaneClient:
    return emulator.client(NotificationDataPlaneClient, retry_strategy=NO_RETRY)


def make_topic(topics: NotificationControlPlaneClient, compartment: str | None = None, **extra: object) -> oci.ons.models.NotificationTopic:
    details = CreateTopicDetails(name=f"vdimport-{uuid.uuid4().hex[:10]}", compartment_id=compartment or new_compartment(), **extra)
    return topics.create_topic(details).data


def test_create_get_and_list_topics(emu: EmulatorHandle, topics: NotificationControlPlaneClient) -> None:
    compartment = new_compartment()
    made = make_topic(topics, compartment, description="import outcomes", freeform_tags={"project": "vdimport"})
    assert made.topic_id.startswith("ocid1.onstopic.")
    assert (made.lifecycle_state, made.compartment_id, made.description) == ("ACTIVE", compartment, "import outcomes")
    assert made.freeform_tags == {"project": "vdimport"} and made.api_endpoint == emu.endpoint
    assert made.etag and made.short_topic_id and isinstance(made.time_created, dt.datetime)
    got = topics.get_topic(made.topic_id)
    assert got.data.name == made.name and got.headers["etag"] == made.etag
    second = make_topic(topics, compartment)
    listed = topics.list_topics(compartment).data
    assert [t.topic_id for t in listed] == [second.topic_id, made.topic_id]  # newest first
    assert [t.topic_id for t in topics.list_topics(compartment, sort_order="ASC").data] == [made.topic_id, second.topic_id]
    assert [t.topic_id for t in topics.list_topics(compartment, name=made.name).data] == [made.topic_id]
    assert [t.topic_id for t in topics.list_topics(compartment, id=second.topic_id).data] == [second.topic_id]
    assert topics.list_topics(new_compartment()).data == []


def test_topic_names_are_unique_in_the_tenancy(topics: NotificationControlPlaneClient) -> None:
    made = make_topic(topics)
    err = error_of(topics.create_topic, CreateTopicDetails(name=made.name, compartment_id=new_compartment()))
    assert (err.status, err.code) == (409, "Conflict")


def test_create_topic_needs_a_name_and_a_compartment(topics: NotificationControlPlaneClient) -> None:
    err = error_of(topics.create_topic, CreateTopicDetails(compartment_id=new_compartment()))
    assert (err.status, err.code) == (400, "MissingParameter")
    err = error_of(topics.create_topic, CreateTopicDetails(name="x-" + uuid.uuid4().hex, compartment_id="not-an-ocid"))
    assert (err.status, err.code) == (400, "InvalidParameter")


def test_unknown_topic_is_not_found(topics: NotificationControlPlaneClient, publisher: NotificationDataPlaneClient) -> None:
    unknown = "ocid1.onstopic.oc1.iad.aunknowntopic"
    for err in (
        error_of(topics.get_topic, unknown),
        error_of(publisher.publish_message, unknown, MessageDetails(title="t", body="b")),
    ):
        assert (err.status, err.code) == (404, "NotAuthorizedOrNotFound")


def test_publish_returns_a_message_id_and_is_recorded(
    emu: EmulatorHandle, topics: NotificationControlPlaneClient, publisher: NotificationDataPlaneClient
) -> None:
    topic = make_topic(topics)
    other = make_topic(topics)
    first = publisher.publish_message(topic.topic_id, MessageDetails(title="vdimport: web01.qcow2 imported", body="Volume: x\n"))
    assert uuid.UUID(first.data.message_id) and isinstance(first.data.time_stamp, dt.datetime)
    second = publisher.publish_message(topic.topic_id, MessageDetails(body="no title, \u00e9t\u00e9 \u2713"))
    publisher.publish_message(other.topic_id, MessageDetails(title="elsewhere", body="other topic"))
    kept = emu.messages(topic.topic_id)
    assert [(m["messageId"], m["title"], m["body"]) for m in kept] == [
        (first.data.message_id, "vdimport: web01.qcow2 imported", "Volume: x\n"),
        (second.data.message_id, None, "no title, \u00e9t\u00e9 \u2713"),
    ]
    assert {m["topicId"] for m in kept} == {topic.topic_id} and kept[0]["messageType"] == "RAW_TEXT"
    assert [m["body"] for m in emu.messages(other.topic_id)] == ["other topic"]
    assert len(emu.messages()) >= 3
    assert emu.calls("PublishMessage")[-1]["status"] == 200


def test_publish_enforces_the_64kb_message_limit(
    emu: EmulatorHandle, topics: NotificationControlPlaneClient, publisher: NotificationDataPlaneClient
) -> None:
    topic = make_topic(topics)
    title = "t" * 100
    publisher.publish_message(topic.topic_id, MessageDetails(title=title, body="b" * (64 * 1024 - len(title))))
    err = error_of(publisher.publish_message, topic.topic_id, MessageDetails(title=title, body="b" * (64 * 1024 - len(title) + 1)))
    assert (err.status, err.code) == (400, "InvalidParameter") and "64KB" in err.message
    # Multi-byte characters count as bytes, not characters.
    err = error_of(publisher.publish_message, topic.topic_id, MessageDetails(body="\u2713" * 22000))
    assert err.status == 400
    assert len(emu.messages(topic.topic_id)) == 1


def test_publish_needs_a_body(topics: NotificationControlPlaneClient, publisher: NotificationDataPlaneClient) -> None:
    topic = make_topic(topics)
    err = error_of(publisher.publish_message, topic.topic_id, MessageDetails(title="only a title"))
    assert (err.status, err.code) == (400, "MissingParameter")


def test_json_message_type_needs_a_default_key(
    emu: EmulatorHandle, topics: NotificationControlPlaneClient, publisher: NotificationDataPlaneClient
) -> None:
    topic = make_topic(topics)
    err = error_of(publisher.publish_message, topic.topic_id, MessageDetails(body='{"Email": "x"}'), message_type="JSON")
    assert err.status == 400
    body = json.dumps({"default": "Import done", "Email": "Import done: volume x"})
    publisher.publish_message(topic.topic_id, MessageDetails(body=body), message_type="JSON")
    assert [m["messageType"] for m in emu.messages(topic.topic_id)] == ["JSON"]


def test_publish_is_signed_and_faults_apply(
    emu: EmulatorHandle, topics: NotificationControlPlaneClient, publisher: NotificationDataPlaneClient, tmp_path: Path
) -> None:
    topic = make_topic(topics)
    emu.fault("PublishMessage", status=503, message="Service Unavailable")
    err = error_of(publisher.publish_message, topic.topic_id, MessageDetails(body="b"))
    assert err.status == 503
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other = tmp_path / "other.pem"
    other.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    forged = NotificationDataPlaneClient(dict(emu.config, key_file=str(other)), service_endpoint=emu.endpoint, retry_strategy=NO_RETRY)
    err = error_of(forged.publish_message, topic.topic_id, MessageDetails(body="b"))
    assert (err.status, err.code) == (401, "NotAuthenticated")
    assert emu.messages(topic.topic_id) == []
