"""Identity: the three availability domains of the emulated region; policies and dynamic groups."""

from __future__ import annotations

from typing import Any

from .. import ids
from ..errors import conflict, invalid, missing
from ..routing import Request, Response, Service
from ..store import public
from ._common import body_of, in_compartment, optional_str, paged, require_compartment, required, tags

service = Service("identity")

AD_PREFIX = "Emul"


def availability_domains(tenancy: str) -> list[dict[str, str]]:
    region = ids.REGION.upper().replace("-1", "")
    return [
        {"name": f"{AD_PREFIX}:{region}-AD-{n}", "id": f"ocid1.availabilitydomain.oc1..ad{n}", "compartmentId": tenancy} for n in (1, 2, 3)
    ]


def is_availability_domain(name: str, tenancy: str) -> bool:
    return any(ad["name"] == name for ad in availability_domains(tenancy))


@service.route("GET", "/20160918/availabilityDomains", "ListAvailabilityDomains")
def list_availability_domains(request: Request) -> Response:
    if not request.query.get("compartmentId"):
        raise missing("compartmentId")
    return Response.json(availability_domains(request.emulator.tenancy))


# --- policies and dynamic groups: kept as written, not enforced --------------------------
# The emulator authorizes every signed request; policies exist so that a tool checking a
# real tenancy's grants (``vdimport-local preflight``) can be run against it.
POLICY = "policy"
DYNAMIC_GROUP = "dynamicgroup"


def _named(request: Request, kind: str, ocid_kind: str, extra: dict[str, Any]) -> Response:
    body = body_of(request)
    name = required(body, "name")
    compartment = require_compartment(body.get("compartmentId"))
    store = request.emulator.store
    if any(r["name"] == name and r["compartmentId"] == compartment for r in store.all(kind)):
        raise conflict(f"a {kind} named {name!r} already exists")
    resource = store.add(
        kind,
        {
            "id": ids.ocid(ocid_kind, region=""),
            "compartmentId": compartment,
            "name": name,
            "description": optional_str(body, "description") or name,
            "timeCreated": ids.now_iso(),
            "lifecycleState": "ACTIVE",
            "freeformTags": tags(body, "freeformTags"),
            "definedTags": tags(body, "definedTags"),
            **extra,
        },
    )
    return Response.json(public(resource))


@service.route("POST", "/20160918/policies", "CreatePolicy")
def create_policy(request: Request) -> Response:
    statements = request.json().get("statements")
    if not isinstance(statements, list) or not statements or not all(isinstance(s, str) and s.strip() for s in statements):
        raise invalid("statements must be a non-empty list of policy statements")
    return _named(request, POLICY, "policy", {"statements": list(statements), "versionDate": None})


@service.route("GET", "/20160918/policies", "ListPolicies")
def list_policies(request: Request) -> Response:
    return paged(request, [public(p) for p in in_compartment(request, POLICY)])


@service.route("DELETE", "/20160918/policies/{policyId}", "DeletePolicy")
def delete_policy(request: Request) -> Response:
    request.emulator.store.get(POLICY, request.params["policyId"], "policy")
    request.emulator.store.remove(POLICY, request.params["policyId"])
    return Response.empty(204)


@service.route("POST", "/20160918/dynamicGroups", "CreateDynamicGroup")
def create_dynamic_group(request: Request) -> Response:
    rule = request.json().get("matchingRule")
    if not isinstance(rule, str) or not rule.strip():
        raise missing("matchingRule")
    return _named(request, DYNAMIC_GROUP, "dynamicgroup", {"matchingRule": rule})


@service.route("GET", "/20160918/dynamicGroups", "ListDynamicGroups")
def list_dynamic_groups(request: Request) -> Response:
    return paged(request, [public(g) for g in in_compartment(request, DYNAMIC_GROUP)])
