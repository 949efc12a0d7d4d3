"""Request checks and response shapes that several services share.

The core services (Compute, Block Storage) answer with content-hash etags and list with
``sortBy``/``sortOrder``; every service pages with ``limit``/``page`` and answers a missing
parameter with ``MissingParameter``. Those rules live here once so the services agree.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import OCIError, invalid, missing
from ..routing import Request, Response, page
from ..store import Resource, public

API = "/20160918"  # the Core Services (iaas) API version: Compute, Block Storage, VCN
SORT_FIELDS = ("TIMECREATED", "DISPLAYNAME")


# --- parameters -----------------------------------------------------------------------
def required(values: Mapping[str, Any], name: str, label: str | None = None) -> Any:
    """``values[name]``; absent or empty is OCI's 400 MissingParameter (named ``label``, for nested fields)."""
    value = values.get(name)
    if not value:
        raise missing(label or name)
    return value


def body_of(request: Request) -> dict[str, Any]:
    body = request.json()
    if not body:
        raise invalid("a request body is required")
    return body


def require_compartment(value: Any, name: str = "compartmentId") -> str:
    if value is None or value == "":
        raise missing(name)
    if not isinstance(value, str) or not value.startswith(("ocid1.compartment.", "ocid1.tenancy.")):
        raise invalid(f"{name} is not a compartment OCID: {value!r}")
    return value


def require_ad(request: Request, value: Any, name: str = "availabilityDomain") -> str:
    if value is None or value == "":
        raise missing(name)
    from .identity import is_availability_domain  # identity's own routes use this module

    if not isinstance(value, str) or not is_availability_domain(value, request.emulator.tenancy):
        raise invalid(f"Invalid {name}: {value!r}")
    return value


def optional_str(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{name} must be a string")
    return value


def optional_bool(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"{name} must be a boolean")
    return value


MAX_FREEFORM_TAGS = 10  # per resource, the limit vdimport_worker.request.MAX_TAGS budgets for


def tags(body: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``freeformTags`` (strings to strings) or ``definedTags`` (namespaces to objects), ``{}`` when absent."""
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid(f"{name} must be an object")
    if name == "freeformTags" and not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid("freeformTags must map strings to strings")
    if name == "freeformTags" and len(value) > MAX_FREEFORM_TAGS:
        raise invalid(f"freeformTags: at most {MAX_FREEFORM_TAGS} free-form tags on one resource, not {len(value)}")
    return dict(value)


def default_name(prefix: str) -> str:
    """The display name OCI makes up when none is given, e.g. ``volume20240101120000``."""
    return prefix + time.strftime("%Y%m%d%H%M%S", time.gmtime())


# --- etags ------------------------------------------------------------------------------
def etag(resource: Resource) -> str:
    """A content hash: changes whenever the resource's API shape (state included) changes."""
    return hashlib.sha256(json.dumps(public(resource), sort_keys=True).encode()).hexdigest()[:32]


def respond(resource: Resource, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response.json(public(resource), status=status, headers={"etag": etag(resource), **(headers or {})})


def check_if_match(request: Request, resource: Resource) -> None:
    """``If-Match`` on a core-services update or delete: 412 NoEtagMatch unless it is the current etag."""
    wanted = request.header("if-match")
    if wanted and wanted != etag(resource):
        raise OCIError(412, "NoEtagMatch", "The ETag specified in the request does not match the ETag for the resource")


# --- lists ------------------------------------------------------------------------------
def paged(request: Request, items: list[Any], default_limit: int = 100) -> Response:
    """One page of ``items`` as the JSON answer, the next page's token in ``opc-next-page``."""
    chunk, headers = page(items, request, default_limit)
    return Response.json(chunk, headers=headers)


def sort_order(request: Request) -> tuple[str, bool]:
    """``(sortBy, descending)``: TIMECREATED newest first unless ``sortOrder`` says otherwise, DISPLAYNAME A to Z."""
    by = request.query.get("sortBy") or "TIMECREATED"
    if by not in SORT_FIELDS:
        raise invalid("sortBy must be TIMECREATED or DISPLAYNAME")
    order = (request.query.get("sortOrder") or ("DESC" if by == "TIMECREATED" else "ASC")).upper()
    if order not in ("ASC", "DESC"):
        raise invalid("sortOrder must be ASC or DESC")
    return by, order == "DESC"


def sort_listed(request: Request, items: list[Resource], created: Callable[[Resource], Any]) -> list[Resource]:
    """``items`` as OCI sorts a list: by ``created`` or, case-sensitively as OCI documents, by display name."""
    by, descending = sort_order(request)
    items = sorted(items, key=created)
    if by == "DISPLAYNAME":
        items = sorted(items, key=lambda r: r.get("displayName") or "")
    return items[::-1] if descending else items


def in_compartment(request: Request, kind: str) -> list[Resource]:
    """The resources of ``kind`` in the (required) ``compartmentId`` of the query."""
    compartment = require_compartment(request.query.get("compartmentId"))
    return [r for r in request.emulator.store.all(kind) if r["compartmentId"] == compartment]


def _created(resource: Resource) -> float:
    return float(resource.get("_created", 0.0))


def listing(request: Request, items: list[Resource], filters: tuple[str, ...] = (), sortable: bool = True) -> Response:
    """A core-services list: exact-match query ``filters``, OCI's sort (else oldest first), one page."""
    for name in filters:
        wanted = request.query.get(name)
        if wanted:
            items = [r for r in items if r.get(name) == wanted]
    items = sort_listed(request, items, _created) if sortable else sorted(items, key=_created)
    return paged(request, [public(r) for r in items])
