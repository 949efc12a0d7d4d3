"""Object Storage: namespace, buckets, objects, multipart uploads and pre-authenticated requests.

Paths, headers, query parameters and JSON names follow the OCI API (``/n/{ns}/b/{bucket}/o/{object}``)
so the real SDK, CLI and ``curl`` on a PAR URL work unchanged. Object data never sits in memory:
uploads stream to a temporary file under ``DATA/objects/tmp`` and are renamed into place under the
store lock, each version in its own file named by a hash of bucket and object name, so any name
(quotes, ``$()``, newlines, unicode) is only ever data. Metadata lives in the store as kind
``object``; ``multipart_upload`` and ``par`` are kinds too.

Object events (create, update, delete) go to :class:`~vdimport_local.emulator.events.EventBus`
when the bucket has ``objectEventsEnabled``; its rules and delivery log are reachable over the
admin routes at the end of this module.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from .. import ids
from ..errors import OCIError, invalid, missing, not_found
from ..events import object_event
from ..routing import Request, Response, Service
from ..store import Resource, public
from ._common import paged, required

service = Service("objectstorage")

BUCKET = "bucket"
OBJECT = "object"
UPLOAD = "multipart_upload"
PAR = "par"

CHUNK = 1 << 20
PACED_CHUNK_MIN = 16 << 10
MAX_PARTS = 10000
ACCESS_TYPES = ("ObjectRead", "ObjectWrite", "ObjectReadWrite", "AnyObjectRead", "AnyObjectWrite", "AnyObjectReadWrite")
OBJECT_FIELDS = ("name", "size", "etag", "md5", "timeCreated", "timeModified", "storageTier", "archivalState")
STORAGE_TIERS = ("Standard", "InfrequentAccess", "Archive")
_BUCKET_NAME = re.compile(r"^[A-Za-z0-9._-]{1,256}$")
_CONTENT_HEADERS = {
    "content-type": "_contentType",
    "content-language": "_contentLanguage",
    "content-encoding": "_contentEncoding",
    "content-disposition": "_contentDisposition",
    "cache-control": "_cacheControl",
}
_DETAIL_FIELDS = {  # CreateMultipartUploadDetails -> the same private keys
    "contentType": "_contentType",
    "contentLanguage": "_contentLanguage",
    "contentEncoding": "_contentEncoding",
    "contentDisposition": "_contentDisposition",
    "cacheControl": "_cacheControl",
}


# --- errors as Object Storage words them -----------------------------------------------------
def bucket_not_found(namespace: str, bucket: str) -> OCIError:
    return OCIError(
        404,
        "BucketNotFound",
        f"Either the bucket named '{bucket}' does not exist in the namespace '{namespace}' or you are not authorized to access it",
    )


def bucket_exists(namespace: str, bucket: str) -> OCIError:
    message = f"Either the bucket '{bucket}' in namespace '{namespace}' already exists or you are not authorized to create it"
    return OCIError(409, "BucketAlreadyExists", message)


def object_not_found(bucket: str, name: str) -> OCIError:
    return OCIError(404, "ObjectNotFound", f"The object '{name}' was not found in the bucket '{bucket}'")


def upload_not_found(upload_id: str) -> OCIError:
    return OCIError(404, "UploadNotFound", f"No multipart upload with id '{upload_id}' exists for this object")


def par_not_found() -> OCIError:
    return not_found("pre-authenticated request")


def if_match_failed(if_match: str, current: str) -> OCIError:
    return OCIError(412, "IfMatchFailed", f"The If-Match header is '{if_match}' but the current entity tag is '{current}'")


# --- small helpers ------------------------------------------------------------------------------
def _b64md5(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def _parse_time(value: Any, name: str) -> float:
    if not isinstance(value, str) or not value:
        raise missing(name)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise invalid(f"{name} must be an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _check_namespace(request: Request) -> None:
    if request.params.get("namespaceName") != request.emulator.namespace:
        raise OCIError(
            404, "NamespaceNotFound", "You do not have authorization to perform this request, or the requested resource could not be found."
        )


def _find_bucket(request: Request, name: str) -> Resource | None:
    for bucket in request.emulator.store.all(BUCKET):
        if bucket["name"] == name:
            return bucket
    return None


def _bucket(request: Request) -> Resource:
    _check_namespace(request)
    name = request.params["bucketName"]
    bucket = _find_bucket(request, name)
    if bucket is None:
        raise bucket_not_found(request.emulator.namespace, name)
    return bucket


def _object_id(bucket_id: str, name: str) -> str:
    return hashlib.sha256(f"{bucket_id}\0{name}".encode("utf-8", "surrogatepass")).hexdigest()


def _find_object(request: Request, bucket: Resource, name: str) -> Resource | None:
    return request.emulator.store.find(OBJECT, _object_id(bucket["id"], name))


def _in_bucket(request: Request, kind: str, bucket_id: str) -> list[Resource]:
    """The objects, multipart uploads or PARs (``kind``) of one bucket."""
    return [r for r in request.emulator.store.all(kind) if r["_bucketId"] == bucket_id]


def _check_bucket_name(name: Any) -> None:
    if not isinstance(name, str) or not _BUCKET_NAME.match(name):
        raise OCIError(
            400,
            "InvalidBucketName",
            "Bucket names may contain only letters, numbers, dashes, underscores and periods, at most 256 characters",
        )


def _check_object_name(name: str) -> None:
    if not name or len(name.encode("utf-8", "surrogatepass")) > 1024 or "\0" in name:
        raise OCIError(400, "InvalidObjectName", "Object names must be 1 to 1024 bytes of UTF-8 and contain no NUL character")


def _objects_dir(request: Request) -> Path:
    return request.emulator.data_dir / "objects"


def _tmp_dir(request: Request) -> Path:
    path = _objects_dir(request) / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _unlink(path: str | None) -> None:
    if path:
        Path(path).unlink(missing_ok=True)


def _metadata_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.startswith("opc-meta-") and len(k) > len("opc-meta-")}


def _content_fields(values: dict[str, Any], names: dict[str, str]) -> dict[str, str]:
    """Content-Type and friends, from request headers or CreateMultipartUploadDetails, under their private keys."""
    fields = {key: str(values[name]) for name, key in names.items() if values.get(name)}
    fields.setdefault("_contentType", "application/octet-stream")
    return fields


def _storage_tier(value: str | None) -> str:
    tier = value or "Standard"
    if tier not in STORAGE_TIERS:
        raise invalid(f"storage tier must be one of {', '.join(STORAGE_TIERS)}")
    return tier


# --- conditional requests ---------------------------------------------------------------------
def _check_write_conditions(if_match: str | None, if_none_match: str | None, existing: Resource | None) -> None:
    if if_none_match is not None and if_none_match != "*":
        raise OCIError(400, "InvalidConditionalHeaders", "The only valid value of the If-None-Match header is '*'")
    if if_match is not None:
        if existing is None:
            raise OCIError(412, "IfMatchFailed", f"The If-Match header is '{if_match}' but there is no existing entity")
        if existing["etag"] != if_match:
            raise if_match_failed(if_match, existing["etag"])
    if if_none_match == "*" and existing is not None:
        raise OCIError(412, "IfNoneMatchFailed", "The If-None-Match header is '*' but there is an existing entity")


def _read_conditions(request: Request, etag: str) -> Response | None:
    """If-Match / If-None-Match on reads: 412 on a mismatch, 304 when the client's copy is current."""
    if_match = request.header("if-match")
    if if_match is not None and if_match not in ("*", etag):
        raise if_match_failed(if_match, etag)
    if_none_match = request.header("if-none-match")
    if if_none_match is not None and if_none_match in ("*", etag):
        return Response.empty(304, {"etag": etag})
    return None


