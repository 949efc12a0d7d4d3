"""The emulator's own admin API under ``/_ocisim``: settings, faults, inspection.

Not an OCI API: tests and ``vdimport-local`` use it to inject faults and to prove what
exists and what happened. It is unauthenticated and the server binds to loopback.
"""

from __future__ import annotations

from ..routing import Request, Response, Service
from ..store import public

service = Service("admin")


@service.route("GET", "/_ocisim/health", "AdminHealth", authenticated=False)
def health(request: Request) -> Response:
    em = request.emulator
    return Response.json({"status": "ok", "endpoint": em.endpoint, "namespace": em.namespace, "tenancy": em.tenancy})


@service.route("GET", "/_ocisim/config", "AdminGetConfig", authenticated=False)
def get_config(request: Request) -> Response:
    from dataclasses import asdict

    return Response.json(asdict(request.emulator.settings))


@service.route("POST", "/_ocisim/config", "AdminSetConfig", authenticated=False)
def set_config(request: Request) -> Response:
    em = request.emulator
    em.settings.update(request.json())
    em.save_settings()
    return get_config(request)


@service.route("POST", "/_ocisim/faults", "AdminAddFault", authenticated=False)
def add_fault(request: Request) -> Response:
    rule = request.emulator.faults.add(request.json())
    return Response.json({"id": rule.id}, status=201)


@service.route("GET", "/_ocisim/faults", "AdminListFaults", authenticated=False)
def list_faults(request: Request) -> Response:
    return Response.json(request.emulator.faults.describe())


@service.route("DELETE", "/_ocisim/faults", "AdminClearFaults", authenticated=False)
def clear_faults(request: Request) -> Response:
    request.emulator.faults.clear()
    return Response.empty()


@service.route("GET", "/_ocisim/calls", "AdminListCalls", authenticated=False)
def list_calls(request: Request) -> Response:
    """Every authenticated API call with its status; ``?operation=`` filters."""
    wanted = request.query.get("operation")
    calls = [c for c in list(request.emulator.calls) if not wanted or c["operation"] == wanted]
    return Response.json(calls)


@service.route("GET", "/_ocisim/resources", "AdminListResources", authenticated=False)
def list_resources(request: Request) -> Response:
    """Every resource by kind, in API shape; ``?kind=`` narrows to one kind."""
    store = request.emulator.store
    wanted = request.query.get("kind")
    kinds = [wanted] if wanted else list(store.kinds())
    return Response.json({kind: [public(r) for r in store.all(kind)] for kind in kinds})


@service.route("GET", "/_ocisim/history", "AdminHistory", authenticated=False)
def history(request: Request) -> Response:
    """Creations, removals and lifecycle transitions with the time each was due."""
    store = request.emulator.store
    wanted = request.query.get("kind")
    with store.lock:
        for kind in store.kinds():
            store.all(kind)  # apply due transitions so the history is complete
        events = [e for e in store.history if not wanted or e["kind"] == wanted]
    return Response.json(events)
