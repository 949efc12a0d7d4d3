"""Events: OCI CloudEvents for object changes, delivered to subscribed URLs.

Object Storage calls :func:`object_event` to build the event exactly as OCI Events sends it
(CloudEvents 0.1 envelope, ``eventTypeVersion`` 2.0) and :meth:`EventBus.emit` to send it.
Rules stand in for OCI Events rules with an action: a URL that receives each matching event as
a JSON ``POST`` (in local mode, the function's listener). Rules are kept in ``store.extra``
so a restart keeps them.

Delivery is asynchronous and at-least-once, as OCI's is: a worker thread posts each event to
each matching rule; connection errors and non-2xx answers are retried with exponential back-off
starting at ``settings.event_retry_seconds``, at most :data:`MAX_ATTEMPTS` times. With
``settings.duplicate_events_every = N`` every Nth event is delivered twice, so consumers can
prove they are idempotent. Every attempt is logged for ``GET /_ocisim/events/deliveries``.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from . import ids
from .errors import invalid

if TYPE_CHECKING:
    from .app import Emulator

log = logging.getLogger("vdimport.emulator.events")

MAX_ATTEMPTS = 6
DELIVERY_TIMEOUT = 10.0
RULES_KEY = "event_rules"


def compartment_name(emulator: Emulator, compartment_id: str) -> str:
    """The tenancy (root compartment) is named after the namespace; other compartments by the store, if it knows them."""
    if compartment_id == emulator.tenancy:
        return emulator.namespace
    known = emulator.store.find("compartment", compartment_id)
    return str(known.get("name")) if known and known.get("name") else compartment_id.rsplit(".", 1)[-1][:16]


def object_event(emulator: Emulator, kind: str, bucket: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """The CloudEvent OCI Events sends for ``kind`` (createobject, updateobject, deleteobject) of ``obj``."""
    namespace = emulator.namespace
    compartment = bucket["compartmentId"]
    return {
        "eventType": f"com.oraclecloud.objectstorage.{kind}",
        "cloudEventsVersion": "0.1",
        "eventTypeVersion": "2.0",
        "source": "ObjectStorage",
        "eventTime": ids.now_iso(),
        "contentType": "application/json",
        "data": {
            "compartmentId": compartment,
            "compartmentName": compartment_name(emulator, compartment),
            "resourceName": obj["name"],
            "resourceId": f"/n/{namespace}/b/{bucket['name']}/o/{obj['name']}",
            "availabilityDomain": f"{ids.REGION_KEY.upper()}-AD-1",
            "additionalDetails": {
                "bucketName": bucket["name"],
                "versionId": obj.get("_versionId"),
                "archivalState": "Available",
                "namespace": namespace,
                "bucketId": bucket["id"],
                "eTag": obj["etag"],
            },
        },
        "eventID": str(uuid.uuid4()),
        "extensions": {"compartmentId": compartment},
    }


@dataclass(order=True)
class _Delivery:
    due: float
    seq: int
    event: dict[str, Any] = field(compare=False)
    rule_id: str = field(compare=False)
    url: str = field(compare=False)
    attempt: int = field(default=1, compare=False)
    duplicate: bool = field(default=False, compare=False)


class EventBus:
    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self._cond = threading.Condition()
        self._heap: list[_Delivery] = []
        self._seq = itertools.count()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._log_lock = threading.Lock()
        self._deliveries: collections.deque[dict[str, Any]] = collections.deque(maxlen=10000)
        self._emitted: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)
        self._counted = 0
        self._every = 0

    # --- rules (persisted in store.extra) -------------------------------------------------
    def rules(self) -> list[dict[str, Any]]:
        store = self.emulator.store
        with store.lock:
            return [dict(rule) for rule in store.extra.get(RULES_KEY, [])]

    def add_rule(self, spec: dict[str, Any]) -> dict[str, Any]:
        unknown = set(spec) - {"url", "eventTypes", "bucketName", "compartmentId", "functionId", "displayName", "isEnabled"}
        if unknown:
            raise invalid(f"unknown rule fields: {', '.join(sorted(unknown))}")
        url = spec.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid("a rule needs an http(s) url")
        types = spec.get("eventTypes") or []
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise invalid("eventTypes must be a list of event type names")
        rule = {
            "id": f"rule-{secrets.token_hex(6)}",
            "url": url,
            "eventTypes": types,
            "bucketName": spec.get("bucketName"),
            "compartmentId": spec.get("compartmentId"),
            "functionId": spec.get("functionId"),  # what OCI's Events API shows as the FAAS action
            "displayName": spec.get("displayName") or "vdimport-local",
            "isEnabled": spec.get("isEnabled", True) is not False,
            "timeCreated": ids.now_iso(),
        }
        store = self.emulator.store
        with store.lock:
            store.extra.setdefault(RULES_KEY, []).append(rule)
            store.touch()
        return dict(rule)

    def remove_rule(self, rule_id: str) -> bool:
        store = self.emulator.store
        with store.lock:
            rules = store.extra.get(RULES_KEY, [])
            kept = [r for r in rules if r["id"] != rule_id]
            if len(kept) == len(rules):
                return False
            store.extra[RULES_KEY] = kept
            store.touch()
            return True

    @staticmethod
    def _matches(rule: dict[str, Any], event: dict[str, Any]) -> bool:
        if rule.get("isEnabled") is False:
            return False
        if rule.get("eventTypes") and event["eventType"] not in rule["eventTypes"]:
            return False
        data = event.get("data", {})
        if rule.get("bucketName") and data.get("additionalDetails", {}).get("bucketName") != rule["bucketName"]:
            return False
        return not (rule.get("compartmentId") and data.get("compartmentId") != rule["compartmentId"])

    # --- emitting ----------------------------------------------------------------------------
    def emit(self, event: dict[str, Any]) -> None:
        """Queue ``event`` for every matching rule; returns at once (callers may hold the store lock)."""
        targets = [rule for rule in self.rules() if self._matches(rule, event)]
        with self._log_lock:
            self._emitted.append(event)
        if not targets:
            return
        every = self.emulator.settings.duplicate_events_every
        with self._cond:
            if every != self._every:  # a new setting counts from the next event
                self._every, self._counted = every, 0
            self._counted += 1
            twice = every > 0 and self._counted % every == 0
            now = time.time()
            for rule in targets:
                for duplicate in (False, True) if twice else (False,):
                    heapq.heappush(self._heap, _Delivery(now, next(self._seq), event, rule["id"], rule["url"], duplicate=duplicate))
            self._ensure_thread()
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None and not self._stopping:
            self._thread = threading.Thread(target=self._run, name="ocisim-events", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and (not self._heap or self._heap[0].due > time.time()):
                    timeout = self._heap[0].due - time.time() if self._heap else None
                    self._cond.wait(timeout)
                if self._stopping:
                    return
                delivery = heapq.heappop(self._heap)
            # each attempt on its own daemon thread: a slow receiver must not hold up the others
            threading.Thread(target=self._attempt, args=(delivery,), name="ocisim-event-post", daemon=True).start()

    @staticmethod
    def _post(delivery: _Delivery) -> tuple[int | None, str | None]:
        """POST the event to the rule's URL: (HTTP status or None, error or None)."""
        data = json.dumps(delivery.event).encode()
        request = urllib.request.Request(delivery.url, data=data, method="POST")  # noqa: S310 - http(s) only, checked on add
        request.add_header("content-type", "application/json")
        request.add_header("user-agent", "vdimport-ocisim-events/1")
        try:
            with urllib.request.urlopen(request, timeout=DELIVERY_TIMEOUT) as response:  # noqa: S310 - rule URLs are http(s), checked on add
                response.read()
                return response.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            return None, f"{type(exc).__name__}: {exc}"

    def _attempt(self, delivery: _Delivery) -> None:
        """One delivery attempt, logged; a failure is queued again after an exponential back-off."""
        status, error = self._post(delivery)
        ok = status is not None and 200 <= status < 300
        retry = not ok and delivery.attempt < MAX_ATTEMPTS
        with self._log_lock:
            self._deliveries.append(
                {
                    "eventID": delivery.event["eventID"],
                    "eventType": delivery.event["eventType"],
                    "ruleId": delivery.rule_id,
                    "url": delivery.url,
                    "attempt": delivery.attempt,
                    "duplicate": delivery.duplicate,
                    "status": status,
                    "error": error,
                    "time": time.time(),
                    "willRetry": retry,
                }
            )
        if not ok:
            log.info("event %s to %s failed (attempt %d): %s", delivery.event["eventID"], delivery.url, delivery.attempt, error)
        if retry:
            backoff = self.emulator.settings.event_retry_seconds * (2 ** (delivery.attempt - 1))
            with self._cond:
                if self._stopping:
                    return
                again = replace(delivery, due=time.time() + backoff, seq=next(self._seq), attempt=delivery.attempt + 1)
                heapq.heappush(self._heap, again)
                self._cond.notify_all()

    # --- inspection --------------------------------------------------------------------------
    def deliveries(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return list(self._deliveries)

    def clear_deliveries(self) -> None:
        with self._log_lock:
            self._deliveries.clear()
            self._emitted.clear()

    def emitted(self) -> list[dict[str, Any]]:
        with self._log_lock:
            return list(self._emitted)

    def stop(self) -> None:
        """End the worker promptly; deliveries still pending are dropped."""
        with self._cond:
            self._stopping = True
            self._heap.clear()
            self._cond.notify_all()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
