"""Artifacts (``/20160918/container``): container images as ``ListContainerImages`` lists them.

No registry is served: an image is recorded over the admin API,
``POST /_ocisim/container/images {"compartmentId", "repositoryName", "version", "digest"}``
(what a push to OCIR leaves behind), so that a check of a deployment's image (does the tag
exist, is it the digest the chart pins) runs against the emulator as against OCI.
"""

from __future__ import annotations

import re

from .. import ids
from ..errors import invalid
from ..routing import Request, Response, Service, page
from ..store import public
from ._common import body_of, require_compartment, required

service = Service("artifacts")

KIND = "containerimage"
FILTERS = (("repositoryName", "repositoryName"), ("version", "version"), ("displayName", "displayName"), ("imageDigest", "digest"))
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@service.route("GET", "/20160918/container/images", "ListContainerImages")
def list_container_images(request: Request) -> Response:
    query = request.query
    compartment = require_compartment(query.get("compartmentId"))
    subtree = query.get("compartmentIdInSubtree") == "true"  # the emulator keeps no compartment tree: all of them
    items = [i for i in request.emulator.store.all(KIND) if subtree or i["compartmentId"] == compartment]
    for name, field in FILTERS:
        if query.get(name):
            items = [i for i in items if i[field] == query[name]]
    chunk, headers = page([public(i) for i in items], request)
    return Response.json({"items": chunk, "remainingItemsCount": len(items) - len(chunk)}, headers=headers)


@service.route("POST", "/_ocisim/container/images", "AdminPutContainerImage", authenticated=False)
def admin_put_container_image(request: Request) -> Response:
    body = body_of(request)
    repository = required(body, "repositoryName")
    version = required(body, "version")
    digest = required(body, "digest")
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise invalid("digest must be sha256:<64 hex digits>")
    compartment = require_compartment(body.get("compartmentId"))
    store = request.emulator.store
    with store.lock:
        for old in store.all(KIND):
            if old["repositoryName"] == repository and old["version"] == version:
                store.remove(KIND, old["id"])  # a tag moves to the newest push
        image = store.add(
            KIND,
            {
                "id": ids.ocid("containerimage"),
                "compartmentId": compartment,
                "repositoryName": repository,
                "repositoryId": ids.ocid("containerrepo"),
                "version": version,
                "displayName": f"{repository}:{version}",
                "digest": digest,
                "lifecycleState": "AVAILABLE",
                "timeCreated": ids.now_iso(),
                "freeformTags": {},
                "definedTags": {},
                "systemTags": {},
            },
        )
        store.touch()
    return Response.json(public(image), status=201)
