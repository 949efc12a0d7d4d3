"""Step 1, inspect_object: look at the object, validate the request, plan the import."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import oci

from ..clients import list_all
from ..context import Rejected, StepContext, StepError
from ..imageformat import SourceImage, UnsafeImage, inspect_sources
from ..naming import MAX_DISPLAY_NAME, is_run_key, new_run_key, volume_display_name
from ..request import ImportRequest, RequestError

log = logging.getLogger("vdimport")

GIB = 1 << 30
MIN_VOLUME_GB = 50
MAX_VOLUME_GB = 32768


def volume_size_gb(virtual_size: int) -> int:
    """Whole GB (GiB) holding the image, at least OCI's 50 GB minimum."""
    return max(MIN_VOLUME_GB, -(-virtual_size // GIB))


def run_instance_key(ctx: StepContext) -> str:
    """The run instance's key: the one its later steps carry when inspect_object is run again in
    the same run (a Clear from here on a run that got further), else a new one.

    The later results come from this run instance's own XComs (the DAG passes their ``run_key``
    in the state); a run re-using a deleted run's id has none of them, so it gets a new key.
    """
    earlier = {r.get("run_key") for step, r in ctx.state.items() if step != "inspect_object" and isinstance(r, dict)}
    earlier = {k for k in earlier if is_run_key(k)}
    if len(earlier) == 1:
        key = str(earlier.pop())
        log.info("Run instance key from this run's earlier steps (resources named vdimport-%s-*)", key)
        return key
    if earlier:
        log.warning("The run's earlier steps carry %d different keys; starting a new run instance", len(earlier))
    return new_run_key()


def inspect_object(ctx: StepContext) -> dict[str, Any]:
    ctx.adopt_key(run_instance_key(ctx))
    req = ctx.request
    os_client = ctx.clients.object_storage
    log.info("Inspecting object %s in bucket %s (namespace %s)", _shown(req.object), req.bucket, req.namespace)
    try:
        head = os_client.head_object(req.namespace, req.bucket, req.object)
    except oci.exceptions.ServiceError as exc:
        if exc.status == 404:
            raise Rejected(f"object {_shown(req.object)} not found in bucket {req.bucket} (namespace {req.namespace})") from None
        raise
    headers = head.headers
    etag = headers.get("etag")
    size = int(headers.get("content-length", 0))
    if req.etag and etag != req.etag:
        raise Rejected(f"the object changed since the upload event (etag {req.etag}, now {etag}); its new version is a new import")
    if req.size is not None and req.size != size:
        raise Rejected(f"the object is {size} bytes, the request said {req.size}")
    metadata = {k[len("opc-meta-") :]: v for k, v in headers.items() if k.lower().startswith("opc-meta-")}
    request = _with_metadata(ctx, metadata)

    def read(offset: int, length: int) -> bytes:
        end = offset + length - 1
        resp = os_client.get_object(req.namespace, req.bucket, req.object, range=f"bytes={offset}-{end}", if_match=etag)
        return bytes(resp.data.content)

    try:
        sources = inspect_sources(read, size, request.options.source_format)
    except UnsafeImage as exc:
        raise Rejected(str(exc)) from None
    for number, source in enumerate(sources, 1):
        where = f" ({source.member} inside an ova)" if source.member else ""
        if len(sources) > 1:
            where = f" ({source.member}, disk {number} of {len(sources)} inside an ova)"
        log.info("Found a %s image%s: %d bytes, virtual size %d bytes", source.format, where, source.length, source.virtual_size)
    source = sources[0]
    plan, disks = _plan(ctx, request, sources)
    for disk in disks or [{"volume_name": plan["volume_name"], "volume_size_gb": plan["volume_size_gb"]}]:
        log.info(
            "Plan: volume %r of %d GB in %s, final %d VPUs/GB",
            disk["volume_name"],
            disk["volume_size_gb"],
            plan["availability_domain"],
            plan["vpus_per_gb"],
        )
    md5 = headers.get("content-md5") if source.offset == 0 and source.length == size and "opc-multipart-md5" not in headers else None
    return {
        "object": {"namespace": req.namespace, "bucket": req.bucket, "name": req.object, "size": size, "etag": etag, "md5": md5},
        "source": source.to_json(),
        "plan": plan,
        **({"disks": disks} if disks else {}),
        "warnings": _warnings(request),
        "run_key": ctx.names.key,
    }


def _with_metadata(ctx: StepContext, metadata: dict[str, str]) -> ImportRequest:
    """The request with the object's own metadata under whatever the run conf gave; what of it
    is no option becomes the volume's tags, and what cannot be a tag is said (not fatal)."""
    conf = dict(ctx.conf)
    conf["metadata"] = {**metadata, **(conf.get("metadata") or {})}
    try:
        request = ImportRequest.parse(conf)
    except RequestError as exc:
        raise Rejected(f"bad import option: {exc}") from None
    for key in request.unknown_keys:
        log.warning("Ignoring unknown option %r (known: ad_number, volume_name, vpus_per_gb, backup_policy, ...)", key)
    if request.metadata_tags:
        log.info("Metadata as tags of the volume: %s", ", ".join(sorted(request.metadata_tags)))
    for warning in request.tag_warnings:
        log.warning("%s", warning)
    return request


def _warnings(request: ImportRequest) -> list[str]:
    """What the report says was ignored of the request."""
    return [f"unknown option {k}" for k in request.unknown_keys] + list(request.tag_warnings)


def _volume_gb(ctx: StepContext, source: SourceImage, what: str) -> int:
    size_gb = volume_size_gb(source.virtual_size)
    if size_gb > MAX_VOLUME_GB:
        raise Rejected(f"{what} needs {size_gb} GB, more than the largest block volume ({MAX_VOLUME_GB} GB)")
    if size_gb > ctx.config.max_volume_gb:  # an image's header alone decides the size: the operator caps the cost
        raise Rejected(f"{what} needs a {size_gb} GB volume, more than this deployment allows ({ctx.config.max_volume_gb} GB)")
    return size_gb


def _plan(ctx: StepContext, request: ImportRequest, sources: list[SourceImage]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The plan (for the first disk), and for an OVA of several disks each disk's volume:
    ``<name>-disk1``, ``-disk2``, ... in archive order, each sized for its own disk."""
    opts = request.options
    name = volume_display_name(opts.volume_name, request.object)
    disks = []
    if len(sources) > 1:
        for number, source in enumerate(sources, 1):
            disks.append(
                {
                    "number": number,
                    "source": source.to_json(),
                    "volume_name": f"{name[: MAX_DISPLAY_NAME - 8]}-disk{number}",
                    "volume_size_gb": _volume_gb(ctx, source, f"disk {number} ({source.member})"),
                }
            )
    size_gb = _volume_gb(ctx, sources[0], "the image")
    compartment = opts.compartment_id or ctx.config.compartment_id
    ads = [ad.name for ad in list_all(ctx.clients.identity.list_availability_domains, ctx.clients.tenancy or compartment)]
    if not ads:
        raise StepError("no availability domains are visible to the worker's identity")
    if opts.ad_number is not None:
        if opts.ad_number > len(ads):
            raise Rejected(f"ad_number: this region has {len(ads)} availability domain(s), not {opts.ad_number}")
        ad = ads[opts.ad_number - 1]
    else:
        # "Random" as in the seed, but stable across retries of the same run.
        ad = ads[int(hashlib.sha256(ctx.names.key.encode()).hexdigest(), 16) % len(ads)]
    plan = {
        "compartment_id": compartment,
        "availability_domain": ad,
        "ad_pinned": opts.ad_number is not None,
        "availability_domains": ads,
        "volume_name": disks[0]["volume_name"] if disks else name,
        "volume_size_gb": size_gb,
        "vpus_per_gb": opts.vpus_per_gb,
        "backup_policy": opts.backup_policy,
        "kms_key_id": opts.kms_key_id,
        "verify": opts.verify,
        "fsck": opts.fsck,
        "tags": request.volume_tags,
        "keep_on_failure": opts.keep_on_failure,
    }
    return plan, disks


def _shown(name: str) -> str:
    """An object name as it may appear in a log line: quoted, escaped, never raw control characters."""
    return repr(name)
