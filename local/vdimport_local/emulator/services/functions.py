"""Functions: the function's configuration (management API) and its invocation (invoke API).

OCI Functions is not run here; local mode serves the function's real fdk behind a loopback
URL (``vdimport_local.fnhost``). A function is registered over the admin API,
``POST /_ocisim/functions {"displayName", "compartmentId", "applicationId"?, "config",
"image"?, "imageDigest"?, "url"}``, where ``url`` is that listener; ``GetFunction`` and
``ListFunctions`` then answer in OCI's shape, and ``InvokeFunction`` forwards the body to
``url`` as OCI's Fn agent forwards it to the container: the function's answer comes back with
its status, a failed invocation as OCI's 502 ``FunctionInvokeExecutionFailed``.
"""

from __future__ import annotations

import urllib.error
import urllib.request

from .. import ids
from ..errors import OCIError, invalid, missing
from ..routing import Request, Response, Service
from ..store import Resource
from ._common import body_of, paged, require_compartment, required, tags

service = Service("functions")

KIND = "function"
# The management and invoke APIs share one base path in the pinned SDK; the documented
# version is 20181201, which older SDKs call, so both are routed.
API_VERSIONS = ("/20181201", "/20260325")
INVOKE_TIMEOUT_SECONDS = 300.0


def _function(request: Request) -> Resource:
    return request.emulator.store.get(KIND, request.params["functionId"], "function")


def _respond(function: Resource) -> Response:
    return Response.json({k: v for k, v in function.items() if not k.startswith("_")}, headers={"etag": function["_etag"]})


def get_function(request: Request) -> Response:
    return _respond(_function(request))


def list_functions(request: Request) -> Response:
    application = request.query.get("applicationId")
    if not application:
        raise missing("applicationId")
    items = [f for f in request.emulator.store.all(KIND) if f["applicationId"] == application]
    if request.query.get("displayName"):
        items = [f for f in items if f["displayName"] == request.query["displayName"]]
    return paged(request, [{k: v for k, v in f.items() if not k.startswith("_")} for f in items])


def invoke_function(request: Request) -> Response:
    function = _function(request)
    forwarded = urllib.request.Request(function["_url"], data=request.body, method="POST")  # noqa: S310 - the registered loopback URL
    forwarded.add_header("content-type", request.header("content-type") or "application/octet-stream")
    try:
        with urllib.request.urlopen(forwarded, timeout=INVOKE_TIMEOUT_SECONDS) as answer:  # noqa: S310 - loopback
            return Response(answer.status, answer.read(), {"content-type": answer.headers.get("content-type", "application/json")})
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise OCIError(502, "FunctionInvokeExecutionFailed", f"function failed: {detail or exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise OCIError(502, "FunctionInvokeExecutionFailed", f"function's container did not answer: {exc}") from None


for _api in API_VERSIONS:
    service.route("GET", f"{_api}/functions/{{functionId}}", "GetFunction")(get_function)
    service.route("GET", f"{_api}/functions", "ListFunctions")(list_functions)
    # streaming: the store's lock is not held while the function runs (it calls the emulator itself)
    service.route("POST", f"{_api}/functions/{{functionId}}/actions/invoke", "InvokeFunction", streaming=True)(invoke_function)


@service.route("POST", "/_ocisim/functions", "AdminPutFunction", authenticated=False)
def admin_put_function(request: Request) -> Response:
    """Register (or, for the same display name and application, replace) a function."""
    body = body_of(request)
    name = required(body, "displayName")
    url = required(body, "url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid("url must be the http(s) URL of the function's listener")
    config = body.get("config") or {}
    if not isinstance(config, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in config.items()):
        raise invalid("config must map strings to strings")
    compartment = require_compartment(body.get("compartmentId"))
    application = body.get("applicationId") or f"ocid1.fnapp.oc1.{ids.REGION_KEY}.local"
    store = request.emulator.store
    with store.lock:
        for old in store.all(KIND):
            if old["displayName"] == name and old["applicationId"] == application:
                store.remove(KIND, old["id"])
        function_id = ids.ocid("fnfunc")
        function = store.add(
            KIND,
            {
                "id": function_id,
                "displayName": name,
                "lifecycleState": "ACTIVE",
                "applicationId": application,
                "compartmentId": compartment,
                "image": body.get("image"),
                "imageDigest": body.get("imageDigest"),
                "memoryInMBs": 256,
                "timeoutInSeconds": 120,
                "config": dict(config),
                "invokeEndpoint": request.emulator.endpoint,
                "freeformTags": tags(body, "freeformTags"),
                "definedTags": {},
                "timeCreated": ids.now_iso(),
                "timeUpdated": ids.now_iso(),
                "_url": url,
                "_etag": ids.etag(),
            },
        )
        store.touch()
    return _respond(function)
