"""The emulator: one dispatcher in front of every emulated OCI service.

Order of a request: admin routes skip authentication; others are matched to an OCI
operation, their signature verified, fault rules applied, ``opc-retry-token`` honoured,
the handler run, and the call logged. Errors leave as OCI's ``{"code", "message"}``.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from . import ids
from .auth import Credentials
from .errors import OCIError, invalid
from .faults import Faults
from .routing import Request, Response, Route, Service, match
from .store import Store

log = logging.getLogger("vdimport.emulator")

NAMESPACE = "vdimportemu"


@dataclass
class Settings:
    """Runtime knobs, changeable over ``POST /_ocisim/config``."""

    lifecycle_seconds: float = 0.0  # base duration of a lifecycle transition
    device_mode: str = "auto"  # auto | loop | file: how the worker VM sees attached volumes
    duplicate_events_every: int = 0  # 0: never; N: every Nth event is delivered twice
    event_retry_seconds: float = 1.0  # first back-off when an event delivery fails
    par_max_hours: float = 24 * 7
    par_bytes_per_second: int = 0  # 0: unlimited; else each PAR download is paced to this rate
    keep_deleted_volume_files: bool = False  # True: DeleteVolume moves the backing file to volumes/deleted/ (tests scan it)

    def update(self, values: dict[str, Any]) -> None:
        """Apply ``values`` all or nothing: a bad one leaves every setting as it was."""
        known = {f.name for f in fields(self)}
        changed: dict[str, Any] = {}
        for key, value in values.items():
            if key not in known:
                raise invalid(f"unknown setting {key}")
            current = getattr(self, key)
            try:
                changed[key] = type(current)(value)
            except (TypeError, ValueError):
                raise invalid(f"bad value for {key}: {value!r}") from None
        if changed.get("device_mode", self.device_mode) not in ("auto", "loop", "file"):
            raise invalid("device_mode must be auto, loop or file")
        if changed.get("par_bytes_per_second", self.par_bytes_per_second) < 0:
            raise invalid("par_bytes_per_second must be 0 (unlimited) or a positive number of bytes per second")
        for key, value in changed.items():
            setattr(self, key, value)


class Emulator:
    def __init__(self, data_dir: Path, settings: Settings | None = None):
        from . import services  # the service modules register their routes on import

        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self.credentials = Credentials(data_dir)
        self.store = Store(data_dir / "state.json")
        self.settings = settings or Settings(**self.store.extra.get("settings", {}))
        self.faults = Faults()
        self.calls: collections.deque[dict[str, Any]] = collections.deque(maxlen=20000)
        self.namespace = NAMESPACE
        self.endpoint = ""  # set by the server once it has a port
        self.services: list[Service] = services.all_services()
        from .events import EventBus
        from .vm import WorkerVMs

        self.events = EventBus(self)
        self.vms = WorkerVMs(self)
        self._calls_lock = threading.Lock()

    @property
    def tenancy(self) -> str:
        return self.credentials.identity.tenancy

    def delay(self, factor: float = 1.0) -> float:
        return self.settings.lifecycle_seconds * factor

    def save_settings(self) -> None:
        with self.store.lock:
            self.store.extra["settings"] = asdict(self.settings)
            self.store.touch()
            self.store.save()

    # --- dispatch ---------------------------------------------------------
    def handle(self, request: Request) -> Response:
        request.emulator = self
        rid = ids.request_id()
        started = time.time()
        route: Route | None = None
        try:
            route, params = match(self.services, request.method, request.path)
            request.params = params
            request.operation = route.operation
            if route.authenticated:
                self.credentials.verify(request)
            if not route.is_admin:
                self._apply_fault(route, request)
            response = self._run(route, request)
        except OCIError as err:
            request.drain_quietly()
            body = {"code": err.code, "message": err.message}
            response = Response.json(body, status=err.status, headers=err.headers)
        except Exception as exc:  # a bug in the emulator must still answer like OCI would
            log.exception("handler failed for %s %s", request.method, request.path)
            request.drain_quietly()
            response = Response.json({"code": "InternalError", "message": f"emulator error: {exc}"}, status=500)
        response.headers.setdefault("opc-request-id", rid)
        client_id = request.header("opc-client-request-id")
        if client_id:
            response.headers["opc-client-request-id"] = client_id
        if route is not None and not route.is_admin:
            self._log_call(route.operation, request, response.status, started)
        return response

    def _apply_fault(self, route: Route, request: Request) -> None:
        def context() -> dict[str, Any]:
            fields: dict[str, Any] = dict(request.query)
            fields.update(request.params)
            if not route.streaming and (request.header("content-type") or "").startswith("application/json"):
                fields.update(request.json())
            return fields

        rule = self.faults.take(route.operation, context)
        if rule is None:
            return
        if rule.action == "hang":
            time.sleep(rule.seconds)
            return
        if rule.action == "stall":
            request.fault = rule  # the handler carries the call out and stalls what it started
            return
        raise rule.as_error()

    def _run(self, route: Route, request: Request) -> Response:
        token = request.header("opc-retry-token")
        if token and request.method in ("POST", "PUT"):
            key = f"{route.operation}:{token}"
            digest = hashlib.sha256(request.body + request.path.encode()).hexdigest()
            with self.store.lock:
                seen = self.store.retry_tokens.get(key)
                if seen is not None:
                    if seen["digest"] != digest:
                        raise OCIError(409, "Conflict", "The retry token was used for a different request")
                    return Response(status=seen["status"], body=seen["body"].encode(), headers=dict(seen["headers"]))
                response = self._call(route, request)
                if 200 <= response.status < 300 and isinstance(response.body, bytes):
                    self.store.retry_tokens[key] = {
                        "digest": digest,
                        "status": response.status,
                        "headers": {k: v for k, v in response.headers.items() if k != "opc-request-id"},
                        "body": response.body.decode(),
                    }
                    self.store.touch()
                    self.store.save()
                return response
        return self._call(route, request)

    def _call(self, route: Route, request: Request) -> Response:
        if route.streaming:
            response = route.handler(request)
        else:
            with self.store.lock:
                response = route.handler(request)
        self.store.save()
        return response

    def _log_call(self, operation: str, request: Request, status: int, started: float) -> None:
        with self._calls_lock:
            self.calls.append(
                {
                    "time": started,
                    "operation": operation,
                    "method": request.method,
                    "path": request.path,
                    "status": status,
                    "retryToken": request.header("opc-retry-token"),
                }
            )

    def shutdown(self) -> None:
        self.events.stop()
        self.vms.stop()
        self.store.touch()
        self.store.save()
