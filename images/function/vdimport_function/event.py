"""The OCI Events CloudEvent for an object change, parsed and checked.

OCI Events sends (CloudEvents 0.1, ``eventTypeVersion`` 2.0)::

    {"eventType": "com.oraclecloud.objectstorage.createobject", "cloudEventsVersion": "0.1",
     "eventID": "...", "eventTime": "...", "source": "ObjectStorage",
     "data": {"resourceName": OBJECT, "resourceId": "/n/NS/b/BUCKET/o/OBJECT",
              "additionalDetails": {"namespace": NS, "bucketName": BUCKET, "eTag": ETAG, ...}, ...}}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class Rejected(ValueError):
    """The payload is not an event this function acts on; the message says why."""


@dataclass(frozen=True)
class ObjectEvent:
    event_id: str
    event_type: str
    namespace: str
    bucket: str
    object: str
    etag: str

    def describe(self) -> str:
        kind = self.event_type.rsplit(".", 1)[-1]
        # names with repr(): a newline or escape sequence in an object name stays on one log line
        return f"{kind} event {self.event_id!r} for bucket {self.bucket!r} object {self.object!r} etag {self.etag!r}"


def _string(mapping: dict[str, Any], key: str, where: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str) or not value:
        raise Rejected(f"missing or empty field {where}{key}")
    return value


def parse(raw: bytes | str, accepted_types: Iterable[str]) -> ObjectEvent:
    """The object event in ``raw``; :class:`Rejected` for anything else (foreign type, bad JSON, missing fields)."""
    if isinstance(raw, bytes | bytearray):
        try:
            raw = bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            raise Rejected("payload is not UTF-8 text") from None
    if not raw.strip():
        raise Rejected("empty payload")
    try:
        event = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Rejected(f"payload is not JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(event, dict):
        raise Rejected(f"payload is a JSON {type(event).__name__}, not an event object")
    event_type = event.get("eventType")
    if not isinstance(event_type, str):
        raise Rejected("no eventType: not an OCI Events CloudEvent")
    accepted = tuple(accepted_types)
    if event_type not in accepted:
        raise Rejected(f"event type {event_type} is not handled (only {', '.join(accepted)})")
    event_id = event.get("eventID") if isinstance(event.get("eventID"), str) else "(no eventID)"
    data = event.get("data")
    if not isinstance(data, dict):
        raise Rejected("missing field data")
    details = data.get("additionalDetails")
    if not isinstance(details, dict):
        raise Rejected("missing field data.additionalDetails")
    namespace = _string(details, "namespace", "data.additionalDetails.")
    bucket = _string(details, "bucketName", "data.additionalDetails.")
    etag = _string(details, "eTag", "data.additionalDetails.")
    name = _string(data, "resourceName", "data.")
    resource_id = data.get("resourceId")
    if isinstance(resource_id, str) and resource_id and resource_id != f"/n/{namespace}/b/{bucket}/o/{name}":
        raise Rejected(f"data.resourceId {resource_id!r} does not match namespace, bucket and resourceName")
    return ObjectEvent(str(event_id), event_type, namespace, bucket, name, etag)
