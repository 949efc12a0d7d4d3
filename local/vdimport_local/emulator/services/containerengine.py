"""Container Engine (``/20180222``): a cluster record, as ``GetCluster`` shows it.

No Kubernetes is run: a cluster is recorded over the admin API, ``POST /_ocisim/clusters
{"name", "compartmentId", "type"}`` (``ENHANCED_CLUSTER`` or ``BASIC_CLUSTER``), so a check of
what OKE workload identity needs (an enhanced cluster) reads it as it reads OCI's.
"""

from __future__ import annotations

from .. import ids
from ..errors import invalid
from ..routing import Request, Response, Service
from ..store import public
from ._common import body_of, require_compartment, required

service = Service("containerengine")

KIND = "cluster"
TYPES = ("ENHANCED_CLUSTER", "BASIC_CLUSTER")


@service.route("GET", "/20180222/clusters/{clusterId}", "GetCluster")
def get_cluster(request: Request) -> Response:
    return Response.json(public(request.emulator.store.get(KIND, request.params["clusterId"], "cluster")))


@service.route("POST", "/_ocisim/clusters", "AdminPutCluster", authenticated=False)
def admin_put_cluster(request: Request) -> Response:
    body = body_of(request)
    name = required(body, "name")
    kind = body.get("type") or "ENHANCED_CLUSTER"
    if kind not in TYPES:
        raise invalid(f"type must be one of {', '.join(TYPES)}")
    cluster = request.emulator.store.add(
        KIND,
        {
            "id": ids.ocid("cluster"),
            "name": name,
            "compartmentId": require_compartment(body.get("compartmentId")),
            "type": kind,
            "kubernetesVersion": body.get("kubernetesVersion") or "v1.34.1",
            "lifecycleState": "ACTIVE",
            "freeformTags": {},
            "definedTags": {},
        },
    )
    request.emulator.store.touch()
    return Response.json(public(cluster), status=201)
