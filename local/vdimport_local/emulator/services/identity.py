"""Identity: the three availability domains of the emulated region."""

from __future__ import annotations

from .. import ids
from ..errors import missing
from ..routing import Request, Response, Service

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
