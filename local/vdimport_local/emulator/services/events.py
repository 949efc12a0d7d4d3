"""Events (``/20181201``): the emulator's event rules as OCI's ``ListRules``/``GetRule`` show them.

Rules are made over the admin API (``POST /_ocisim/events/rules``, ``vdimport_local.emulator.events``);
this read-only view gives each the shape an OCI Events rule has, so a tool that inspects a real
deployment (``vdimport-local preflight``) reads the emulator's the same way: ``condition`` is the
JSON filter OCI stores (event types, and the bucket under ``data.additionalDetails``), and a rule
with a ``functionId`` has one enabled FAAS action.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import not_found
from ..routing import Request, Response, Service
from ._common import paged, require_compartment

service = Service("events")

API = "/20181201"


def oci_rule(emulator: Any, rule: dict[str, Any]) -> dict[str, Any]:
    condition: dict[str, Any] = {}
    if rule.get("eventTypes"):
        condition["eventType"] = list(rule["eventTypes"])
    if rule.get("bucketName"):
        condition["data"] = {"additionalDetails": {"bucketName": [rule["bucketName"]]}}
    actions = []
    if rule.get("functionId"):
        actions.append(
            {
                "actionType": "FAAS",
                "id": f"{rule['id']}-action",
                "functionId": rule["functionId"],
                "isEnabled": True,
                "lifecycleState": "ACTIVE",
            }
        )
    return {
        "id": rule["id"],
        "displayName": rule.get("displayName") or rule["id"],
        "description": f"delivers to {rule['url']}",
        "lifecycleState": "ACTIVE",
        "condition": json.dumps(condition),
        "compartmentId": rule.get("compartmentId") or emulator.tenancy,
        "isEnabled": rule.get("isEnabled", True) is not False,
        "actions": {"actions": actions},
        "timeCreated": rule.get("timeCreated"),
        "freeformTags": {},
        "definedTags": {},
    }


@service.route("GET", f"{API}/rules", "ListRules")
def list_rules(request: Request) -> Response:
    compartment = require_compartment(request.query.get("compartmentId"))
    emulator = request.emulator
    rules = [oci_rule(emulator, r) for r in emulator.events.rules()]
    rules = [r for r in rules if r["compartmentId"] == compartment]
    if request.query.get("lifecycleState"):
        rules = [r for r in rules if r["lifecycleState"] == request.query["lifecycleState"]]
    return paged(request, [{k: v for k, v in r.items() if k != "actions"} for r in rules])


@service.route("GET", f"{API}/rules/{{ruleId}}", "GetRule")
def get_rule(request: Request) -> Response:
    for rule in request.emulator.events.rules():
        if rule["id"] == request.params["ruleId"]:
            return Response.json(oci_rule(request.emulator, rule))
    raise not_found("rule")
