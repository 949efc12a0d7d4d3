"""Notifications (ONS, ``/20181201``): topics (control plane) and PublishMessage (data plane).

``oci.ons.NotificationControlPlaneClient`` creates, gets and lists topics;
``oci.ons.NotificationDataPlaneClient.publish_message`` posts ``{"title", "body"}`` to
``/topics/{topicId}/messages`` and gets ``{"messageId", "timeStamp"}`` back. Both clients
share the one emulator endpoint (a topic's ``apiEndpoint`` is that endpoint too).

Subscriptions are not emulated: nothing is delivered anywhere. Every accepted message is
kept instead, in order, so tests and local mode can read what a user would have been sent:
``GET /_ocisim/messages[?topicId=]`` (:meth:`EmulatorHandle.messages`).

Limits (OCI's API reference for PublishMessage and "Publishing a Message to a Topic",
https://docs.oracle.com/iaas/Content/Notification/Tasks/publishingmessages.htm):
"Message size limit per request: 64KB", counted here as the UTF-8 bytes of title and body
together; a larger message is refused with 400 (the exact code OCI answers is not documented).
The documentation states no separate limit for the title, so none is enforced. Topic names
"must be unique across the tenancy" (CreateTopic): a second topic of the same name is 409.
A new topic "is immediately available and in the active state".
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any

from .. import ids
from ..errors import conflict, incorrect_state, invalid, missing
from ..routing import Request, Response, Service
from ..store import Resource, public
from ._common import body_of, optional_str, paged, require_compartment, required, tags

service = Service("notifications")

API = "/20181201"
TOPIC = "onstopic"
MESSAGES = "ons_messages"  # key of the published messages in the store's extra state
MAX_MESSAGE_BYTES = 64 * 1024  # "Message size limit per request: 64KB"
MAX_KEPT_MESSAGES = 10000  # the oldest are dropped beyond this, so state.json stays small
MESSAGE_TYPES = ("JSON", "RAW_TEXT")
LIFECYCLE_STATES = ("ACTIVE", "DELETING", "CREATING")


def _topic_shape(topic: Resource) -> Resource:
    """A NotificationTopic: OCI names its OCID ``topicId`` (the store's ``id`` is not sent)."""
    return {k: v for k, v in public(topic).items() if k != "id"}


def _respond(topic: Resource, status: int = 200) -> Response:
    return Response.json(_topic_shape(topic), status=status, headers={"etag": topic["etag"]})


def _topic(request: Request) -> Resource:
    """The topic of the path; 404 NotAuthorizedOrNotFound for an unknown one, as OCI answers."""
    return request.emulator.store.get(TOPIC, request.params["topicId"], "topic")


# --- control plane -----------------------------------------------------------------------
@service.route("POST", f"{API}/topics", "CreateTopic")
def create_topic(request: Request) -> Response:
    body = body_of(request)
    name = required(body, "name")
    if not isinstance(name, str):
        raise invalid("name must be a string")
    compartment = require_compartment(body.get("compartmentId"))
    store = request.emulator.store
    if any(t["name"] == name for t in store.all(TOPIC)):
        raise conflict(f"a topic named {name!r} already exists in the tenancy")
    topic_id = ids.ocid("onstopic")
    topic = store.add(
        TOPIC,
        {
            "id": topic_id,
            "topicId": topic_id,
            "name": name,
            "compartmentId": compartment,
            "description": optional_str(body, "description"),
            "lifecycleState": "ACTIVE",
            "timeCreated": ids.now_iso(),
            "etag": ids.etag(),
            "freeformTags": tags(body, "freeformTags"),
            "definedTags": tags(body, "definedTags"),
            "apiEndpoint": request.emulator.endpoint,
            "shortTopicId": secrets.token_hex(5),
        },
    )
    return _respond(topic)


@service.route("GET", f"{API}/topics/{{topicId}}", "GetTopic")
def get_topic(request: Request) -> Response:
    return _respond(_topic(request))


@service.route("GET", f"{API}/topics", "ListTopics")
def list_topics(request: Request) -> Response:
    query = request.query
    compartment = require_compartment(query.get("compartmentId"))
    topics = [t for t in request.emulator.store.all(TOPIC) if t["compartmentId"] == compartment]
    for field, key in (("id", "id"), ("name", "name")):
        if query.get(field):
            topics = [t for t in topics if t[key] == query[field]]
    state = query.get("lifecycleState")
    if state:
        if state.upper() not in LIFECYCLE_STATES:
            raise invalid(f"lifecycleState must be one of {', '.join(LIFECYCLE_STATES)}")
        topics = [t for t in topics if t["lifecycleState"] == state.upper()]  # case-insensitive, as documented
    by = query.get("sortBy") or "TIMECREATED"
    if by not in ("TIMECREATED", "LIFECYCLESTATE"):
        raise invalid("sortBy must be TIMECREATED or LIFECYCLESTATE")
    order = (query.get("sortOrder") or "DESC").upper()
    if order not in ("ASC", "DESC"):
        raise invalid("sortOrder must be ASC or DESC")
    key = "timeCreated" if by == "TIMECREATED" else "lifecycleState"
    topics = sorted(topics, key=lambda t: (t[key], t["timeCreated"]), reverse=order == "DESC")
    return paged(request, [_topic_shape(t) for t in topics])


# --- data plane ----------------------------------------------------------------------------
def _message_text(body: dict[str, Any]) -> tuple[str | None, str]:
    title = body.get("title")
    if title is not None and not isinstance(title, str):
        raise invalid("title must be a string")
    text = body.get("body")
    if text is None or text == "":
        raise missing("body")
    if not isinstance(text, str):
        raise invalid("body must be a string")
    size = len(text.encode()) + len((title or "").encode())
    if size > MAX_MESSAGE_BYTES:
        raise invalid(f"the message is {size} bytes; the limit per request is 64KB ({MAX_MESSAGE_BYTES} bytes)")
    return title, text


@service.route("POST", f"{API}/topics/{{topicId}}/messages", "PublishMessage")
def publish_message(request: Request) -> Response:
    topic = _topic(request)
    if topic["lifecycleState"] != "ACTIVE":
        raise incorrect_state(f"the topic is {topic['lifecycleState']}")
    title, text = _message_text(body_of(request))
    message_type = request.header("messagetype")
    if message_type is not None:
        if message_type not in MESSAGE_TYPES:
            raise invalid(f"messageType must be one of {', '.join(MESSAGE_TYPES)}")
        if message_type == "JSON":
            try:
                parsed = json.loads(text)
            except ValueError:
                raise invalid("messageType JSON needs a JSON body") from None
            if not isinstance(parsed, dict) or "default" not in parsed:
                raise invalid('messageType JSON needs a "default" key in the body')
    message = {
        "messageId": str(uuid.uuid4()),
        "timeStamp": ids.now_iso(),
        "topicId": topic["id"],
        "title": title,
        "body": text,
        "messageType": message_type or "RAW_TEXT",
    }
    store = request.emulator.store
    kept: list[dict[str, Any]] = store.extra.setdefault(MESSAGES, [])
    kept.append(message)
    del kept[:-MAX_KEPT_MESSAGES]
    store.touch()
    return Response.json({"messageId": message["messageId"], "timeStamp": message["timeStamp"]})


# --- admin: what would have been delivered ------------------------------------------------------
@service.route("GET", "/_ocisim/messages", "AdminListMessages", authenticated=False)
def admin_list_messages(request: Request) -> Response:
    """Every published message, oldest first; ``?topicId=`` narrows to one topic."""
    wanted = request.query.get("topicId")
    with request.emulator.store.lock:
        kept = list(request.emulator.store.extra.get(MESSAGES, []))
    return Response.json([m for m in kept if not wanted or m["topicId"] == wanted])