def _check_if_match(request: Request, etag: str) -> None:
    """If-Match on an update or delete of a bucket or object."""
    if_match = request.header("if-match")
    if if_match is not None and if_match != etag:
        raise if_match_failed(if_match, etag)


# --- streaming bodies ---------------------------------------------------------------------------
class _Received:
    """An upload body written to a temporary file, with its size and MD5."""

    def __init__(self, path: Path, size: int, md5: bytes):
        self.path = path
        self.size = size
        self.md5 = md5

    @property
    def md5_b64(self) -> str:
        return _b64md5(self.md5)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _receive(request: Request) -> _Received:
    """Stream the request body to disk, checking Content-Length and Content-MD5."""
    chunked = "chunked" in (request.header("transfer-encoding") or "").lower()
    if request.header("content-length") is None and not chunked:
        raise OCIError(411, "ContentLengthRequired", "A Content-Length header is required")
    expected_md5 = request.header("content-md5")
    fd, name = tempfile.mkstemp(prefix="upload-", dir=_tmp_dir(request))
    path = Path(name)
    digest = hashlib.md5()  # noqa: S324 - Object Storage integrity checks are MD5 by definition
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in request.iter_body(CHUNK):
                digest.update(piece)
                out.write(piece)
                size += len(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    received = _Received(path, size, digest.digest())
    if expected_md5 is not None and expected_md5.strip() != received.md5_b64:
        received.discard()
        raise OCIError(
            400,
            "UnmatchedContentMD5",
            f"The computed MD5 of the request body ({received.md5_b64}) does not match the Content-MD5 header ({expected_md5})",
        )
    return received


class _FileBody:
    """A byte range of an open file, streamed in chunks and closed afterwards.

    ``rate`` (bytes per second, 0 = unlimited) paces the stream as Object Storage limits each
    connection: no piece leaves before its time at that rate, so a response of N bytes takes
    N / rate seconds however fast the reader is, and parallel ranged GETs add up.
    """

    def __init__(self, handle: IO[bytes], start: int, length: int, rate: int = 0):
        self.handle = handle
        self.start = start
        self.length = length
        self.rate = rate

    def __iter__(self) -> Iterator[bytes]:
        self.handle.seek(self.start)
        remaining = self.length
        # Paced, send ~50 pieces a second so the rate holds within a short range as well.
        chunk = min(CHUNK, max(PACED_CHUNK_MIN, self.rate // 50)) if self.rate else CHUNK
        started = time.monotonic()
        sent = 0
        while remaining > 0:
            piece = self.handle.read(min(chunk, remaining))
            if not piece:
                break
            remaining -= len(piece)
            if self.rate:
                sent += len(piece)
                wait = started + sent / self.rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield piece

    def close(self) -> None:
        self.handle.close()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` as (first, last); None when the header does not parse (ignored, as RFC 9110 says)."""
    found = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not found or (not found.group(1) and not found.group(2)):
        return None
    first_text, last_text = found.groups()
    unsatisfiable = OCIError(
        416,
        "InvalidRange",
        f"The requested range '{header}' is not satisfiable for an object of {size} bytes",
        {"content-range": f"bytes */{size}"},
    )
    if not first_text:
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - suffix), size - 1
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        raise unsatisfiable
    return first, min(last, size - 1)


def _object_headers(obj: Resource, with_checksum: bool = True) -> dict[str, str]:
    headers = {
        "etag": obj["etag"],
        "last-modified": ids.http_date(obj["_mtime"]),
        "accept-ranges": "bytes",
        "storage-tier": obj["storageTier"],
        "version-id": obj["_versionId"],
    }
    for key in _CONTENT_HEADERS:
        value = obj.get(_CONTENT_HEADERS[key])
        if value:
            headers[key] = value
    if with_checksum:
        if obj.get("_multipartMd5"):
            headers["opc-multipart-md5"] = obj["_multipartMd5"]
        else:
            headers["content-md5"] = obj["_contentMd5"]
    headers.update(obj["_meta"])
    return headers


def _response_overrides(request: Request, headers: dict[str, str]) -> None:
    for param, header in (
        ("httpResponseContentDisposition", "content-disposition"),
        ("httpResponseCacheControl", "cache-control"),
        ("httpResponseContentType", "content-type"),
        ("httpResponseContentLanguage", "content-language"),
        ("httpResponseContentEncoding", "content-encoding"),
        ("httpResponseExpires", "expires"),
    ):
        if request.query.get(param):
            headers[header] = request.query[param]


def _serve_object(request: Request, bucket: Resource, head: bool, rate: int = 0) -> Response:
    """GET or HEAD the path's object: full, ranged (206) or conditional (304); the file is read outside the lock.

    ``rate``: bytes per second the body may leave at (0: as fast as the connection takes it).
    """
    store = request.emulator.store
    name = request.params["objectName"]
    with store.lock:
        obj = _find_object(request, bucket, name)
        if obj is None:
            raise object_not_found(bucket["name"], name)
        early = _read_conditions(request, obj["etag"])
        if early is not None:
            return early
        size = int(obj["size"])
        span = None if head or not request.header("range") else _parse_range(request.header("range") or "", size)
        headers = _object_headers(obj, with_checksum=span is None)
        handle = None if head else open(obj["_file"], "rb")  # noqa: SIM115 - closed by _FileBody once sent
    _response_overrides(request, headers)
    if head or handle is None:
        headers["content-length"] = str(size)
        return Response(status=200, body=b"", headers=headers)
    if span is None:
        return Response(status=200, body=_FileBody(handle, 0, size, rate), headers=headers, length=size)
    first, last = span
    headers["content-range"] = f"bytes {first}-{last}/{size}"
    return Response(status=206, body=_FileBody(handle, first, last - first + 1, rate), headers=headers, length=last - first + 1)


def _commit_object(
    request: Request,
    bucket_id: str,
    name: str,
    received: _Received,
    *,
    content: dict[str, str],
    meta: dict[str, str],
    storage_tier: str,
    if_match: str | None,
    if_none_match: str | None,
    multipart_md5: str | None = None,
) -> Resource:
    """Make ``received`` the current version of the object: checks, rename into place, event. Takes the lock."""
    em = request.emulator
    store = em.store
    with store.lock:
        bucket = store.find(BUCKET, bucket_id)
        if bucket is None:
            received.discard()
            raise bucket_not_found(em.namespace, request.params.get("bucketName", ""))
        oid = _object_id(bucket_id, name)
        existing = store.find(OBJECT, oid)
        try:
            _check_write_conditions(if_match, if_none_match, existing)
        except OCIError:
            received.discard()
            raise
        version = str(uuid.uuid4())
        final = _objects_dir(request) / oid[:2] / f"{oid}.{version}"
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(received.path, final)
        now = time.time()
        stamp = ids.now_iso(now)
        obj: Resource = {
            "id": oid,
            "namespace": em.namespace,
            "bucketName": bucket["name"],
            "name": name,
            "size": received.size,
            "md5": multipart_md5 or received.md5_b64,
            "etag": ids.etag(),
            "timeCreated": stamp,
            "timeModified": stamp,
            "storageTier": storage_tier,
            "_bucketId": bucket_id,
            "_file": str(final),
            "_mtime": now,
            "_versionId": version,
            "_contentMd5": None if multipart_md5 else received.md5_b64,
            "_multipartMd5": multipart_md5,
            "_meta": dict(meta),
            **content,
        }
        store.add(OBJECT, obj)
        if existing is not None:
            _unlink(existing.get("_file"))
        store.touch()
        if bucket.get("objectEventsEnabled"):
            # An upload, also over an existing name, makes a new object: createobject (with the
            # new etag). updateobject is for changes of an object's properties, not its content.
            em.events.emit(object_event(em, "createobject", bucket, obj))
        return obj


def _write_headers(obj: Resource) -> dict[str, str]:
    """What PutObject and CommitMultipartUpload answer: the new version and its checksum."""
    headers = {"etag": obj["etag"], "last-modified": ids.http_date(obj["_mtime"]), "version-id": obj["_versionId"]}
    if obj["_multipartMd5"]:
        headers["opc-multipart-md5"] = obj["_multipartMd5"]
    else:
        headers["opc-content-md5"] = obj["_contentMd5"]
    return headers


def _put_object(request: Request, bucket: Resource) -> Response:
    """PutObject, signed or through a PAR: checks, then the body streamed to disk, then the commit."""
    bucket_id, name = bucket["id"], request.params["objectName"]
    _check_object_name(name)
    store = request.emulator.store
    if_match, if_none_match = request.header("if-match"), request.header("if-none-match")
    with store.lock:  # fail early, before the body is read; checked again at commit
        if store.find(BUCKET, bucket_id) is None:
            raise bucket_not_found(request.emulator.namespace, request.params.get("bucketName", ""))
        _check_write_conditions(if_match, if_none_match, store.find(OBJECT, _object_id(bucket_id, name)))
    tier = _storage_tier(request.header("storage-tier"))
    received = _receive(request)
    obj = _commit_object(
        request,
        bucket_id,
        name,
        received,
        content=_content_fields(request.headers, _CONTENT_HEADERS),
        meta=_metadata_headers(request),
        storage_tier=tier,
        if_match=if_match,
        if_none_match=if_none_match,
    )
    return Response.empty(200, _write_headers(obj))


# --- namespace --------------------------------------------------------------------------------
@service.route("GET", "/n", "GetNamespace")
def get_namespace(request: Request) -> Response:
    return Response.json(request.emulator.namespace)


@service.route("GET", "/n/{namespaceName}", "GetNamespaceMetadata")
def get_namespace_metadata(request: Request) -> Response:
    _check_namespace(request)
    em = request.emulator
    return Response.json({"namespace": em.namespace, "defaultS3CompartmentId": em.tenancy, "defaultSwiftCompartmentId": em.tenancy})


# --- buckets ------------------------------------------------------------------------------------
def _bucket_view(request: Request, bucket: Resource) -> dict[str, Any]:
    view = public(bucket)
    fields = {f.strip() for f in (request.query.get("fields") or "").split(",") if f.strip()}
    if fields & {"approximateCount", "approximateSize"}:
        objects = _in_bucket(request, OBJECT, bucket["id"])
        view["approximateCount"] = len(objects)
        view["approximateSize"] = sum(int(o["size"]) for o in objects)
    return view


@service.route("POST", "/n/{namespaceName}/b", "CreateBucket")
def create_bucket(request: Request) -> Response:
    _check_namespace(request)
    em = request.emulator
    body = request.json()
    name = required(body, "name")
    _check_bucket_name(name)
    required(body, "compartmentId")
    if _find_bucket(request, name) is not None:
        raise bucket_exists(em.namespace, name)
    public_access = body.get("publicAccessType") or "NoPublicAccess"
    if public_access not in ("NoPublicAccess", "ObjectRead", "ObjectReadWithoutList"):
        raise invalid("publicAccessType must be NoPublicAccess, ObjectRead or ObjectReadWithoutList")
    bucket: Resource = {
        "namespace": em.namespace,
        "name": name,
        "compartmentId": body["compartmentId"],
        "metadata": dict(body.get("metadata") or {}),
        "createdBy": em.credentials.identity.user,
        "timeCreated": ids.now_iso(),
        "etag": ids.etag(),
        "publicAccessType": public_access,
        "storageTier": body.get("storageTier") or "Standard",
        "objectEventsEnabled": bool(body.get("objectEventsEnabled", False)),
        "freeformTags": dict(body.get("freeformTags") or {}),
        "definedTags": dict(body.get("definedTags") or {}),
        "kmsKeyId": body.get("kmsKeyId"),
        "objectLifecyclePolicyEtag": None,
        "replicationEnabled": False,
        "isReadOnly": False,
        "id": ids.ocid("bucket"),
        "versioning": body.get("versioning") or "Disabled",
        "autoTiering": body.get("autoTiering") or "Disabled",
    }
    em.store.add(BUCKET, bucket)
    return Response.json(public(bucket), headers={"etag": bucket["etag"], "location": f"{em.endpoint}/n/{em.namespace}/b/{quote(name)}"})


@service.route("GET", "/n/{namespaceName}/b", "ListBuckets")
def list_buckets(request: Request) -> Response:
    _check_namespace(request)
    compartment = required(request.query, "compartmentId")
    buckets = sorted((b for b in request.emulator.store.all(BUCKET) if b["compartmentId"] == compartment), key=lambda b: b["name"])
    with_tags = "tags" in (request.query.get("fields") or "")
    keys = ["namespace", "name", "compartmentId", "createdBy", "timeCreated", "etag"] + (
        ["freeformTags", "definedTags"] if with_tags else []
    )
    return paged(request, [{k: b[k] for k in keys} for b in buckets], default_limit=1000)


def _read_bucket(request: Request, head: bool) -> Response:
    """GET or HEAD the path's bucket, honouring If-Match / If-None-Match."""
    bucket = _bucket(request)
    early = _read_conditions(request, bucket["etag"])
    if early is not None:
        return early
    if head:
        return Response.empty(200, {"etag": bucket["etag"]})
    return Response.json(_bucket_view(request, bucket), headers={"etag": bucket["etag"]})


@service.route("GET", "/n/{namespaceName}/b/{bucketName}", "GetBucket")
def get_bucket(request: Request) -> Response:
    return _read_bucket(request, head=False)


@service.route("HEAD", "/n/{namespaceName}/b/{bucketName}", "HeadBucket")
def head_bucket(request: Request) -> Response:
    return _read_bucket(request, head=True)


@service.route("POST", "/n/{namespaceName}/b/{bucketName}", "UpdateBucket")
def update_bucket(request: Request) -> Response:
    bucket = _bucket(request)
    _check_if_match(request, bucket["etag"])
    body = request.json()
    new_name = body.get("name")
    if new_name and new_name != bucket["name"]:
        _check_bucket_name(new_name)
        if _find_bucket(request, new_name) is not None:
            raise bucket_exists(bucket["namespace"], new_name)
        bucket["name"] = new_name
        for obj in _in_bucket(request, OBJECT, bucket["id"]):
            obj["bucketName"] = new_name
    for key in ("compartmentId", "publicAccessType", "kmsKeyId", "versioning", "autoTiering"):
        if body.get(key) is not None:
            bucket[key] = body[key]
    if body.get("objectEventsEnabled") is not None:
        bucket["objectEventsEnabled"] = bool(body["objectEventsEnabled"])
    for key in ("metadata", "freeformTags", "definedTags"):
        if body.get(key) is not None:
            bucket[key] = dict(body[key])
    bucket["etag"] = ids.etag()
    request.emulator.store.touch()
    return Response.json(_bucket_view(request, bucket), headers={"etag": bucket["etag"]})


@service.route("DELETE", "/n/{namespaceName}/b/{bucketName}", "DeleteBucket")
def delete_bucket(request: Request) -> Response:
    bucket = _bucket(request)
    _check_if_match(request, bucket["etag"])
    name = bucket["name"]
    if _in_bucket(request, OBJECT, bucket["id"]):
        raise OCIError(409, "BucketNotEmpty", f"Bucket named '{name}' is not empty. Delete all objects first.")
    if _in_bucket(request, UPLOAD, bucket["id"]):
        raise OCIError(409, "BucketNotEmpty", f"Bucket named '{name}' has pending multipart uploads. Stop all multipart uploads first.")
    pars = _in_bucket(request, PAR, bucket["id"])
    now = time.time()
    if any(p["_expires"] > now for p in pars):
        raise OCIError(
            409, "PreauthenticatedRequestStillExists", f"Bucket named '{name}' has pre-authenticated requests. Delete them first."
        )
    store = request.emulator.store
    for par in pars:  # expired ones go with the bucket
        store.remove(PAR, par["id"])
    store.remove(BUCKET, bucket["id"])
    return Response.empty(204)


# --- objects --------------------------------------------------------------------------------------
def _list_objects(request: Request, bucket: Resource, allowed_prefix: str = "") -> dict[str, Any]:
    query = request.query
    try:
        limit = int(query.get("limit") or 1000)
    except ValueError:
        raise invalid("limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise OCIError(400, "InvalidLimit", "limit must be between 1 and 1000")
    prefix = query.get("prefix") or ""
    start, end, start_after = query.get("start"), query.get("end"), query.get("startAfter")
    delimiter = query.get("delimiter")
    if delimiter is not None and delimiter != "/":
        raise invalid("The only supported delimiter is '/'")
    wanted = {f.strip().lower() for f in (query.get("fields") or "name").split(",") if f.strip()}
    fields = [f for f in OBJECT_FIELDS if f.lower() in wanted] or ["name"]
    if "name" not in fields:
        fields.insert(0, "name")
    objects = sorted(
        (o for o in _in_bucket(request, OBJECT, bucket["id"]) if o["name"].startswith(allowed_prefix)), key=lambda o: o["name"]
    )
    listed: list[dict[str, Any]] = []
    prefixes: list[str] = []
    next_start: str | None = None
    for obj in objects:
        name = obj["name"]
        if not name.startswith(prefix) or (start is not None and name < start) or (start_after is not None and name <= start_after):
            continue
        if end is not None and name >= end:
            break
        group = None
        if delimiter:
            rest = name[len(prefix) :]
            if delimiter in rest:
                group = prefix + rest[: rest.index(delimiter) + 1]
                if prefixes and prefixes[-1] == group:
                    continue
        if len(listed) + len(prefixes) >= limit:
            next_start = name
            break
        if group is not None:
            prefixes.append(group)
        else:
            listed.append({f: obj.get(f) for f in fields if obj.get(f) is not None})
    result: dict[str, Any] = {"objects": listed}
    if delimiter:
        result["prefixes"] = prefixes
    if next_start is not None:
        result["nextStartWith"] = next_start
    return result


@service.route("GET", "/n/{namespaceName}/b/{bucketName}/o", "ListObjects")
def list_objects(request: Request) -> Response:
    return Response.json(_list_objects(request, _bucket(request)))


@service.route("PUT", "/n/{namespaceName}/b/{bucketName}/o/{objectName+}", "PutObject", streaming=True)
def put_object(request: Request) -> Response:
    with request.emulator.store.lock:
        bucket = _bucket(request)
    return _put_object(request, bucket)


@service.route("GET", "/n/{namespaceName}/b/{bucketName}/o/{objectName+}", "GetObject", streaming=True)
def get_object(request: Request) -> Response:
    with request.emulator.store.lock:
        bucket = _bucket(request)
    return _serve_object(request, bucket, head=False)


@service.route("HEAD", "/n/{namespaceName}/b/{bucketName}/o/{objectName+}", "HeadObject")
def head_object(request: Request) -> Response:
    return _serve_object(request, _bucket(request), head=True)


@service.route("DELETE", "/n/{namespaceName}/b/{bucketName}/o/{objectName+}", "DeleteObject")
def delete_object(request: Request) -> Response:
    em = request.emulator
    bucket = _bucket(request)
    name = request.params["objectName"]
    obj = _find_object(request, bucket, name)
    if obj is None:
        raise object_not_found(bucket["name"], name)
    _check_if_match(request, obj["etag"])
    em.store.remove(OBJECT, obj["id"])
    _unlink(obj.get("_file"))
    if bucket.get("objectEventsEnabled"):
        em.events.emit(object_event(em, "deleteobject", bucket, obj))
    return Response.empty(204, {"last-modified": ids.http_date(time.time()), "version-id": obj["_versionId"], "is-delete-marker": "false"})


# --- multipart uploads -------------------------------------------------------------------------
def _upload_view(request: Request, upload: Resource) -> dict[str, Any]:
    bucket = request.emulator.store.find(BUCKET, upload["_bucketId"])
    return {
        "namespace": upload["namespace"],
        "bucket": bucket["name"] if bucket else upload["bucket"],
        "object": upload["object"],
        "uploadId": upload["uploadId"],
        "timeCreated": upload["timeCreated"],
        "storageTier": upload["storageTier"],
    }


def _upload(request: Request, bucket: Resource) -> Resource:
    upload_id = required(request.query, "uploadId")
    upload = request.emulator.store.find(UPLOAD, upload_id)
    if upload is None or upload["_bucketId"] != bucket["id"] or upload["object"] != request.params["objectName"]:
        raise upload_not_found(upload_id)
    return upload


def _uploads_dir(request: Request, upload_id: str) -> Path:
    return request.emulator.data_dir / "uploads" / hashlib.sha256(upload_id.encode()).hexdigest()


@service.route("POST", "/n/{namespaceName}/b/{bucketName}/u", "CreateMultipartUpload")
def create_multipart_upload(request: Request) -> Response:
    em = request.emulator
    bucket = _bucket(request)
    body = request.json()
    name = required(body, "object")
    _check_object_name(name)
    if_match, if_none_match = request.header("if-match"), request.header("if-none-match")
    _check_write_conditions(if_match, if_none_match, _find_object(request, bucket, name))
    meta: dict[str, str] = {}
    for key, value in (body.get("metadata") or {}).items():
        key = str(key).lower()
        meta[key if key.startswith("opc-meta-") else f"opc-meta-{key}"] = str(value)
    content = _content_fields(body, _DETAIL_FIELDS)
    upload_id = str(uuid.uuid4())
    upload: Resource = {
        "id": upload_id,
        "namespace": em.namespace,
        "bucket": bucket["name"],
        "object": name,
        "uploadId": upload_id,
        "timeCreated": ids.now_iso(),
        "storageTier": _storage_tier(body.get("storageTier")),
        "_bucketId": bucket["id"],
        "_parts": {},
        "_meta": meta,
        "_content": content,
        "_ifMatch": if_match,
        "_ifNoneMatch": if_none_match,
    }
    em.store.add(UPLOAD, upload)
    location = f"{em.endpoint}/n/{em.namespace}/b/{quote(bucket['name'])}/u/{quote(name)}?uploadId={upload_id}"
    return Response.json(_upload_view(request, upload), headers={"location": location})


@service.route("GET", "/n/{namespaceName}/b/{bucketName}/u", "ListMultipartUploads")
def list_multipart_uploads(request: Request) -> Response:
    bucket = _bucket(request)
    uploads = sorted(_in_bucket(request, UPLOAD, bucket["id"]), key=lambda u: (u["object"], u["timeCreated"], u["uploadId"]))
    return paged(request, [_upload_view(request, u) for u in uploads], default_limit=1000)


@service.route("PUT", "/n/{namespaceName}/b/{bucketName}/u/{objectName+}", "UploadPart", streaming=True)
def upload_part(request: Request) -> Response:
    store = request.emulator.store
    try:
        part_num = int(request.query.get("uploadPartNum") or "")
    except ValueError:
        raise missing("uploadPartNum") from None
    if not 1 <= part_num <= MAX_PARTS:
        raise OCIError(400, "InvalidUploadPartNumber", f"uploadPartNum must be between 1 and {MAX_PARTS}")
    with store.lock:
        upload_id = _upload(request, _bucket(request))["uploadId"]
    received = _receive(request)
    with store.lock:
        upload = store.find(UPLOAD, upload_id)
        if upload is None:
            received.discard()
            raise upload_not_found(upload_id)
        etag = ids.etag()
        folder = _uploads_dir(request, upload_id)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{part_num}.{etag}"
        os.replace(received.path, target)
        previous = upload["_parts"].get(str(part_num))
        upload["_parts"][str(part_num)] = {
            "partNumber": part_num,
            "etag": etag,
            "md5": received.md5_b64,
            "size": received.size,
            "_file": str(target),
        }
        if previous:
            _unlink(previous["_file"])
        store.touch()
    return Response.empty(200, {"etag": etag, "opc-content-md5": received.md5_b64})


@service.route("GET", "/n/{namespaceName}/b/{bucketName}/u/{objectName+}", "ListMultipartUploadParts")
def list_multipart_upload_parts(request: Request) -> Response:
    upload = _upload(request, _bucket(request))
    parts = sorted(upload["_parts"].values(), key=lambda p: p["partNumber"])
    return paged(request, [{k: p[k] for k in ("partNumber", "etag", "md5", "size")} for p in parts], default_limit=1000)


@service.route("POST", "/n/{namespaceName}/b/{bucketName}/u/{objectName+}", "CommitMultipartUpload", streaming=True)
def commit_multipart_upload(request: Request) -> Response:
    store = request.emulator.store
    body = request.json()
    wanted = body.get("partsToCommit")
    if not wanted or not isinstance(wanted, list):
        raise OCIError(400, "InvalidUploadPart", "partsToCommit must list at least one part")
    with store.lock:
        bucket = _bucket(request)
        upload = _upload(request, bucket)
        chosen = _chosen_parts(upload, wanted)
        upload_id, name = upload["uploadId"], upload["object"]
        if_match, if_none_match = upload.get("_ifMatch"), upload.get("_ifNoneMatch")
        _check_write_conditions(if_match, if_none_match, _find_object(request, bucket, name))
        meta, content, tier = dict(upload["_meta"]), dict(upload["_content"]), upload["storageTier"]
    received = _concatenate(request, chosen, upload_id)
    with store.lock:
        if store.find(UPLOAD, upload_id) is None:
            received.discard()
            raise upload_not_found(upload_id)
        obj = _commit_object(
            request,
            bucket["id"],
            name,
            received,
            content=content,
            meta=meta,
            storage_tier=tier,
            if_match=if_match,
            if_none_match=if_none_match,
            multipart_md5=_multipart_md5(chosen),
        )
        _drop_upload(request, upload_id)
    return Response.empty(200, _write_headers(obj))


def _chosen_parts(upload: Resource, wanted: list[Any]) -> list[dict[str, Any]]:
    """The uploaded parts ``partsToCommit`` names, in part-number order; each must match its part's etag."""
    chosen: list[dict[str, Any]] = []
    seen: set[int] = set()
    for item in wanted:
        num, etag = (item.get("partNum"), item.get("etag")) if isinstance(item, dict) else (None, None)
        if not isinstance(num, int) or num in seen:
            raise OCIError(400, "InvalidUploadPart", f"part number {num!r} is missing or listed twice")
        seen.add(num)
        part = upload["_parts"].get(str(num))
        if part is None:
            raise OCIError(400, "InvalidUploadPart", f"Part {num} has not been uploaded")
        if etag != part["etag"]:
            raise OCIError(
                400, "InvalidUploadPart", f"The etag '{etag}' of part {num} does not match the uploaded part's etag '{part['etag']}'"
            )
        chosen.append(dict(part))
    return sorted(chosen, key=lambda p: p["partNumber"])


def _concatenate(request: Request, parts: list[dict[str, Any]], upload_id: str) -> _Received:
    """The parts' files joined into one temporary file, outside the store lock (objects can be large)."""
    fd, tmp_name = tempfile.mkstemp(prefix="commit-", dir=_tmp_dir(request))
    size = 0
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part["_file"], "rb") as src:
                    shutil.copyfileobj(src, out, 8 * CHUNK)
                size += int(part["size"])
    except FileNotFoundError:  # aborted while we copied
        Path(tmp_name).unlink(missing_ok=True)
        raise upload_not_found(upload_id) from None
    return _Received(Path(tmp_name), size, b"")


def _multipart_md5(parts: list[dict[str, Any]]) -> str:
    """OCI's ``opc-multipart-md5``: the MD5 of the parts' binary MD5s, then ``-`` and the part count."""
    combined = hashlib.md5(b"".join(base64.b64decode(p["md5"]) for p in parts))  # noqa: S324 - OCI's multipart MD5
    return f"{_b64md5(combined.digest())}-{len(parts)}"


def _drop_upload(request: Request, upload_id: str) -> None:
    store = request.emulator.store
    store.remove(UPLOAD, upload_id)
    shutil.rmtree(_uploads_dir(request, upload_id), ignore_errors=True)


@service.route("DELETE", "/n/{namespaceName}/b/{bucketName}/u/{objectName+}", "AbortMultipartUpload")
def abort_multipart_upload(request: Request) -> Response:
    upload = _upload(request, _bucket(request))
    _drop_upload(request, upload["uploadId"])
    return Response.empty(204)


# --- pre-authenticated requests ----------------------------------------------------------------
def _par_summary(par: Resource) -> dict[str, Any]:
    keys = ("id", "name", "objectName", "bucketListingAction", "accessType", "timeExpires", "timeCreated")
    return {k: par[k] for k in keys if par.get(k) is not None}


def _par_expiry(body: dict[str, Any], now: float, max_hours: float) -> float:
    expires = _parse_time(body.get("timeExpires"), "timeExpires")
    if expires <= now:
        raise invalid("timeExpires must be in the future")
    if expires > now + max_hours * 3600:
        raise invalid(f"timeExpires must be within {max_hours:g} hours")
    return expires


@service.route("POST", "/n/{namespaceName}/b/{bucketName}/p", "CreatePreauthenticatedRequest")
def create_preauthenticated_request(request: Request) -> Response:
    em = request.emulator
    bucket = _bucket(request)
    body = request.json()
    name = required(body, "name")
    access = required(body, "accessType")
    if access not in ACCESS_TYPES:
        raise invalid(f"accessType must be one of {', '.join(ACCESS_TYPES)}")
    object_name = body.get("objectName") or None
    if not access.startswith("Any") and not object_name:
        raise invalid(f"objectName is required for accessType {access}")
    listing = body.get("bucketListingAction") or "Deny"
    if listing not in ("Deny", "ListObjects"):
        raise invalid("bucketListingAction must be Deny or ListObjects")
    now = time.time()
    expires = _par_expiry(body, now, em.settings.par_max_hours)
    token = secrets.token_urlsafe(48)
    encoded_bucket = quote(bucket["name"], safe="")
    object_part = "" if access.startswith("Any") else quote(object_name or "", safe="/")
    access_uri = f"/p/{token}/n/{em.namespace}/b/{encoded_bucket}/o/{object_part}"
    par: Resource = {
        "id": secrets.token_urlsafe(32),
        "name": name,
        "objectName": object_name,
        "bucketListingAction": listing,
        "accessType": access,
        "timeExpires": ids.now_iso(expires),
        "timeCreated": ids.now_iso(now),
        "_token": token,
        "_bucketId": bucket["id"],
        "_expires": expires,
        "_accessUri": access_uri,
    }
    em.store.add(PAR, par)
    return Response.json({**_par_summary(par), "accessUri": access_uri, "fullPath": f"{em.endpoint}{access_uri}"})


@service.route("GET", "/n/{namespaceName}/b/{bucketName}/p", "ListPreauthenticatedRequests")
def list_preauthenticated_requests(request: Request) -> Response:
    bucket = _bucket(request)
    prefix = request.query.get("objectNamePrefix") or ""
    pars = [p for p in _in_bucket(request, PAR, bucket["id"]) if (p.get("objectName") or "").startswith(prefix)]
    pars.sort(key=lambda p: (p["timeCreated"], p["id"]))
    return paged(request, [_par_summary(p) for p in pars], default_limit=1000)


def _bucket_par(request: Request, bucket: Resource) -> Resource:
    par = request.emulator.store.find(PAR, request.params["parId"])
    if par is None or par["_bucketId"] != bucket["id"]:
        raise par_not_found()
    return par


@service.route("GET", "/n/{namespaceName}/b/{bucketName}/p/{parId}", "GetPreauthenticatedRequest")
def get_preauthenticated_request(request: Request) -> Response:
    return Response.json(_par_summary(_bucket_par(request, _bucket(request))))


@service.route("DELETE", "/n/{namespaceName}/b/{bucketName}/p/{parId}", "DeletePreauthenticatedRequest")
def delete_preauthenticated_request(request: Request) -> Response:
    par = _bucket_par(request, _bucket(request))
    request.emulator.store.remove(PAR, par["id"])
    return Response.empty(204)


# --- the PAR data path (no signature: the token in the URL is the credential) -----------------
PAR_OBJECT_PATH = "/p/{parToken}/n/{namespaceName}/b/{bucketName}/o/{objectName+}"


def _par_target(request: Request, need: str) -> tuple[Resource, Resource]:
    """The PAR and bucket a ``/p/{token}/...`` request may use for ``need`` (Read or Write), or 404."""
    em = request.emulator
    token = request.params["parToken"]
    with em.store.lock:
        par = next((p for p in em.store.all(PAR) if secrets.compare_digest(p["_token"], token)), None)
        if par is None or par["_expires"] <= time.time():
            raise par_not_found()
        bucket = em.store.find(BUCKET, par["_bucketId"])
        if bucket is None or request.params["namespaceName"] != em.namespace or request.params["bucketName"] != bucket["name"]:
            raise par_not_found()
        access = par["accessType"]
        name = request.params.get("objectName")
        if name is None:  # the bucket listing: OCI allows it on AnyObjectRead(Write) PARs with ListObjects
            allowed = access.startswith("Any") and par["bucketListingAction"] == "ListObjects"
        elif access.startswith("Any"):  # objectName, if set, is a prefix
            allowed = name.startswith(par.get("objectName") or "")
        else:
            allowed = name == par["objectName"]
        if not allowed or need not in access:
            raise par_not_found()
        return par, dict(bucket)


@service.route("GET", PAR_OBJECT_PATH, "GetObjectWithPAR", authenticated=False, streaming=True)
def par_get_object(request: Request) -> Response:
    """The worker's download path; ``par_bytes_per_second`` caps each connection as OCI does per stream."""
    _, bucket = _par_target(request, "Read")
    return _serve_object(request, bucket, head=False, rate=request.emulator.settings.par_bytes_per_second)


@service.route("HEAD", PAR_OBJECT_PATH, "HeadObjectWithPAR", authenticated=False, streaming=True)
def par_head_object(request: Request) -> Response:
    _, bucket = _par_target(request, "Read")
    return _serve_object(request, bucket, head=True)


@service.route("PUT", PAR_OBJECT_PATH, "PutObjectWithPAR", authenticated=False, streaming=True)
def par_put_object(request: Request) -> Response:
    _, bucket = _par_target(request, "Write")
    return _put_object(request, bucket)


@service.route("GET", "/p/{parToken}/n/{namespaceName}/b/{bucketName}/o", "ListObjectsWithPAR", authenticated=False, streaming=True)
def par_list_objects(request: Request) -> Response:
    par, bucket = _par_target(request, "Read")
    with request.emulator.store.lock:
        return Response.json(_list_objects(request, bucket, allowed_prefix=par.get("objectName") or ""))


# --- admin: event rules and deliveries (the emulator's stand-in for OCI Events rules) ----------
@service.route("POST", "/_ocisim/events/rules", "AdminAddEventRule", authenticated=False)
def add_event_rule(request: Request) -> Response:
    return Response.json(request.emulator.events.add_rule(request.json()), status=201)


@service.route("GET", "/_ocisim/events/rules", "AdminListEventRules", authenticated=False)
def list_event_rules(request: Request) -> Response:
    return Response.json(request.emulator.events.rules())


@service.route("DELETE", "/_ocisim/events/rules/{ruleId}", "AdminDeleteEventRule", authenticated=False)
def delete_event_rule(request: Request) -> Response:
    if not request.emulator.events.remove_rule(request.params["ruleId"]):
        raise not_found("event rule")
    return Response.empty(204)


@service.route("GET", "/_ocisim/events/deliveries", "AdminListEventDeliveries", authenticated=False)
def list_event_deliveries(request: Request) -> Response:
    """Every delivery attempt; ``?eventType=`` and ``?eventID=`` narrow it."""
    items = request.emulator.events.deliveries()
    for key in ("eventType", "eventID"):
        if request.query.get(key):
            items = [d for d in items if d.get(key) == request.query[key]]
    return Response.json(items)


@service.route("DELETE", "/_ocisim/events/deliveries", "AdminClearEventDeliveries", authenticated=False)
def clear_event_deliveries(request: Request) -> Response:
    request.emulator.events.clear_deliveries()
    return Response.empty(204)


@service.route("GET", "/_ocisim/events", "AdminListEvents", authenticated=False)
def list_events(request: Request) -> Response:
    """The most recent events emitted, delivered or not."""
    return Response.json(request.emulator.events.emitted())
