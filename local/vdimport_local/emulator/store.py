"""The emulator's state: resources with lifecycles, their history, and retry tokens.

Resources are plain dicts in OCI's JSON shape; keys starting with ``_`` are private to
the emulator and never sent. Lifecycle transitions are scheduled with a due time and
applied when the resource is next read, so they cost nothing while nobody looks and
their history carries the time they were due, not the time they were observed.
State is written to ``state.json`` in the data directory so a restart keeps it.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import not_found

Resource = dict[str, Any]
StateHook = Callable[[str, Resource, str], None]


def public(resource: Resource) -> Resource:
    """The resource as the API returns it: private ``_`` keys removed."""
    return {k: copy.deepcopy(v) for k, v in resource.items() if not k.startswith("_")}


class Store:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time):
        self.path = path
        self.clock = clock
        self.lock = threading.RLock()
        self.resources: dict[str, dict[str, Resource]] = {}
        self.history: list[dict[str, Any]] = []
        self.retry_tokens: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}
        self._hooks: list[StateHook] = []
        self._dirty = False
        if path.exists():
            saved = json.loads(path.read_text())
            self.resources = saved.get("resources", {})
            self.history = saved.get("history", [])
            self.retry_tokens = saved.get("retry_tokens", {})
            self.extra = saved.get("extra", {})

    # --- persistence ------------------------------------------------------
    def save(self) -> None:
        with self.lock:
            if not self._dirty:
                return
            data = {"resources": self.resources, "history": self.history, "retry_tokens": self.retry_tokens, "extra": self.extra}
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.path)
            self._dirty = False

    def touch(self) -> None:
        self._dirty = True

    # --- resources --------------------------------------------------------
    def add(self, kind: str, resource: Resource) -> Resource:
        with self.lock:
            self.resources.setdefault(kind, {})[resource["id"]] = resource
            self._record(kind, resource["id"], "created", resource.get("lifecycleState"), self.clock())
            return resource

    def find(self, kind: str, rid: str) -> Resource | None:
        with self.lock:
            resource = self.resources.get(kind, {}).get(rid)
            if resource is not None:
                self.refresh(kind, resource)
            return resource

    def get(self, kind: str, rid: str, what: str | None = None) -> Resource:
        resource = self.find(kind, rid)
        if resource is None:
            raise not_found(what or kind)
        return resource

    def all(self, kind: str) -> list[Resource]:
        with self.lock:
            items = list(self.resources.get(kind, {}).values())
            for resource in items:
                self.refresh(kind, resource)
            return items

    def remove(self, kind: str, rid: str) -> None:
        with self.lock:
            self.resources.get(kind, {}).pop(rid, None)
            self._record(kind, rid, "removed", None, self.clock())

    def kinds(self) -> Iterable[str]:
        return list(self.resources)

    # --- lifecycle --------------------------------------------------------
    def on_state(self, hook: StateHook) -> None:
        """Call ``hook(kind, resource, state)`` whenever a resource enters a state."""
        self._hooks.append(hook)

    def set_state(self, kind: str, resource: Resource, state: str, at: float | None = None) -> None:
        """Enter ``state`` now, cancelling transitions still pending."""
        with self.lock:
            resource["_pending"] = []
            self._enter(kind, resource, state, self.clock() if at is None else at)

    def schedule(self, kind: str, resource: Resource, steps: list[tuple[float, str]]) -> None:
        """Replace pending transitions with ``steps``: (seconds from now, state), in order."""
        with self.lock:
            now = self.clock()
            resource["_pending"] = [[now + delay, state] for delay, state in steps]
            self.refresh(kind, resource)

    def refresh(self, kind: str, resource: Resource) -> None:
        with self.lock:
            pending = resource.get("_pending") or []
            now = self.clock()
            while pending and pending[0][0] <= now:
                due, state = pending.pop(0)
                self._enter(kind, resource, state, due)

    def _enter(self, kind: str, resource: Resource, state: str, at: float) -> None:
        if resource.get("lifecycleState") == state:
            return
        resource["lifecycleState"] = state
        self._record(kind, resource["id"], "state", state, at)
        for hook in self._hooks:
            hook(kind, resource, state)

    def _record(self, kind: str, rid: str, event: str, state: str | None, at: float) -> None:
        self.history.append({"time": at, "kind": kind, "id": rid, "event": event, "state": state})
        self._dirty = True
